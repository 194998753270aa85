"""Control-rate logic without ROS: observation sync, chunk scheduling, safety, stats."""

import numpy as np
import pytest

from snapflow_ros.runtime.chunking import ActionChunk, ChunkScheduler
from snapflow_ros.runtime.holds import Hold, HoldKind
from snapflow_ros.runtime.observation import ObservationBuffer, Snapshot
from snapflow_ros.runtime.safety import CommandGate, Refusal, SafetyLimits, satisfies_invariant
from snapflow_ros.timing import RollingStats, StageTimer

MS = 1_000_000


def test_snapshot_needs_every_input_fresh_and_close_together():
    buf = ObservationBuffer(["front", "joints"], max_age_ns=100 * MS, max_skew_ns=50 * MS)
    assert isinstance(buf.snapshot(0), Hold) and buf.snapshot(0).kind == "missing"
    buf.put("front", 1000 * MS, "img")
    hold = buf.snapshot(1000 * MS)
    assert hold.kind is HoldKind.MISSING and "joints" in hold.reason
    assert f"hold_{hold.kind}" == "hold_missing"  # counters and /diagnostics use the value
    buf.put("joints", 1010 * MS, "js")
    snap = buf.snapshot(1020 * MS)
    assert isinstance(snap, Snapshot) and snap.stamp_ns == 1010 * MS
    assert snap.items["front"].msg == "img"
    stale = buf.snapshot(1105 * MS)  # front is 105 ms old
    assert stale.kind == "stale" and "front 0.105 s" in stale.reason
    buf.put("joints", 1090 * MS, "js2")  # 90 ms after the image: too far apart
    skew = buf.snapshot(1095 * MS)
    assert skew.kind == "skew" and "front oldest" in skew.reason


def test_out_of_order_messages_never_move_an_input_back():
    buf = ObservationBuffer(["a"], max_age_ns=MS * 1000, max_skew_ns=MS)
    buf.put("a", 50, "new")
    buf.put("a", 40, "old")
    assert buf.latest("a").msg == "new"
    with pytest.raises(KeyError, match="unknown input"):
        buf.put("b", 1, "x")


def test_future_stamps_are_refused_and_never_block_fresh_input():
    buf = ObservationBuffer(["a"], max_age_ns=200 * MS, max_skew_ns=MS,
                            future_tolerance_ns=300 * MS)
    now = 10_000 * MS
    reason = buf.put("a", now + 3600_000 * MS, "from the future", now_ns=now)
    assert reason is not None and "3600.000 s in the future" in reason
    assert buf.latest("a") is None
    assert buf.put("a", now + 200 * MS, "slightly ahead", now_ns=now) is None  # tolerated
    assert buf.put("a", -1, "negative", now_ns=now).startswith("a: invalid stamp")
    # the clock goes back (sim reset): the stored message is now in the future; it is neither
    # used nor does it block the next message
    back = 1000 * MS
    hold = buf.snapshot(back)
    assert isinstance(hold, Hold) and hold.kind == "future"
    assert buf.put("a", back, "after reset", now_ns=back) is None
    assert buf.snapshot(back).items["a"].msg == "after reset"


def _chunk(stamp_ms, h=10, offset=0.0):
    return ActionChunk(stamp_ms * MS, np.arange(h, dtype=float)[:, None] + offset + np.zeros((h, 2)))


def test_scheduler_skips_past_steps_and_stops_after_n_action_steps():
    sched = ChunkScheduler(dt_ns=20 * MS, n_action_steps=5, replan_lead_steps=1)
    assert sched.command(0) is None and sched.needs_chunk(0)
    skipped = sched.push(_chunk(100), now_ns=145 * MS)  # 45 ms of latency: steps 0, 1 are past
    assert skipped == 2
    assert np.array_equal(sched.command(145 * MS), [2.0, 2.0])
    assert np.array_equal(sched.command(160 * MS), [3.0, 3.0])
    assert sched.remaining(160 * MS) == 2 and not sched.needs_chunk(160 * MS)
    assert sched.needs_chunk(180 * MS)  # one executable step left
    assert np.array_equal(sched.command(180 * MS), [4.0, 4.0])
    assert sched.command(200 * MS) is None  # n_action_steps executed: hold


def test_scheduler_overrun_runs_on_within_the_chunk_only_when_asked():
    sched = ChunkScheduler(dt_ns=10 * MS, n_action_steps=4, overrun_steps=3)
    sched.push(_chunk(100, h=6), now_ns=100 * MS)
    assert not sched.overrunning(130 * MS) and sched.overrunning(140 * MS)
    assert sched.command(140 * MS) is None  # not asked: stop at n_action_steps
    assert np.array_equal(sched.command(140 * MS, overrun=True), [4.0, 4.0])
    assert np.array_equal(sched.command(150 * MS, overrun=True), [5.0, 5.0])
    assert sched.command(160 * MS, overrun=True) is None  # the chunk has 6 steps
    assert sched.remaining(140 * MS) == 0 and sched.needs_chunk(140 * MS)
    with pytest.raises(ValueError, match="overrun_steps"):
        ChunkScheduler(dt_ns=10 * MS, n_action_steps=4, overrun_steps=-1)


