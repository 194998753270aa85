"""ChunkEngine (runtime/engine.py): the node's logic, driven without ROS or torch."""

import numpy as np
import pytest

from snapflow_ros.runtime.engine import (
    BadInput,
    ChunkEngine,
    ChunkResult,
    Decoded,
    EngineSettings,
)
from snapflow_ros.runtime.observation import Hold
from snapflow_ros.runtime.safety import SafetyLimits

MS = 1_000_000
H, A = 6, 2


def settings(lower=(), upper=(), max_step_delta=0.0, **kwargs):
    base = {"max_age_ns": 100 * MS, "max_skew_ns": 50 * MS, "future_tolerance_ns": 30 * MS,
            "n_action_steps": 4, "replan_lead_steps": 1}
    return EngineSettings(limits=SafetyLimits(A, lower, upper, max_step_delta),
                          **{**base, **kwargs})


def _measure(msg):
    values = np.asarray(msg, dtype=float)
    if values.size != A:
        raise BadInput(f"joints: expected {A} values")
    return values


def _engine(**kwargs):
    return ChunkEngine(["cam", "joints"], 10 * MS, settings(**kwargs), _measure, joints="joints")


def _decode(snap):
    state = _measure(snap.items["joints"].msg)
    return Decoded({"cam": np.zeros((2, 2, 3), np.uint8)}, state, state.copy())


def _predict(decoded, timer):
    with timer.stage("expert"):
        return np.tile(decoded.state, (H, 1)) + np.arange(H)[:, None]


def _observe(eng, stamp, joints):
    eng.buffer.put("cam", stamp, "img")
    eng.buffer.put("joints", stamp, joints)


def test_infer_schedules_a_chunk_and_tick_executes_it():
    eng = _engine(overrun_steps=0)  # stop at n_action_steps (overrun: the tests below)
    _observe(eng, 1000 * MS, [0.0, 10.0])
    result = eng.infer(lambda: 1025 * MS, _decode, _predict)  # 25 ms of inference latency
    assert isinstance(result, ChunkResult) and result.skipped == 2
    assert np.array_equal(result.positions[:, 1], 10.0 + np.arange(H))
    tick = eng.tick(1025 * MS)
    assert np.array_equal(tick.command, [2.0, 12.0]) and not tick.want_chunk
    tick = eng.tick(1035 * MS)
    assert np.array_equal(tick.command, [3.0, 13.0]) and tick.want_chunk  # last of 4 steps
    tick = eng.tick(1045 * MS)
    assert tick.command is None and tick.want_chunk  # used up: hold
    status = eng.status()
    assert status["chunks"] == 1 and status["skipped_steps"] == 2 and status["starved_ticks"] == 1
    assert status["obs_to_chunk_ms_p50"] == 25.0
    assert "no chunk to execute" in status["last_hold"]
    # the same observation again is not a fault and does not run the model
    calls = []
    hold = eng.infer(lambda: 1046 * MS, _decode, lambda d, t: calls.append(1))
    assert isinstance(hold, Hold) and hold.kind == "waiting" and calls == []


def _flowing_engine(**kwargs):
    """A chunk (H = 6 steps, n_action_steps 4) adopted at 1025 ms from the 1000 ms
    observation: steps 2 and 3 are its last regular ones, at 1025 and 1035 ms."""
    eng = _engine(**kwargs)
    _observe(eng, 1000 * MS, [0.0, 10.0])
    assert isinstance(eng.infer(lambda: 1025 * MS, _decode, _predict), ChunkResult)
    for now in (1025, 1035):
        assert eng.tick(now * MS).command is not None
    return eng


def test_a_late_next_chunk_lets_the_current_one_run_on():
    eng = _flowing_engine()  # overrun_steps -1: as many as n_action_steps, within the chunk
    assert eng.scheduler.overrun_steps == 4
    tick = eng.tick(1045 * MS)  # past n_action_steps, the next chunk not there yet
    assert np.array_equal(tick.command, [4.0, 14.0]) and tick.want_chunk
    assert np.array_equal(eng.tick(1055 * MS).command, [5.0, 15.0])
    assert eng.tick(1065 * MS).command is None  # never past the chunk's end
    status = eng.status()
    assert status["overrun_ticks"] == 2 and status["starved_ticks"] == 1
    # a bounded overrun
    eng = _flowing_engine(overrun_steps=1)
    assert np.array_equal(eng.tick(1045 * MS).command, [4.0, 14.0])
    assert eng.tick(1055 * MS).command is None


