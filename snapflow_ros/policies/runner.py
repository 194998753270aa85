"""A policy behind a numpy interface, for the ROS node: images + state + task → action chunk.

``PolicyRunner.predict_chunk`` takes what the node has after converting messages (RGB uint8
images by camera name, the joint-state vector in policy order, the task string) and returns the
unnormalised chunk (H, A) as float64 numpy, running the policy's own pre/post-processors. The
node never touches torch; tests can drive the node with any object of the same shape.

The chunk is computed by an inference engine (``policies/engine.py``: ``engine`` = auto, eager,
static, compile or graph); ``warmup`` (the node's configure transition) prepares it: warm-up
chunks, compilation, CUDA graph capture.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from snapflow_ros.policies.checkpoint import CheckpointError, LoadedPolicy
from snapflow_ros.policies.device import resolve_device, resolve_dtype
from snapflow_ros.policies.engine import EagerEngine, make_engine
from snapflow_ros.policies.factory import make_any
from snapflow_ros.timing import StageTimer
from snapflow_ros.topic_map import IMAGE_PREFIX, check_policy_interface

log = logging.getLogger(__name__)


class PolicyRunner:
    """Runs one loaded policy on numpy observations (see module docstring)."""

    def __init__(self, loaded: LoadedPolicy, *, device: str = "auto", dtype: str = "auto",
                 num_steps: int = 0, seed: int = -1, engine: str = "auto") -> None:
        if loaded.preprocessor is None or loaded.postprocessor is None:
            raise CheckpointError(
                f"'{loaded.path}' has no policy_preprocessor.json/policy_postprocessor.json; the "
                f"node needs the normalisation stats: save the policy with its processors"
            )
        self.loaded = loaded
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.policy = loaded.policy.to_runtime(self.device, self.dtype)
        self.seed = int(seed)
        # seed >= 0: the same ε (1, chunk_size, noise_dim) for every chunk, on the host (the
        # engine copies it into its device buffer); None: the engine draws fresh noise
        shape = (1, self.policy.chunk_size, self.policy.noise_dim)
        self._fixed_noise = (torch.randn(shape, generator=torch.Generator().manual_seed(seed))
                             if seed >= 0 else None)
        self.num_steps = self._resolve_steps(num_steps)
        self.engine = make_engine(engine, loaded, self.policy, num_steps=self.num_steps)
        self._prepared = False
        cuda = torch.device(self.device).type == "cuda"
        # per-stage syncs only on the eager path (as before); a static engine syncs once
        self._sync = torch.cuda.synchronize if cuda and isinstance(self.engine, EagerEngine) \
            else None

    @classmethod
    def load(cls, name_or_path: str, **kwargs: Any) -> PolicyRunner:
        """A built-in name, checkpoint directory or hub id (see ``policies.make_any``)."""
        device = resolve_device(kwargs.get("device", "auto"))
        return cls(make_any(name_or_path, device=device), **{**kwargs, "device": device})

    # -- what the policy expects ---------------------------------------------------------

    @property
    def camera_names(self) -> list[str]:
        return [k.removeprefix(IMAGE_PREFIX) for k in self.policy.image_keys]

    @property
    def state_dim(self) -> int:
        return self.policy.state_dim

    @property
    def action_dim(self) -> int:
        return self.policy.action_dim

    @property
    def chunk_size(self) -> int:
        return self.policy.chunk_size

    @property
    def n_action_steps(self) -> int:
        return int(self.policy.config.n_action_steps)

    @property
    def engine_name(self) -> str:
        """The engine in use (``auto`` resolved: eager, static, compile or graph)."""
        return self.engine.name

    def _resolve_steps(self, num_steps: int) -> int:
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        return int(num_steps) or self.policy.default_num_steps

    def set_num_steps(self, num_steps: int) -> None:
        """Expert passes per chunk; 0 keeps the checkpoint's default (1 for SnapFlow). A graph
        engine captures a new count's graph on the next chunk (logged)."""
        self.num_steps = self._resolve_steps(num_steps)
        self.engine.set_num_steps(self.num_steps)

    def check_interface(self, cameras: list[str], state_joints: list[str],
                        action_joints: list[str]) -> None:
        """Raise a ValueError unless the topic map provides what the policy reads."""
        check_policy_interface(self.camera_names, self.state_dim, self.action_dim, cameras,
                               state_joints, action_joints)

    # -- inference -----------------------------------------------------------------------

    def predict_chunk(self, images: dict[str, np.ndarray], state: np.ndarray, task: str,
                      timer: StageTimer | None = None) -> np.ndarray:
        """images: name → (H, W, 3) uint8 RGB; state (S,) → actions (chunk_size, A) float64.

        With ``seed`` >= 0 every chunk uses the same noise, so the chunk is a deterministic
        function of the observation (for tests and debugging); otherwise noise is fresh.
        """
        timer = timer or StageTimer(sync=self._sync)
        images = {name: images[name] for name in self.camera_names}
        if not self._prepared and not isinstance(self.engine, EagerEngine):
            log.warning("engine %s prepared on the first chunk; call warmup() first (the node "
                        "does it at configure)", self.engine_name)
            self.warmup(0, {n: tuple(im.shape[:2]) for n, im in images.items()})
        return self.engine.predict(images, state, task, self._fixed_noise, timer)

    def warmup(self, iterations: int = 2, image_shapes: dict[str, tuple[int, int]] | None = None,
               task: str = "warm up") -> None:
        """Prepare the engine (compile, capture) and run ``iterations`` chunks on blank inputs
        of these camera sizes (name → (H, W); default: the policy's image features)."""
        if image_shapes is None:
            image_shapes = {n: tuple(self.policy.config.image_features[IMAGE_PREFIX + n].shape[1:])
                            for n in self.camera_names}
        self.engine.prepare({n: image_shapes[n] for n in self.camera_names}, iterations, task)
        self._prepared = True
