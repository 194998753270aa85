"""``record``: record the topic map's topics into one rosbag2 directory per episode.

Subscribes (raw CDR bytes, so the bags hold exactly what was on the wire) to every camera, the
joint states, the action topic and, when the map's task comes from a topic, the task topic.
Topics are relative, so namespaces and remaps apply; bags store the resolved names. Episodes:

    ~/start_episode, ~/stop_episode   (std_srvs/srv/Trigger; the reply names the episode)
    <episode_topic>                   (std_msgs/Bool: true starts, false stops; optional)
    autostart                         (an episode from launch until shutdown)

Bag receive stamps come from the node's clock, so ``use_sim_time`` works. All bag writing is in
``snapflow_ros.data.bag_recorder.BagRecorder`` (testable without ROS).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from snapflow_ros.data.bag_recorder import STORAGES, BagRecorder, RecorderError
from snapflow_ros.nodes import shutdown
from snapflow_ros.nodes.params import check_fields, declare, help_requested, updated, usage
from snapflow_ros.topic_map import ROS_TYPES, TopicMap, load_topic_map

RO = {"read_only": True}


@dataclass(frozen=True)
class RecorderParams:
    """Parameters of the recorder node (all read-only except ``task``)."""

    topic_map: str = field(default="", metadata={
        **RO, "help": "topic map YAML; empty: the packaged config/topic_map.yaml"})
    output_dir: str = field(default="recordings", metadata={
        **RO, "help": "folder that receives one bag directory per episode"})
    storage: str = field(default="mcap", metadata={
        **RO, "help": "rosbag2 storage: mcap or sqlite3", "choices": STORAGES})
    task: str = field(default="", metadata={
        "help": "task text stored in each new episode's metadata (custom_data task); empty: "
                "the topic map's task text"})
    autostart: bool = field(default=False, metadata={
        **RO, "help": "start an episode at launch (it ends at shutdown or ~/stop_episode)"})
    episode_topic: str = field(default="", metadata={
        **RO, "help": "std_msgs/Bool topic: true starts an episode, false stops it; empty: "
                      "services only"})

    def __post_init__(self) -> None:
        check_fields(self)


def _message_class(msgtype: str) -> Any:
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def recorded_topics(tm: TopicMap) -> list[tuple[str, str, QoSProfile]]:
    """(relative topic, msgtype, QoS) for each topic of the map, the task topic if streamed."""
    reliable = QoSProfile(depth=100)
    out = [(cam.topic, ROS_TYPES[cam.type], qos_profile_sensor_data) for cam in tm.cameras]
    out.append((tm.joint_states.topic, ROS_TYPES["JointState"], reliable))
    if tm.action.topic != tm.joint_states.topic:
        out.append((tm.action.topic, ROS_TYPES[tm.action.type], reliable))
    if tm.task.source == "topic":
        out.append((tm.task.topic, ROS_TYPES["String"],
                    QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)))
    return out


class RecorderNode(Node):
    """Thin shell: raw subscriptions and services in front of a ``BagRecorder``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("recorder", **kwargs)
        self.params = declare(self, RecorderParams)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.topic_map = load_topic_map(self.params.topic_map or None)
        wanted = [(self.resolve_topic_name(t), ty, q)
                  for t, ty, q in recorded_topics(self.topic_map)]
        self.recorder = BagRecorder(self.params.output_dir, [(t, ty) for t, ty, _ in wanted],
                                    storage=self.params.storage)
        self._data_subs = [self.create_subscription(_message_class(msgtype), topic,
                                                    self._writer_for(topic), qos, raw=True)
                           for topic, msgtype, qos in wanted]
        self.create_service(Trigger, "~/start_episode", self._on_start)
        self.create_service(Trigger, "~/stop_episode", self._on_stop)
        if self.params.episode_topic:
            self.create_subscription(Bool, self.params.episode_topic, self._on_marker, 10)
        self.get_logger().info(f"recording {[t for t, _, _ in wanted]} into "
                               f"{self.recorder.root} ({self.params.storage})")
        if self.params.autostart:
            self.start_episode()

    def _writer_for(self, topic: str) -> Any:
        def write(data: bytes) -> None:
            self.recorder.write(topic, data, self.get_clock().now().nanoseconds)

        return write

    def start_episode(self) -> str:
        name = self.recorder.start_episode(task=self.params.task or self.topic_map.task.text)
        self.get_logger().info(f"episode {name} started")
        return name

    def stop_episode(self) -> str:
        if self.recorder.recording:
            self._drain()
        path = self.recorder.stop_episode()
        self.get_logger().info(f"episode saved: {path}")
        return str(path)

    def _drain(self) -> None:
        """Write what the subscriptions already hold before an episode stops.

        The executor takes one message per subscription per turn, so a stop (a marker on its
        own topic, a service call) overtakes the messages queued before it whenever the
        recorder lags: a bridge episode's last 0.4 s were lost under load. rclpy has no public
        take; this is its executor's own call (``handle.take_message``), and a message taken
        here is simply absent when the executor's turn for that subscription comes.
        """
        for sub in self._data_subs:
            with sub.handle:
                while (taken := sub.handle.take_message(sub.msg_type, sub.raw)) is not None:
                    sub.callback(taken[0])  # the topic's writer

    def _on_start(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        return self._answer(self.start_episode, res)

    def _on_stop(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        return self._answer(self.stop_episode, res)

    def _answer(self, action: Any, res: Trigger.Response) -> Trigger.Response:
        try:
            res.message, res.success = action(), True
        except RecorderError as err:
            res.message, res.success = str(err), False
        return res

    def _on_marker(self, msg: Bool) -> None:
        if msg.data and not self.recorder.recording:
            self.start_episode()
        elif not msg.data and self.recorder.recording:
            self.stop_episode()

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        try:
            self.params = updated(self.params, parameters)
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def close(self) -> None:
        """Keep a running episode (stop and save it)."""
        path = self.recorder.close()
        if path is not None:
            self.get_logger().info(f"episode saved at shutdown: {path}")


def main(args: list[str] | None = None) -> int:
    argv = sys.argv if args is None else args
    if help_requested(argv):
        print(usage("record", __doc__.split("\n\n")[0].replace("``", ""),  # noqa: T201
                    RecorderParams))
        return 0
    rclpy.init(args=argv)
    node = None
    try:
        node = RecorderNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()  # a signal: the spin ends after the bag write in progress (shutdown.py)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok() and shutdown.received() is None:
            raise  # a bad parameter or output_dir: Python's report
        # a signal shut the context down during start-up or under a callback: a clean exit
    finally:
        if node is not None:
            node.destroy_node()  # first: its logger then no longer publishes to /rosout
            node.close()  # the bag of a running episode is kept
            node.get_logger().info("stopped")
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
