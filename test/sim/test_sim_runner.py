"""SimRunner: publication schedule, real-time pacing, lock-step gates (fake wall clock)."""

import numpy as np
import pytest

from snapflow_ros.sim.env import MujocoEnv
from snapflow_ros.sim.runner import RunnerConfig, SimRunner
from snapflow_ros.sim.scene import Scene, SceneCamera, load_model
from snapflow_ros.sim.tasks import ReachTwoTargets

JOINTS = [f"joint{i}" for i in range(1, 7)]
MS = 1_000_000


class Wall:
    """A wall clock the test moves by hand."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Recorder:
    """A Sink that keeps everything, in call order."""

    def __init__(self):
        self.calls = []

    def clock(self, stamp_ns):
        self.calls.append(("clock", stamp_ns))

    def joints(self, stamp_ns, position, velocity, effort):
        assert position.shape == velocity.shape == effort.shape == (6,)
        self.calls.append(("joints", stamp_ns))

    def frame(self, stamp_ns, images):
        assert set(images) == {"front"} and images["front"].shape == (24, 32, 3)
        self.calls.append(("frame", stamp_ns))

    def status(self, status):
        self.calls.append(("status", status.done))

    def stamps(self, kind):
        return [s for k, s in self.calls if k == kind]


def _runner(wall=None, **config):
    scene = Scene(load_model(None), JOINTS, [SceneCamera("front", 24, 32)], physics_rate_hz=500)
    env = MujocoEnv(scene, ReachTwoTargets(scene))
    return SimRunner(env, RunnerConfig(**config), wall=wall or Wall())


def test_reset_publishes_the_first_state_and_frame_at_the_reset_time():
    runner, sink = _runner(), Recorder()
    status = runner.reset(5, sink)
    assert sink.calls == [("status", False), ("clock", status.start_ns),
                          ("joints", status.start_ns), ("frame", status.start_ns)]


def test_schedule_in_sim_time_with_clock_before_every_sample():
    wall = Wall()
    runner, sink = _runner(wall, mode="free", batch_s=1e9), Recorder()
    runner.reset(0, sink)
    wall.t += 0.0  # the fake wall clock never advances: stop by the step budget instead
    for _ in range(500):  # 1 s of sim time
        runner.step(sink)
    frames, joints, clocks = sink.stamps("frame"), sink.stamps("joints"), sink.stamps("clock")
    assert len(frames) == 31 and len(joints) == 101  # 30 Hz and 100 Hz, plus the reset's
    assert np.all(np.diff(frames) >= 32 * MS) and np.all(np.diff(frames) <= 34 * MS)
    assert np.mean(np.diff(frames)) == pytest.approx(1e9 / 30, rel=0.01)
    assert np.all(np.diff(joints) == 10 * MS)
    assert set(frames) | set(joints) == set(clocks)  # /clock precedes each stamp...
    assert np.all(np.diff(clocks) > 0)  # ...and only moves forward
    for i, (kind, stamp) in enumerate(sink.calls):
        if kind in ("joints", "frame"):
            assert ("clock", stamp) in sink.calls[:i]


def test_realtime_follows_the_wall_clock_and_drops_a_long_stall():
    wall = Wall()
    runner, sink = _runner(wall, mode="realtime", real_time_factor=2.0, max_lag_s=0.25), Recorder()
    runner.reset(0, sink)
    t0 = runner.env.time_ns
    runner.advance(sink)  # anchors
    wall.t += 0.05
    assert runner.advance(sink) == 50  # 0.1 s of sim = 50 steps of 2 ms
    assert runner.env.time_ns - t0 == 100 * MS
    wall.t += 5.0  # a stall far beyond max_lag: not caught up in one burst
    assert runner.advance(sink) == 1 and runner.overruns == 1


def test_lead_gate_waits_for_commands_then_times_out():
    wall = Wall()
    runner, sink = _runner(wall, mode="lockstep", gate="lead", lead_s=0.1, timeout_s=5.0,
                           batch_s=1e9), Recorder()
    start = runner.reset(0, sink).start_ns
    assert runner.advance(sink) == 50  # 0.1 s ahead of the last command (the reset)
    assert runner.advance(sink) == 0  # waiting...
    assert sink.stamps("clock")[-1] == start + 100 * MS  # ...with /clock at the wait
    runner.command_positions(runner.env.scene.joint_targets(), 0)
    assert runner.advance(sink) == 50
    assert runner.env.time_ns == start + 200 * MS
    runner.advance(sink)
    wall.t += 5.1  # nobody answers: the gate gives up once, then waits again
    assert runner.advance(sink) == 50 and runner.gate_timeouts == 1


def test_chunk_gate_runs_to_the_end_of_the_newest_chunk_and_publishes_the_clock_there():
    wall = Wall()
    runner, sink = _runner(wall, mode="lockstep", gate="chunk", lead_s=0.1, timeout_s=5.0,
                           batch_s=1e9), Recorder()
    start = runner.reset(0, sink).start_ns
    assert runner.advance(sink) == 50  # no chunk yet: lead_s past the reset
    assert runner.waiting and sink.stamps("clock")[-1] == runner.env.time_ns == start + 100 * MS
    q = runner.env.scene.joint_targets()
    runner.command_positions(q, runner.env.time_ns)  # per-step commands do not open it
    assert runner.advance(sink) == 0
    runner.command_trajectory(JOINTS, start + 50 * MS, [200 * MS, 400 * MS], [q, q])
    assert runner.advance(sink) == 225  # to the chunk's end (450 ms) + lead (100 ms)
    assert runner.env.time_ns == start + 550 * MS and runner.waiting
    assert sink.stamps("clock")[-1] == runner.env.time_ns
    runner.command_trajectory(JOINTS, start + 100 * MS, [200 * MS], [q])  # ends earlier
    assert runner.advance(sink) == 0  # the newest end counts, it never moves back
    assert runner.trajectories == 2  # accepted chunks are counted; per-step commands are not
    wall.t += 5.1
    assert runner.advance(sink) == 50 and runner.gate_timeouts == 1


def test_frame_gate_waits_for_an_answer_stamped_at_or_after_the_frame():
    wall = Wall()
    runner, sink = _runner(wall, mode="lockstep", gate="frame", timeout_s=0.0,
                           batch_s=1e9), Recorder()
    start = runner.reset(0, sink).start_ns
    assert runner.advance(sink) == 0  # frame 0 (the reset's) is unanswered
    runner.command_positions(runner.env.scene.joint_targets(), start - 1)  # too old
    assert runner.advance(sink) == 0
    runner.command_positions(runner.env.scene.joint_targets(), start)
    n = runner.advance(sink)
    assert n == 17 and sink.stamps("frame")[-1] == runner.env.time_ns  # stopped at frame 1
    wall.t += 1e6
    assert runner.advance(sink) == 0 and runner.gate_timeouts == 0  # timeout 0: forever


def test_trajectory_drives_the_targets_on_sim_time():
    wall = Wall()
    runner, sink = _runner(wall, mode="free", batch_s=1e9), Recorder()
    runner.reset(0, sink)
    q0 = runner.env.scene.joint_targets()
    goal = q0 + 0.2
    now = runner.env.time_ns
    runner.command_trajectory(JOINTS, now, [200 * MS], [goal.tolist()])
    for _ in range(50):
        runner.step(sink)  # 100 ms: half way
    assert np.allclose(runner.env.scene.joint_targets(), q0 + 0.1, atol=2e-3)
    for _ in range(300):
        runner.step(sink)
    assert np.allclose(runner.env.scene.joint_targets(), goal)
    assert np.abs(runner.env.scene.actuated_positions() - goal).max() < 0.02
    runner.command_positions(q0, 0)  # a per-step command cancels the trajectory
    runner.step(sink)
    assert not runner.follower.active and np.allclose(runner.env.scene.joint_targets(), q0)


def test_config_rejects_unknown_modes_and_bad_rates():
    with pytest.raises(ValueError, match="mode='fast' is not one of"):
        RunnerConfig(mode="fast")
    with pytest.raises(ValueError, match="gate='step'"):
        RunnerConfig(gate="step")
    with pytest.raises(ValueError, match="camera_rate_hz must be > 0"):
        RunnerConfig(camera_rate_hz=0.0)
