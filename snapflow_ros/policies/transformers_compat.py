"""lerobot 0.4.4's pi0 / pi0.5 on PyPI's transformers 4.57: the one place that adapts them.

**Why.** lerobot's pi0 and pi0.5 are written against a patched transformers branch (openpi's
``transformers_replace``, HF's ``fix/lerobot_openpi``, both ~4.53, not on PyPI): their
constructors refuse to run without ``transformers.models.siglip.check``, and their Gemma code
needs behaviour stock transformers does not have. Without this module they cannot be built at
all; with only the check faked, the first denoise step is numerically wrong and the second
crashes. There is no configuration option that gives this behaviour, hence this module.

**What changes**, per model instance, after lerobot built ``PaliGemmaWithExpertModel`` and
before any weights load (``install`` swaps lerobot's module-global class for a subclass that
runs ``adapt`` after ``__init__``). Stock transformers classes are untouched, so other Gemma
users in the process are unaffected; two names are *added* to transformers' namespace:

* ``transformers.models.siglip.check`` (the module lerobot asks for; reports True);
* ``modeling_gemma._gated_residual(x, y, gate)``: ``x + y * gate`` (``x + y`` without a gate).

Per instance (VLM language model and action expert):

* every RMSNorm becomes ``AdaptiveNorm``: ``norm(x, cond=None) -> (y, gate)``. Without a
  condition it is Gemma's RMSNorm (``x / rms(x) * (1 + weight)`` in float32, gate None); with
  ``use_adarms`` (pi0.5's expert) it has no weight but ``dense = Linear(cond_dim, 3 * dim)``:
  ``scale, shift, gate = dense(cond)``, ``y = x / rms(x) * (1 + scale) + shift``;
* the decoder layers use those norms with gated residuals (``adarms_cond`` reaches every norm);
* the attention reads a KV cache without appending to it when ``use_cache=False`` (the prefix
  cache is shared by every denoise step);
* ``GemmaModel.forward`` does not multiply its input by sqrt(hidden) (lerobot scales language
  embeddings itself) and applies the final (adaptive) norm;
* ``get_image_features`` does not divide by sqrt(hidden);
* with bfloat16 weights, the layer inputs and SigLIP's embeddings are cast to bfloat16.

**Versions.** transformers >= 4.57.1, < 4.58 and lerobot 0.4.4 (the internals relied on are
those versions'); others are refused with a message. A real patched branch (a ``check`` module
file *and* a Gemma RMSNorm taking ``cond``) is used as it is: ``install`` then does nothing.
``pi0_fast`` is not adapted (lerobot's pi0_fast would pass the check and run wrongly).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import types
from typing import Any

import torch
from torch import Tensor, nn

SUPPORTED_TRANSFORMERS = ((4, 57, 1), (4, 58, 0))  # [low, high)
SUPPORTED_LEROBOT = "0.4.4"
LEROBOT_MODULES = ("lerobot.policies.pi0.modeling_pi0", "lerobot.policies.pi05.modeling_pi05")
CHECK_MODULE = "transformers.models.siglip.check"


class TransformersCompatError(RuntimeError):
    """The installed transformers/lerobot cannot run pi0/pi0.5 here; the message says why."""


def _gated_residual(x: Tensor | None, y: Tensor | None, gate: Tensor | None) -> Tensor | None:
    """``x + y * gate`` (``x + y`` without a gate; the other one when one is None)."""
    if x is None or y is None:
        return x if y is None else y
    return x + y if gate is None else x + y * gate


class AdaptiveNorm(nn.Module):
    """Gemma's RMSNorm, or its adaptive form: ``forward(x, cond) -> (y, gate)``.

    Plain (``cond_dim`` None): ``y = x / sqrt(mean(x²) + eps) * (1 + weight)``, gate None.
    Adaptive: ``scale, shift, gate = dense(cond)`` (in that order along the last dim, each
    ``dim`` wide; broadcast over the sequence for 3-D ``x``), ``y = x / rms(x) * (1 + scale) +
    shift``. The normalisation runs in float32; ``y`` and the gate come back in ``x``'s dtype.
    (Not named ``...RMSNorm``: transformers' weight init would then zero ``weight``.)
    """

    def __init__(self, dim: int, eps: float = 1e-6, cond_dim: int | None = None) -> None:
        super().__init__()
        self.eps, self.cond_dim = eps, cond_dim
        if cond_dim is None:
            self.weight = nn.Parameter(torch.zeros(dim))
            self.dense = None
        else:
            self.dense = nn.Linear(cond_dim, 3 * dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.dense is None:
            return (normed * (1.0 + self.weight.float())).to(x.dtype), None
        if cond is None:
            raise ValueError("an adaptive norm needs its condition (adarms_cond)")
        if cond.shape[-1] != self.cond_dim:
            raise ValueError(f"adarms_cond has {cond.shape[-1]} features, expected "
                             f"{self.cond_dim}")
        mod = self.dense(cond.to(self.dense.weight.dtype))
        if x.ndim == 3:
            mod = mod.unsqueeze(1)
        scale, shift, gate = mod.chunk(3, dim=-1)
        return (normed * (1.0 + scale.float()) + shift.float()).to(x.dtype), gate.to(x.dtype)


def _modeling_gemma() -> Any:
    from transformers.models.gemma import modeling_gemma

    return modeling_gemma


def _classes() -> dict[str, type]:
    """The per-instance classes, built lazily on transformers' own Gemma/PaliGemma classes."""
    cached = getattr(_classes, "_cache", None)
    if cached is not None:
        return cached
    from transformers.cache_utils import DynamicCache
    from transformers.masking_utils import create_causal_mask
    from transformers.modeling_outputs import BaseModelOutputWithPast
    from transformers.models.paligemma.modeling_paligemma import PaliGemmaModel

    mg = _modeling_gemma()

    class CompatAttention(mg.GemmaAttention):
        """Gemma attention that reads a cache without appending to it when not caching."""

        def forward(self, hidden_states: Tensor, position_embeddings: tuple[Tensor, Tensor],
                    attention_mask: Tensor | None, past_key_values: Any = None,
                    cache_position: Tensor | None = None, use_cache: bool = False,
                    **kwargs: Any) -> tuple[Tensor, Tensor | None]:
            shape = (*hidden_states.shape[:-1], -1, self.head_dim)
            q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
            k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
            v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
            cos, sin = position_embeddings
            q, k = mg.apply_rotary_pos_emb(q, k, cos, sin)
            if past_key_values is not None:
                if use_cache:
                    k, v = past_key_values.update(k, v, self.layer_idx, {
                        "sin": sin, "cos": cos, "cache_position": cache_position})
                else:  # the shared prefix cache: read, never extended
                    cached_k, cached_v = past_key_values[self.layer_idx]
                    k, v = torch.cat([cached_k, k], dim=2), torch.cat([cached_v, v], dim=2)
            out, weights = mg.eager_attention_forward(
                self, q, k, v, attention_mask, scaling=self.scaling,
                dropout=self.attention_dropout if self.training else 0.0)
            out = out.reshape(*hidden_states.shape[:-1], -1).contiguous()
            return self.o_proj(out), weights

    class CompatDecoderLayer(mg.GemmaDecoderLayer):
        """Pre-norm layer with adaptive norms and gated residuals."""

        def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None,
                    position_ids: Tensor | None = None, past_key_values: Any = None,
                    use_cache: bool = False, cache_position: Tensor | None = None,
                    position_embeddings: tuple[Tensor, Tensor] | None = None,
                    adarms_cond: Tensor | None = None, **kwargs: Any) -> Tensor:
            residual = hidden_states
            h, gate = self.input_layernorm(hidden_states, cond=adarms_cond)
            h, _ = self.self_attn(hidden_states=h, position_embeddings=position_embeddings,
                                  attention_mask=attention_mask, past_key_values=past_key_values,
                                  cache_position=cache_position, use_cache=use_cache)
            h = _gated_residual(residual, h, gate)
            residual = h
            h, gate = self.post_attention_layernorm(h, cond=adarms_cond)
            return _gated_residual(residual, self.mlp(h), gate)

    class CompatGemmaModel(mg.GemmaModel):
        """Gemma without the sqrt(hidden) input scaling, with ``adarms_cond``."""

        def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                    position_ids: Tensor | None = None, past_key_values: Any = None,
                    inputs_embeds: Tensor | None = None, use_cache: bool | None = None,
                    cache_position: Tensor | None = None, adarms_cond: Tensor | None = None,
                    **kwargs: Any) -> Any:
            if inputs_embeds is None:
                inputs_embeds = self.embed_tokens(input_ids)
            if use_cache and past_key_values is None:
                past_key_values = DynamicCache(config=self.config)
            if cache_position is None:
                seen = past_key_values.get_seq_length() if past_key_values is not None else 0
                cache_position = torch.arange(seen, seen + inputs_embeds.shape[1],
                                              device=inputs_embeds.device)
            if position_ids is None:
                position_ids = cache_position.unsqueeze(0)
            mask = create_causal_mask(config=self.config, input_embeds=inputs_embeds,
                                      attention_mask=attention_mask,
                                      cache_position=cache_position,
                                      past_key_values=past_key_values, position_ids=position_ids)
            h = inputs_embeds
            if self.layers and self.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16:
                h = h.to(torch.bfloat16)
            position_embeddings = self.rotary_emb(h, position_ids)
            for layer in self.layers[: self.config.num_hidden_layers]:
                h = layer(h, attention_mask=mask, position_ids=position_ids,
                          past_key_values=past_key_values, use_cache=use_cache,
                          cache_position=cache_position,
                          position_embeddings=position_embeddings, adarms_cond=adarms_cond)
            h, _ = self.norm(h, cond=adarms_cond)
            return BaseModelOutputWithPast(last_hidden_state=h,
                                           past_key_values=past_key_values if use_cache else None)

    class CompatPaliGemmaModel(PaliGemmaModel):
        """PaliGemma whose image features are not divided by sqrt(hidden)."""

        def get_image_features(self, pixel_values: Tensor, **kwargs: Any) -> Tensor:
            return self.multi_modal_projector(self.vision_tower(pixel_values).last_hidden_state)

    cached = {"attention": CompatAttention, "layer": CompatDecoderLayer,
              "gemma": CompatGemmaModel, "paligemma": CompatPaliGemmaModel}
    _classes._cache = cached  # type: ignore[attr-defined]
    return cached


