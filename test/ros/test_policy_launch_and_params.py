"""config/policy.yaml and launch/policy.launch.py against the node's declared parameters."""

import ast
import dataclasses
import uuid
from pathlib import Path

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
    """policy.launch.py through ``launch`` (needs launch/launch_ros: a ROS 2 install, or the CLI
    built from source; CI has neither and skips): the node comes up, configures the built-in
    tiny policy on the CPU, activates, and publishes an action chunk for fed cameras + joints."""
    from launch_runner import require_launch, run_launch

    require_launch()
    import numpy as np
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    from snapflow_ros.conversions.image import fill_image_msg

    data = yaml.safe_load((ROOT / "config" / "topic_map.yaml").read_text())
    topic_map = tmp_path / "map.yaml"
    topic_map.write_text(yaml.safe_dump(data))
    ns = f"/launch_test_{uuid.uuid4().hex[:8]}"
    chunks: list[JointTrajectory] = []
    image = np.zeros((224, 224, 3), np.uint8)

    def make_peer(peer):
        peer.create_subscription(JointTrajectory, f"{ns}/action_chunk", chunks.append, 10)
        cams = [peer.create_publisher(Image, f"{ns}/camera/{c}/image_raw", 10)
                for c in data["cameras"]]
        joints = peer.create_publisher(JointState, f"{ns}/joint_states", 10)

        def step():
            stamp = peer.get_clock().now().to_msg()
            for pub in cams:
                msg = fill_image_msg(Image(), image)
                msg.header.stamp = stamp
                pub.publish(msg)
            js = JointState(name=data["joint_states"]["joints"], position=[0.0] * 6)
            js.header.stamp = stamp
            joints.publish(js)
            return bool(chunks)

        return step

    run = run_launch(ROOT / "launch" / "policy.launch.py",
                     {"policy_path": "smolvla-tiny", "topic_map": str(topic_map), "device": "cpu",
                      "namespace": ns}, make_peer, timeout_s=180.0)
    if run.error is not None:
        raise run.error
    assert run.done, f"no action chunk on {ns}/action_chunk within {run.seconds:.0f} s"
    assert run.returncode == 0
    chunk = chunks[0]
    assert chunk.joint_names == data["action"]["joints"] and chunk.points
