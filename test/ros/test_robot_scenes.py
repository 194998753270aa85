"""The bridge on a robot it was not written for: ALOHA (two ViperX 300s arms, 16 position-
actuated joints, the model's own cameras, an unnamed keyframe) from gym-aloha's MJCF, with the
packaged topic map ``config/robots/aloha_topic_map.yaml``: the scene loads, starts from its
keyframe, renders, tracks commands through the ROS node, and resets back."""

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

ALOHA_MAP = config_path("robots/aloha_topic_map.yaml")


@pytest.fixture(scope="module")
def aloha_xml():
    import gym_aloha

    path = Path(gym_aloha.__file__).parent / "assets" / "bimanual_viperx_transfer_cube.xml"
    assert path.is_file()
    return path


def test_the_aloha_scene_loads_from_its_keyframe_renders_and_tracks(aloha_xml):
    tm = load_topic_map(ALOHA_MAP)
    cams = [SceneCamera(c.name, c.height, c.width, c.model_camera) for c in tm.cameras]
    scene = Scene(load_model(aloha_xml), tm.state_names, cams, actuated=tm.action_names)
    assert scene.initial_pose == "the first keyframe (unnamed)"
    q0 = scene.joint_positions()
    assert q0.shape == (16,)
    assert np.all(q0 >= scene.lower - 1e-6) and np.all(q0 <= scene.upper + 1e-6)  # fingers too
    images = scene.render_all()
    assert images["top"].shape == (240, 320, 3) and images["top"].std() > 5
    target = q0.copy()
    target[[0, 8]] += 0.2  # both waists
    scene.set_joint_targets(target)
    scene.step(1000)  # 2 s
    assert np.abs(scene.actuated_positions()[[0, 8]] - target[[0, 8]]).max() < 0.02


def test_the_bridge_runs_aloha_commands_and_resets(aloha_xml):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    ns = f"/t{uuid.uuid4().hex[:8]}"
    tm = load_topic_map(ALOHA_MAP)
    bridge = MujocoBridgeNode(context=ctx, namespace=ns, cli_args=[
        "--ros-args", "-r", f"/clock:={ns}/clock", "-r", f"/diagnostics:={ns}/diagnostics"],
        parameter_overrides=[Parameter("scene", value=str(aloha_xml)),
                             Parameter("topic_map", value=str(ALOHA_MAP)),
                             Parameter("mode", value="realtime"), Parameter("seed", value=3)])
    peer = rclpy.create_node("peer", context=ctx, namespace=ns)
    got = {"joints": [], "top": []}
    peer.create_subscription(JointState, "joint_states", got["joints"].append, 100)
    peer.create_subscription(Image, "camera/top/image_raw", got["top"].append, 10)
    cmd = peer.create_publisher(JointState, "joint_commands", 10)
    reset = peer.create_client(Trigger, "mujoco_bridge/reset")
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(bridge)
    executor.add_node(peer)

    def spin_until(done, what):
        wait_until(done, 30.0, what, step=lambda: executor.spin_once(timeout_sec=0.01))

    try:
        assert bridge.runner.env.task.name == "none"  # a user's scene: no reach task
        spin_until(lambda: got["top"] and got["joints"] and cmd.get_subscription_count() > 0,
                   "images, joint states and the command subscription")
        assert list(got["joints"][-1].name) == list(tm.state_names)
        home = np.array(got["joints"][-1].position)
        target = home.copy()
        target[[0, 8]] += 0.2
        command = JointState(name=list(tm.action_names), position=target.tolist())

        def arrived():
            cmd.publish(command)
            now = np.array(got["joints"][-1].position)
            return np.abs(now[[0, 8]] - target[[0, 8]]).max() < 0.02

        spin_until(arrived, "both waists at the commanded angle")
        future = reset.call_async(Trigger.Request())
        spin_until(future.done, "the reset service")
        assert future.result().success
        start = json.loads(future.result().message)["start_ns"]

        def at_reset():
            return next((m for m in got["joints"] if stamp_to_ns(m.header.stamp) == start), None)

        spin_until(lambda: at_reset() is not None, "the joint state at the reset")
        scene = bridge.runner.env.scene
        keyframe = scene.model.key_qpos[0][scene.qpos_adr]
        np.testing.assert_allclose(at_reset().position, keyframe, atol=1e-9)  # back home
    finally:
        executor.shutdown()
        bridge.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown(context=ctx)
