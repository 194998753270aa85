"""``sim_demos``: scripted-expert demonstrations through the MuJoCo bridge, as rosbag2 files.

One process, one private ROS context, three nodes on one executor::

    mujoco_bridge (lockstep, frame gate) ──images, joint_states──► expert ──JointState──┐
          ▲  └──────────── everything on the topic map's topics ────► recorder (raw)   │
          └───────────────────────── action topic (joint_commands) ◄──────────────────┘

The expert answers every camera frame with the joint targets of its plan one control period
later, stamped with the frame's stamp; the frame gate makes the bridge wait for that answer,
so a seed always gives the same episode. The recorder stores the wire bytes of the map's
topics (cameras, joint_states, action) with rosbags, one bag per episode under
``OUT/episode_NNNN`` (mcap by default), timestamped with the header stamps (sim time), from
the reset to the end of the episode, plus the final ``episode/status`` JSON. ``bag_to_lerobot``
converts the bags; ``OUT/episodes.jsonl`` lists seed, success and the target reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from snapflow_ros.conversions.stamps import NS, fill_stamp, stamp_to_ns
from snapflow_ros.nodes import shutdown
from snapflow_ros.nodes.mujoco_bridge_node import MujocoBridgeNode
from snapflow_ros.sim.expert import JointPlan, ReachExpert
from snapflow_ros.sim.tasks import ReachTwoTargets
from snapflow_ros.topic_map import ROS_TYPES, TopicMap

log = logging.getLogger("sim_demos")
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
STATUS_TOPIC = "/episode/status"


class ExpertNode(Node):
    """Answers each frame of the first camera with ``plan(t + 1/fps)`` on the action topic."""

    def __init__(self, topic_map: TopicMap, **kwargs: object) -> None:
        super().__init__("scripted_expert", **kwargs)  # type: ignore[arg-type]
        self.names = topic_map.action_names
        self.period_s = 1.0 / topic_map.fps
        self.plan: JointPlan | None = None
        self.start_ns = 0
        self.last_frame_ns = -1
        self.pub = self.create_publisher(JointState, topic_map.action.topic, 10)
        self.create_subscription(Image, topic_map.cameras[0].topic, self._on_frame, 10)

    def start(self, plan: JointPlan | None, start_ns: int) -> None:
        """Follow ``plan`` from sim time ``start_ns`` (None: stop answering); answers a frame
        of the new episode that arrived before the plan did."""
        self.plan, self.start_ns = plan, start_ns
        if plan is not None and self.last_frame_ns >= start_ns:
            self._answer(self.last_frame_ns)

    def _on_frame(self, msg: Image) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self.last_frame_ns = max(self.last_frame_ns, stamp)
        if self.plan is not None and stamp >= self.start_ns:
            self._answer(stamp)

    def _answer(self, stamp: int) -> None:
        assert self.plan is not None
        q = self.plan((stamp - self.start_ns) / NS + self.period_s)
        cmd = JointState(name=list(self.names), position=q.tolist())
        fill_stamp(cmd.header.stamp, stamp)
        self.pub.publish(cmd)


def header_stamp_ns(raw: bytes) -> int:
    """Header stamp of a serialised message whose first field is a std_msgs/Header (CDR)."""
    order = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(order + "iI", raw, 4)
    return sec * NS + nanosec


class EpisodeRecorder(Node):
    """Raw subscriptions on the map's topics; writes the messages of one episode window."""

    def __init__(self, topic_map: TopicMap, storage: str, **kwargs: object) -> None:
        super().__init__("sim_demos_recorder", **kwargs)  # type: ignore[arg-type]
        topics = [(c.topic, Image, ROS_TYPES[c.type]) for c in topic_map.cameras]
        topics.append((topic_map.joint_states.topic, JointState, ROS_TYPES["JointState"]))
        topics.append((topic_map.action.topic, JointState, ROS_TYPES["JointState"]))
        self.subs = [self.create_subscription(cls, topic, self._callback(i), 50, raw=True)
                     for i, (topic, cls, _) in enumerate(topics)]
        self.types = [t for _, _, t in topics]
        self.storage = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer: Writer | None = None
        self.path: Path | None = None
        self.connections: list = []
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.pending: list[tuple[int, int, bytes]] = []
        self.newest = [-1] * len(topics)
        self.counts = [0] * len(topics)

    @property
    def topic_names(self) -> list[str]:
        """Fully resolved topic names (what the bag calls them)."""
        return [s.topic_name for s in self.subs]

    def _callback(self, index: int) -> Callable[[bytes], None]:
        def callback(raw: bytes) -> None:
            stamp = header_stamp_ns(raw)
            self.newest[index] = max(self.newest[index], stamp)
            if self.writer is None:
                return
            if self.start_ns is None:
                self.pending.append((index, stamp, raw))
            else:
                self._write(index, stamp, raw)
        return callback

    def _write(self, index: int, stamp: int, raw: bytes) -> None:
        if self.writer is None or self.start_ns is None or stamp < self.start_ns:
            return
        if self.end_ns is not None and stamp > self.end_ns:
            return
        self.writer.write(self.connections[index], stamp, raw)
        self.counts[index] += 1

    def begin(self, path: Path) -> None:
        """Open a bag; messages are held until ``set_start`` says where the episode begins."""
        self.path = path
        self.writer = Writer(path, version=9, storage_plugin=self.storage)
        self.writer.open()
        self.connections = [self.writer.add_connection(topic, msgtype, typestore=TYPESTORE)
                            for topic, msgtype in zip(self.topic_names, self.types, strict=True)]
        self.start_ns, self.end_ns, self.pending = None, None, []
        self.counts = [0] * len(self.subs)

    def set_start(self, start_ns: int) -> None:
        """Keep messages stamped at or after ``start_ns`` (the reset's sim time)."""
        self.start_ns = start_ns
        for item in self.pending:
            self._write(*item)
        self.pending = []

    def abort(self) -> Path | None:
        """Close and delete the bag of an unfinished episode (interrupted): ``episodes.jsonl``
        and the output folder then hold only whole episodes. Returns the deleted path."""
        if self.writer is None:
            return None
        writer, self.writer = self.writer, None
        try:
            writer.close()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
        return self.path

    def caught_up(self, end_ns: int) -> bool:
        """True once every camera and joint_states topic delivered a stamp >= ``end_ns``."""
        return all(n >= end_ns for n in self.newest[:-1])

    def finish(self, status_json: str, end_ns: int) -> dict[str, int]:
        """Write the final status, close the bag; returns message counts per topic."""
        assert self.writer is not None
        topic = self.get_namespace().rstrip("/") + STATUS_TOPIC
        conn = self.writer.add_connection(topic, ROS_TYPES["String"], typestore=TYPESTORE)
        msg = TYPESTORE.types["std_msgs/msg/String"](data=status_json)
        self.writer.write(conn, end_ns, TYPESTORE.serialize_cdr(msg, ROS_TYPES["String"]))
        self.writer.set_custom_data("snapflow_ros.episode_status", status_json)
        self.writer.close()
        self.writer = None
        return dict(zip(self.topic_names, self.counts, strict=True))


