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
from snapflow_ros.waiting import wait_until


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
        self.listeners = [
            sub(JointTrajectory, "action_chunk", self.got["chunk"].append, 10),
            sub(JointState, "joint_commands", self.got["command"].append, 100),
            sub(JointTrajectory, "policy_node/debug/action_chunk", self.got["debug_chunk"].append,
                10),
            sub(JointState, "policy_node/debug/command", self.got["debug_command"].append, 100)]
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
        """Publish sim time ``ns`` and return once the node's clock reads it (re-published
        while discovery may still drop it)."""
        self.now = ns
        msg = Clock()
        fill_stamp(msg.clock, ns)
        self.clock_pub.publish(msg)
        self.wait_until(lambda: self.node.get_clock().now().nanoseconds >= ns, 10.0,
                        f"the node's clock to reach {ns}",
                        step=lambda: (time.sleep(0.002), self.clock_pub.publish(msg)))

    def _taken(self):
        """Messages the node's input callbacks have taken (stored or rejected)."""
        return sum(self.node._received.values())

    def _wait_taken(self, before, count):
        pubs = [*self.img_pubs.values(), self.js_pub]
        if all(p.get_subscription_count() > 0 for p in pubs):  # subscribed: wait until taken
            self.wait_until(lambda: self._taken() >= before + count, 10.0,
                            f"the node to take {count} messages")

    def publish_obs(self, stamp_ns, *, encoding="rgb8", joints=JOINTS, state=None,
                    image_stamp_ns=None, joint_stamp_ns=None):
        """Publish one frame per camera and a JointState; returns once the node took them."""
        before = self._taken()
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
        self.publish_joints(stamp_ns if joint_stamp_ns is None else joint_stamp_ns, state, joints,
                            wait=False)
        self._wait_taken(before, len(self.img_pubs) + 1)
        return images, state

    def publish_joints(self, stamp_ns, state, joints=JOINTS, wait=True):
        before = self._taken()
        js = JointState(name=list(joints), position=[float(v) for v in state])
        fill_stamp(js.header.stamp, stamp_ns)
        self.js_pub.publish(js)
        if wait:
            self._wait_taken(before, 1)

    def values(self, key):
        """Joint positions of every message received on ``key`` (commands)."""
        return [np.asarray(m.position) for m in self.got[key]]

    def wait_until(self, predicate, timeout=20.0, what="condition", step=None):
        wait_until(predicate, timeout, what, step=step, interval_s=0.01)

    def wait_for(self, key, count=1, timeout=20.0):
        self.wait_until(lambda: len(self.got[key]) >= count, timeout,
                        f"{count} x {key} (got {len(self.got[key])})")
        return self.got[key]

    def diagnostics_after(self, count=2, timeout=10.0):
        """Wait for ``count`` more diagnostics reports (the node's 0.1 s status timer): what
        was going to arrive before them has arrived. Returns the newest."""
        seen = len(self.got["diag"])
        self.wait_until(lambda: len(self.got["diag"]) >= seen + count, timeout,
                        f"{count} diagnostics reports")
        return self.got["diag"][-1]

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
        self.wait_until(lambda: all(s.get_publisher_count() > 0 for s in self.listeners), 10.0,
                        "the node's publishers")

    def diag_with(self, text, timeout=10.0):
        def mention():
            return next((s for s in self.got["diag"] if text in s.message), None)

        self.wait_until(lambda: mention() is not None, timeout,
                        f"diagnostics mentioning {text!r}; last: "
                        f"{[s.message for s in self.got['diag'][-3:]]}")
        return mention()

    def close(self):
        """Idempotent: a test may close its harness early, the fixture closes it again."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        # stop spinning and wait for the spin thread first: nothing may run callbacks (clock
        # jumps, subscriptions) while the node's threads, clock callbacks and handles go away
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(5.0)
        assert not self.thread.is_alive(), "the executor thread did not stop within 5 s"
        self.node._teardown()
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