def test_no_overrun_while_holding_or_after_a_failure():
    eng = _flowing_engine()
    _observe(eng, 1040 * MS, [float("nan"), 10.0])  # the next observation cannot be used
    assert eng.infer(lambda: 1041 * MS, _decode, _predict).kind == "nan"
    assert eng.tick(1045 * MS).command is None  # stop at n_action_steps, as without overrun
    eng = _flowing_engine()
    _observe(eng, 1040 * MS, [1.0, 10.0])

    def broken(decoded, timer):
        raise RuntimeError("CUDA error")

    with pytest.raises(RuntimeError):
        eng.infer(lambda: 1041 * MS, _decode, broken)
    assert eng.tick(1045 * MS).command is None
    # a chunk flowing again lifts it
    assert isinstance(eng.infer(lambda: 1046 * MS, _decode, _predict), ChunkResult)
    eng.tick(1046 * MS)
    assert eng.status().get("overrun_ticks", 0) == 0


def test_a_chunk_adopted_past_its_horizon_is_still_executed():
    eng = _engine()
    _observe(eng, 1000 * MS, [0.0, 10.0])
    result = eng.infer(lambda: 1045 * MS, _decode, _predict)  # 45 ms: 4 steps already past
    assert result.skipped == 4
    assert np.array_equal(eng.tick(1045 * MS).command, [4.0, 14.0])
    eng = _engine(overrun_steps=0)
    _observe(eng, 1000 * MS, [0.0, 10.0])
    eng.infer(lambda: 1045 * MS, _decode, _predict)
    assert eng.tick(1045 * MS).command is None


def test_overrun_steps_is_validated():
    with pytest.raises(ValueError, match="overrun_steps"):
        settings(overrun_steps=-2)
    assert settings(overrun_steps=-1).overrun_steps_resolved == 4
    assert settings(overrun_steps=7).overrun_steps_resolved == 7


def test_holds_name_the_problem_and_count():
    eng = _engine()
    assert eng.infer(lambda: 0, _decode, _predict).kind == "missing"
    _observe(eng, 0, [1.0, 2.0, 3.0])
    bad = eng.infer(lambda: 0, _decode, _predict)
    assert bad.kind == "bad_input" and "expected 2 values" in bad.reason
    eng.buffer.put("joints", 1, [np.nan, 0.0])
    assert eng.infer(lambda: 1, _decode, _predict).kind == "nan"
    eng.buffer.put("joints", 2, [1e30, 0.0])
    huge = eng.infer(lambda: 2, _decode, _predict)
    assert huge.kind == "out_of_bound" and "max_abs_state" in huge.reason
    eng.buffer.put("joints", 3, [0.0, 0.0])
    nan_out = eng.infer(lambda: 3, _decode, lambda d, t: np.full((H, A), np.inf))
    assert nan_out.kind == "nan" and "policy produced" in nan_out.reason
    assert eng.scheduler.current is None  # nothing unsafe was scheduled
    assert eng.status()["hold_nan"] == 2 and eng.status()["last_hold"] == nan_out.reason


def test_stale_hold_reports_current_ages():
    eng = _engine()
    _observe(eng, 0, [0.0, 0.0])
    first = eng.infer(lambda: 150 * MS, _decode, _predict)
    later = eng.infer(lambda: 400 * MS, _decode, _predict)
    assert "0.150 s" in first.reason and "0.400 s" in later.reason


