"""policy_node in-process with a tiny real policy, on sim time driven by the test (/clock)."""


import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticStatus
from policy_harness import DT, JOINTS, T0
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from snapflow_ros.conversions.stamps import NS
from snapflow_ros.conversions.trajectory import trajectory_to_array


def test_chunks_carry_the_observation_stamp_and_the_policys_actions(harness, runner):
    h = harness(n_action_steps=10)
    h.activate()  # returns once subscriptions and publishers are matched
    images, state = h.publish_obs(T0)  # returns once the node took the messages
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
    for _ in range(9):  # step the clock until a few commands came (a loaded control thread may
        h.advance(1)     # take two clock updates in one tick); 9 steps stay within the chunk
        try:
            h.wait_for("command", len(h.got["command"]) + 1, timeout=0.5)
        except TimeoutError:
            pass  # this tick merged into the next
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
    h.publish_obs(T0)
    h.advance(1)
    h.wait_for("chunk")
    h.advance(12)  # 0.4 s of sim time, no new inputs: older than max_obs_age_s = 0.2
    status = h.diag_with("stale input")
    assert status.level == DiagnosticStatus.WARN
    assert len(h.got["chunk"]) == 1  # nothing new while stale
    n_commands = len(h.got["command"])
    h.advance(3)
    h.diagnostics_after(2)  # two status reports later
    assert len(h.got["command"]) == n_commands  # the chunk is used up: hold, send nothing
    h.publish_obs(h.now)
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
    h.publish_obs(T0, **kwargs)
    h.advance(2)
    status = h.diag_with(reason)
    assert status.level == DiagnosticStatus.WARN
    assert h.got["chunk"] == []
    h.publish_obs(h.now)  # a good observation afterwards works
    h.advance(1)
    h.wait_for("chunk")


def test_dry_run_publishes_on_debug_topics_only(harness):
    h = harness(dry_run=True)
    h.activate()
    h.publish_obs(T0)
    h.advance(1)
    h.wait_for("debug_chunk")
    h.advance(3)
    h.wait_for("debug_command")
    h.diagnostics_after(2)  # anything the real topics were to get has come by now
    assert h.got["chunk"] == [] and h.got["command"] == []


def test_deactivate_stops_commands(harness):
    h = harness()
    h.activate()
    h.publish_obs(T0)
    h.advance(1)
    h.wait_for("chunk")
    h.advance(3)
    h.wait_for("command")
    assert h.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    h.diagnostics_after(2)  # a tick already running at deactivation may still publish
    n = len(h.got["command"])
    h.advance(5)
    h.diagnostics_after(2)
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
    assert not result.successful and "needs 6 values" in result.reason  # against the map
    lower, upper = [-1.0] * 6, [1.0] * 6
    assert h.node.set_parameters_atomically([Parameter("joint_lower_limits", value=lower),
                                             Parameter("joint_upper_limits", value=upper)]
                                            ).successful
    assert np.array_equal(h.node.engine.gate.limits.upper, upper)
    # overrun_steps: -1 = n_action_steps (resolved in the scheduler), changeable at run time
    steps = h.node.engine.scheduler.n_action_steps
    assert h.node.engine.scheduler.overrun_steps == steps
    result = h.node.set_parameters([Parameter("overrun_steps", value=-2)])[0]
    assert not result.successful and "overrun_steps" in result.reason
    assert h.node.set_parameters([Parameter("overrun_steps", value=0)])[0].successful
    assert h.node.engine.scheduler.overrun_steps == 0


def test_bad_configuration_fails_configure_and_reports(harness, topic_map_file):
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
    with pytest.raises(ValueError, match="engine"):
        PolicyNodeParams(engine="fastest")
    with pytest.raises(ValueError, match=r"engine='graph' needs CUDA .* use engine 'compile'"):
        PolicyNodeParams(engine="graph", device="cpu")
    assert PolicyNodeParams(engine="graph").engine == "graph"  # device auto: decided at load


def test_a_pi05_policy_drives_the_node(topic_map_file):
    """The node runs any adapter behind the policy interface: a tiny pi0.5's chunk arrives and
    equals what the same runner computes for those inputs."""
    from policy_harness import Harness

    from snapflow_ros.policies import make_builtin
    from snapflow_ros.policies.runner import PolicyRunner

    runner = PolicyRunner(make_builtin("pi05-tiny"), device="cpu", seed=0)
    h = Harness(runner, topic_map_file, n_action_steps=10)
    try:
        h.activate()
        images, state = h.publish_obs(T0)
        h.advance(1)
        chunk = h.wait_for("chunk")[0]
        expected = runner.predict_chunk(images, state, "reach the target")
        assert np.array_equal(trajectory_to_array(chunk, JOINTS), expected[:10])
    finally:
        h.close()
