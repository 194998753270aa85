"""The ``record`` node in-process: live topics → one bag per episode (services or a Bool
topic) → bag_to_lerobot → the frames that were published."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from snapflow_ros.conversions.image import fill_image_msg
from snapflow_ros.conversions.stamps import fill_stamp
from snapflow_ros.data.bag_reader import BagFile, find_bags
from snapflow_ros.data.bag_to_lerobot import ConvertConfig, convert
from snapflow_ros.nodes.recorder_node import RecorderNode
from snapflow_ros.topic_map import load_topic_map
from snapflow_ros.waiting import wait_until

JOINTS = ["a", "b", "c"]
T0, MS = 5_000 * 10**9, 10**6


def _rgb(i: int) -> np.ndarray:
    img = np.zeros((12, 16, 3), np.uint8)
    img[..., 0], img[..., 1], img[4:, 3:, 2] = 10 * i, 255 - 10 * i, 99
    return img


@pytest.fixture
def topic_map_file(tmp_path):
    data = {"fps": 10, "cameras": {
        "front": {"topic": "cam/front", "type": "Image", "height": 12, "width": 16},
        "wrist": {"topic": "cam/wrist", "type": "CompressedImage", "height": 12, "width": 16}},
        "joint_states": {"topic": "joint_states", "joints": JOINTS},
        "action": {"topic": "cmd", "type": "JointState", "joints": JOINTS},
        "task": {"source": "per_bag", "text": "map text"}}
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Harness:
    """Recorder node + a peer that publishes, both on one executor spun by the test."""

    def __init__(self, tmp_path, topic_map_file, **params):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.ns = f"/rec{uuid.uuid4().hex[:8]}"
        overrides = [Parameter("topic_map", value=str(topic_map_file)),
                     Parameter("output_dir", value=str(tmp_path / "bags")),
                     *[Parameter(k, value=v) for k, v in params.items()]]
        self.node = RecorderNode(context=self.ctx, namespace=self.ns,
                                 parameter_overrides=overrides)
        self.peer = rclpy.create_node("peer", context=self.ctx, namespace=self.ns)
        pub = self.peer.create_publisher
        self.front = pub(Image, "cam/front", qos_profile_sensor_data)
        self.wrist = pub(CompressedImage, "cam/wrist", qos_profile_sensor_data)
        self.joints = pub(JointState, "joint_states", QoSProfile(depth=100))
        self.cmd = pub(JointState, "cmd", QoSProfile(depth=100))
        self.marker = pub(Bool, "episode", 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.spin_until(lambda: all(p.get_subscription_count() > 0
                                    for p in (self.front, self.wrist, self.joints, self.cmd)))

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.ctx)

    def spin_until(self, done, timeout=10.0, what="condition"):
        wait_until(done, timeout, what, step=lambda: self.executor.spin_once(timeout_sec=0.01))

    def drain(self, seconds=0.3):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def call(self, service):
        client = self.peer.create_client(Trigger, f"{self.ns}/recorder/{service}")
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())
        self.executor.spin_until_future_complete(future, timeout_sec=10)
        return future.result()

    def publish(self, pub, msg):
        """Publish and wait until the recorder wrote it (when recording), so nothing is lost."""
        before = sum(self.node.recorder.counts.values()) if self.node.recorder.recording else 0
        pub.publish(msg)
        if self.node.recorder.recording:
            self.spin_until(lambda: sum(self.node.recorder.counts.values()) > before)

    def publish_episode(self, frames):
        """Frame i: images stamped T0 + i·100 ms, joints at 50 Hz, one command 1 ms after."""
        import cv2

        for i in range(frames):
            t = T0 + i * 100 * MS
            img = fill_image_msg(Image(), _rgb(i))
            fill_stamp(img.header.stamp, t)
            self.publish(self.front, img)
            wrist = CompressedImage(format="png")
            wrist.data = cv2.imencode(".png", _rgb(i)[..., ::-1])[1].tobytes()
            fill_stamp(wrist.header.stamp, t)
            self.publish(self.wrist, wrist)
            for k in range(5):
                js = JointState(name=JOINTS[::-1], position=[float(i * 5 + k)] * 3)
                fill_stamp(js.header.stamp, t - 40 * MS + k * 20 * MS)
                self.publish(self.joints, js)
            cmd = JointState(name=JOINTS, position=[float(i) + 0.5, 0.0, 0.0])
            fill_stamp(cmd.header.stamp, t + MS)
            self.publish(self.cmd, cmd)


def test_services_record_episodes_that_convert(tmp_path, topic_map_file):
    h = Harness(tmp_path, topic_map_file, task="pour water")
    try:
        h.publish_episode(2)  # before start: not recorded
        h.drain()
        assert not any(tmp_path.joinpath("bags").iterdir())
        started = h.call("start_episode")
        assert started.success and started.message == "episode_000000"
        assert not h.call("start_episode").success  # already recording
        h.publish_episode(12)
        stopped = h.call("stop_episode")
        assert stopped.success and stopped.message.endswith("episode_000000")
        assert not h.call("stop_episode").success
    finally:
        h.close()
    bags = find_bags([tmp_path / "bags"])
    assert [b.name for b in bags] == ["episode_000000"]
    with BagFile(bags[0]) as bag:
        assert bag.custom_data == {"task": "pour water"}
        assert set(bag.topics) == {f"{h.ns}/cam/front", f"{h.ns}/cam/wrist",
                                   f"{h.ns}/joint_states", f"{h.ns}/cmd"}
    out = tmp_path / "ds"
    report = convert(ConvertConfig(bags=bags, output=out, topic_map=load_topic_map(topic_map_file),
                                   namespace=h.ns, video=False, progress=False))
    # frame 0 has no command yet (each command comes 1 ms after its images): 11 frames
    assert report["totals"]["frames_written"] == 11
    assert report["totals"]["dropped"] == {"missing:action": 1}
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/ds", root=out)
    for j in range(len(ds)):
        i = j + 1
        item = ds[j]
        for key in ("observation.images.front", "observation.images.wrist"):
            rgb = (item[key].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            np.testing.assert_array_equal(rgb, _rgb(i))
        assert item["observation.state"].tolist() == [i * 5 + 2.0] * 3  # stamped exactly at t
        assert item["action"].tolist() == [i - 1 + 0.5, 0.0, 0.0]  # the previous command
        assert item["task"] == "pour water"


def test_episode_topic_parameters_and_sqlite3(tmp_path, topic_map_file):
    h = Harness(tmp_path, topic_map_file, storage="sqlite3", episode_topic="episode")
    try:
        names = {p.name: p for p in h.node.describe_parameters(
            ["topic_map", "output_dir", "storage", "task", "autostart", "episode_topic"])}
        assert all(p.description for p in names.values())
        assert names["storage"].read_only and not names["task"].read_only
        assert not h.node.set_parameters([Parameter("storage", value="mcap")])[0].successful
        assert h.node.set_parameters([Parameter("task", value="wipe")])[0].successful
        h.spin_until(lambda: h.marker.get_subscription_count() > 0)
        for value, episodes in ((True, 0), (False, 1), (True, 1), (False, 2)):
            h.marker.publish(Bool(data=value))
            h.spin_until(lambda value=value: h.node.recorder.recording == value)
            if value:
                h.publish_episode(3)
            assert len(find_bags([tmp_path / "bags"]) if episodes else []) == episodes
    finally:
        h.close()
    bags = find_bags([tmp_path / "bags"])
    assert [b.name for b in bags] == ["episode_000000", "episode_000001"]
    for bag in bags:
        with BagFile(bag) as bf:
            assert bf.storage_id == "sqlite3" and bf.custom_data == {"task": "wipe"}
            assert bf.message_count(bf.topics) == 3 * (1 + 1 + 5 + 1)


def test_params_yaml_matches_the_dataclass():
    import dataclasses
    from pathlib import Path

    from snapflow_ros.nodes.recorder_node import RecorderParams

    path = Path(__file__).resolve().parents[2] / "config" / "recorder.yaml"
    params = yaml.safe_load(path.read_text())["recorder"]["ros__parameters"]
    assert set(params) == {f.name for f in dataclasses.fields(RecorderParams)}
    assert RecorderParams(**params) == RecorderParams()
    with pytest.raises(ValueError, match="storage"):
        RecorderParams(storage="rosbag1")


def test_autostart_keeps_the_episode_at_shutdown(tmp_path, topic_map_file):
    h = Harness(tmp_path, topic_map_file, autostart=True)
    try:
        assert h.node.recorder.recording
        h.publish_episode(2)
    finally:
        h.node.close()  # what main() does on Ctrl-C / external shutdown
        h.close()
    (bag,) = find_bags([tmp_path / "bags"])
    with BagFile(bag) as bf:
        assert bf.custom_data == {"task": "map text"}  # the map's text when none is set
        assert bf.message_count([f"{h.ns}/cam/front"]) == 2


def test_a_stop_keeps_the_messages_queued_before_it(tmp_path, topic_map_file):
    """The executor takes one message per subscription per turn, so a stop marker overtakes a
    backlog (a bridge burst while the recorder lags): the episode still gets all of it."""
    h = Harness(tmp_path, topic_map_file, episode_topic="episode")
    try:
        h.spin_until(lambda: h.marker.get_subscription_count() > 0)
        h.marker.publish(Bool(data=True))
        h.spin_until(lambda: h.node.recorder.recording)
        for k in range(40):  # a backlog: published without the recorder's turn in between
            js = JointState(name=JOINTS, position=[float(k)] * 3)
            fill_stamp(js.header.stamp, T0 + k * 10 * MS)
            h.joints.publish(js)
            h.cmd.publish(JointState(name=JOINTS, position=[float(k)] * 3))
        h.marker.publish(Bool(data=False))
        h.spin_until(lambda: not h.node.recorder.recording)
    finally:
        h.close()
    (bag,) = find_bags([tmp_path / "bags"])
    with BagFile(bag) as bf:
        assert bf.message_count([f"{h.ns}/joint_states"]) == 40
        assert bf.message_count([f"{h.ns}/cmd"]) == 40
