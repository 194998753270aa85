"""The inference engine on CUDA (``-m gpu``; skipped without a GPU): bf16 graph vs eager parity,
one capture and no recompilation in steady state, no host syncs in the step, flat memory.

Tolerances (bf16): the graph replays the static engine's kernels, so graph vs static is
|Δ| <= 1e-3·max|ref| (same kernels; only replay vs launch). Graph vs eager differs by what the
static path changes before the model (language padded to max length, state normalised on the
host in float32), which bf16 rounding can amplify: |Δ| <= 5e-2·max|ref|.
"""

import numpy as np
import pytest
import torch

from snapflow_ros.policies.runner import PolicyRunner

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")]
TASK = "pick up the red cube"


def _inputs(runner, seed=0):
    rng = np.random.default_rng(seed)
    images = {}
    for name in runner.camera_names:
        h, w = runner.policy.config.image_features[f"observation.images.{name}"].shape[1:]
        images[name] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return images, rng.standard_normal(runner.state_dim)


def _runner(name, engine, **kwargs):
    runner = PolicyRunner.load(name, device="cuda", dtype="bfloat16", engine=engine, seed=3,
                               num_steps=1, **kwargs)
    runner.warmup(1)
    return runner


@pytest.mark.parametrize("name", ["smolvla-tiny", "pi0-tiny", "pi05-tiny"])
def test_graph_matches_static_and_eager_in_bf16(name, caplog):
    eager, static = (_runner(name, e) for e in ("eager", "static"))
    with caplog.at_level("INFO", logger="snapflow_ros.policies.cuda_graph"):
        graph = _runner(name, "graph")
    assert graph.engine_name == "graph" and graph.engine.captures == 1
    captured = [r for r in caplog.records if r.getMessage().startswith("captured a CUDA graph")]
    assert len(captured) == 1, "preparing the engine captured more than once"
    for seed, steps in ((0, 1), (1, 10)):
        images, state = _inputs(eager, seed)
        for runner in (eager, static, graph):
            runner.set_num_steps(steps)
        ref = eager.predict_chunk(images, state, TASK)
        same_kernels = static.predict_chunk(images, state, TASK)
        out = graph.predict_chunk(images, state, TASK)
        scale = np.abs(ref).max()
        assert np.isfinite(out).all() and out.shape == ref.shape
        np.testing.assert_allclose(out, same_kernels, rtol=0, atol=1e-3 * scale)
        np.testing.assert_allclose(out, ref, rtol=0, atol=5e-2 * scale)
    assert graph.engine.captures == 2  # one per step count (10: on its first chunk)


def test_auto_on_cuda_is_a_graph_and_never_recaptures_in_100_calls():
    runner = _runner("smolvla-tiny", "auto")
    assert runner.engine_name == "graph", "auto fell back to static: see the capture warning"
    images, state = _inputs(runner)
    first = runner.predict_chunk(images, state, TASK)
    for i in range(100):
        out = runner.predict_chunk(images, state, TASK)
        assert np.array_equal(out, first), f"call {i}: the replay drifted (fixed seed)"
    assert runner.engine.captures == 1
    assert runner.engine._graphs[1].replays >= 101


def test_the_step_makes_no_host_sync_and_memory_stays_flat_over_1000_calls():
    runner = _runner("smolvla-tiny", "graph")
    engine = runner.engine
    images, state = _inputs(runner)
    noise = runner.policy.noise_like(1, torch.Generator().manual_seed(0)).cpu()
    runner.predict_chunk(images, state, TASK)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        engine._load_inputs(images, state, TASK, noise)  # host work + async copies
        engine._graphs[1].replay()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for _ in range(1000):
        runner.predict_chunk(images, state, TASK)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before


def test_compiled_engine_on_cuda_does_not_recompile_in_100_calls():
    from torch._dynamo.utils import counters

    runner = _runner("smolvla-tiny", "compile")
    images, state = _inputs(runner)
    runner.predict_chunk(images, state, TASK)
    frames = dict(counters["frames"])
    for _ in range(100):
        runner.predict_chunk(images, state, TASK)
    assert dict(counters["frames"]) == frames
