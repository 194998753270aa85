"""mujoco_bridge in-process: topics, stamps, commands, trajectories, seeded resets, bad input."""

import json
import subprocess
import sys
import uuid

import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from snapflow_ros.conversions.image import image_to_rgb
from snapflow_ros.conversions.stamps import NS, fill_stamp, stamp_to_ns
from snapflow_ros.nodes.mujoco_bridge_node import MujocoBridgeNode
from snapflow_ros.sim.scene import SceneError
from snapflow_ros.topic_map import load_topic_map
from snapflow_ros.waiting import wait_until

JOINTS = [f"joint{i}" for i in range(1, 7)]
DEEP = 1000  # the peer keeps everything: assertions are about what the bridge sent
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Harness:
    """The bridge plus a peer node that listens to everything and sends commands."""

    def __init__(self, **params):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.ns = f"/t{uuid.uuid4().hex[:8]}"
        remap = ["--ros-args", "-r", f"/clock:={self.ns}/clock",
                 "-r", f"/diagnostics:={self.ns}/diagnostics"]
        overrides = [Parameter("diagnostics_period_s", value=0.1),
                     *[Parameter(k, value=v) for k, v in params.items()]]
        self.bridge = None
        self.peer = rclpy.create_node("peer", context=self.ctx, namespace=self.ns)
        try:
            self.bridge = MujocoBridgeNode(context=self.ctx, namespace=self.ns,
                                           parameter_overrides=overrides, cli_args=remap)
        except Exception:
            self.close()
            raise
        self.got = {k: [] for k in ("front", "wrist", "joints", "clock", "diag", "status",
                                    "active", "done", "success")}
        sub = self.peer.create_subscription
        sub(Image, "camera/front/image_raw", self.got["front"].append, DEEP)
        sub(Image, "camera/wrist/image_raw", self.got["wrist"].append, DEEP)
        sub(JointState, "joint_states", self.got["joints"].append, DEEP)
        sub(Clock, "clock", lambda m: self.got["clock"].append(stamp_to_ns(m.clock)), DEEP)
        sub(DiagnosticArray, "diagnostics", self.got["diag"].append, DEEP)
        sub(String, "episode/status", lambda m: self.got["status"].append(json.loads(m.data)),
            LATCHED)
        for key in ("active", "done", "success"):
            sub(Bool, f"episode/{key}", lambda m, k=key: self.got[k].append(m.data), LATCHED)
        self.cmd = self.peer.create_publisher(JointState, "joint_commands", 10)
        self.traj = self.peer.create_publisher(JointTrajectory, "action_chunk", 10)
        self.reset_client = self.peer.create_client(Trigger, "mujoco_bridge/reset")
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.bridge)
        self.executor.add_node(self.peer)
        self.spin_until(lambda: self.cmd.get_subscription_count() > 0
                        and self.traj.get_subscription_count() > 0, what="discovery")

    def spin_until(self, cond, timeout=30.0, what="condition"):
        wait_until(cond, timeout, what, step=lambda: self.executor.spin_once(timeout_sec=0.01))

    def joint_stamps(self):
        return np.array([stamp_to_ns(m.header.stamp) for m in self.got["joints"]])

    def positions(self):
        return np.array([m.position for m in self.got["joints"]])

    def reset(self, seed):
        assert self.bridge.set_parameters([Parameter("seed", value=seed)])[0].successful
        future = self.reset_client.call_async(Trigger.Request())
        self.spin_until(future.done, what="reset")
        assert future.result().success
        return json.loads(future.result().message)

    def close(self):
        if self.bridge is not None:
            self.bridge.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def harness(request):
    h = Harness(**getattr(request, "param", {}))
    yield h
    h.close()


def _command(names, positions, stamp_ns=0):
    msg = JointState(name=list(names), position=[float(p) for p in positions])
    fill_stamp(msg.header.stamp, stamp_ns)
    return msg


