"""policy_node safety regressions through the real node (rclpy): parameters, transitions, stamps
and hostile inputs never make the robot jump, receive NaN, or stall the node (issue 9, items
1-9). Each test checks what is published on the command, chunk and /diagnostics topics."""

import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from policy_harness import DT, JOINTS, encode_png
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import String

from snapflow_ros.conversions.stamps import NS, fill_stamp
from snapflow_ros.conversions.trajectory import trajectory_to_array

LIMITS = {"joint_lower_limits": [-0.5] * 6, "joint_upper_limits": [0.5] * 6,
          "max_step_delta": 0.05, "n_action_steps": 6, "replan_lead_steps": 2}
STEP = 0.05 + 1e-9


def run(h, steps, state):
    """Advance sim time ``steps`` periods (slowly enough for the tiny model to keep up); the
    robot reports ``state`` at every one."""
    for _ in range(steps):
        h.set_clock(h.now + DT)
        h.publish_obs(h.now, state=state)
        time.sleep(0.03)


def start(h, state, steps=8, chunk=True):
    """Activate, then run ``steps`` periods; with ``chunk``, the first chunk arrives first."""
    h.activate()
    h.publish_obs(h.now, state=state)
    if chunk:
        key = "debug_chunk" if h.node.params.dry_run else "chunk"
        for _ in range(100):
            run(h, 1, state)
            if h.got[key]:
                break
        h.wait_for(key)
    run(h, steps, state)


def assert_steps_from(commands, start):
    """Every command within one step of the previous one; the first within one of ``start``."""
    values = np.array([start, *commands])
    assert np.all(np.abs(np.diff(values, axis=0)) <= STEP), np.abs(np.diff(values, axis=0)).max()


def assert_chunks_inside_limits(chunks):
    for msg in chunks:
        points = trajectory_to_array(msg, JOINTS)
        assert np.all(np.isfinite(points)) and np.all(np.abs(points) <= 0.5 + 1e-12)
        assert np.all(np.abs(np.diff(points, axis=0)) <= STEP)


def diag_value(status, key):
    return {kv.key: kv.value for kv in status.values}.get(key)


def diag_having(h, key):
    """The first /diagnostics status that has ``key`` (waits for it)."""
    h.wait_until(lambda: any(diag_value(s, key) for s in h.got["diag"]), what=key)
    return next(s for s in h.got["diag"] if diag_value(s, key))


# -- 1. non-finite limits ---------


def test_nan_limits_are_refused_and_commands_stay_finite(harness):
    h = harness(**LIMITS)
    start(h, [0.1] * 6)
    h.wait_for("command", 3)
    for name in ("joint_upper_limits", "joint_lower_limits"):
        result = h.node.set_parameters([Parameter(name, value=[float("nan")] * 6)])[0]
        assert not result.successful and "must be finite" in result.reason
    assert np.array_equal(h.node.engine.gate.limits.upper, [0.5] * 6)
    n = len(h.got["command"])
    run(h, 6, [0.1] * 6)
    h.wait_for("command", n + 3)
    assert all(np.all(np.isfinite(v)) and np.all(np.abs(v) <= 0.5) for v in h.values("command"))


# -- 2. activation starts from the measured position ------------------------------------------


def test_first_command_after_reactivation_steps_from_the_measured_arm(harness):
    h = harness(**LIMITS)
    start(h, [0.1] * 6)
    h.wait_for("command", 3)
    assert_steps_from(h.values("command"), [0.1] * 6)
    h.node.trigger_deactivate()
    h.node.trigger_activate()
    n = len(h.got["command"])
    run(h, 8, [-0.3] * 6)  # the arm was moved while the node was inactive
    h.wait_for("command", n + 3)
    assert_steps_from(h.values("command")[n:], [-0.3] * 6)
    assert_chunks_inside_limits(h.got["chunk"])


