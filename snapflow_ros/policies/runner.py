"""A policy behind a numpy interface, for the ROS node: images + state + task → action chunk.

``PolicyRunner.predict_chunk`` takes what the node has after converting messages (RGB uint8
images by camera name, the joint-state vector in policy order, the task string) and returns the
unnormalised chunk (H, A) as float64 numpy, running the policy's own pre/post-processors. The
node never touches torch; tests can drive the node with any object of the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from snapflow_ros.policies.checkpoint import CheckpointError, LoadedPolicy
from snapflow_ros.policies.device import resolve_device, resolve_dtype
from snapflow_ros.policies.factory import make_any
from snapflow_ros.timing import StageTimer
from snapflow_ros.topic_map import IMAGE_PREFIX, check_policy_interface

log = logging.getLogger(__name__)


class PolicyRunner:
    """Runs one loaded policy on numpy observations (see module docstring)."""

    def __init__(self, loaded: LoadedPolicy, *, device: str = "auto", dtype: str = "auto",
                 num_steps: int = 0, seed: int = -1) -> None:
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
        self.set_num_steps(num_steps)
        self._sync = torch.cuda.synchronize if torch.device(self.device).type == "cuda" else None

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

    def set_num_steps(self, num_steps: int) -> None:
        """Expert passes per chunk; 0 keeps the checkpoint's default (1 for SnapFlow)."""
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        self.num_steps = int(num_steps) or self.policy.default_num_steps

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
        with timer.stage("preprocess"):
            obs: dict[str, Any] = {
                IMAGE_PREFIX + name: torch.from_numpy(np.ascontiguousarray(images[name]))
                .permute(2, 0, 1).float().div_(255.0)
                for name in self.camera_names
            }
            obs["observation.state"] = torch.as_tensor(np.asarray(state, dtype=np.float32))
            obs["task"] = task
            batch = self.loaded.preprocessor(obs)
            gen = torch.Generator().manual_seed(self.seed) if self.seed >= 0 else None
            noise = self.policy.noise_like(1, gen)
        actions = self.policy.predict_action_chunk(batch, noise=noise, num_steps=self.num_steps,
                                                   timer=timer)
        with timer.stage("postprocess"):
            out = self.loaded.postprocessor(actions)
            return out[0].detach().to("cpu", torch.float64).numpy()

    def warmup(self, iterations: int = 2, task: str = "warm up") -> None:
        """Run a few chunks on blank inputs (first CUDA calls, allocator, lazy init)."""
        shape = {n: self.policy.config.image_features[IMAGE_PREFIX + n].shape
                 for n in self.camera_names}
        images = {n: np.zeros((s[1], s[2], 3), np.uint8) for n, s in shape.items()}
        for _ in range(iterations):
            self.predict_chunk(images, np.zeros(self.state_dim), task)