def _spin_until(executor: SingleThreadedExecutor, done: Callable[[], bool], timeout_s: float,
                what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        executor.spin_once(timeout_sec=0.01)


def record_demos(out: Path, episodes: int, seed: int, *, scene: str = "", topic_map: str = "",
                 episode_timeout_s: float = 0.0, storage: str = "mcap", namespace: str = "",
                 wall_timeout_s: float = 120.0, task: str = "reach_two_targets") -> list[dict]:
    """Record ``episodes`` expert episodes with seeds ``seed, seed+1, ...`` under ``out``.

    ``namespace`` prefixes the map's relative topics (and so the bags' topic names). Returns
    one summary dict per episode (also appended to ``out/episodes.jsonl``).
    """
    out.mkdir(parents=True, exist_ok=True)
    ctx = rclpy.Context()
    ctx.init(args=[])
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    remap = ["--ros-args", "-r", f"/clock:={ns or '/sim_demos'}/clock"]  # sim time stays ours
    overrides = [Parameter("mode", value="lockstep"), Parameter("lockstep_gate", value="frame"),
                 Parameter("task", value=task), Parameter("scene", value=scene),
                 Parameter("topic_map", value=topic_map), Parameter("seed", value=seed),
                 Parameter("episode_timeout_s", value=episode_timeout_s),
                 Parameter("tick_period_s", value=0.001)]  # re-check the gate often
    bridge = MujocoBridgeNode(context=ctx, parameter_overrides=overrides, cli_args=remap,
                              namespace=ns)
    nodes: list[Node] = [bridge]
    recorder: EpisodeRecorder | None = None
    try:
        tm, env = bridge.topic_map, bridge.runner.env
        if not isinstance(env.task, ReachTwoTargets) or tm.action.type != "JointState":
            raise ValueError("sim_demos needs a reach_two_* task and a topic map whose "
                             f"action type is JointState (it is {tm.action.type})")
        expert = ExpertNode(tm, context=ctx, namespace=ns)
        recorder = EpisodeRecorder(tm, storage, context=ctx, namespace=ns)
        nodes += [expert, recorder]
        reset = expert.create_client(Trigger, f"{bridge.get_fully_qualified_name()}/reset")
        executor = SingleThreadedExecutor(context=ctx)
        for node in nodes:
            executor.add_node(node)
        _spin_until(executor, lambda: reset.service_is_ready() and all(
            s.get_publisher_count() > 0 for s in recorder.subs), 30.0, "topic discovery")
        planner, summaries = ReachExpert(env.scene, env.task), []
        for i in range(episodes):
            bridge.set_parameters([Parameter("seed", value=seed + i)])
            path = out / f"episode_{i:04d}"
            recorder.begin(path)
            expert.start(None, 0)
            future = reset.call_async(Trigger.Request())
            _spin_until(executor, future.done, wall_timeout_s, "the reset service")
            status = json.loads(future.result().message)
            plan = planner.plan(np.random.default_rng([status["seed"], 1]))
            expert.start(plan, status["start_ns"])
            recorder.set_start(status["start_ns"])
            _spin_until(executor, lambda: env.status.done, wall_timeout_s, "the episode end")
            final = env.status
            recorder.end_ns = final.end_ns  # before any message of this spin is written
            _spin_until(executor, lambda end=final.end_ns: recorder.caught_up(end), wall_timeout_s,
                        "the last messages")
            counts = recorder.finish(final.to_json(), final.end_ns)
            summary = {"episode": i, "bag": path.name, "seed": final.seed,
                       "success": final.success, "reached": final.reached,
                       "planned": plan.mode, "duration_s": round(final.time_s, 3),
                       "messages": counts}
            summaries.append(summary)
            with (out / "episodes.jsonl").open("a") as f:
                f.write(json.dumps(summary) + "\n")
            log.info("episode %d seed %d: %s, target %d, %.2f s", i, final.seed,
                     "success" if final.success else final.reason, final.reached, final.time_s)
        return summaries
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (nodes/shutdown.py): keep whole episodes only
        if recorder is not None and (path := recorder.abort()) is not None:
            log.info("interrupted: removed the unfinished episode %s", path.name)
        raise
    finally:
        for node in nodes:
            node.destroy_node()
        ctx.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    """CLI: ``sim_demos --episodes N --seed S --out DIR``."""
    parser = argparse.ArgumentParser(prog="sim_demos", description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--scene", default="", help="MJCF scene (default: packaged)")
    parser.add_argument("--topic-map", default="", help="topic map YAML (default: packaged)")
    parser.add_argument("--episode-timeout", type=float, default=0.0,
                        help="episode time limit in sim s (0: the task's)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--task", choices=("reach_two_targets", "reach_two_fixed_targets"),
                        default="reach_two_targets", help="random or fixed target places")
    parser.add_argument("--namespace", default="", help="namespace of the map's topics")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, force=True, format="%(message)s")
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if args.out.exists() and any(args.out.iterdir()):
        if not args.overwrite:
            parser.error(f"{args.out} exists and is not empty (use --overwrite or another --out)")
        shutil.rmtree(args.out)
    try:
        summaries = record_demos(args.out, args.episodes, args.seed, scene=args.scene,
                                 topic_map=args.topic_map, episode_timeout_s=args.episode_timeout,
                                 storage=args.storage, namespace=args.namespace, task=args.task)
    except KeyboardInterrupt:
        done = args.out / "episodes.jsonl"
        n = len(done.read_text().splitlines()) if done.exists() else 0
        sig = shutdown.received() or signal.SIGINT
        log.info("stopped by %s: %d/%d episodes recorded in %s", signal.Signals(sig).name, n,
                 args.episodes, args.out)
        return 128 + sig
    ok = sum(s["success"] for s in summaries)
    modes = [sum(s["reached"] == m for s in summaries) for m in (0, 1)]
    log.info("%d/%d successful; target a %d, target b %d; bags in %s", ok, len(summaries),
             *modes, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