@pytest.mark.parametrize("harness", [{"mode": "realtime"}], indirect=True)
def test_publishes_images_joints_and_clock_with_consistent_stamps(harness):
    h = harness
    h.spin_until(lambda: len(h.got["front"]) >= 8 and len(h.got["wrist"]) >= 8
                 and len(h.got["joints"]) >= 20, what="sensor data")
    newest = max(stamp_to_ns(m.header.stamp) for m in h.got["front"] + h.got["joints"])
    h.spin_until(lambda: h.got["clock"][-1] >= newest, what="/clock to catch up")
    front = [stamp_to_ns(m.header.stamp) for m in h.got["front"]]
    front = [s for s in front if s <= newest]  # more arrived while /clock caught up
    wrist = [stamp_to_ns(m.header.stamp) for m in h.got["wrist"][:len(front)]]
    assert front[:len(wrist)] == wrist  # both cameras render the same instant
    msg = h.got["front"][-1]
    assert (msg.encoding, msg.height, msg.width, msg.header.frame_id) == ("rgb8", 224, 224,
                                                                          "front")
    assert image_to_rgb(msg).std() > 5
    periods = np.diff(front) / NS * 30  # 30 Hz of sim time, 2 ms steps; the render thread
    assert np.all(periods > 0.9), periods  # takes a frame late if it was busy, never early
    js = h.joint_stamps()
    js = js[js <= newest]
    assert np.all(np.diff(js) == 10_000_000)  # 100 Hz
    assert h.got["joints"][0].name == JOINTS
    assert len(h.got["joints"][0].velocity) == len(h.got["joints"][0].effort) == 6
    clock = set(h.got["clock"])
    first = h.got["clock"][0]  # the ones before were sent before we were connected
    assert {f for f in front if f >= first} <= clock
    assert {j for j in js.tolist() if j >= first} <= clock
    assert np.all(np.diff(h.got["clock"]) > 0)
    assert h.got["status"][-1]["episode"] == 0 and not h.got["status"][-1]["done"]


@pytest.mark.parametrize("harness", [{"mode": "free", "task": "none"}], indirect=True)
def test_moves_the_arm_to_a_commanded_pose(harness):
    h = harness
    h.spin_until(lambda: len(h.got["joints"]) > 0, what="joint states")
    goal = np.array(h.got["joints"][-1].position) + [0.3, -0.2, 0.25, 0.4, -0.3, 0.5]
    order = [5, 0, 3, 1, 4, 2]  # by name, not by position in the message
    h.cmd.publish(_command([JOINTS[i] for i in order], goal[order]))

    def settled():
        return len(h.got["joints"]) > 5 and np.abs(h.positions()[-5:] - goal).max() < 0.02

    h.spin_until(settled, what="the commanded pose")
    assert h.bridge.rejected == 0


@pytest.mark.parametrize("harness", [{"mode": "lockstep", "lockstep_lead_s": 3.0,
                                      "task": "none"}], indirect=True)
