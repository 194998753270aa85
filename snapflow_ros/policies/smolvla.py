"""lerobot 0.4.4's SmolVLA as a SnapFlow velocity field F(x, t, s | obs).

The adapter wraps (never copies) ``SmolVLAPolicy``: it calls lerobot's ``embed_prefix``,
``vlm_with_expert`` and ``denoise_step`` and changes one thing, through a forward pre-hook on
``action_time_mlp_in``: the target-time embedding φ(t, s) is added to the sinusoidal *time
embedding* that ``embed_suffix`` concatenates with the action embedding before the fusion MLP
(``cat([action_emb, time_emb + φ])``). φ's last layer is zero-initialised, so at init
F(x, t, s) equals lerobot's ``denoise_step(x, t)`` bit for bit. The lerobot state dict is not
touched: φ lives beside the policy and is saved in the SnapFlow sidecar.

::

    batch ──► encode_prefix (once: SigLIP + VLM layers + state_proj, KV cache, no grad)
                   │ kv cache, shared by every expert pass below
                   ▼
    (x, t, s) ──► expert pass: embed_suffix[+φ(t, s)] → action expert → v  (B, H, 32)

**State projection.** SmolVLA projects the robot state into the *prefix* (``state_proj``).
SnapFlow encodes the prefix once per batch without gradient and shares its KV cache across the
gradient pass and the two stop-gradient passes, so ``state_proj`` (like the VLM) stays frozen
at the teacher's weights; the state still conditions the actions through the cached prefix.
Trainable by default: the action expert, ``action_in_proj``, ``action_out_proj``,
``action_time_mlp_in/out`` and φ.

Sampling: ``sampler="snap"`` jumps t_i → t_{i+1} with s = t_{i+1} (1 step by default for
SnapFlow checkpoints); ``sampler="euler"`` is the teacher's Euler loop with s = t.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

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

OBS_STATE = "observation.state"
ACTION = "action"
ACTION_IS_PAD = "action_is_pad"
LANG_TOKENS = "observation.language.tokens"
LANG_MASK = "observation.language.attention_mask"
_EMPTY_CAMERA = "observation.images.empty_camera_"


@dataclass
class SmolVLAPrefix:
    """The encoded observation prefix: pad mask (B, L) and the per-layer KV cache."""

    pad_masks: Tensor
    kv_cache: dict[int, dict[str, Tensor]]

    @property
    def batch_size(self) -> int:
        return int(self.pad_masks.shape[0])

    def rows(self, index: Tensor) -> SmolVLAPrefix:
        """The prefix of batch rows ``index``."""
        kv = {layer: {k: v[index] for k, v in entry.items()}
              for layer, entry in self.kv_cache.items()}
        return SmolVLAPrefix(self.pad_masks[index], kv)


class SmolVLAField:
    """F(x, t, s) for one encoded prefix; ``rows`` restricts it to a subset of the batch."""

    def __init__(self, owner: SnapFlowSmolVLA, prefix: SmolVLAPrefix, timer: StageTimer | None):
        self._owner, self.prefix, self._timer = owner, prefix, timer

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        if self._timer is None:
            return self._owner.velocity(self.prefix, x, t, s)
        with self._timer.stage("expert"):
            return self._owner.velocity(self.prefix, x, t, s)

    def rows(self, index: Tensor) -> SmolVLAField:
        return SmolVLAField(self._owner, self.prefix.rows(index), self._timer)


class SnapFlowSmolVLA(nn.Module):
    """A lerobot ``SmolVLAPolicy`` extended with SnapFlow's target-time embedding φ.

    Batches are lerobot batches *after* the policy's preprocessor (normalised, tokenised,
    batched): ``observation.images.<cam>`` (B, 3, H, W) in [0, 1], ``observation.state``
    (B, S), language tokens/mask, and for training ``action`` (B, H, A) chunks.
    """

    policy_type = "smolvla"

    def __init__(
        self,
        policy: nn.Module,
        phi: TargetTimeEmbedding | None = None,
        *,
        default_num_steps: int = 1,
        sampler: Sampler = "snap",
        teacher: dict[str, Any] | None = None,
        phi_seed: int = 0,
    ) -> None:
        super().__init__()
        config = policy.config
        if getattr(config, "type", None) != "smolvla":
            raise TypeError(f"expected a lerobot SmolVLAPolicy, got {type(policy).__name__}")
        if config.adapt_to_pi_aloha:
            raise ValueError(
                "adapt_to_pi_aloha=True is not supported by snapflow_ros; convert the data to "
                "the robot's own joint space instead"
            )
        config.use_cache = True  # the prefix KV cache is how SnapFlow shares the prefix
        self.policy = policy
        model = policy.model
        if phi is None:
            phi_config = TargetTimeEmbeddingConfig(
                width=model.vlm_with_expert.expert_hidden_size,
                min_period=config.min_period,
                max_period=config.max_period,
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(phi_seed)  # reproducible fc1 init; fc2 is zero anyway
                phi = TargetTimeEmbedding(phi_config)
        width = model.action_time_mlp_in.in_features // 2
        if phi.config.width != width:
            raise ValueError(
                f"target-time embedding width {phi.config.width} does not match this SmolVLA's "
                f"time embedding width {width}"
            )
        self.phi = phi.to(next(model.action_time_mlp_in.parameters()).device)
        self.set_sampling(default_num_steps, sampler)
        self.teacher = dict(teacher or {})
        self._target_time: tuple[Tensor, Tensor] | None = None
        self._hook = model.action_time_mlp_in.register_forward_pre_hook(self._add_target_time)

    # -- configuration -------------------------------------------------------------------

    @property
    def config(self) -> Any:
        """The lerobot ``SmolVLAConfig``."""
        return self.policy.config

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @property
    def action_dim(self) -> int:
        return int(self.config.action_feature.shape[0])

    @property
    def image_keys(self) -> list[str]:
        """The camera features the policy reads (lerobot's auto-added empty cameras excluded)."""
        return [k for k in self.config.image_features if not k.startswith(_EMPTY_CAMERA)]

    def set_sampling(self, num_steps: int, sampler: Sampler = "snap") -> None:
        """Default step count and sampler used by ``sample`` when none is given."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        self.default_num_steps, self.sampler = int(num_steps), sampler

    def to_runtime(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        """Move to ``device`` and run the VLM and action expert in ``dtype`` (bf16 on CUDA).

        The projections, the time MLP and φ stay float32, as in lerobot's own SmolVLA with
        pretrained (bf16) VLM weights; lerobot casts activations at each boundary.
        """
        self.to(device)
        self.policy.model.vlm_with_expert.to(dtype)
        self.policy.config.device = str(torch.device(device))
        return self.eval()

    def freeze_for_snapflow(self) -> list[nn.Parameter]:
        """Train only the action expert, its projections/time MLP and φ; return those params."""
        model = self.policy.model
        trainable = [
            model.vlm_with_expert.lm_expert,
            model.action_in_proj,
            model.action_out_proj,
            model.action_time_mlp_in,
            model.action_time_mlp_out,
            self.phi,
        ]
        self.requires_grad_(False)
        for module in trainable:
            module.requires_grad_(True)
        return [p for p in self.parameters() if p.requires_grad]

    # -- the velocity field --------------------------------------------------------------

    def _add_target_time(self, module: nn.Module, args: tuple[Tensor, ...]) -> Any:
        """Pre-hook on ``action_time_mlp_in``: its input is cat([action_emb, time_emb])."""
        if self._target_time is None:
            return None
        (fused,) = args
        width = fused.shape[-1] // 2
        phi = self.phi(*self._target_time).to(fused.dtype)[:, None, :]
        return (torch.cat([fused[..., :width], fused[..., width:] + phi], dim=-1),)

    @contextlib.contextmanager
    def _with_target_time(self, t: Tensor, s: Tensor) -> Iterator[None]:
        self._target_time = (t, s)
        try:
            yield
        finally:
            self._target_time = None

    def velocity(self, prefix: SmolVLAPrefix, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """F(x, t, s | prefix): one action-expert pass over the cached prefix, (B, H, 32)."""
        with self._with_target_time(t, s):
            return self.policy.model.denoise_step(prefix.pad_masks, prefix.kv_cache, x, t)

    def field(self, prefix: SmolVLAPrefix, timer: StageTimer | None = None) -> SmolVLAField:
        """The velocity field F(·, ·, · | prefix) as a core ``VelocityFn``."""
        return SmolVLAField(self, prefix, timer)

    # -- inputs and prefix ---------------------------------------------------------------

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
            if actions.ndim != 3 or actions.shape[1] != self.config.chunk_size:
                raise ValueError(
                    f"'{ACTION}' must be a chunk (B, {self.config.chunk_size}, A), got "
                    f"{tuple(actions.shape)}; load the dataset with delta_timestamps for "
                    f"'action' covering chunk_size={self.config.chunk_size} steps"
                )

    @torch.no_grad()
    def encode_prefix(self, batch: dict[str, Any]) -> SmolVLAPrefix:
        """Images + language + state → prefix KV cache: one VLM pass, no gradient."""
        from lerobot.policies.smolvla.modeling_smolvla import make_att_2d_masks

        self.check_batch(batch)
        policy, model = self.policy, self.policy.model
        images, img_masks = policy.prepare_images(batch)
        state = policy.prepare_state(batch)
        embs, pad_masks, att_masks = model.embed_prefix(
            images, img_masks, batch[LANG_TOKENS], batch[LANG_MASK], state=state
        )
        _, kv_cache = model.vlm_with_expert.forward(
            attention_mask=make_att_2d_masks(pad_masks, att_masks),
            position_ids=torch.cumsum(pad_masks, dim=1) - 1,
            past_key_values=None,
            inputs_embeds=[embs, None],
            use_cache=True,
            fill_kv_cache=True,
        )
        return SmolVLAPrefix(pad_masks, kv_cache)

    # -- inference -----------------------------------------------------------------------

    def noise_like(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """ε ~ N(0, I) of shape (B, chunk_size, max_action_dim) on the policy's device."""
        shape = (batch_size, self.config.chunk_size, self.config.max_action_dim)
        return torch.randn(shape, generator=generator).to(self.device)

    @torch.no_grad()
    def sample(
        self,
        batch: dict[str, Any],
        *,
        noise: Tensor | None = None,
        num_steps: int | None = None,
        sampler: Sampler | None = None,
        timer: StageTimer | None = None,
    ) -> Tensor:
        """Normalised, padded action chunks (B, chunk_size, max_action_dim).

        Runs one prefix pass and ``num_steps`` expert passes (default: the checkpoint's).
        """
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

    # -- training ------------------------------------------------------------------------

    def snapflow_loss(
        self,
        batch: dict[str, Any],
        config: SnapFlowLossConfig | None = None,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        time: Tensor | None = None,
        fm_mask: Tensor | None = None,
    ) -> SnapFlowLossOutput:
        """SnapFlow loss on one batch: the prefix is encoded once and shared by all passes.

        ``noise``, ``time`` and ``fm_mask`` default to fresh draws (from ``generator`` when
        given): ε ~ N(0, I), t ~ 0.999·Beta(1.5, 1) + 0.001, FM routing with probability α.
        """
        config = config or SnapFlowLossConfig()
        self.check_batch(batch, need_actions=True)
        prefix = self.encode_prefix(batch)
        actions = self.policy.prepare_action(batch)
        batch_size = actions.shape[0]
        if noise is None:
            noise = self.noise_like(batch_size, generator)
        if time is None:
            time = sample_fm_time(batch_size, generator=generator).to(self.device)
        if fm_mask is None:
            fm_mask = route_to_fm(batch_size, config.alpha, generator=generator).to(self.device)
        pad = batch.get(ACTION_IS_PAD)
        return snapflow_loss(
            self.field(prefix),
            actions,
            noise=noise,
            time=time,
            fm_mask=fm_mask,
            config=config,
            valid=None if pad is None else ~pad.bool(),
        )
