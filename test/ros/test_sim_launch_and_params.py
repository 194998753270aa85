"""sim.launch.py and config/mujoco_bridge.yaml against the code they configure.

``launch``/``launch_ros`` have no wheels here, so the launch file is checked through its AST
(executables, parameters, launch arguments); building the LaunchDescription and running the
closed loop through it need a ROS 2 install (or the CLI built from source) and skip without.
"""

import ast
import dataclasses
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.parameter import Parameter

from snapflow_ros._tools import TOOLS
from snapflow_ros.nodes.mujoco_bridge_node import MujocoBridgeNode
from snapflow_ros.nodes.mujoco_bridge_params import MujocoBridgeParams
from snapflow_ros.nodes.recorder_node import RecorderParams
from snapflow_ros.sim.runner import MODES
from snapflow_ros.sim.tasks import TASKS

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "sim.launch.py"
YAML = ROOT / "config" / "mujoco_bridge.yaml"
FIELDS = {f.name for f in dataclasses.fields(MujocoBridgeParams)}
ROS_OWN = {"use_sim_time", "start_type_description_service"}


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call, key):
    return next((k.value for k in call.keywords if k.arg == key), None)


def _declared_arguments(path):
    tree = ast.parse(path.read_text())
    return {c.args[0].value: c for c in _calls(tree, "DeclareLaunchArgument")}


@pytest.fixture(scope="module")
def tree():
    return ast.parse(LAUNCH.read_text())


def _nodes(tree):
    return {_kw(c, "executable").value: c for c in _calls(tree, "Node")}


def test_launch_starts_registered_executables(tree):
    nodes = _nodes(tree)
    assert {"mujoco_bridge", "record"} <= set(nodes)
    assert set(nodes) - {"record"} <= set(TOOLS)


def test_launch_recorder_is_registered_and_gets_its_own_parameters(tree):
    assert "record" in TOOLS
    fields = {f.name for f in dataclasses.fields(RecorderParams)}
    params = _kw(_nodes(tree)["record"], "parameters").elts[0]
    keys = {k.value for k in params.keys}
    assert keys - {"use_sim_time"} <= fields
    marker = params.values[[k.value for k in params.keys].index("episode_topic")].value
    assert marker == "episode/active"  # published by the bridge (see test_mujoco_bridge_node)


def test_launch_sets_only_declared_bridge_parameters(tree):
    bridge = _nodes(tree)["mujoco_bridge"]
    params = _kw(bridge, "parameters")
    dicts = [e for e in params.elts if isinstance(e, ast.Dict)]
    keys = {k.value for d in dicts for k in d.keys}
    assert keys and keys <= FIELDS
    assert not any(k.value == "use_sim_time" and v.value for d in dicts
                   for k, v in zip(d.keys, d.values, strict=True)
                   if isinstance(v, ast.Constant))  # the bridge *is* the clock


def test_launch_arguments_are_declared_described_and_valid(tree):
    declared = _declared_arguments(LAUNCH)
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    assert used == set(declared), (used ^ set(declared))  # only arguments it uses
    assert "use_sim_time" not in declared  # the bridge is the clock: the others always use it
    for name, call in declared.items():
        assert _kw(call, "description").value, name
    assert _kw(declared["mode"], "default_value").value in MODES
    assert _kw(declared["task"], "default_value").value in ("", *TASKS)  # "": by the scene
    assert "config/mujoco_bridge.yaml" in ast.unparse(_kw(declared["params_file"],
                                                          "default_value"))


def test_included_policy_launch_gets_exactly_the_arguments_passed(tree):
    policy_launch = ROOT / "launch" / "policy.launch.py"
    assert policy_launch.is_file()
    (include,) = _calls(tree, "IncludeLaunchDescription")
    (group,) = _calls(tree, "GroupAction")
    assert include in list(ast.walk(group))
    # forwarding=False: the included file sees only these values, not the bridge's params_file
    assert _kw(group, "forwarding").value is False
    passed = _kw(group, "launch_configurations")
    values = {k.value: v for k, v in zip(passed.keys, passed.values, strict=True)}
    assert set(values) <= set(_declared_arguments(policy_launch))
    assert {"policy_path", "use_sim_time", "params_file", "device"} <= set(values)
    assert values["use_sim_time"].value == "true"
    assert ast.unparse(values["params_file"]) == "LaunchConfiguration('policy_params_file')"


