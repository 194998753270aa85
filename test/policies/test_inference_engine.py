"""The inference engines on CPU: static and compiled engines against the eager reference path,
the CUDA-only seam's CPU half (host-constant folding) and the errors that name a fix.

Tolerance: the static engine pads the language to the tokenizer's max length (SmolVLA pads to
the longest by default) and normalises the state on the host, which may change float32
summation order: |Δ| <= 1e-5 on actions of magnitude ~3 (measured 3.6e-7 for smolvla-tiny, 0
for the pi models). ``torch.compile`` (inductor) may fuse and reorder: the same bound.
"""

import numpy as np
import pytest
import torch

from snapflow_ros.policies.cuda_graph import HostConstants, StepGraph
from snapflow_ros.policies.engine import CPU_AUTO, ENGINES, resolve_engine
from snapflow_ros.policies.runner import PolicyRunner

ATOL = 1e-5
TASK = "pick up the red cube"


def _inputs(runner, seed=0, size=None):
    rng = np.random.default_rng(seed)
    images = {}
    for name in runner.camera_names:
        h, w = size or runner.policy.config.image_features[f"observation.images.{name}"].shape[1:]
        images[name] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return images, rng.standard_normal(runner.state_dim)


def test_engine_names_resolve_with_errors_that_name_the_fix():
    import dataclasses

    from snapflow_ros.nodes.policy_node_params import PolicyNodeParams

    field = {f.name: f for f in dataclasses.fields(PolicyNodeParams)}["engine"]
    assert field.metadata["choices"] == ENGINES  # the node's parameter (torch-free) agrees
    assert resolve_engine("auto", "cpu") == CPU_AUTO == "eager"
    assert resolve_engine("compile", "cpu") == "compile"
    with pytest.raises(ValueError, match=r"needs a CUDA device.*use engine 'compile' or 'eager'"):
        resolve_engine("graph", "cpu")
    with pytest.raises(ValueError, match=r"unknown engine 'fast'.*eager, static, compile, graph"):
        resolve_engine("fast", "cpu")
    with pytest.raises(ValueError, match="CUDA"):
        StepGraph("cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        PolicyRunner.load("smolvla-tiny", engine="graph", device="cpu")


@pytest.mark.parametrize("name", ["smolvla-tiny", "pi0-tiny", "pi05-tiny"])
def test_static_engine_matches_eager_at_1_and_10_steps(name):
    eager = PolicyRunner.load(name, engine="eager", seed=3, num_steps=1)
    static = PolicyRunner.load(name, engine="static", seed=3, num_steps=1)
    assert (eager.engine_name, static.engine_name) == ("eager", "static")
    static.warmup(1)
    images, state = _inputs(eager)
    buffers = {k: v.data_ptr() for k, v in static.engine._inputs.items()}
    for steps in (1, 10, 1):
        eager.set_num_steps(steps)
        static.set_num_steps(steps)
        ref = eager.predict_chunk(images, state, TASK)
        out = static.predict_chunk(images, state, TASK)
        assert out.shape == ref.shape == (eager.chunk_size, eager.action_dim)
        np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)
    # the 10-step chunk differs from the 1-step one: the step count reached the engine
    eager.set_num_steps(10)
    assert np.abs(eager.predict_chunk(images, state, TASK) - ref).max() > 1e-3
    # inputs went through the preallocated buffers, not new ones
    assert {k: v.data_ptr() for k, v in static.engine._inputs.items()} == buffers
    assert static.engine.prepares == 1


def test_static_engine_prepares_again_for_new_camera_sizes_and_stays_exact():
    eager = PolicyRunner.load("smolvla-tiny", engine="eager", seed=1, num_steps=1)
    static = PolicyRunner.load("smolvla-tiny", engine="static", seed=1, num_steps=1)
    static.warmup(0)
    images, state = _inputs(eager, size=(48, 80))  # not the prepared 64x64
    np.testing.assert_allclose(static.predict_chunk(images, state, TASK),
                               eager.predict_chunk(images, state, TASK), rtol=0, atol=ATOL)
    assert static.engine.prepares == 2
    assert static.engine._shapes == dict.fromkeys(static.camera_names, (48, 80))


def test_fresh_noise_without_a_seed_and_fixed_noise_with_one():
    runner = PolicyRunner.load("pi05-tiny", engine="static", num_steps=1)
    runner.warmup(0)
    images, state = _inputs(runner)
    a, b = (runner.predict_chunk(images, state, TASK) for _ in range(2))
    assert np.isfinite(a).all() and np.abs(a - b).max() > 1e-3


def test_host_constants_are_recorded_once_and_replayed_without_new_tensors():
    def step(scale):
        mask = torch.tensor([True, False, True], device="cpu")
        eps = torch.tensor(scale, device="cpu")
        return mask, eps, torch.tensor([1.0, 2.0])  # no device named: not a host constant

    constants = HostConstants("cpu")
    with constants:
        recorded = step(0.5)
    assert len(constants.recorded) == 2
    with constants.replay():
        replayed = step(0.5)
    assert replayed[0] is recorded[0] and replayed[1] is recorded[1]
    assert replayed[2] is not recorded[2]
    with pytest.raises(RuntimeError, match="changed since the warm-up"), constants.replay():
        step(0.25)
    with pytest.raises(RuntimeError, match="more host constants"), constants.replay():
        step(0.5)
        step(0.5)


@pytest.mark.slow
def test_compiled_engine_matches_eager_and_never_recompiles():
    """One compiled model in CI (inductor on 2 cores: about a minute): parity, and no new
    dynamo frames across calls and step counts after ``warmup``."""
    from torch._dynamo.utils import counters

    eager = PolicyRunner.load("smolvla-tiny", engine="eager", seed=5, num_steps=1)
    compiled = PolicyRunner.load("smolvla-tiny", engine="compile", seed=5, num_steps=1)
    compiled.warmup(1)
    compiled.set_num_steps(2)
    compiled.predict_chunk(*_inputs(eager, seed=9), TASK)  # the loop count: no new frame
    frames = dict(counters["frames"])
    for seed, steps in ((0, 1), (1, 10), (2, 1)):
        images, state = _inputs(eager, seed=seed)
        eager.set_num_steps(steps)
        compiled.set_num_steps(steps)
        np.testing.assert_allclose(compiled.predict_chunk(images, state, TASK),
                                   eager.predict_chunk(images, state, TASK), rtol=0, atol=ATOL)
    assert dict(counters["frames"]) == frames, "the compiled engine recompiled"
    assert frames.get("ok", 0) >= 2  # the prefix encoder and the expert pass were compiled
    # one kernel at a time in this process: inductor made no compile pool (private API: its
    # lru-cached pool factories)
    from torch._inductor.async_compile import AsyncCompile

    assert AsyncCompile.pool.cache_info().currsize == 0, "inductor started a compile pool"
    assert AsyncCompile.process_pool.cache_info().currsize == 0