def test_chunk_is_clamped_and_rate_limited_from_the_measured_state():
    eng = _engine(lower=[-1, -1], upper=[1, 1], max_step_delta=0.5)
    _observe(eng, 0, [0.0, 0.0])
    result = eng.infer(lambda: 0, _decode, lambda d, t: np.full((H, A), 5.0))
    assert np.allclose(result.positions[:, 0], [0.5, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_a_reading_far_outside_the_limits_is_a_hold():
    eng = _engine(lower=[-0.5, -0.5], upper=[0.5, 0.5], max_step_delta=0.05)
    _observe(eng, 0, [2.0, 0.0])  # 1.5 outside: farther than the 1.0 range
    hold = eng.infer(lambda: 0, _decode, _predict)
    assert hold.kind == "out_of_bound" and "far outside its limits" in hold.reason
    _observe(eng, 1, [0.6, 0.0])  # outside, not far: but more than one step outside
    hold = eng.infer(lambda: 1, _decode, lambda d, t: np.zeros((H, A)))
    assert hold.kind == "outside_limits" and eng.scheduler.current is None


def test_activation_and_dry_run_toggles_start_from_the_measured_position():
    eng = _engine(lower=[-1, -1], upper=[1, 1], max_step_delta=0.05)
    _observe(eng, 0, [0.1, 0.1])
    eng.infer(lambda: 0, _decode, lambda d, t: np.full((H, A), 0.9))
    assert np.allclose(eng.tick(0).command, 0.15)
    eng.reset(clear_inputs=False)  # deactivate → activate; meanwhile the arm was moved
    _observe(eng, 10 * MS, [-0.4, -0.4])
    eng.infer(lambda: 10 * MS, _decode, lambda d, t: np.full((H, A), 0.9))
    assert np.allclose(eng.tick(10 * MS).command, -0.35)
    eng.set_dry_run(True)
    tick = eng.tick(20 * MS)
    assert tick.dry_run and np.allclose(tick.command, -0.35)  # from the measured -0.4
    assert np.allclose(eng.tick(30 * MS).command, -0.30)
    eng.set_dry_run(False)
    _observe(eng, 35 * MS, [-0.4, -0.4])  # the robot stayed put during the dry run
    tick = eng.tick(40 * MS)
    assert not tick.dry_run and np.allclose(tick.command, -0.35)


def test_an_inference_started_before_a_reset_is_dropped():
    eng = _engine()
    _observe(eng, 0, [0.0, 0.0])

    def predict_while_deactivated(decoded, timer):
        eng.reset(clear_inputs=False)
        return np.zeros((H, A))

    hold = eng.infer(lambda: 0, _decode, predict_while_deactivated)
    assert hold.kind == "waiting" and eng.scheduler.current is None


def test_a_clock_jumping_back_drops_chunks_and_inputs():
    eng = _engine()
    _observe(eng, 1000 * MS, [0.0, 0.0])
    eng.infer(lambda: 1000 * MS, _decode, _predict)
    assert eng.tick(1000 * MS).command is not None
    tick = eng.tick(10 * MS)  # simulator reset
    assert tick.command is None and eng.scheduler.current is None
    assert eng.buffer.latest("joints") is None and "clock jumped back" in eng.hold_reason()


def test_reconfigure_applies_everything_at_once():
    eng = _engine()
    new = settings(lower=[-1, -1], upper=[1, 1], max_step_delta=0.1, max_age_ns=10 * MS,
                   n_action_steps=2)
    eng.reconfigure(new)
    assert eng.settings is new and eng.buffer.max_age_ns == 10 * MS
    assert eng.scheduler.n_action_steps == 2 and eng.gate.limits is new.limits
    with pytest.raises(ValueError):
        settings(n_action_steps=0)


def test_an_idle_engine_does_no_work_until_a_message_arrives():
    eng = _engine()
    decodes = []

    def counting_decode(snap):
        decodes.append(snap)
        return _decode(snap)

    _observe(eng, 0, [1.0, 2.0, 3.0])  # a bad message: hold
    for t in range(5):
        assert eng.infer(lambda t=t: t, counting_decode, _predict).kind == "bad_input"
    assert len(decodes) == 1  # tried once; retrying the same inputs cannot help
    eng.buffer.put("joints", 1, [1.0, 2.0])
    assert isinstance(eng.infer(lambda: 2, counting_decode, _predict), ChunkResult)
    assert len(decodes) == 2


def test_a_stale_joint_state_is_never_a_starting_point():
    eng = _engine(lower=[-1, -1], upper=[1, 1], max_step_delta=0.05, n_action_steps=20)
    _observe(eng, 0, [0.0, 0.0])
    eng.infer(lambda: 0, _decode, lambda d, t: np.full((20, A), 0.9))
    assert eng.tick(0).command is not None
    eng.set_dry_run(True)  # the next command needs a measured position; the last is 150 ms old
    tick = eng.tick(150 * MS)
    assert tick.command is None and "0.150 s old" in eng.hold_reason()
    eng.buffer.put("joints", 150 * MS, [0.05, 0.05])
    assert np.allclose(eng.tick(160 * MS).command, 0.1)


def test_an_implausible_reading_is_never_a_starting_point():
    """Without limits, a joint state of 1e5 must not become the command's start (fuzz find)."""
    eng = _engine(max_step_delta=0.05)
    _observe(eng, 0, [0.0, 0.0])
    eng.infer(lambda: 0, _decode, lambda d, t: np.full((20, A), 0.01))
    assert np.allclose(eng.tick(0).command, 0.01)
    eng.set_dry_run(True)
    eng.set_dry_run(False)  # the next command starts from the measured position
    eng.buffer.put("joints", 5 * MS, [0.0, 1e5])
    tick = eng.tick(10 * MS)
    assert tick.command is None and "beyond max_abs_state" in eng.hold_reason()


def test_a_corrected_message_with_the_same_stamp_is_decoded():
    eng = _engine()
    _observe(eng, 0, [1.0, 2.0, 3.0])
    assert eng.infer(lambda: 0, _decode, _predict).kind == "bad_input"
    eng.buffer.put("joints", 0, [1.0, 2.0])  # same stamp, fixed content
    assert isinstance(eng.infer(lambda: 0, _decode, _predict), ChunkResult)


def test_auto_replan_lead_follows_the_measured_latency():
    eng = ChunkEngine(["cam", "joints"], 10 * MS, settings(replan_lead_steps=0, n_action_steps=20),
                      _measure, joints="joints", wall_ns=iter(range(0, 10**12, 35 * MS)).__next__)
    assert eng.scheduler.replan_lead_steps == 2  # before any measurement
    for k in range(3):  # each inference takes 35 ms of wall time (the injected clock)
        _observe(eng, k * MS, [0.0, 0.0])
        eng.infer(lambda k=k: k * MS, _decode, lambda d, t: np.zeros((20, A)))
    assert eng.scheduler.replan_lead_steps == 5  # ceil(35 ms / 10 ms) + 1


def test_a_fresh_frame_starts_inference_only_when_a_chunk_is_due_soon():
    eng = ChunkEngine(["front", "wrist", "joints"], 10 * MS, settings(n_action_steps=10), _measure,
                      joints="joints")
    for t in (0, 30, 60):  # 30 ms camera period
        for cam in ("front", "wrist"):
            eng.buffer.put(cam, t * MS, "img")
    eng.buffer.put("joints", 60 * MS, [0.0, 0.0])
    eng.infer(lambda: 60 * MS, lambda s: Decoded({}, np.zeros(A), np.zeros(A)),
              lambda d, t: np.zeros((10, A)))
    eng.tick(60 * MS)
    assert not eng.frame_ready()  # 10 steps left: not due
    eng.tick(125 * MS)  # 4 left <= lead 1 + ceil(30 ms / 10 ms)
    eng.buffer.put("front", 120 * MS, "img")
    assert not eng.frame_ready()  # the other camera's frame of that instant is missing
    eng.buffer.put("wrist", 120 * MS, "img")
    assert eng.frame_ready()


def test_wants_chunk_is_false_right_after_a_fresh_chunk():
    eng = _engine()
    assert eng.wants_chunk(0)  # nothing to execute yet
    _observe(eng, 0, [0.0, 0.0])
    eng.infer(lambda: 0, _decode, _predict)
    assert not eng.wants_chunk(0) and eng.wants_chunk(35 * MS)  # 4 steps of 10 ms, lead 1
