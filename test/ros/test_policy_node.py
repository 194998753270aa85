"""policy_node in-process with a tiny real policy, on sim time driven by the test (/clock)."""

import threading
import time
import uuid

import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from snapflow_ros.conversions.image import fill_image_msg
from snapflow_ros.conversions.stamps import NS, fill_stamp
from snapflow_ros.conversions.trajectory import trajectory_to_array
from snapflow_ros.nodes.policy_node import PolicyNode
from snapflow_ros.policies import make_builtin
from snapflow_ros.policies.runner import PolicyRunner
from snapflow_ros.topic_map import load_topic_map

JOINTS = [f"joint{i}" for i in range(1, 7)]
T0 = 100 * NS
RATE = 30.0
DT = int(NS / RATE)


@pytest.fixture(scope="module")
def runner():
    return PolicyRunner(make_builtin("smolvla-tiny"), device="cpu", seed=0)


@pytest.fixture
def topic_map_file(tmp_path):
    data = yaml.safe_load(open(load_topic_map.__globals__["config_path"]("topic_map.yaml")))
    for cam in data["cameras"].values():
        cam.update(height=64, width=64)  # the tiny policy's native size
    path = tmp_path / "topic_map.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Harness:
    """The node under test plus a peer node that plays robot, clock and listener."""

    def __init__(self, runner, topic_map_file, **params):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.ns = f"/t{uuid.uuid4().hex[:8]}"
        overrides = [Parameter("use_sim_time", value=True),
                     Parameter("topic_map", value=str(topic_map_file)),
                     Parameter("autostart", value=False),
                     Parameter("diagnostics_period_s", value=0.1),
                     *[Parameter(k, value=v) for k, v in params.items()]]
        runner.set_num_steps(0)
        self.node = PolicyNode(runner=runner, context=self.ctx, namespace=self.ns,
                               parameter_overrides=overrides)
        self.peer = rclpy.create_node("peer", context=self.ctx, namespace=self.ns)
        self.clock_pub = self.peer.create_publisher(Clock, "/clock", 10)
        self.img_pubs = {c: self.peer.create_publisher(Image, f"camera/{c}/image_raw", 10)
                         for c in ("front", "wrist")}
        self.js_pub = self.peer.create_publisher(JointState, "joint_states", 10)
        self.got = {k: [] for k in ("chunk", "command", "debug_chunk", "debug_command", "diag")}
        sub = self.peer.create_subscription
        sub(JointTrajectory, "action_chunk", self.got["chunk"].append, 10)
        sub(JointState, "joint_commands", self.got["command"].append, 100)
        sub(JointTrajectory, "policy_node/debug/action_chunk", self.got["debug_chunk"].append, 10)
        sub(JointState, "policy_node/debug/command", self.got["debug_command"].append, 100)
        sub(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.rng = np.random.default_rng(0)
        self.now = T0
        self.set_clock(T0)

    def _on_diag(self, msg):
        mine = [s for s in msg.status if s.name == "snapflow_ros: policy_node"]
        self.got["diag"].extend(mine)

    def set_clock(self, ns):
        self.now = ns
        msg = Clock()
        fill_stamp(msg.clock, ns)
        self.clock_pub.publish(msg)
        time.sleep(0.01)

    def publish_obs(self, stamp_ns, *, encoding="rgb8", joints=JOINTS, state=None):
        images = {}
        for cam, pub in self.img_pubs.items():
            rgb = self.rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            msg = fill_image_msg(Image(), rgb)
            msg.encoding = encoding
            fill_stamp(msg.header.stamp, stamp_ns)
            pub.publish(msg)
            images[cam] = rgb
        state = self.rng.normal(size=len(joints)) if state is None else np.asarray(state)
        js = JointState(name=list(joints), position=[float(v) for v in state])
        fill_stamp(js.header.stamp, stamp_ns)
        self.js_pub.publish(js)
        return images, state

    def wait_for(self, key, count=1, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.got[key]) >= count:
                return self.got[key]
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {count} x {key} (got {len(self.got[key])})")

    def advance(self, steps, publish_obs=False):
        for _ in range(steps):
            self.set_clock(self.now + DT)
            if publish_obs:
                self.publish_obs(self.now)

    def activate(self):
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def diag_with(self, text, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for status in self.got["diag"]:
                if text in status.message:
                    return status
            time.sleep(0.02)
        raise AssertionError(f"no diagnostics mentioning {text!r}; last: "
                             f"{[s.message for s in self.got['diag'][-3:]]}")

    def close(self):
        self.executor.shutdown()
        self.node._teardown()
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@pytest.fixture
def harness(runner, topic_map_file):
    made = []

    def make(**params):
        h = Harness(runner, topic_map_file, **params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_chunks_carry_the_observation_stamp_and_the_policys_actions(harness, runner):
    h = harness(n_action_steps=10)
    h.activate()
    time.sleep(0.2)  # let the clock and publishers match
    images, state = h.publish_obs(T0)
    time.sleep(0.1)
    h.advance(1)
    chunk = h.wait_for("chunk")[0]
    assert (chunk.header.stamp.sec, chunk.header.stamp.nanosec) == divmod(T0, NS)
    assert list(chunk.joint_names) == JOINTS
    expected = runner.predict_chunk(images, state, "reach the target")
    assert len(chunk.points) == 10  # n_action_steps: what the node will execute
    assert np.array_equal(trajectory_to_array(chunk, JOINTS), expected[:10])
    first = chunk.points[0].time_from_start
    assert (first.sec, first.nanosec) == (0, DT)

    # per-step commands on sim time: each one is the chunk step whose period contains its stamp
    for _ in range(9):  # step the clock until a few commands came (a loaded executor may merge
        h.advance(1)     # two clock updates into one tick); 9 steps stay within the chunk
        time.sleep(0.05)
        if len(h.got["command"]) >= 4:
            break
    commands = h.wait_for("command", 3)
    for cmd in commands:
        stamp = cmd.header.stamp.sec * NS + cmd.header.stamp.nanosec
        i = (stamp - T0) // DT
        assert list(cmd.name) == JOINTS
        assert np.allclose(cmd.position, expected[i]), i
    stamps = [c.header.stamp.sec * NS + c.header.stamp.nanosec for c in commands]
    # commands come on control ticks: strictly later each time, on the 1/rate grid (a loaded
    # machine may merge two /clock updates into one tick, so the gap can be 2 periods)
    gaps = np.diff(stamps)
    assert np.all(gaps > 0) and np.all(np.abs(gaps / DT - np.round(gaps / DT)) < 1e-3)


def test_stale_input_holds_and_recovers(harness):
    h = harness(n_action_steps=4, replan_lead_steps=1)
    h.activate()
    time.sleep(0.2)
    h.publish_obs(T0)
    time.sleep(0.1)
    h.advance(1)
    h.wait_for("chunk")
    h.advance(12)  # 0.4 s of sim time, no new inputs: older than max_obs_age_s = 0.2
    status = h.diag_with("stale input")
    assert status.level == DiagnosticStatus.WARN
    assert len(h.got["chunk"]) == 1  # nothing new while stale
    n_commands = len(h.got["command"])
    h.advance(3)
    assert len(h.got["command"]) == n_commands  # the chunk is used up: hold, send nothing
    h.publish_obs(h.now)
    time.sleep(0.1)
    h.advance(1)
    h.wait_for("chunk", 2)  # fresh input: chunks again


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"encoding": "16UC1"}, "camera front: unsupported image encoding '16UC1'"),
    ({"joints": ["joint1", "joint2", "joint4", "joint5", "joint6", "extra"]},
     "joint(s) ['joint3'] missing"),
    ({"state": [0.0, np.nan, 0.0, 0.0, 0.0, 0.0]}, "NaN or inf in the joint state"),
])
def test_bad_messages_hold_report_and_the_node_stays_up(harness, kwargs, reason):
    h = harness()
    h.activate()
    time.sleep(0.2)
    h.publish_obs(T0, **kwargs)
    time.sleep(0.1)
    h.advance(2)
    status = h.diag_with(reason)
    assert status.level == DiagnosticStatus.WARN
    assert h.got["chunk"] == []
    h.publish_obs(h.now)  # a good observation afterwards works
    time.sleep(0.1)
    h.advance(1)
    h.wait_for("chunk")


