"""ChunkEngine (runtime/engine.py): the node's logic, driven without ROS or torch."""

import numpy as np

from snapflow_ros.runtime.chunking import ChunkScheduler
from snapflow_ros.runtime.engine import BadInput, ChunkEngine, ChunkResult, Decoded
from snapflow_ros.runtime.observation import Hold, ObservationBuffer
from snapflow_ros.runtime.safety import SafetyFilter

MS = 1_000_000
H, A = 6, 2


def _engine(**safety):
    buf = ObservationBuffer(["cam", "joints"], max_age_ns=100 * MS, max_skew_ns=50 * MS)
    sched = ChunkScheduler(dt_ns=10 * MS, n_action_steps=4, replan_lead_steps=1)
    return ChunkEngine(buf, sched, SafetyFilter(A, **safety))


def _decode(snap):
    state = np.asarray(snap.items["joints"].msg, dtype=float)
    if state.size != A:
        raise BadInput(f"joints: expected {A} values")
    return Decoded({"cam": np.zeros((2, 2, 3), np.uint8)}, state, state.copy())


def _predict(decoded, timer):
    with timer.stage("expert"):
        return np.tile(decoded.state, (H, 1)) + np.arange(H)[:, None]


def test_infer_schedules_a_chunk_and_tick_executes_it():
    eng = _engine()
    now = [1000 * MS]
    eng.buffer.put("cam", 1000 * MS, "img")
    eng.buffer.put("joints", 1000 * MS, [0.0, 10.0])
    now[0] = 1025 * MS  # 25 ms of inference latency
    result = eng.infer(lambda: now[0], _decode, _predict)
    assert isinstance(result, ChunkResult) and result.skipped == 2
    assert np.array_equal(result.positions[:, 1], 10.0 + np.arange(H))
    command, want = eng.tick(1025 * MS)
    assert np.array_equal(command, [2.0, 12.0]) and not want  # step 2: steps 0-1 are past
    command, want = eng.tick(1035 * MS)
    assert np.array_equal(command, [3.0, 13.0]) and want  # last of n_action_steps = 4
    assert eng.tick(1045 * MS) == (None, True)  # used up: hold
    status = eng.status()
    assert status["chunks"] == 1 and status["skipped_steps"] == 2 and status["starved_ticks"] == 1
    assert "obs_to_chunk_ms_p50" in status and status["obs_to_chunk_ms_p50"] == 25.0
    # the same observation again is not a fault and does not run the model
    calls = []
    hold = eng.infer(lambda: 1046 * MS, _decode, lambda d, t: calls.append(1))
    assert isinstance(hold, Hold) and hold.kind == "waiting" and calls == []


def test_holds_name_the_problem_and_count():
    eng = _engine()
    assert eng.infer(lambda: 0, _decode, _predict).kind == "missing"
    eng.buffer.put("cam", 0, "img")
    eng.buffer.put("joints", 0, [1.0, 2.0, 3.0])
    bad = eng.infer(lambda: 0, _decode, _predict)
    assert bad.kind == "bad_input" and "expected 2 values" in bad.reason
    eng.buffer.put("joints", 1, [np.nan, 0.0])
    assert eng.infer(lambda: 1, _decode, _predict).kind == "nan"
    eng.buffer.put("joints", 2, [0.0, 0.0])
    nan_out = eng.infer(lambda: 2, _decode, lambda d, t: np.full((H, A), np.inf))
    assert nan_out.kind == "nan" and "policy produced" in nan_out.reason
    assert eng.scheduler.current is None  # nothing unsafe was scheduled
    assert eng.status()["hold_nan"] == 2 and eng.status()["last_hold"] == nan_out.reason


def test_chunk_is_clamped_and_rate_limited_from_the_measured_state():
    eng = _engine(lower=[-1, -1], upper=[1, 1], max_step_delta=0.5)
    eng.buffer.put("cam", 0, "img")
    eng.buffer.put("joints", 0, [0.0, 0.0])
    result = eng.infer(lambda: 0, _decode, lambda d, t: np.full((H, A), 5.0))
    assert np.allclose(result.positions[:, 0], [0.5, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_an_idle_engine_does_no_work_until_a_message_arrives():
    eng = _engine()
    decodes = []

    def counting_decode(snap):
        decodes.append(snap)
        return _decode(snap)

    eng.buffer.put("cam", 0, "img")
    eng.buffer.put("joints", 0, [1.0, 2.0, 3.0])  # a bad message: hold
    for t in range(5):
        assert eng.infer(lambda t=t: t, counting_decode, _predict).kind == "bad_input"
    assert len(decodes) == 1  # tried once; retrying the same inputs cannot help
    eng.buffer.put("joints", 1, [1.0, 2.0])
    assert isinstance(eng.infer(lambda: 2, counting_decode, _predict), ChunkResult)
    assert len(decodes) == 2