def test_scheduler_drops_late_results_and_blends_new_chunks():
    sched = ChunkScheduler(dt_ns=10 * MS, n_action_steps=8, blend_steps=2)
    sched.push(_chunk(100), now_ns=100 * MS)
    assert sched.push(_chunk(90), now_ns=101 * MS) is None  # older than the current one
    sched.push(_chunk(120, offset=100.0), now_ns=130 * MS)
    # at adoption: old step 3 (= 3) and new step 1 (= 101), weight 0 -> old
    assert np.allclose(sched.command(130 * MS), 3.0)
    assert np.allclose(sched.command(140 * MS), 0.5 * 4.0 + 0.5 * 102.0)  # halfway
    assert np.allclose(sched.command(150 * MS), 103.0)  # blend over


def test_scheduler_rejects_bad_settings():
    with pytest.raises(ValueError):
        ChunkScheduler(dt_ns=0, n_action_steps=1)
    with pytest.raises(ValueError):
        ActionChunk(0, np.zeros(3))


def test_gate_clamps_and_limits_each_step_from_what_was_sent():
    gate = CommandGate(SafetyLimits(2, lower=[-1, -1], upper=[1, 1], max_step_delta=0.1))
    assert gate.needs_measured
    assert isinstance(gate.command(np.array([5.0, -5.0])), Refusal)  # nothing to start from
    assert np.allclose(gate.command(np.array([0.5, 0.0]), measured=np.zeros(2)), [0.1, 0.0])
    # the reference is now the last command; a different "measured" is ignored
    assert np.allclose(gate.command(np.array([0.5, 0.0]), measured=np.full(2, 0.9)), [0.2, 0.0])
    traj = gate.trajectory(np.array([[0.5, 0.5]] * 3), start=np.zeros(2))
    assert np.allclose(traj[:, 0], [0.1, 0.2, 0.3])
    assert np.allclose(gate.reference, [0.2, 0.0])  # a chunk is a plan: reference unchanged
    gate.forget()
    assert gate.needs_measured
    assert np.allclose(CommandGate(SafetyLimits(2)).command(np.array([9.0, 9.0])), 9.0)


@pytest.mark.parametrize("target", [[np.nan, 0.0], [np.inf, 0.0], [0.0, -np.inf]])
def test_gate_never_lets_a_non_finite_target_through(target):
    gate = CommandGate(SafetyLimits(2, lower=[-1, -1], upper=[1, 1]))
    refusal = gate.command(np.array(target))
    assert isinstance(refusal, Refusal) and refusal.kind == "nan"
    assert gate.reference is None


def test_gate_refuses_to_start_from_an_arm_far_outside_the_limits():
    limits = SafetyLimits(1, lower=[-0.5], upper=[0.5], max_step_delta=0.05)
    gate = CommandGate(limits)
    refusal = gate.command(np.array([0.0]), measured=np.array([2.0]))
    assert isinstance(refusal, Refusal) and refusal.kind == "outside_limits"
    assert "joint 0 is at 2" in refusal.reason and "[-0.5, 0.5]" in refusal.reason
    # just outside (within one step): the command steps inside
    assert np.allclose(gate.command(np.array([0.0]), measured=np.array([0.52])), [0.47])
    chunk = gate.trajectory(np.zeros((3, 1)), start=np.array([2.0]))
    assert isinstance(chunk, Refusal) and chunk.reason.startswith("chunk point 0")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lower": [0.0]}, "needs 2 values"),
    ({"lower": [1.0, 0.0], "upper": [0.0, 1.0]}, r"joint_lower_limits\[0\]=1.0 exceeds"),
    ({"lower": [np.nan, 0.0]}, "must be finite"),
    ({"upper": [0.0, np.inf]}, "must be finite"),
    ({"max_step_delta": np.nan}, "max_step_delta"),
    ({"max_step_delta": -1.0}, "max_step_delta"),
])
def test_limits_that_would_break_the_invariant_cannot_be_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SafetyLimits(2, **kwargs)


def test_invariant_predicate_and_far_outside():
    limits = SafetyLimits(2, lower=[-1, -1], upper=[1, 1], max_step_delta=0.1)
    assert satisfies_invariant(np.array([0.1, 0.0]), limits, np.zeros(2))
    assert not satisfies_invariant(np.array([0.2, 0.0]), limits, np.zeros(2))
    assert not satisfies_invariant(np.array([1.05, 1.0]), limits, np.array([1.0, 1.0]))
    assert not satisfies_invariant(np.array([np.nan, 0.0]), limits, np.zeros(2))
    assert not satisfies_invariant(np.zeros(2), limits, None)  # step-limited: needs a start
    assert limits.far_outside(np.array([0.0, 2.9])) is None
    assert limits.far_outside(np.array([0.0, 3.1])) == 1
    assert SafetyLimits(2).far_outside(np.array([1e9, 0.0])) is None  # no limits: no opinion


def test_rolling_stats_from_stage_timer():
    ticks = iter([0.0, 0.002, 0.002, 0.005])
    timer = StageTimer(clock=lambda: next(ticks))
    with timer.stage("prefix"):
        pass
    with timer.stage("expert"):
        pass
    stats = RollingStats(window=3)
    stats.add_timer(timer)
    for v in (1.0, 2.0, 3.0, 4.0):
        stats.add("x", v)
    summary = stats.summary()
    assert summary["prefix"]["p50"] == pytest.approx(2.0)
    assert summary["expert"]["p50"] == pytest.approx(3.0)
    assert summary["x"]["p50"] == pytest.approx(3.0)  # window keeps 2, 3, 4
