"""lerobot 0.4.4's pi0 and pi0.5 as SnapFlow velocity fields F(x, t, s | obs).

The adapters wrap (never copy) ``PI0Policy``/``PI05Policy`` and call lerobot's ``embed_prefix``,
``paligemma_with_expert`` and ``denoise_step``; stock transformers runs them through
``transformers_compat``. φ(t, s) is added where the model reads time, just before the first
layer that reads the sinusoidal time embedding (zero-initialised, so at init F(x, t, s) is
lerobot's ``denoise_step(x, t)`` bit for bit):

* pi0: the time half of ``action_time_mlp_in``'s input ``cat([action_emb, time_emb])``;
* pi0.5: ``time_mlp_in``'s input, the sinusoid behind the action expert's adaRMS condition.

The prefix (images + language; SigLIP + the VLM, no gradient) is encoded once per batch into a
KV cache that every expert pass reads (and, with ``transformers_compat``, never extends). pi0's
state token sits in the *suffix*: ``state_proj`` runs in every expert pass and trains.
Trainable by default: the action expert, the action/time projections (+ ``state_proj`` for
pi0) and φ.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from snapflow_ros.core import TargetTimeEmbedding
from snapflow_ros.policies import transformers_compat
from snapflow_ros.policies._quiet import quiet_stdout, without_root_log_lines
from snapflow_ros.policies.base import LANG_MASK, LANG_TOKENS, Sampler, SnapFlowPolicy

#: Files a pi checkpoint carries besides lerobot's: its tokenizer (offline loading) and, for the
#: built-in tiny shapes, which shape to build (config.json keeps lerobot's variant names).
TOKENIZER_DIR = "tokenizer"
SHAPE_FILE = "snapflow_pi_shape.json"
SHAPE_ATTR = "snapflow_shape"  # set on the lerobot policy by whoever built its modules
VISION_KEY_WARNING = "Vision embedding key might need handling"


@dataclass
class PiPrefix:
    """The encoded prefix: pad mask (B, P), the KV cache, pi0's padded state (B, S) or None."""

    pad_masks: Tensor
    kv_cache: Any  # transformers DynamicCache, one (K, V) per VLM layer
    state: Tensor | None

    @property
    def batch_size(self) -> int:
        return int(self.pad_masks.shape[0])

    def rows(self, index: Tensor) -> PiPrefix:
        from transformers.cache_utils import DynamicCache

        layers = [self.kv_cache[i] for i in range(len(self.kv_cache.layers))]
        cache = DynamicCache.from_legacy_cache(tuple((k[index], v[index]) for k, v in layers))
        return PiPrefix(self.pad_masks[index], cache,
                        None if self.state is None else self.state[index])