def test_follows_a_joint_trajectory_on_sim_time(harness):
    h = harness
    # lockstep: 3 s of sim time past the last command (the start), then the bridge waits
    h.spin_until(lambda: h.got["clock"] and h.got["clock"][-1] >= 3 * NS, what="the stall")
    t0 = h.got["clock"][-1]
    home = h.positions()[-1]
    mid, goal = home + [0.2, 0.1, -0.2, 0.3, 0.2, -0.3], home + [0.4, 0.2, -0.4, 0.6, 0.4, -0.6]
    traj = JointTrajectory(joint_names=JOINTS[::-1])
    fill_stamp(traj.header.stamp, t0 + NS // 10)  # starts 0.1 s in the future
    for t, q in ((0.5, mid), (1.0, goal)):
        point = JointTrajectoryPoint(positions=[float(v) for v in q[::-1]])
        fill_stamp(point.time_from_start, int(t * NS))
        traj.points.append(point)
    h.traj.publish(traj)
    h.spin_until(lambda: h.joint_stamps()[-1] >= t0 + 3 * NS, what="the trajectory")
    stamps, q = h.joint_stamps(), h.positions()

    def at(t):
        return q[np.searchsorted(stamps, t0 + int(t * NS))]

    assert np.abs(at(0.1) - home).max() < 0.01  # not started yet
    reference = home + (mid - home) * (0.35 - 0.1) / 0.5  # linear from the start to point 0
    assert np.abs(at(0.35) - reference).max() < 0.08  # tracking lag of position actuators
    assert np.abs(at(0.6) - mid).max() < 0.08
    assert np.abs(at(2.5) - goal).max() < 0.02  # holds the last point
    assert h.bridge.rejected == 0


@pytest.mark.parametrize("harness", [{"mode": "lockstep", "lockstep_lead_s": 0.05}],
                         indirect=True)
def test_reset_by_seed_is_deterministic(harness):
    h = harness

    def first_image(seed):
        status = h.reset(seed)
        assert status["seed"] == seed and status["time_s"] == 0.0
        h.spin_until(lambda: any(stamp_to_ns(m.header.stamp) == status["start_ns"]
                                 for m in h.got["wrist"]), what="the first frame")
        front = [m for m in h.got["front"] if stamp_to_ns(m.header.stamp) == status["start_ns"]]
        return image_to_rgb(front[0]), status

    a, status_a = first_image(3)
    b, status_b = first_image(3)
    c, _ = first_image(4)
    assert np.array_equal(a, b) and status_a["info"] == status_b["info"]
    assert status_b["start_ns"] > status_a["start_ns"] and status_b["episode"] == 2
    assert not np.array_equal(a, c)
    h.spin_until(lambda: h.got["status"] and h.got["status"][-1]["episode"] == 3,
                 what="the latched status")


@pytest.mark.parametrize("harness", [{"mode": "free", "episode_timeout_s": 0.3}],
                         indirect=True)
def test_episode_end_and_restart_are_published(harness):
    h = harness
    h.spin_until(lambda: h.got["status"] and h.got["status"][-1]["done"], what="the timeout")
    final = h.got["status"][-1]
    assert (final["reason"], final["success"], final["time_s"]) == ("timeout", False, 0.3)
    assert final["end_ns"] == final["start_ns"] + 300_000_000

    def markers(active, done):
        return lambda: (h.got["active"][-1:] == [active] and h.got["done"][-1:] == [done]
                        and h.got["success"][-1:] == [False])

    h.spin_until(markers(active=False, done=True), what="the end-of-episode markers")
    h.reset(1)
    h.spin_until(markers(active=True, done=False), what="the new episode's markers")
    assert h.got["status"][-1]["episode"] == 1 and not h.got["status"][-1]["done"]


@pytest.mark.parametrize("harness", [{"mode": "free", "task": "none"}], indirect=True)
def test_bad_commands_are_reported_and_ignored(harness):
    h = harness
    h.spin_until(lambda: len(h.got["joints"]) > 0, what="joint states")
    targets = h.bridge.runner.env.scene.joint_targets()
    h.cmd.publish(_command(JOINTS[:5], np.ones(5)))  # one joint short
    h.cmd.publish(JointState(name=JOINTS, position=[1.0] * 5))  # names and values disagree
    h.cmd.publish(JointState(position=[1.0] * 7))  # unnamed, wrong count
    bad = JointTrajectory(joint_names=JOINTS, points=[JointTrajectoryPoint(positions=[1.0])])
    h.traj.publish(bad)
    h.spin_until(lambda: h.bridge.rejected == 4, what="the rejections")
    assert np.array_equal(h.bridge.runner.env.scene.joint_targets(), targets)

    def reported():
        values = [{kv.key: kv.value for kv in d.status[0].values} for d in h.got["diag"]]
        return any(v["rejected_commands"] == "4" for v in values)

    h.spin_until(reported, what="/diagnostics")
    last = h.got["diag"][-1].status[0]
    assert last.level == last.WARN and " ignored: " in last.message  # the newest rejection
    n = len(h.got["joints"])
    h.cmd.publish(JointState(position=(targets + 0.1).tolist()))  # unnamed, right count: OK
    h.spin_until(lambda: len(h.got["joints"]) > n + 5, what="the bridge to keep running")
    assert np.allclose(h.bridge.runner.env.scene.joint_targets(), targets + 0.1)


def test_missing_scene_file_fails_with_a_clear_error():
    with pytest.raises(SceneError, match="'/no/such/scene.xml' does not exist"):
        Harness(scene="/no/such/scene.xml")


def test_camera_the_scene_lacks_lists_the_scene_cameras(tmp_path):
    data = load_topic_map().to_dict()
    data["cameras"]["top"] = {"topic": "camera/top/image_raw"}
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SceneError, match=r"\['top'\].*\['front', 'wrist'\]"):
        Harness(topic_map=str(path))


