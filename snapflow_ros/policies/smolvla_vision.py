"""SmolVLA's image tower without host syncs, for the static engines (CUDA graph capture).

**Why.** lerobot's ``SmolVLMWithExpertModel.embed_image`` runs transformers' SmolVLM vision
transformer with ``patch_attention_mask=None``. transformers (4.57) then builds an all-True
patch mask on the host and copies it to the device (a synchronous copy from pageable memory),
and its ``SmolVLMVisionEmbeddings`` derives the position ids per image from that mask with
``torch.arange(mask.sum())`` (a device scalar read on the host) and a boolean index-put (a
``nonzero``). Each is a host sync: a CUDA graph capture refuses them, and outside a graph they
stall the step twice per camera. For a full mask the position ids depend on the image size
alone, so they can be computed from Python ints on the device.

**What.** ``embed_image(vlm_with_expert, image)`` is lerobot's ``embed_image`` (vision embeddings
→ encoder → post-layernorm → connector) with those position ids computed without a sync, in the
same dtype and with the same operations as transformers, so the result is identical (tested
with ``torch.equal`` in float32 and bfloat16 against lerobot's own). ``sync_free_images(policy)``
is a context manager that routes lerobot's calls through it for one model instance (an
instance attribute, removed on exit); nothing is changed outside that block or in the
installed libraries. ``StaticEngine`` enters it around its prefix; the eager engine never does,
so it stays lerobot's reference path.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn


def position_ids(embeddings: nn.Module, pixel_values: Tensor) -> Tensor:
    """SigLIP position ids (B, h·w) of ``SmolVLMVisionEmbeddings`` for an all-True patch mask.

    transformers' formula: fractional patch coordinates ``arange(n) / n * (1 - 1e-6)`` in the
    pixels' dtype, bucketised against ``num_patches_per_side`` boundaries. Here ``n`` is a
    Python int for ``arange`` and a device scalar for the division, as in transformers (where
    it is ``mask.sum()``), so the arithmetic and its rounding are the same.
    """
    batch, _, height, width = pixel_values.shape
    side, device = embeddings.num_patches_per_side, pixel_values.device
    n_h, n_w = height // embeddings.patch_size, width // embeddings.patch_size
    boundaries = torch.arange(1 / side, 1.0, 1 / side, device=device)
    coords = []
    for n in (n_h, n_w):
        count = torch.full((), n, dtype=torch.int64, device=device)
        indices = torch.arange(n, device=device, dtype=pixel_values.dtype)
        coords.append(torch.bucketize(indices / count * (1 - 1e-6), boundaries, right=True))
    ids = (coords[0][:, None] * side + coords[1]).flatten()
    return ids.unsqueeze(0).expand(batch, -1)


def embed_image(vlm_with_expert: nn.Module, image: Tensor) -> Tensor:
    """lerobot's ``embed_image`` (B, 3, H, W) → (B, tokens, hidden), with no host sync."""
    from transformers.modeling_attn_mask_utils import _prepare_4d_attention_mask

    vlm = vlm_with_expert.get_vlm_model()
    tower = vlm.vision_model
    pixels = image.to(dtype=tower.dtype)
    embeddings = tower.embeddings
    hidden = embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)
    hidden = hidden + embeddings.position_embedding(position_ids(embeddings, pixels))
    mask = None  # flash attention: a full mask is passed as None (transformers does the same)
    if tower.config._attn_implementation != "flash_attention_2":
        full = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        mask = _prepare_4d_attention_mask(full, hidden.dtype)
    hidden = tower.encoder(inputs_embeds=hidden, attention_mask=mask).last_hidden_state
    return vlm.connector(tower.post_layernorm(hidden))


#: one bound ``embed_image`` per model, so that ``torch.compile`` sees the same function
#: object on every call (a new one would fail its guards and recompile)
_BOUND: weakref.WeakKeyDictionary[nn.Module, Callable[[Tensor], Tensor]] = (
    weakref.WeakKeyDictionary())


@contextlib.contextmanager
def sync_free_images(policy: Any) -> Iterator[None]:
    """Inside the block, ``policy``'s SmolVLA embeds its images with ``embed_image`` above.

    ``policy`` is a ``SnapFlowSmolVLA``; its lerobot ``vlm_with_expert`` gets an instance
    attribute ``embed_image`` for the duration of the block (nested blocks: the outer one
    owns it).
    """
    vlm_with_expert = policy.policy.model.vlm_with_expert
    if "embed_image" in vars(vlm_with_expert):  # an outer block already routes it
        yield
        return
    bound = _BOUND.get(vlm_with_expert)
    if bound is None:
        bound = _BOUND[vlm_with_expert] = functools.partial(embed_image, vlm_with_expert)
    vlm_with_expert.embed_image = bound
    try:
        yield
    finally:
        del vlm_with_expert.embed_image
