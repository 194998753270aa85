"""The MuJoCo scene, task and episode env without ROS: names, errors, rendering, seeded resets."""

import numpy as np
import pytest

from snapflow_ros.sim.env import MujocoEnv
from snapflow_ros.sim.scene import (
    Scene,
    SceneCamera,
    SceneError,
    default_scene_path,
    load_model,
)
from snapflow_ros.sim.tasks import ReachTwoTargets, TaskState, make_task
from snapflow_ros.topic_map import load_topic_map

JOINTS = [f"joint{i}" for i in range(1, 7)]
CAMS = [SceneCamera("front", 224, 224), SceneCamera("wrist", 96, 128)]


def _env(cameras=CAMS, **kw):
    scene = Scene(load_model(None), JOINTS, cameras, physics_rate_hz=500.0)
    return MujocoEnv(scene, ReachTwoTargets(scene), **kw)


def test_packaged_scene_has_everything_the_topic_map_names():
    tm = load_topic_map()
    scene = Scene(load_model(default_scene_path()), tm.state_names,
                  [SceneCamera(c.name, c.height, c.width) for c in tm.cameras],
                  actuated=tm.action_names)
    assert scene.timestep == pytest.approx(0.002)
    assert scene.joint_positions().shape == (6,)
    assert np.allclose(scene.joint_targets(), scene.actuated_positions())  # holds home
    images = scene.render_all()
    assert set(images) == {"front", "wrist"}
    for img in images.values():
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a real picture, not a blank buffer


def test_missing_scene_file_is_named(tmp_path):
    with pytest.raises(SceneError, match="does not exist.*'scene' parameter"):
        load_model(tmp_path / "nope.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<mujoco><worldbody><geom type='sphere'/></worldbody>")
    with pytest.raises(SceneError, match="not a loadable MJCF"):
        load_model(bad)


def test_missing_camera_lists_the_scene_cameras():
    with pytest.raises(SceneError, match=r"camera\(s\) \['top'\].*\['front', 'wrist'\]"):
        Scene(load_model(None), JOINTS, [SceneCamera("top")])


def test_missing_joint_lists_the_scene_joints():
    with pytest.raises(SceneError, match=r"joint\(s\) \['elbow'\].*'joint1'.*'joint6'"):
        Scene(load_model(None), ["joint1", "elbow"])


def test_joint_without_position_actuator_is_named(tmp_path):
    xml = default_scene_path().read_text().replace(
        '<position name="joint6" joint="joint6" ctrlrange="-2.9 2.9" kp="80" kv="3"/>', "")
    path = tmp_path / "no_act.xml"
    path.write_text(xml)
    with pytest.raises(SceneError, match=r"joint 'joint6' has no position actuator.*joint5"):
        Scene(load_model(path), JOINTS)


def test_task_needs_its_targets():
    scene = Scene(load_model(None), JOINTS)
    assert make_task("none", scene).name == "none"
    with pytest.raises(ValueError, match="unknown task 'reach'.*reach_two_targets"):
        make_task("reach", scene)


def test_task_on_a_scene_without_targets_lists_what_it_has(tmp_path):
    xml = default_scene_path().read_text().replace('name="target_b"', 'name="goal_b"')
    path = tmp_path / "one_target.xml"
    path.write_text(xml)
    scene = Scene(load_model(path), JOINTS)
    with pytest.raises(SceneError, match=r"missing \['target_b'\].*'goal_b'"):
        ReachTwoTargets(scene)