class _SnapFlowPi(SnapFlowPolicy):
    """What pi0 and pi0.5 share (their lerobot code is a near copy)."""

    time_layer: str  # the module whose input carries the sinusoidal time embedding
    bundled_tokenizer = TOKENIZER_DIR

    def __init__(self, policy: nn.Module, phi: TargetTimeEmbedding | None = None, *,
                 default_num_steps: int = 1, sampler: Sampler = "snap",
                 teacher: dict[str, Any] | None = None, phi_seed: int = 0) -> None:
        if getattr(policy.config, "type", None) != self.policy_type:
            raise TypeError(f"expected a lerobot {self.policy_type} policy, got "
                            f"{type(policy).__name__}")
        super().__init__(policy, phi, default_num_steps=default_num_steps, sampler=sampler,
                         teacher=teacher, phi_seed=phi_seed)
        layer = getattr(policy.model, self.time_layer)
        self._hook = layer.register_forward_pre_hook(self._add_target_time)

    # -- configuration -------------------------------------------------------------------

    @property
    def image_keys(self) -> list[str]:
        return [k for k in self.config.image_features if "empty_camera" not in k]

    def _trainable(self) -> list[nn.Module]:
        model = self.policy.model
        return [model.paligemma_with_expert.gemma_expert, model.action_in_proj,
                model.action_out_proj, self.phi]

    def freeze_for_snapflow(self) -> list[nn.Parameter]:
        """Train only the action expert, the action/time projections and φ."""
        self.requires_grad_(False)
        for module in self._trainable():
            module.requires_grad_(True)
        return [p for p in self.parameters() if p.requires_grad]

    def to_runtime(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        """Move to ``device``; bf16 as lerobot does it (norms and SigLIP embeddings stay fp32)."""
        self.to(device)
        if dtype == torch.bfloat16:
            self.policy.model.paligemma_with_expert.to_bfloat16_for_selected_params("bfloat16")
        self.policy.config.device = str(torch.device(device))
        return self.eval()

    # -- the velocity field --------------------------------------------------------------

    @torch.no_grad()
    def encode_prefix(self, batch: dict[str, Any]) -> PiPrefix:
        """Images + language → the VLM's KV cache: one pass, no gradient."""
        import importlib

        self.check_batch(batch)
        policy, model = self.policy, self.policy.model
        make_att_2d_masks = importlib.import_module(type(model).__module__).make_att_2d_masks
        images, img_masks = policy._preprocess_images(batch)
        embs, pad, att = model.embed_prefix(images, img_masks, batch[LANG_TOKENS],
                                            batch[LANG_MASK])
        mask = model._prepare_attention_masks_4d(make_att_2d_masks(pad, att))
        vlm = model.paligemma_with_expert.paligemma.language_model
        vlm.config._attn_implementation = "eager"
        _, cache = model.paligemma_with_expert.forward(
            attention_mask=mask, position_ids=torch.cumsum(pad, dim=1) - 1,
            past_key_values=None, inputs_embeds=[embs, None], use_cache=True)
        state = policy.prepare_state(batch) if self.policy_type == "pi0" else None
        return PiPrefix(pad, cache, state)

    def prepare_action(self, batch: dict[str, Any]) -> Tensor:
        return self.policy.prepare_action(batch)

    # -- checkpoint I/O ------------------------------------------------------------------

    @classmethod
    def load_lerobot(cls, directory: Path, device: str) -> tuple[nn.Module, dict[str, Any]]:
        """The lerobot policy in ``directory``; every weight must be in model.safetensors."""
        import importlib

        from lerobot.configs.policies import PreTrainedConfig
        from safetensors import safe_open

        from snapflow_ros.policies.checkpoint import CheckpointError
        from snapflow_ros.policies.tiny_pi import KINDS, tiny_shapes

        transformers_compat.install()
        config = PreTrainedConfig.from_pretrained(directory)
        config.device = device
        module_name, policy_name = KINDS[cls.policy_type][:2]
        policy_cls = getattr(importlib.import_module(module_name), policy_name)
        shape_file = directory / SHAPE_FILE
        shape = json.loads(shape_file.read_text())["shape"] if shape_file.is_file() else "full"
        scope = tiny_shapes(cls.policy_type) if shape == "tiny" else contextlib.nullcontext()
        # lerobot warns "Vision embedding key might need handling" for every pi checkpoint's
        # patch embedding; the strict check below says whether anything did not load
        with scope, quiet_stdout(), without_root_log_lines(VISION_KEY_WARNING):
            # strict below: lerobot keeps random weights on a mismatch
            policy = policy_cls.from_pretrained(directory, config=config, strict=False)
            with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
                fixed = policy._fix_pytorch_state_dict_keys(dict.fromkeys(f.keys()), config)
        stored = {k if k.startswith("model.") else f"model.{k}" for k in fixed}  # lerobot's rule
        params = policy.state_dict(keep_vars=True)
        loaded_storage = {params[k].data_ptr() for k in stored if k in params}
        # a weight tied to a stored one (PaliGemma's embed_tokens / lm_head) was loaded with it
        missing = sorted(k for k, v in params.items()
                         if k not in stored and v.data_ptr() not in loaded_storage)
        unexpected = sorted(stored - set(params))
        if missing or unexpected:
            raise CheckpointError(
                f"'{directory}/model.safetensors' does not match this {cls.policy_type}: "
                f"{len(missing)} weights missing (e.g. {missing[:3]}), {len(unexpected)} "
                f"unexpected (e.g. {unexpected[:3]})")
        tokenizer = directory / TOKENIZER_DIR
        overrides = {"tokenizer_processor": {"tokenizer_name": str(tokenizer)}} \
            if (tokenizer / "tokenizer.json").is_file() else {}
        setattr(policy, SHAPE_ATTR, shape)
        return policy.to(device), overrides

    def save_extra(self, directory: Path) -> None:
        """The tokenizer (offline loading) and the built-in shape marker, when known."""
        self.save_builtin_files(directory, getattr(self.policy, SHAPE_ATTR, "full"))

    @classmethod
    def save_builtin_files(cls, directory: Path, shape: str) -> None:
        """For the tiny shape: the shape marker (``load_lerobot`` builds tiny modules) and the
        local tokenizer."""
        from snapflow_ros.policies.tiny_pi import cached_pi_tokenizer_dir

        if shape == "tiny":
            (directory / SHAPE_FILE).write_text(json.dumps({"shape": "tiny"}) + "\n")
            shutil.copytree(cached_pi_tokenizer_dir(), directory / TOKENIZER_DIR)


class SnapFlowPi0(_SnapFlowPi):
    """lerobot's ``PI0Policy`` under SnapFlow."""

    policy_type = "pi0"
    time_layer = "action_time_mlp_in"

    def time_embedding_width(self) -> int:
        return int(self.policy.model.action_time_mlp_in.in_features // 2)

    def time_input(self) -> tuple[nn.Module, slice]:
        width = self.time_embedding_width()
        return self.policy.model.action_time_mlp_in, slice(width, 2 * width)

    def _trainable(self) -> list[nn.Module]:
        model = self.policy.model
        return [*super()._trainable(), model.state_proj, model.action_time_mlp_in,
                model.action_time_mlp_out]

    def _add_target_time(self, module: nn.Module, args: tuple[Tensor, ...]) -> Any:
        return self.add_to_time_half(module, args)

    def expert_pass(self, prefix: PiPrefix, x: Tensor, t: Tensor) -> Tensor:
        self.policy.model.paligemma_with_expert.gemma_expert.model.config \
            ._attn_implementation = "eager"
        return self.policy.model.denoise_step(prefix.state, prefix.pad_masks, prefix.kv_cache,
                                              x, t)


class SnapFlowPi05(_SnapFlowPi):
    """lerobot's ``PI05Policy`` under SnapFlow."""

    policy_type = "pi05"
    time_layer = "time_mlp_in"

    def time_embedding_width(self) -> int:
        return int(self.policy.model.time_mlp_in.in_features)

    def time_input(self) -> tuple[nn.Module, slice]:
        return self.policy.model.time_mlp_in, slice(0, self.time_embedding_width())

    def _trainable(self) -> list[nn.Module]:
        model = self.policy.model
        return [*super()._trainable(), model.time_mlp_in, model.time_mlp_out]

    def _add_target_time(self, module: nn.Module, args: tuple[Tensor, ...]) -> Any:
        (time_emb,) = args
        phi = self.target_time(time_emb.dtype)
        return None if phi is None else (time_emb + phi,)

    def expert_pass(self, prefix: PiPrefix, x: Tensor, t: Tensor) -> Tensor:
        return self.policy.model.denoise_step(prefix.pad_masks, prefix.kv_cache, x, t)
