"""A destroyed policy node lets its DDS participant go at once, not at garbage collection:
rclpy 9's lifecycle state machine holds the node after ``destroy_node``
(``nodes/lifecycle_cleanup.py``)."""

import gc
import glob

import pytest
import rclpy
from rclpy.lifecycle import LifecycleNode
from rclpy.parameter import Parameter

from snapflow_ros.nodes.lifecycle_cleanup import destroy_lifecycle_state_machine
from snapflow_ros.nodes.policy_node import PolicyNode


def _participants() -> int:
    """Fast DDS participants alive in this process (one event thread each, ``dds.ev.N``)."""
    count = 0
    for path in glob.glob("/proc/self/task/*/comm"):
        try:
            with open(path) as f:
                count += f.read().startswith("dds.ev")
        except OSError:  # the thread ended meanwhile
            continue
    return count


@pytest.fixture
def ctx():
    """A context, with the collector off: a participant that only it would end counts."""
    gc.collect()
    before = _participants()
    gc.disable()
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context, before
    context.try_shutdown()
    gc.enable()


def _started(before):
    if _participants() != before + 1:
        pytest.skip("no Fast DDS event thread to count (another RMW?)")


def test_a_destroyed_policy_node_lets_its_participant_go(ctx, runner, topic_map_file):
    context, before = ctx
    node = PolicyNode(runner=runner, context=context, parameter_overrides=[
        Parameter("topic_map", value=str(topic_map_file)), Parameter("autostart", value=False)])
    _started(before)
    node.destroy_node()
    assert _participants() == before


def test_rclpys_destroy_node_leaves_the_participant_up_until_the_state_machine_goes(ctx):
    """The control: rclpy's own ``LifecycleNode.destroy_node``, even with the context shut
    down."""
    context, before = ctx
    node = LifecycleNode("plain_lifecycle", context=context)
    _started(before)
    node.destroy_node()
    context.try_shutdown()
    assert _participants() == before + 1
    destroy_lifecycle_state_machine(node)
    assert _participants() == before