def test_invalid_parameter_values_are_rejected():
    with pytest.raises(ValueError, match="mode='fast' is not one of"):
        Harness(mode="fast")
    with pytest.raises(ValueError, match="'joint_commands' is the topic map's action topic"):
        Harness(trajectory_topic="joint_commands")
    h = Harness(mode="lockstep")
    try:
        result = h.bridge.set_parameters([Parameter("seed", value=-5)])[0]
        assert not result.successful
        assert not h.bridge.set_parameters([Parameter("mode", value="free")])[0].successful
    finally:
        h.close()


def test_executable_exits_nonzero_and_names_the_problem():
    out = subprocess.run([sys.executable, "-m", "snapflow_ros", "mujoco_bridge", "--ros-args",
                          "-p", "scene:=/no/such/scene.xml"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "/no/such/scene.xml' does not exist" in out.stderr + out.stdout


def _diag_values(h):
    return {kv.key: kv.value for kv in h.got["diag"][-1].status[0].values}


@pytest.mark.parametrize("harness", [{"mode": "realtime", "real_time_factor": 100.0}],
                         indirect=True)
def test_the_render_thread_skips_frames_it_cannot_render_and_says_so(harness):
    """100x real time with two 224x224 cameras at 30 Hz (3000 frames per wall second): the
    render thread cannot keep up, so frames are skipped (counted, WARN), never queued."""
    h = harness
    h.spin_until(lambda: h.got["diag"] and _diag_values(h)["skipping_frames"] == "True",
                 timeout=20.0, what="skipping frames on /diagnostics")
    values = _diag_values(h)
    assert values["render_thread"] == "True" and int(values["frames_skipped"]) > 30
    assert h.got["diag"][-1].status[0].level == DiagnosticStatus.WARN
    stamps = [stamp_to_ns(m.header.stamp) for m in h.got["front"]]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


@pytest.mark.parametrize("harness", [{"mode": "realtime", "real_time_factor": 100.0,
                                      "render_thread": False}], indirect=True)
def test_falling_behind_real_time_is_a_warning_with_its_costs(harness):
    """100x real time with two 224x224 cameras at 30 Hz rendered inside the physics loop
    cannot be met on any machine: after 2 s below 90 % of it the diagnostics say so (WARN) and
    the log names the render cost."""
    h = harness

    def behind():
        last = [s for a in h.got["diag"] for s in a.status]
        return last and dict((kv.key, kv.value) for kv in last[-1].values).get(
            "behind_real_time") == "True"

    h.spin_until(behind, timeout=20.0, what="a behind-real-time report")
    status = h.got["diag"][-1].status[0]
    assert status.level == DiagnosticStatus.WARN
    assert float(dict((kv.key, kv.value) for kv in status.values)["real_time_factor"]) < 90