def test_an_arm_outside_the_limits_gets_no_command_and_no_chunk(harness):
    h = harness(**LIMITS)
    start(h, [2.0] * 6, steps=10, chunk=False)
    status = h.diag_with("far outside its limits")
    assert status.level == DiagnosticStatus.WARN
    assert h.got["command"] == [] and h.got["chunk"] == []
    run(h, 10, [0.6] * 6)  # outside by more than one step: still nothing
    h.diag_with("outside its limits")
    assert h.got["command"] == [] and h.got["chunk"] == []
    run(h, 10, [0.52] * 6)  # within one step of the limits: commands step inside
    h.wait_for("command", 2)
    assert_steps_from(h.values("command"), [0.52] * 6)
    assert all(np.all(np.abs(v) <= 0.5) for v in h.values("command"))
    assert_chunks_inside_limits(h.got["chunk"])


# -- 3. dry run off starts from the measured position -----------------------------------------


def test_turning_dry_run_off_steps_from_the_measured_arm(harness):
    h = harness(dry_run=True, **LIMITS)
    start(h, [0.1] * 6, steps=40)  # the debug commands wander; the arm stays at 0.1
    h.wait_for("debug_command", 10)
    assert h.got["command"] == []
    assert h.node.set_parameters([Parameter("dry_run", value=False)])[0].successful
    run(h, 8, [0.1] * 6)
    h.wait_for("command", 3)
    assert_steps_from(h.values("command"), [0.1] * 6)


# -- 4. clock sanity --------------------------------------------------------------------------


def test_a_future_stamp_is_refused_and_never_blocks_fresh_input(harness):
    h = harness(n_action_steps=6)
    start(h, [0.1] * 6, steps=2)
    h.wait_for("chunk")
    h.publish_joints(h.now + 3600 * NS, [0.1] * 6)  # one message stamped one hour ahead
    n = len(h.got["chunk"])
    run(h, 12, [0.1] * 6)
    h.wait_for("chunk", n + 2)  # fresh input keeps producing chunks
    status = diag_having(h, "rejected_joint_states")
    assert "in the future" in diag_value(status, "last_rejection")


def test_an_invalid_nanosec_is_refused(harness):
    h = harness(n_action_steps=6)
    start(h, [0.1] * 6, steps=2)
    js = JointState(name=JOINTS, position=[0.1] * 6)
    js.header.stamp.sec, js.header.stamp.nanosec = h.now // NS, 2**32 - 1
    h.js_pub.publish(js)
    n = len(h.got["chunk"])
    run(h, 12, [0.1] * 6)
    h.wait_for("chunk", n + 2)
    status = diag_having(h, "rejected_joint_states")
    assert "nanosec=4294967295" in diag_value(status, "last_rejection")


def test_all_inputs_from_the_future_hold_and_say_so(harness):
    h = harness(n_action_steps=6)
    h.activate()
    for _ in range(10):
        h.set_clock(h.now + DT)
        h.publish_obs(h.now + 3600 * NS, state=[0.1] * 6)
    status = h.diag_with("holding")
    assert status.level == DiagnosticStatus.WARN and "no message yet" in status.message
    assert h.got["chunk"] == [] and h.got["command"] == []


# -- 5. bounded work per message --------------------------------------------------------------


