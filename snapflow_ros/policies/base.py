"""The one policy interface: what every SnapFlow adapter (SmolVLA; pi0, pi0.5 next) provides,
and the model-independent half written once.

An adapter wraps a lerobot flow-matching policy and implements the model-specific hooks:

* ``encode_prefix(batch)``: images + language + state → a prefix (KV cache), once per batch;
* ``expert_pass(prefix, x, t)``: one action-expert pass, lerobot's denoise step; the adapter
  adds φ(t, s) where the model reads time (``target_time(dtype)`` gives it during the pass);
* ``prepare_action(batch)``: the padded training targets (B, chunk, max_action_dim);
* ``check_batch``, ``freeze_for_snapflow``, ``to_runtime``, ``time_embedding_width``, the
  ``config``/``image_keys``/``action_dim``/``state_dim``/``chunk_size``/``noise_dim`` facts;
* class-level checkpoint I/O: ``load_lerobot(directory, device)`` and ``save_extra(directory)``
  (files the directory needs besides lerobot's, e.g. SmolVLA's VLM folder).

``SnapFlowPolicy`` holds φ, the default sampling, the velocity field F(x, t, s | prefix), the
samplers, ``predict_action_chunk`` and the SnapFlow loss wrapper. Nothing outside
``policies/`` names a concrete adapter: tools go through ``load_policy``/``make_any`` and this
interface (``policies/registry.py`` maps lerobot policy types to adapters).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import Tensor, nn

from snapflow_ros.core import (
    SnapFlowLossConfig,
    SnapFlowLossOutput,
    TargetTimeEmbedding,
    TargetTimeEmbeddingConfig,
    euler_sample,
    route_to_fm,
    sample_fm_time,
    snap_sample,
    snapflow_loss,
)
from snapflow_ros.timing import StageTimer

Sampler = Literal["snap", "euler"]
SAMPLERS: tuple[str, ...] = ("snap", "euler")
ACTION_IS_PAD = "action_is_pad"
OBS_STATE = "observation.state"
ACTION = "action"
LANG_TOKENS = "observation.language.tokens"
LANG_MASK = "observation.language.attention_mask"


STEP_FIELDS = ("num_steps", "num_inference_steps")  # SmolVLA / pi0, pi0.5


def step_field(config: Any) -> str | None:
    """The name of the lerobot config's denoising step-count field (None: it has none)."""
    return next((name for name in STEP_FIELDS if hasattr(config, name)), None)


def teacher_num_steps(config: Any) -> int:
    """The lerobot policy's own denoising step count (SmolVLA ``num_steps``, pi0/pi0.5
    ``num_inference_steps``)."""
    field = step_field(config)
    return int((getattr(config, field) if field else None) or 10)


class Prefix(Protocol):
    """An encoded observation prefix (e.g. a KV cache) for a batch."""

    @property
    def batch_size(self) -> int: ...

    def rows(self, index: Tensor) -> Prefix:
        """The prefix of batch rows ``index``."""
        ...


class PrefixField:
    """F(x, t, s) for one encoded prefix (a core ``VelocityFn``); ``rows`` restricts it to a
    subset of the batch. Expert passes are timed as ``expert`` when a timer is given."""

    def __init__(self, owner: SnapFlowPolicy, prefix: Prefix, timer: StageTimer | None) -> None:
        self._owner, self.prefix, self._timer = owner, prefix, timer

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        if self._timer is None:
            return self._owner.velocity(self.prefix, x, t, s)
        with self._timer.stage("expert"):
            return self._owner.velocity(self.prefix, x, t, s)

    def rows(self, index: Tensor) -> PrefixField:
        return PrefixField(self._owner, self.prefix.rows(index), self._timer)


