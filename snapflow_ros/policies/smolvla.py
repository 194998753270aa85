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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from snapflow_ros.core import TargetTimeEmbedding
from snapflow_ros.policies._quiet import quiet_stdout
from snapflow_ros.policies.base import LANG_MASK, LANG_TOKENS, Sampler, SnapFlowPolicy

#: The VLM's config + tokenizer + processor files inside a checkpoint directory, so that it
#: loads offline anywhere (SmolVLA reads them at construction).
VLM_DIR = "vlm"
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


class SnapFlowSmolVLA(SnapFlowPolicy):
    """lerobot's ``SmolVLAPolicy`` under SnapFlow (see the module docstring).

    Batches: ``observation.images.<cam>`` (B, 3, H, W) in [0, 1], ``observation.state``
    (B, S), language tokens/mask, and for training ``action`` (B, H, A) chunks.
    """

    policy_type = "smolvla"
    bundled_vlm = VLM_DIR
    bundled_tokenizer = VLM_DIR

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
        config = policy.config
        if getattr(config, "type", None) != "smolvla":
            raise TypeError(f"expected a lerobot SmolVLAPolicy, got {type(policy).__name__}")
        if config.adapt_to_pi_aloha:
            raise ValueError(
                "adapt_to_pi_aloha=True is not supported by snapflow_ros; convert the data to "
                "the robot's own joint space instead"
            )
        config.use_cache = True  # the prefix KV cache is how SnapFlow shares the prefix
        super().__init__(policy, phi, default_num_steps=default_num_steps, sampler=sampler,
                         teacher=teacher, phi_seed=phi_seed)
        time_mlp = policy.model.action_time_mlp_in
        self._hook = time_mlp.register_forward_pre_hook(self.add_to_time_half)

    # -- configuration -------------------------------------------------------------------

    def time_embedding_width(self) -> int:
        """SmolVLA fuses cat([action_emb, time_emb]): the time half of the MLP's input."""
        return int(self.policy.model.action_time_mlp_in.in_features // 2)

    def time_input(self) -> tuple[nn.Module, slice]:
        width = self.time_embedding_width()
        return self.policy.model.action_time_mlp_in, slice(width, 2 * width)

    @property
    def image_keys(self) -> list[str]:
        """The camera features the policy reads (lerobot's auto-added empty cameras excluded)."""
        return [k for k in self.config.image_features if not k.startswith(_EMPTY_CAMERA)]

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

    def expert_pass(self, prefix: SmolVLAPrefix, x: Tensor, t: Tensor) -> Tensor:
        """lerobot's ``denoise_step`` over the cached prefix, (B, H, 32)."""
        return self.policy.model.denoise_step(prefix.pad_masks, prefix.kv_cache, x, t)

    def prepare_action(self, batch: dict[str, Any]) -> Tensor:
        """lerobot's padded action targets (B, chunk_size, max_action_dim)."""
        return self.policy.prepare_action(batch)

    # -- inputs and prefix ---------------------------------------------------------------

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

    def sync_free(self) -> contextlib.AbstractContextManager[None]:
        """transformers' SmolVLM vision tower syncs twice per image; this routes the images
        through ``smolvla_vision.embed_image`` (identical results, no sync) for the block."""
        from snapflow_ros.policies.smolvla_vision import sync_free_images

        return sync_free_images(self)

    # -- checkpoint I/O ------------------------------------------------------------------

    @classmethod
    def load_lerobot(cls, directory: Path, device: str) -> tuple[nn.Module, dict[str, Any]]:
        """``SmolVLAPolicy`` from ``directory`` (its bundled ``vlm/`` when present, so nothing
        is downloaded); every weight must be in model.safetensors."""
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
        from safetensors import safe_open

        from snapflow_ros.policies.checkpoint import CheckpointError

        config = PreTrainedConfig.from_pretrained(directory)
        bundled = directory / VLM_DIR
        vlm_dir = bundled if (bundled / "config.json").is_file() else None
        if vlm_dir is not None:
            config.vlm_model_name = str(vlm_dir)
        config.load_vlm_weights = False  # every weight comes from model.safetensors
        config.device = device
        try:
            with quiet_stdout():
                policy = SmolVLAPolicy.from_pretrained(directory, config=config)
        except RuntimeError as err:  # shape mismatches between config.json and the weights
            raise CheckpointError(
                f"'{directory}/model.safetensors' does not match its config.json: {err}"
            ) from err
        with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
            stored = set(f.keys())
        missing = sorted(k for k in policy.state_dict() if k not in stored and "lm_head" not in k)
        if missing:
            raise CheckpointError(
                f"'{directory}/model.safetensors' does not match this SmolVLA config: "
                f"{len(missing)} weights missing, e.g. {missing[:3]}"
            )
        overrides = {} if vlm_dir is None else {
            "tokenizer_processor": {"tokenizer_name": str(vlm_dir)}}
        return policy, overrides

    def save_extra(self, directory: Path) -> None:
        """The VLM's config, tokenizer and processor files (``vlm/``): offline loading."""
        vlm = self.policy.model.vlm_with_expert
        vlm.config.save_pretrained(directory / VLM_DIR)
        vlm.processor.save_pretrained(directory / VLM_DIR)