def test_launch_description_builds_on_a_ros_install():
    """What ``ros2 launch snapflow_ros sim.launch.py --show-args`` lists: this file's own
    arguments, none of the included policy.launch.py's (use_sim_time was listed and ignored)."""
    from launch_runner import require_launch

    require_launch()
    import importlib.util

    spec = importlib.util.spec_from_file_location("sim_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = [a.name for a in description.get_launch_arguments()]
    assert sorted(names) == sorted(_declared_arguments(LAUNCH))
    assert {"policy_path", "mode", "record", "device"} <= set(names)


def test_closed_loop_through_the_launch_file():
    """sim.launch.py with the built-in tiny policy in lock-step (needs launch/launch_ros; CI
    has neither and skips): the policy node (sim time, from the included policy.launch.py)
    sends chunks, the bridge follows them, and its episode runs to its end (``done``), which
    in lock-step only happens while chunks keep coming."""
    from launch_runner import require_launch, run_launch

    require_launch()
    import json
    import uuid

    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    ns = f"/sim_launch_{uuid.uuid4().hex[:8]}"
    chunks: list[JointTrajectory] = []
    statuses: list[dict] = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def make_peer(peer):
        peer.create_subscription(JointTrajectory, f"{ns}/action_chunk", chunks.append, 10)
        peer.create_subscription(String, f"{ns}/episode/status",
                                 lambda m: statuses.append(json.loads(m.data)), latched)
        return lambda: bool(chunks) and any(s["done"] for s in statuses)

    run = run_launch(LAUNCH, {"policy_path": "smolvla-tiny", "device": "cpu",
                              "mode": "lockstep", "namespace": ns, "log_level": "warn"},
                     make_peer, timeout_s=240.0)
    if run.error is not None:
        raise run.error
    assert run.done, (f"within {run.seconds:.0f} s: {len(chunks)} chunks, statuses {statuses}")
    assert run.returncode == 0
    end = next(s for s in statuses if s["done"])
    assert end["episode"] == 0 and end["end_ns"] > 0 and end["reason"]
    assert chunks[-1].header.stamp.sec < 3600  # sim time: the node ran with use_sim_time


def test_yaml_holds_exactly_the_parameter_defaults():
    data = yaml.safe_load(YAML.read_text())
    params = data["mujoco_bridge"]["ros__parameters"]
    assert set(params) == FIELDS
    defaults = MujocoBridgeParams()
    for key, value in params.items():
        assert value == getattr(defaults, key), key


def test_node_declares_the_yaml_parameters_and_reads_them_back():
    params = yaml.safe_load(YAML.read_text())["mujoco_bridge"]["ros__parameters"]
    params = {**params, "mode": "lockstep", "camera_rate_hz": 15.0, "seed": 11}
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = None
    try:
        node = MujocoBridgeNode(context=ctx, namespace="/params_check",
                                parameter_overrides=[Parameter(k, value=v)
                                                     for k, v in params.items()],
                                cli_args=["--ros-args", "-r", "/clock:=/params_check/clock"])
        declared = set(node.list_parameters([], 0).names) - ROS_OWN
        assert declared == FIELDS
        for name in FIELDS:
            descriptor = node.describe_parameter(name)
            assert descriptor.description, name
            assert node.get_parameter(name).value == params[name]
        assert node.params.mode == "lockstep" and node.runner.camera_period_ns == 66_666_667
        assert node.describe_parameter("mode").read_only
        assert not node.describe_parameter("seed").read_only
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_an_empty_task_is_the_packaged_scenes_reach_task_and_none_on_a_users_scene():
    """A user's scene has no reach targets: the bridge used to fail there until task:=none."""
    from snapflow_ros.nodes.mujoco_bridge_node import task_name

    assert task_name(MujocoBridgeParams()) == "reach_two_targets"
    assert task_name(MujocoBridgeParams(scene="/robots/panda.xml")) == "none"
    assert task_name(MujocoBridgeParams(scene="/x.xml", task="mod:Task")) == "mod:Task"