class SnapFlowPolicy(nn.Module):
    """A lerobot flow-matching policy extended with SnapFlow's target-time embedding φ.

    Batches are lerobot batches *after* the policy's preprocessor (normalised, tokenised,
    batched). ``self.policy`` is the wrapped lerobot policy; its state dict is never touched
    (φ lives beside it and is saved in the SnapFlow sidecar).
    """

    policy_type: ClassVar[str]
    #: folders an adapter bundles in a checkpoint that lerobot names by path: the VLM
    #: (config.json's ``vlm_model_name``) and the tokenizer (the ``tokenizer_processor`` step)
    bundled_vlm: ClassVar[str | None] = None
    bundled_tokenizer: ClassVar[str | None] = None

    def __init__(self, policy: nn.Module, phi: TargetTimeEmbedding | None = None, *,
                 default_num_steps: int = 1, sampler: Sampler = "snap",
                 teacher: dict[str, Any] | None = None, phi_seed: int = 0) -> None:
        super().__init__()
        self.policy = policy
        width = self.time_embedding_width()
        if phi is None:
            config = self.config
            phi_config = TargetTimeEmbeddingConfig(
                width=width, min_period=getattr(config, "min_period", 4e-3),
                max_period=getattr(config, "max_period", 4.0))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(phi_seed)  # reproducible fc1 init; fc2 is zero anyway
                phi = TargetTimeEmbedding(phi_config)
        if phi.config.width != width:
            raise ValueError(
                f"target-time embedding width {phi.config.width} does not match this "
                f"{self.policy_type}'s time embedding width {width}")
        self.phi = phi.to(self.device)
        self.set_sampling(default_num_steps, sampler)
        self.teacher = dict(teacher or {})
        self._target_time: tuple[Tensor, Tensor] | None = None

    # -- adapter hooks (model-specific) ------------------------------------------------------

    @property
    def config(self) -> Any:
        """The lerobot policy config."""
        return self.policy.config

    def time_embedding_width(self) -> int:
        """Width of the time embedding φ is added to."""
        raise NotImplementedError

    def time_input(self) -> tuple[nn.Module, slice]:
        """The layer whose input φ is added to, and the input columns φ is added to (the
        time embedding's): ``export`` folds φ(1, 0) into that layer's bias."""
        raise NotImplementedError

    @property
    def image_keys(self) -> list[str]:
        raise NotImplementedError

    @property
    def action_dim(self) -> int:
        return int(self.config.action_feature.shape[0])

    @property
    def state_dim(self) -> int:
        return int(self.config.robot_state_feature.shape[0])

    @property
    def chunk_size(self) -> int:
        return int(self.config.chunk_size)

    @property
    def noise_dim(self) -> int:
        """Last dim of the noise / the model's (padded) action space."""
        return int(self.config.max_action_dim)

    def check_batch(self, batch: dict[str, Any], *, need_actions: bool = False) -> None:
        """Raise a ValueError naming every missing or malformed input."""
        problems = []
        missing = [k for k in self.image_keys if k not in batch]
        if missing:
            problems.append(f"camera image(s) {missing} (the policy reads {self.image_keys})")
        if OBS_STATE not in batch:
            problems.append(f"'{OBS_STATE}'")
        if LANG_TOKENS not in batch or LANG_MASK not in batch:
            problems.append(
                "language tokens (run the policy's preprocessor: it tokenizes the 'task' string)"
            )
        if need_actions and ACTION not in batch:
            problems.append(f"'{ACTION}' (needed for training)")
        if problems:
            have = sorted(k for k in batch if not k.startswith("observation.language"))
            raise ValueError(f"batch is missing {'; '.join(problems)}. Batch keys: {have}")
        state = batch[OBS_STATE]
        if state.shape[-1] > self.config.max_state_dim:
            raise ValueError(
                f"'{OBS_STATE}' has {state.shape[-1]} dims, more than max_state_dim="
                f"{self.config.max_state_dim}"
            )
        if need_actions:
            actions = batch[ACTION]
            if actions.ndim != 3 or actions.shape[1] != self.chunk_size:
                raise ValueError(
                    f"'{ACTION}' must be a chunk (B, {self.chunk_size}, A), got "
                    f"{tuple(actions.shape)}; load the dataset with delta_timestamps for "
                    f"'action' covering chunk_size={self.chunk_size} steps"
                )

    def encode_prefix(self, batch: dict[str, Any]) -> Prefix:
        raise NotImplementedError

    def sync_free(self) -> contextlib.AbstractContextManager[None]:
        """A block in which the forward pass makes no host sync (the static engines run their
        step in it: a CUDA graph capture refuses syncs). Default: the forward has none."""
        return contextlib.nullcontext()

    def expert_pass(self, prefix: Any, x: Tensor, t: Tensor) -> Tensor:
        """lerobot's denoise step over the cached prefix; φ is added inside (``target_time``)."""
        raise NotImplementedError

    def prepare_action(self, batch: dict[str, Any]) -> Tensor:
        raise NotImplementedError

    def freeze_for_snapflow(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def to_runtime(self, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> SnapFlowPolicy:
        raise NotImplementedError

    @classmethod
    def load_lerobot(cls, directory: Path, device: str) -> tuple[nn.Module, dict[str, Any]]:
        """The lerobot policy saved in ``directory`` and its processor overrides."""
        raise NotImplementedError

    def save_extra(self, directory: Path) -> None:
        """Files the checkpoint directory needs besides lerobot's own (none by default)."""

    @classmethod
    def save_builtin_files(cls, directory: Path, shape: str) -> None:
        """Files a plain lerobot directory of a built-in ``shape`` model needs to load offline
        (the teacher trainer's output; none by default)."""

    # -- sampling defaults -------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def set_sampling(self, num_steps: int, sampler: Sampler = "snap") -> None:
        """Default step count and sampler used by ``sample`` when none is given."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        self.default_num_steps, self.sampler = int(num_steps), sampler

    # -- the velocity field ------------------------------------------------------------------

    def target_time(self, dtype: torch.dtype) -> Tensor | None:
        """φ(t, s) of the pass under way, (B, width) in ``dtype``; None outside a pass."""
        if self._target_time is None:
            return None
        return self.phi(*self._target_time).to(dtype)

    def add_to_time_half(self, module: nn.Module, args: tuple[Tensor, ...]) -> Any:
        """Forward pre-hook for a layer whose input is ``cat([action_emb, time_emb])``
        (SmolVLA's and pi0's ``action_time_mlp_in``): φ(t, s) added to the time half."""
        (fused,) = args
        phi = self.target_time(fused.dtype)
        if phi is None:
            return None
        width = fused.shape[-1] // 2
        return (torch.cat([fused[..., :width], fused[..., width:] + phi[:, None, :]], dim=-1),)

    @contextlib.contextmanager
    def _with_target_time(self, t: Tensor, s: Tensor) -> Iterator[None]:
        self._target_time = (t, s)
        try:
            yield
        finally:
            self._target_time = None

    def velocity(self, prefix: Any, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """F(x, t, s | prefix): one action-expert pass over the cached prefix."""
        with self._with_target_time(t, s):
            return self.expert_pass(prefix, x, t)

    def field(self, prefix: Any, timer: StageTimer | None = None) -> PrefixField:
        """The velocity field F(·, ·, · | prefix) as a core ``VelocityFn``."""
        return PrefixField(self, prefix, timer)

    # -- inference ---------------------------------------------------------------------------

    def noise_like(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """ε ~ N(0, I) of shape (B, chunk_size, noise_dim) on the policy's device."""
        shape = (batch_size, self.chunk_size, self.noise_dim)
        return torch.randn(shape, generator=generator).to(self.device)

    @torch.no_grad()
    def sample(self, batch: dict[str, Any], *, noise: Tensor | None = None,
               num_steps: int | None = None, sampler: Sampler | None = None,
               timer: StageTimer | None = None) -> Tensor:
        """Normalised, padded action chunks (B, chunk_size, noise_dim): one prefix pass and
        ``num_steps`` expert passes (default: the checkpoint's)."""
        num_steps = num_steps or self.default_num_steps
        sampler = sampler or self.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        self.eval()
        with timer.stage("prefix") if timer else contextlib.nullcontext():
            prefix = self.encode_prefix(batch)
        if noise is None:
            noise = self.noise_like(prefix.batch_size)
        field = self.field(prefix, timer)
        if sampler == "euler":
            return euler_sample(field, noise, num_steps)
        return snap_sample(field, noise, num_steps)

    def predict_action_chunk(self, batch: dict[str, Any], **kwargs: Any) -> Tensor:
        """Like lerobot's: normalised chunks cut to the action dim, (B, chunk_size, A).

        Keyword arguments go to ``sample``. Feed the result to the postprocessor to unnormalise.
        """
        return self.sample(batch, **kwargs)[:, :, : self.action_dim]

    # -- training ----------------------------------------------------------------------------

    def snapflow_loss(self, batch: dict[str, Any], config: SnapFlowLossConfig | None = None, *,
                      generator: torch.Generator | None = None, noise: Tensor | None = None,
                      time: Tensor | None = None,
                      fm_mask: Tensor | None = None) -> SnapFlowLossOutput:
        """SnapFlow loss on one batch: the prefix is encoded once and shared by all passes.

        ``noise``, ``time`` and ``fm_mask`` default to fresh draws (from ``generator`` when
        given): ε ~ N(0, I), t ~ 0.999·Beta(1.5, 1) + 0.001, FM routing with probability α.
        """
        config = config or SnapFlowLossConfig()
        self.check_batch(batch, need_actions=True)
        prefix = self.encode_prefix(batch)
        actions = self.prepare_action(batch)
        batch_size = actions.shape[0]
        if noise is None:
            noise = self.noise_like(batch_size, generator)
        if time is None:
            time = sample_fm_time(batch_size, generator=generator).to(self.device)
        if fm_mask is None:
            fm_mask = route_to_fm(batch_size, config.alpha, generator=generator).to(self.device)
        pad = batch.get(ACTION_IS_PAD)
        return snapflow_loss(self.field(prefix), actions, noise=noise, time=time,
                             fm_mask=fm_mask, config=config,
                             valid=None if pad is None else ~pad.bool())