def _png_bomb(side=16000):
    """A valid ~31 kB PNG declaring side x side pixels (1-bit): decoding it costs seconds/GBs."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = bytes(1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_before_decoding(harness):
    h = harness(compressed=True, n_action_steps=6)
    start(h, [0.1] * 6, steps=2)
    h.wait_for("chunk")
    bomb = CompressedImage(format="png", data=_png_bomb())
    fill_stamp(bomb.header.stamp, h.now + DT)
    h.set_clock(h.now + DT)
    h.img_pubs["front"].publish(bomb)
    wrist = CompressedImage(format="png", data=encode_png(np.zeros((64, 64, 3), np.uint8)))
    wrist.header.stamp = bomb.header.stamp  # a whole frame set: the bomb is what is decoded
    h.img_pubs["wrist"].publish(wrist)
    for _ in range(4):  # the current chunk runs out; the next inference meets the bomb
        h.publish_joints(h.now, [0.1] * 6)
        h.set_clock(h.now + DT)
        time.sleep(0.03)
    status = h.diag_with("16000x16000")
    assert status.level == DiagnosticStatus.WARN and "max_image_scale" in status.message
    n = len(h.got["chunk"])
    run(h, 6, [0.1] * 6)
    h.wait_for("chunk", n + 1)  # the next good frames work


def test_a_huge_task_is_refused_and_chunks_keep_flowing(harness):
    h = harness(n_action_steps=6)
    start(h, [0.1] * 6, steps=2)
    h.wait_for("chunk")
    h.task_pub.publish(String(data="x" * 1_000_000))
    h.wait_until(lambda: h.node._rejected.get("task", 0) == 1, what="task refused")
    assert h.node._task == "reach the target"
    n = len(h.got["chunk"])
    run(h, 12, [0.1] * 6)
    h.wait_for("chunk", n + 2)
    result = h.node.set_parameters([Parameter("task", value="y" * 5000)])[0]
    assert not result.successful and "max_task_chars" in result.reason


# -- 7. atomic parameter changes --------------------------------------------------------------


def test_a_refused_atomic_change_changes_nothing(harness):
    h = harness(**LIMITS)
    start(h, [0.1] * 6, steps=2)
    result = h.node.set_parameters_atomically([Parameter("max_obs_age_s", value=0.01),
                                               Parameter("joint_lower_limits", value=[0.9] * 6)])
    assert not result.successful and "joint_lower_limits[0]=0.9 exceeds" in result.reason
    assert h.node.get_parameter("max_obs_age_s").value == 0.2
    assert h.node.engine.buffer.max_age_ns == int(0.2 * NS)
    n = len(h.got["chunk"])
    run(h, 12, [0.1] * 6)
    h.wait_for("chunk", n + 2)  # no "stale input (age > 0.010 s)"


# -- 8. start-up parameter errors -------------------------------------------------------------


@pytest.mark.parametrize(("arg", "names"), [
    ("device:=tpu", "device='tpu'"),
    ("dtype:=float16", "dtype='float16'"),
    ("num_steps:=-1", "num_steps"),
    ("control_rate_hz:=-5.0", "control_rate_hz"),
    ("max_step_delta:=fast", "max_step_delta"),
    ("joint_lower_limits:=[0.0,0.0] -p joint_upper_limits:=[1.0]", "same length"),
    ("max_step_delta:=.nan", "max_step_delta"),
])
def test_bad_start_up_values_give_one_error_line(arg, names):
    params = [x for a in arg.split(" -p ") for x in ("-p", a)]
    cmd = [sys.executable, "-m", "snapflow_ros", "policy_node", "--ros-args", *params]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == 2
    assert len(lines) == 1 and "[ERROR]" in lines[0] and names in lines[0], lines
    assert any(w in lines[0] for w in ("allowed", "one of", "need", "finite"))  # the fix


# -- 9. ambiguous or implausible input --------------------------------------------------------


def test_duplicate_joint_names_hold(harness):
    h = harness(n_action_steps=6)
    h.activate()
    h.set_clock(h.now + DT)
    names = [*JOINTS, "joint1"]
    h.publish_obs(h.now, joints=names, state=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.4])
    h.set_clock(h.now + DT)
    status = h.diag_with("appear more than once")
    assert status.level == DiagnosticStatus.WARN and h.got["chunk"] == []


def test_an_implausible_state_value_holds(harness):
    h = harness(n_action_steps=6)
    h.activate()
    h.set_clock(h.now + DT)
    h.publish_obs(h.now, state=[0.1, 1e30, 0.1, 0.1, 0.1, 0.1])
    h.set_clock(h.now + DT)
    status = h.diag_with("max_abs_state")
    assert status.level == DiagnosticStatus.WARN and h.got["chunk"] == []
