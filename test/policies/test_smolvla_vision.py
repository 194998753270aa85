"""The static engines' step makes no host sync (a CUDA graph capture refuses them), and
SmolVLA's sync-free image tower (``policies/smolvla_vision.py``) equals lerobot's exactly.

Host syncs are found on CPU by the aten ops that read a device value on the host: a scalar
read (``_local_scalar_dense``: ``.item()``, a tensor as an ``arange`` bound), ``nonzero`` and
``masked_select``, and an index or index-put with a boolean mask.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from snapflow_ros.policies import make_builtin
from snapflow_ros.policies.runner import PolicyRunner
from snapflow_ros.policies.smolvla_vision import embed_image, sync_free_images

SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select",
            "aten::is_nonzero")


def _has_boolean_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], list | tuple) else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


class HostSyncs(TorchDispatchMode):
    """Records the aten ops that would make the host wait for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if name in SYNC_OPS:
            self.ops.append(name)
        elif name.startswith("aten::index") and _has_boolean_index(args):
            self.ops.append(f"{name} with a boolean mask")
        return func(*args, **(kwargs or {}))


def test_the_sync_detector_sees_what_transformers_smolvlm_tower_does():
    """The control: lerobot's own embed_image (transformers' tower) syncs, per image."""
    policy = make_builtin("smolvla-tiny", seed=0).policy
    vlm = policy.policy.model.vlm_with_expert
    with HostSyncs() as syncs:
        vlm.embed_image(torch.rand(1, 3, 64, 64))
    assert "aten::_local_scalar_dense" in syncs.ops
    assert "aten::index_put_ with a boolean mask" in syncs.ops


@pytest.mark.parametrize("name", ["smolvla-tiny", "pi0-tiny", "pi05-tiny"])
@pytest.mark.parametrize(("steps", "dtype"), [(1, "float32"), (2, "float32"), (2, "bfloat16")])
def test_the_static_step_makes_no_host_sync(name, steps, dtype):
    runner = PolicyRunner.load(name, engine="static", seed=0, num_steps=steps, dtype=dtype)
    runner.warmup(1)
    with HostSyncs() as syncs:
        runner.engine._step(steps)
    assert syncs.ops == [], f"{name}: the step syncs the host: {sorted(set(syncs.ops))}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [64, 32])
def test_sync_free_image_tower_equals_lerobots_exactly(dtype, size):
    policy = make_builtin("smolvla-tiny", seed=1).policy
    policy.to_runtime("cpu", dtype)
    vlm = policy.policy.model.vlm_with_expert
    image = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        reference = vlm.embed_image(image)
        with HostSyncs() as syncs:
            ours = embed_image(vlm, image)
    assert syncs.ops == []
    assert ours.dtype == reference.dtype == dtype and ours.shape == reference.shape
    assert torch.equal(ours, reference)


def test_sync_free_images_routes_only_inside_the_block_and_nests():
    policy = make_builtin("smolvla-tiny", seed=0).policy
    vlm = policy.policy.model.vlm_with_expert
    image = torch.rand(1, 3, 64, 64)
    with policy.sync_free():
        routed = vlm.embed_image
        with sync_free_images(policy):  # nested: the outer block keeps owning the route
            assert vlm.embed_image is routed
        assert vlm.embed_image is routed
        with HostSyncs() as syncs:
            vlm.embed_image(image)
        assert syncs.ops == []
    assert "embed_image" not in vars(vlm)  # lerobot's method again
    with policy.sync_free():
        assert vlm.embed_image is routed  # the same bound function: torch.compile's guards hold
    with HostSyncs() as syncs:
        vlm.embed_image(image)
    assert syncs.ops  # outside the block: transformers' tower, syncs and all
