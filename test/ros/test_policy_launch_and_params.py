"""config/policy.yaml and launch/policy.launch.py against the node's declared parameters."""

import ast
import dataclasses
from pathlib import Path

import pytest
import rclpy
import yaml

from snapflow_ros._tools import TOOLS
from snapflow_ros.nodes.policy_node import PolicyNode
from snapflow_ros.nodes.policy_node_params import PolicyNodeParams

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {f.name for f in dataclasses.fields(PolicyNodeParams)}


def test_yaml_keys_are_the_parameter_fields_with_their_defaults():
    data = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    params = data["policy_node"]["ros__parameters"]
    assert set(params) == FIELDS
    defaults = PolicyNodeParams()
    for name, value in params.items():
        expected = getattr(defaults, name)
        assert (tuple(value) if isinstance(value, list) else value) == expected, name


def test_yaml_loads_into_a_node_with_matching_types():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file",
                                  str(ROOT / "config" / "policy.yaml")])
    try:
        node = PolicyNode(context=ctx)
        assert node.params == PolicyNodeParams()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


def _launch_tree():
    return ast.parse((ROOT / "launch" / "policy.launch.py").read_text())


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def test_launch_file_names_existing_executables_parameters_and_described_arguments():
    tree = _launch_tree()
    (node,) = _calls(tree, "Node")
    kwargs = {k.arg: k.value for k in node.keywords}
    assert kwargs["executable"].value in TOOLS
    assert kwargs["package"].value == "snapflow_ros"
    overrides = [d for d in ast.walk(kwargs["parameters"]) if isinstance(d, ast.Dict)]
    keys = {k.value for d in overrides for k in d.keys}
    assert keys <= FIELDS | {"use_sim_time"}, keys - FIELDS
    declared = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        kw = {k.arg: k.value for k in call.keywords}
        assert "description" in kw and kw["description"].value, call.args[0].value
        declared[call.args[0].value] = kw
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    assert used == set(declared)  # every argument used, every use declared
    for name in ("policy_path", "params_file", "device", "use_sim_time", "namespace", "log_level"):
        assert name in declared


def test_launch_file_starts_the_node_and_a_chunk_arrives(tmp_path):
    """Runs only where launch_ros exists (a system ROS 2 with this package built by colcon)."""
    pytest.importorskip("launch_ros", reason="launch/launch_ros have no wheels here; needs a "
                                             "ROS 2 install (apt) with the package colcon-built")
    import threading
    import time

    import numpy as np
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    from launch import LaunchService
    from snapflow_ros.conversions.image import fill_image_msg

    data = yaml.safe_load((ROOT / "config" / "topic_map.yaml").read_text())
    topic_map = tmp_path / "map.yaml"
    topic_map.write_text(yaml.safe_dump(data))
    service = LaunchService()
    service.include_launch_description(IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(ROOT / "launch" / "policy.launch.py")),
        launch_arguments={"policy_path": "smolvla-tiny", "topic_map": str(topic_map),
                          "device": "cpu"}.items()))
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    peer = rclpy.create_node("launch_peer", context=ctx)
    chunks = []
    peer.create_subscription(JointTrajectory, "action_chunk", chunks.append, 10)
    cams = {c: peer.create_publisher(Image, f"camera/{c}/image_raw", 10) for c in ("front", "wrist")}
    joints = peer.create_publisher(JointState, "joint_states", 10)
    try:
        deadline = time.monotonic() + 180.0
        while not chunks and time.monotonic() < deadline:
            stamp = peer.get_clock().now().to_msg()
            for pub in cams.values():
                msg = fill_image_msg(Image(), np.zeros((224, 224, 3), np.uint8))
                msg.header.stamp = stamp
                pub.publish(msg)
            js = JointState(name=data["joint_states"]["joints"], position=[0.0] * 6)
            js.header.stamp = stamp
            joints.publish(js)
            rclpy.spin_once(peer, timeout_sec=0.05)
        assert chunks, "no action chunk from the launched policy_node"
    finally:
        service.shutdown()
        peer.destroy_node()
        rclpy.try_shutdown(context=ctx)