def _norm_from(old: nn.Module, cond_dim: int | None, init_std: float) -> AdaptiveNorm:
    norm = AdaptiveNorm(old.weight.shape[0], eps=old.eps, cond_dim=cond_dim)
    if cond_dim is None:
        norm.weight.data.copy_(old.weight.data.float())
    else:  # what transformers' init gives the patched branch's Linear: N(0, std), bias 0
        nn.init.normal_(norm.dense.weight, 0.0, init_std)
        nn.init.zeros_(norm.dense.bias)
    return norm.to(old.weight.device)


def adapt(paligemma_with_expert: nn.Module) -> None:
    """Give one lerobot ``PaliGemmaWithExpertModel`` the patched branch's behaviour."""
    classes = _classes()
    pwe = paligemma_with_expert
    for gemma in (pwe.paligemma.model.language_model, pwe.gemma_expert.model):
        config = gemma.config
        cond_dim = config.adarms_cond_dim if getattr(config, "use_adarms", False) else None
        std = float(getattr(config, "initializer_range", 0.02))
        gemma.__class__ = classes["gemma"]
        for layer in gemma.layers:
            layer.__class__ = classes["layer"]
            layer.self_attn.__class__ = classes["attention"]
            layer.input_layernorm = _norm_from(layer.input_layernorm, cond_dim, std)
            layer.post_attention_layernorm = _norm_from(layer.post_attention_layernorm,
                                                        cond_dim, std)
        gemma.norm = _norm_from(gemma.norm, cond_dim, std)
    pwe.paligemma.model.__class__ = classes["paligemma"]
    vision = pwe.paligemma.model.vision_tower.vision_model

    def to_encoder_dtype(module: nn.Module, args: Any, out: Tensor) -> Tensor:
        layers = vision.encoder.layers
        return out.to(layers[0].self_attn.q_proj.weight.dtype) if len(layers) else out

    vision.embeddings.register_forward_hook(to_encoder_dtype)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def patched_branch_present() -> bool:
    """True when transformers already is the patched branch (then nothing is changed)."""
    module = sys.modules.get(CHECK_MODULE)
    if module is not None:
        has_check = not getattr(module, "__snapflow_compat__", False)
    else:
        try:
            has_check = importlib.util.find_spec(CHECK_MODULE) is not None
        except (ImportError, ValueError):
            has_check = False
    norm = _modeling_gemma().GemmaRMSNorm
    takes_cond = "cond" in inspect.signature(norm.forward).parameters
    if has_check != takes_cond:
        raise TransformersCompatError(
            "transformers is half patched (a siglip 'check' module without the adaptive Gemma "
            "RMSNorm, or the other way round): reinstall the pinned transformers "
            "(bash scripts/setup.sh) or the complete patched branch")
    return has_check


