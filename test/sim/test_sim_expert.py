"""Scripted expert on the two-target task: it succeeds, picks both modes, and the average of
the two modes fails (the reason the task is a multimodality benchmark)."""

import numpy as np
import pytest

from snapflow_ros.sim.env import MujocoEnv
from snapflow_ros.sim.expert import IKError, JointPlan, ReachExpert, min_jerk, solve_ik
from snapflow_ros.sim.scene import Scene, load_model
from snapflow_ros.sim.tasks import ReachTwoTargets

JOINTS = [f"joint{i}" for i in range(1, 7)]
CONTROL_S = 1 / 30


@pytest.fixture(scope="module")
def env():
    scene = Scene(load_model(None), JOINTS, physics_rate_hz=500.0)
    return MujocoEnv(scene, ReachTwoTargets(scene))


def _run(env, policy):
    """Closed loop at the control rate: policy(episode time s) -> joint targets."""
    while not env.is_episode_complete():
        t = env.episode_time_ns / 1e9
        env.apply_action(policy(t + CONTROL_S), CONTROL_S)
    return env.status


def test_expert_succeeds_on_20_seeds_and_uses_both_targets(env):
    expert = ReachExpert(env.scene, env.task)
    outcomes = []
    for seed in range(20):
        env.reset(seed)
        plan = expert.plan(np.random.default_rng([seed, 1]))
        status = _run(env, plan)
        outcomes.append((status.success, status.reached, plan.mode))
    successes = [ok for ok, _, _ in outcomes]
    assert sum(successes) >= 18, outcomes
    assert all(reached == planned for ok, reached, planned in outcomes if ok)
    chose_a = sum(planned == 0 for _, _, planned in outcomes)
    assert 6 <= chose_a <= 14, outcomes  # about half: P(outside) < 0.05 for a fair coin


def test_average_of_the_two_modes_fails(env):
    expert = ReachExpert(env.scene, env.task)
    for seed in range(10):
        env.reset(seed)
        to_a, to_b = expert.plan_for(0), expert.plan_for(1)
        status = _run(env, lambda t, a=to_a, b=to_b: 0.5 * (a(t) + b(t)))
        assert not status.success and status.reason == "timeout"
        assert env.task.distances(env.scene).min() > 2 * env.task.config.radius


def test_each_single_mode_plan_reaches_its_own_target(env):
    expert = ReachExpert(env.scene, env.task)
    for mode in (0, 1):
        env.reset(7)
        status = _run(env, expert.plan_for(mode))
        assert status.success and status.reached == mode


def test_ik_points_the_tool_down_at_the_goal(env):
    env.reset(2)
    scene, task = env.scene, env.task
    q = solve_ik(scene, task.site_id, task.goals[0], scene.actuated_positions())
    scene.data.qpos[scene.act_qpos_adr] = q
    scene.forward()
    assert np.linalg.norm(scene.data.site_xpos[task.site_id] - task.goals[0]) < 1e-3
    tool_z = scene.data.site_xmat[task.site_id].reshape(3, 3)[:, 2]
    assert tool_z[2] < -0.99
    assert np.all(q >= scene.lower) and np.all(q <= scene.upper)


def test_ik_reports_an_unreachable_target(env):
    env.reset(0)
    with pytest.raises(IKError, match="did not reach"):
        solve_ik(env.scene, env.task.site_id, np.array([2.0, 0.0, 0.0]),
                 env.scene.actuated_positions(), iters=50)


def test_min_jerk_plan_passes_its_waypoints_smoothly():
    plan = JointPlan(times=np.array([0.0, 1.0, 3.0]),
                     waypoints=np.array([[0.0, 0.0], [1.0, -1.0], [3.0, 1.0]]), mode=0)
    assert np.allclose(plan(-1.0), [0, 0]) and np.allclose(plan(1.0), [1, -1])
    assert np.allclose(plan(2.0), [2, 0])  # symmetric profile: half way at mid-time
    assert np.allclose(plan(9.0), [3, 1])
    s = np.linspace(0, 1, 101)
    assert min_jerk(0.0) == 0.0 and min_jerk(1.0) == 1.0
    assert np.all(np.diff(min_jerk(s)) >= 0)


def test_fixed_targets_start_off_home_and_the_expert_reaches_both_from_there():
    """reach_two_fixed_targets: the arm starts up to start_jitter off home per joint (seeded,
    held still by the servos), so demonstrations cover more than two paths; the expert still
    reaches either target from every start. The random-target task starts at home."""
    from snapflow_ros.sim.tasks import FIXED_TARGETS, make_task

    scene = Scene(load_model(None), JOINTS, physics_rate_hz=500.0)
    env = MujocoEnv(scene, make_task("reach_two_fixed_targets", scene))
    starts = []
    for seed in range(6):
        env.reset(seed)
        start = scene.actuated_positions()
        env.step(50)  # 0.1 s: the servos hold the start pose
        assert np.allclose(scene.actuated_positions(), start, atol=2e-3)
        starts.append(start)
        status = _run(env, ReachExpert(scene, env.task).plan_for(seed % 2)) if seed < 4 else None
        assert status is None or (status.success and status.reached == seed % 2), seed
    env.reset(0)
    assert np.array_equal(scene.actuated_positions(), starts[0])  # same seed, same start
    scene.reset()
    home = scene.actuated_positions()
    offsets = np.abs(np.array(starts) - home)
    assert offsets.max() <= FIXED_TARGETS.start_jitter + 1e-9 and offsets.max() > 0.05
    assert len({tuple(s.round(4)) for s in starts}) == len(starts)
    other = MujocoEnv(scene, ReachTwoTargets(scene))
    other.reset(0)
    assert np.array_equal(scene.actuated_positions(), home)