def test_dry_run_publishes_on_debug_topics_only(harness):
    h = harness(dry_run=True)
    h.activate()
    time.sleep(0.2)
    h.publish_obs(T0)
    time.sleep(0.1)
    h.advance(1)
    h.wait_for("debug_chunk")
    h.advance(3)
    h.wait_for("debug_command")
    time.sleep(0.2)
    assert h.got["chunk"] == [] and h.got["command"] == []


def test_deactivate_stops_commands(harness):
    h = harness()
    h.activate()
    time.sleep(0.2)
    h.publish_obs(T0)
    time.sleep(0.1)
    h.advance(1)
    h.wait_for("chunk")
    h.advance(3)
    h.wait_for("command")
    assert h.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    time.sleep(0.2)  # a tick already running when the timer was destroyed may still publish
    n = len(h.got["command"])
    h.advance(5)
    time.sleep(0.2)
    assert len(h.got["command"]) == n


def test_parameter_validation(harness):
    h = harness()
    result = h.node.set_parameters([Parameter("num_steps", value=-1)])[0]
    assert not result.successful and "num_steps out of range" in result.reason  # descriptor
    result = h.node.set_parameters([Parameter("max_obs_age_s", value=-0.5)])[0]
    assert not result.successful and "max_obs_age_s" in result.reason
    result = h.node.set_parameters_atomically([
        Parameter("joint_lower_limits", value=[0.0, 1.0]),
        Parameter("joint_upper_limits", value=[1.0, 2.0, 3.0])])
    assert not result.successful and "same length" in result.reason  # dataclass check
    assert not h.node.set_parameters([Parameter("device", value="cpu")])[0].successful  # read-only
    assert h.node.set_parameters([Parameter("num_steps", value=3)])[0].successful
    h.activate()
    assert h.node.runner.num_steps == 3
    result = h.node.set_parameters([Parameter("joint_lower_limits", value=[0.0, 1.0])])[0]
    assert not result.successful and "need 6 values" in result.reason  # against the map
    lower, upper = [-1.0] * 6, [1.0] * 6
    assert h.node.set_parameters_atomically([Parameter("joint_lower_limits", value=lower),
                                             Parameter("joint_upper_limits", value=upper)]
                                            ).successful
    assert np.array_equal(h.node.engine.safety.upper, upper)


def test_bad_configuration_fails_configure_and_reports(harness, topic_map_file):
    h = harness(dtype="float32")
    h.node.topic_map = None
    h.node.set_parameters([Parameter("n_action_steps", value=0)])
    # a policy that reads a camera the topic map lacks
    data = yaml.safe_load(topic_map_file.read_text())
    del data["cameras"]["wrist"]
    bad = topic_map_file.with_name("one_camera.yaml")
    bad.write_text(yaml.safe_dump(data))
    h2 = harness(topic_map=str(bad))
    assert h2.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    status = h2.diag_with("configure failed")
    assert status.level == DiagnosticStatus.ERROR and "missing ['wrist']" in status.message


def test_params_dataclass_rejects_nonsense():
    from snapflow_ros.nodes.policy_node_params import PolicyNodeParams

    with pytest.raises(ValueError, match="control_rate_hz=-5.0 is below"):
        PolicyNodeParams(control_rate_hz=-5.0)
    with pytest.raises(ValueError, match="device='tpu'"):
        PolicyNodeParams(device="tpu")
    with pytest.raises(ValueError, match="command_type"):
        PolicyNodeParams(command_type="Twist")