def test_targets_are_clipped_to_the_actuator_range_and_must_be_finite():
    scene = Scene(load_model(None), JOINTS)
    scene.set_joint_targets(np.array([9.0, 0, 0, 0, 0, -9.0]))
    assert scene.joint_targets()[0] == pytest.approx(2.9)
    assert scene.joint_targets()[5] == pytest.approx(-2.9)
    with pytest.raises(ValueError, match="expected 6 joint targets"):
        scene.set_joint_targets(np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        scene.set_joint_targets(np.full(6, np.nan))


def test_same_seed_same_first_images_other_seed_other_targets():
    env = _env()
    env.reset(3)
    first = env.get_observation()
    env.apply_action(env.scene.actuated_positions() + 0.3, 0.5)  # disturb the state
    env.reset(3)
    again = env.get_observation()
    for cam in ("front", "wrist"):
        assert np.array_equal(first["images"][cam], again["images"][cam])
    assert np.array_equal(first["state"], again["state"])
    env.reset(4)
    other = env.get_observation()
    assert not np.array_equal(first["images"]["front"], other["images"]["front"])


def test_sim_time_is_strictly_increasing_across_resets():
    env = _env(cameras=())
    s0 = env.reset(1)
    env.step(10)
    t_before = env.time_ns
    s1 = env.reset(1)
    assert s1.start_ns == t_before + env.dt_ns > s0.start_ns
    assert env.episode_time_ns == 0 and s1.episode == s0.episode + 1


def test_position_actuators_reach_a_commanded_pose():
    env = _env(cameras=())
    env.reset(0)
    goal = env.scene.actuated_positions() + np.array([0.4, -0.2, 0.3, 0.5, -0.3, 0.6])
    env.apply_action(goal, 1.5)
    assert np.abs(env.scene.joint_positions() - goal).max() < 0.02


def test_episode_times_out_without_success():
    env = _env(cameras=(), episode_timeout_s=0.1)
    env.reset(0)
    env.step(49)
    assert not env.is_episode_complete()
    env.step(1)
    assert env.is_episode_complete()
    assert (env.status.reason, env.status.success, env.status.end_ns) == ("timeout", False,
                                                                          env.time_ns)


_KEYFRAME_XML = """
<mujoco>
  <worldbody>
    <body><joint name="a" type="hinge" range="-1 1"/><geom size="0.1"/>
      <body pos="0 0 0.2"><joint name="b" type="hinge" range="-1 1"/><geom size="0.1"/></body>
    </body>
  </worldbody>
  <actuator><position joint="a" kp="10"/><position joint="b" kp="10"/></actuator>
  <keyframe>{keys}</keyframe>
</mujoco>
"""


def _keyed_scene(tmp_path, keys, **kw):
    path = tmp_path / "keyed.xml"
    path.write_text(_KEYFRAME_XML.format(keys=keys))
    return Scene(load_model(path), ["a", "b"], **kw)


def test_the_initial_pose_is_home_else_the_first_keyframe_else_qpos0(tmp_path):
    """gym-aloha's scene has one unnamed keyframe: it used to be ignored (fingers started
    outside their range). A named keyframe can be chosen; a wrong name lists the keyframes."""
    both = '<key qpos="0.1 0.2"/><key name="home" qpos="0.3 0.4"/><key name="up" qpos="0.5 0.6"/>'
    scene = _keyed_scene(tmp_path, both)
    assert scene.initial_pose == "keyframe 'home'"
    np.testing.assert_allclose(scene.joint_positions(), [0.3, 0.4])
    scene = _keyed_scene(tmp_path, both, keyframe="up")
    np.testing.assert_allclose(scene.joint_positions(), [0.5, 0.6])
    scene.data.qpos[:] = 0.0
    scene.reset()  # every reset goes back to the chosen keyframe
    np.testing.assert_allclose(scene.joint_positions(), [0.5, 0.6])
    unnamed = _keyed_scene(tmp_path, '<key qpos="0.1 0.2"/>')
    assert unnamed.initial_pose == "the first keyframe (unnamed)"
    np.testing.assert_allclose(unnamed.joint_positions(), [0.1, 0.2])
    none = _keyed_scene(tmp_path, "")
    assert "no keyframe" in none.initial_pose
    np.testing.assert_allclose(none.joint_positions(), [0.0, 0.0])
    listed = r"no keyframe 'down'.*\['#0 \(unnamed\)', 'home', 'up'\]"
    with pytest.raises(SceneError, match=listed):
        _keyed_scene(tmp_path, both, keyframe="down")


class ReachZero:
    """A task of a user's own (loaded by name below): succeed once joint ``a`` is near 0."""

    name = "reach_zero"
    timeout_s = 2.0

    def __init__(self, scene):
        self.state = TaskState()

    def reset(self, scene, rng):
        self.state = TaskState()
        scene.data.qpos[scene.qpos_adr[0]] = rng.uniform(0.5, 0.9)

    def update(self, scene):
        if abs(scene.joint_positions()[0]) < 0.05:
            self.state.success = True


def test_a_task_of_ones_own_loads_by_module_and_class(tmp_path):
    scene = _keyed_scene(tmp_path, "")
    task = make_task(f"{__name__}:ReachZero", scene)
    assert task.name == "reach_zero"
    env = MujocoEnv(scene, task)
    env.reset(seed=3)
    start = scene.joint_positions()[0]
    assert 0.5 <= start <= 0.9  # the task's own seeded randomisation
    env.reset(seed=3)
    assert scene.joint_positions()[0] == start
    for _ in range(200):
        env.apply_action(np.zeros(2), 0.01)
        if env.is_episode_complete():
            break
    assert env.status.success and env.status.time_s < 2.0
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        make_task("no_such_module:Task", scene)
    with pytest.raises(ValueError, match="has no 'Nope'"):
        make_task(f"{__name__}:Nope", scene)
    with pytest.raises(ValueError, match="is not a Task"):
        make_task(f"{__name__}:SceneCamera", scene)


def test_a_model_camera_whose_name_is_not_an_identifier_is_mapped(tmp_path):
    """gym-aloha names cameras like 'cam/left'; the topic map's names must be identifiers."""
    from snapflow_ros.topic_map import topic_map_from_dict

    xml = _KEYFRAME_XML.format(keys="").replace(
        "<worldbody>", '<worldbody><camera name="cam/left" pos="0 -1 0.3" xyaxes="1 0 0 0 0 1"/>')
    path = tmp_path / "cams.xml"
    path.write_text(xml)
    tm = topic_map_from_dict({
        "fps": 30, "cameras": {"left": {"topic": "cam/left/image", "height": 32, "width": 40,
                                        "model_camera": "cam/left"}},
        "joint_states": {"topic": "joint_states", "joints": ["a", "b"]},
        "action": {"topic": "cmd", "joints": ["a", "b"]}}, "test")
    (cam,) = tm.cameras
    scene = Scene(load_model(path), ["a", "b"], [SceneCamera(cam.name, cam.height, cam.width,
                                                             cam.model_camera)])
    assert scene.render_all()["left"].shape == (32, 40, 3)
    with pytest.raises(SceneError, match="give the MJCF name as model_camera"):
        Scene(load_model(path), ["a", "b"], [SceneCamera("left", 32, 40)])


_GRIPPER_XML = """
<mujoco>
  <compiler angle="radian"/>
  <worldbody>
    <body><joint name="arm" type="hinge" range="-1 1"/><geom size="0.05" mass="1"/>
      <body pos="0.1 0 0"><joint name="left" type="slide" axis="0 1 0" range="0 0.04"/>
        <geom size="0.01" mass="0.1"/></body>
      <body pos="0.1 0 0"><joint name="right" type="slide" axis="0 -1 0" range="0 0.04"/>
        <geom size="0.01" mass="0.1"/></body>
    </body>
  </worldbody>
  <tendon><fixed name="split"><joint joint="left" coef="0.5"/><joint joint="right" coef="0.5"/>
  </fixed></tendon>
  <equality><joint joint1="left" joint2="right"/></equality>
  <actuator>
    <position name="arm_servo" joint="arm" kp="50"/>
    <position name="gripper" tendon="split" kp="200" ctrlrange="0 0.04"/>
    <motor name="arm_torque" joint="arm"/>
  </actuator>
</mujoco>
"""


def test_a_tendon_gripper_is_commanded_through_its_actuator(tmp_path):
    """The Panda's gripper is a position actuator on a tendon: name the actuator in the action
    (its position is the actuator length), beside joints commanded by their servos."""
    path = tmp_path / "gripper.xml"
    path.write_text(_GRIPPER_XML)
    scene = Scene(load_model(path), ["arm", "left", "right"], actuated=["arm", "gripper"])
    np.testing.assert_allclose(scene.lower, [-1.0, 0.0])
    np.testing.assert_allclose(scene.upper, [1.0, 0.04])
    scene.set_joint_targets([0.3, 0.03])
    scene.step(1500)
    np.testing.assert_allclose(scene.actuated_positions(), [0.3, 0.03], atol=2e-3)
    left, right = scene.joint_positions()[1:]
    assert left == pytest.approx(0.03, abs=2e-3) and right == pytest.approx(0.03, abs=2e-3)
    scene.set_joint_targets([0.0, 0.5])  # clipped to the gripper's ctrlrange
    assert scene.joint_targets()[1] == pytest.approx(0.04)


def test_actuators_that_are_not_position_servos_are_refused_by_name(tmp_path):
    path = tmp_path / "gripper.xml"
    path.write_text(_GRIPPER_XML.replace('<position name="arm_servo" joint="arm" kp="50"/>', ""))
    with pytest.raises(SceneError, match=r"joint 'arm' has no position actuator \(driven by "
                                         r"\['arm_torque->joint arm'\]"):
        Scene(load_model(path), ["arm"], actuated=["arm"])
    with pytest.raises(SceneError, match="actuator 'arm_torque' is not a position servo"):
        Scene(load_model(path), ["arm"], actuated=["arm_torque"])
    with pytest.raises(SceneError, match=r"'hand' is neither a joint nor an actuator.*"
                                         r"gripper->tendon split"):
        Scene(load_model(path), ["arm"], actuated=["hand"])