def check_versions(transformers_version: str, lerobot_version: str) -> None:
    """Refuse versions whose internals this module was not written against."""
    low, high = SUPPORTED_TRANSFORMERS
    if not low <= _version(transformers_version) < high:
        raise TransformersCompatError(
            f"pi0/pi0.5 need transformers >= {'.'.join(map(str, low))}, < "
            f"{'.'.join(map(str, high))} here (installed: {transformers_version}); install the "
            f"pinned one (constraints.txt) or lerobot's patched branch")
    if lerobot_version != SUPPORTED_LEROBOT:
        raise TransformersCompatError(
            f"pi0/pi0.5 support is written against lerobot {SUPPORTED_LEROBOT} (installed: "
            f"{lerobot_version})")


def install() -> bool:
    """Make lerobot's pi0 and pi0.5 constructible and correct on this transformers.

    Idempotent. Returns True when the compatibility layer is in use, False when a real patched
    transformers branch is installed (nothing changed). Raises ``TransformersCompatError``.
    """
    import lerobot
    import transformers

    if patched_branch_present():
        return False
    check_versions(transformers.__version__, lerobot.__version__)
    if CHECK_MODULE not in sys.modules:
        check = types.ModuleType(CHECK_MODULE, "snapflow_ros: pi0/pi0.5 compatibility layer")
        check.check_whether_transformers_replace_is_installed_correctly = lambda: True
        check.__snapflow_compat__ = True
        sys.modules[CHECK_MODULE] = check
    mg = _modeling_gemma()
    if not hasattr(mg, "_gated_residual"):
        mg._gated_residual = _gated_residual
    for name in LEROBOT_MODULES:
        module = importlib.import_module(name)
        base = module.PaliGemmaWithExpertModel
        if getattr(base, "__snapflow_compat__", False):
            continue

        class Adapted(base):  # type: ignore[misc, valid-type]
            __snapflow_compat__ = True

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                adapt(self)

        Adapted.__name__ = Adapted.__qualname__ = base.__name__
        module.PaliGemmaWithExpertModel = Adapted
    return True
