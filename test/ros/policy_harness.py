"""The policy node in-process with a tiny real policy, on sim time driven by the test (/clock).

``Harness`` holds the node under test (runner injected: the model runs in a thread of the test
process) and a peer node that plays robot, clock and listener; ``harness(**params)`` makes one.
"""

import io
import threading
import time
import uuid

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from PIL import Image as PILImage
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from snapflow_ros.conversions.image import fill_image_msg
from snapflow_ros.conversions.stamps import NS, fill_stamp
from snapflow_ros.nodes.policy_node import PolicyNode


def encode_png(rgb):
    """PNG bytes of an (H, W, 3) uint8 RGB image."""
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()

JOINTS = [f"joint{i}" for i in range(1, 7)]
T0 = 100 * NS
RATE = 30.0
DT = int(NS / RATE)


class Harness:
    """The node under test plus a peer node that plays robot, clock and listener."""

    def __init__(self, runner, topic_map_file, compressed=False, **params):
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
        self.compressed = compressed
        img_type = CompressedImage if compressed else Image
        self.img_pubs = {c: self.peer.create_publisher(img_type, f"camera/{c}/image_raw", 10)
                         for c in ("front", "wrist")}
        self.js_pub = self.peer.create_publisher(JointState, "joint_states", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.task_pub = self.peer.create_publisher(String, "task", latched)
        self.got = {k: [] for k in ("chunk", "command", "debug_chunk", "debug_command", "diag")}
        sub = self.peer.create_subscription
        sub(JointTrajectory, "action_chunk", self.got["chunk"].append, 10)
        sub(JointState, "joint_commands", self.got["command"].append, 100)
        sub(JointTrajectory, "policy_node/debug/action_chunk", self.got["debug_chunk"].append, 10)
        sub(JointState, "policy_node/debug/command", self.got["debug_command"].append, 100)
        sub(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        # one executor thread (as the node's own main): a multi-threaded executor's Python loop
        # would starve the in-process model of the GIL
        self.executor = SingleThreadedExecutor(context=self.ctx)
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

    def publish_obs(self, stamp_ns, *, encoding="rgb8", joints=JOINTS, state=None,
                    image_stamp_ns=None, joint_stamp_ns=None):
        images = {}
        for cam, pub in self.img_pubs.items():
            rgb = self.rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            if self.compressed:
                msg = CompressedImage(format="png", data=encode_png(rgb))
            else:
                msg = fill_image_msg(Image(), rgb)
                msg.encoding = encoding
            fill_stamp(msg.header.stamp, stamp_ns if image_stamp_ns is None else image_stamp_ns)
            pub.publish(msg)
            images[cam] = rgb
        state = self.rng.normal(size=len(joints)) if state is None else np.asarray(state)
        self.publish_joints(stamp_ns if joint_stamp_ns is None else joint_stamp_ns, state, joints)
        return images, state

    def publish_joints(self, stamp_ns, state, joints=JOINTS):
        js = JointState(name=list(joints), position=[float(v) for v in state])
        fill_stamp(js.header.stamp, stamp_ns)
        self.js_pub.publish(js)

    def values(self, key):
        """Joint positions of every message received on ``key`` (commands)."""
        return [np.asarray(m.position) for m in self.got[key]]

    def wait_until(self, predicate, timeout=20.0, what="condition"):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}")

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
        pubs = [*self.img_pubs.values(), self.js_pub, self.task_pub]
        self.wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs), 10.0,
                        "the node's subscriptions")

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
