"""``sim_demos``: scripted-expert demonstrations through the MuJoCo bridge, as rosbag2 files.

One process, one private ROS context, three nodes on one executor::

    mujoco_bridge (lockstep, frame gate) ──images, joint_states──► expert ──JointState──┐
          ▲  └──────────── everything on the topic map's topics ────► recorder (raw)   │
          └───────────────────────── action topic (joint_commands) ◄──────────────────┘

The expert answers every camera frame with the joint targets of its plan one control period
later, stamped with the frame's stamp; the frame gate makes the bridge wait for that answer,
so a seed always gives the same episode. The recorder stores the wire bytes of the map's
topics (cameras, joint_states, action) with ``data.bag_recorder.BagRecorder``, one bag per
episode under ``OUT/episode_NNNNNN`` (mcap by default), timestamped with the header stamps
(sim time), from the reset to the end of the episode, plus the final ``episode/status`` JSON.
``bag_to_lerobot`` converts the bags; ``OUT/episodes.jsonl`` lists seed, success and the target
reached.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from snapflow_ros import config_cli
from snapflow_ros.conversions.cdr import header_stamp_ns
from snapflow_ros.conversions.stamps import NS, fill_stamp, stamp_to_ns
from snapflow_ros.data.bag_recorder import STORAGES, BagRecorder
from snapflow_ros.nodes import shutdown
from snapflow_ros.nodes.mujoco_bridge_node import MujocoBridgeNode
from snapflow_ros.sim.expert import JointPlan
from snapflow_ros.sim.robots import ROBOTS, Planner, make_expert
from snapflow_ros.sim.scene import SceneError
from snapflow_ros.topic_map import ROS_TYPES, TopicMap
from snapflow_ros.waiting import wait_until

log = logging.getLogger("sim_demos")
STATUS_TOPIC = "/episode/status"


class ExpertNode(Node):
    """Answers each frame of the first camera with ``plan(t + 1/fps)`` on the action topic,
    up to the first frame at or after the episode's end (``episode_end()``: its sim time, None
    while it runs): the lock-stepped bridge then holds sim time at the frame after that one
    until the next reset, however long the bag takes to write (the next episode starts at the
    same sim time on a busy machine as on a quiet one), and every topic, joint states at
    their own rate too, has published past the end. ``holding()`` tells when the bridge has
    taken that last answer and published the frame it holds at: only then is the next reset
    at a sim time that load cannot change."""

    def __init__(self, topic_map: TopicMap, episode_end: Callable[[], int | None] = lambda: None,
                 **kwargs: object) -> None:
        super().__init__("scripted_expert", **kwargs)  # type: ignore[arg-type]
        self.episode_end = episode_end
        self.end_frame_ns: int | None = None  # the frame at or after the end that we answered
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
        self.plan, self.start_ns, self.end_frame_ns = plan, start_ns, None
        if plan is not None and self.last_frame_ns >= start_ns:
            self._answer(self.last_frame_ns)

    def _on_frame(self, msg: Image) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self.last_frame_ns = max(self.last_frame_ns, stamp)
        if self.plan is not None and stamp >= self.start_ns:
            self._answer(stamp)

    def holding(self) -> bool:
        """The end's frame was answered and a later frame (where the bridge holds) arrived."""
        return self.end_frame_ns is not None and self.last_frame_ns > self.end_frame_ns

    def _answer(self, stamp: int) -> None:
        assert self.plan is not None
        end = self.episode_end()
        if end is not None and stamp >= end:
            if self.end_frame_ns is not None:
                return
            self.end_frame_ns = stamp
        q = self.plan((stamp - self.start_ns) / NS + self.period_s)
        cmd = JointState(name=list(self.names), position=q.tolist())
        fill_stamp(cmd.header.stamp, stamp)
        self.pub.publish(cmd)


class EpisodeRecorder(Node):
    """Raw subscriptions on the map's topics; one ``BagRecorder`` episode per demo, holding
    the messages stamped inside the episode's window (reset → end), stamped with their headers.

    The episode's messages are written when it ends, ordered by (stamp, topic): the order in
    which topics arrive depends on the machine's load, the sorted order does not, so the same
    seed gives byte-identical bags (one episode is a few tens of MB in memory).
    """

    def __init__(self, topic_map: TopicMap, out: Path, storage: str, **kwargs: object) -> None:
        super().__init__("sim_demos_recorder", **kwargs)  # type: ignore[arg-type]
        topics = [(c.topic, Image, ROS_TYPES[c.type]) for c in topic_map.cameras]
        topics.append((topic_map.joint_states.topic, JointState, ROS_TYPES["JointState"]))
        topics.append((topic_map.action.topic, JointState, ROS_TYPES["JointState"]))
        self.subs = [self.create_subscription(cls, topic, self._callback(i), 50, raw=True)
                     for i, (topic, cls, _) in enumerate(topics)]
        self.status_topic = self.get_namespace().rstrip("/") + STATUS_TOPIC
        self.bag = BagRecorder(out, [*zip(self.topic_names, (t for _, _, t in topics),
                                          strict=True),
                                     (self.status_topic, ROS_TYPES["String"])], storage)
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.pending: list[tuple[int, int, bytes]] = []
        self.kept: list[tuple[int, int, bytes]] = []  # (stamp, topic index, raw) of the episode
        self.newest = [-1] * len(topics)

    @property
    def topic_names(self) -> list[str]:
        """Fully resolved topic names (what the bag calls them)."""
        return [s.topic_name for s in self.subs]

    def _callback(self, index: int) -> Callable[[bytes], None]:
        def callback(raw: bytes) -> None:
            stamp = header_stamp_ns(raw)
            self.newest[index] = max(self.newest[index], stamp)
            if not self.bag.recording:
                return
            if self.start_ns is None:
                self.pending.append((index, stamp, raw))
            else:
                self._write(index, stamp, raw)
        return callback

    def _write(self, index: int, stamp: int, raw: bytes) -> None:
        if self.start_ns is None or stamp < self.start_ns:
            return
        if self.end_ns is not None and stamp > self.end_ns:
            return
        self.kept.append((stamp, index, raw))

    def begin(self) -> str:
        """Open the next episode's bag (its name); messages are held until ``set_start``."""
        self.start_ns, self.end_ns, self.pending, self.kept = None, None, [], []
        return self.bag.start_episode()

    def set_start(self, start_ns: int) -> None:
        """Keep messages stamped at or after ``start_ns`` (the reset's sim time)."""
        self.start_ns = start_ns
        for item in self.pending:
            self._write(*item)
        self.pending = []

    def abort(self) -> str | None:
        """Delete the bag of an unfinished episode (interrupted): ``episodes.jsonl`` and the
        output folder then hold only whole episodes. Returns its name (None: none open)."""
        self.kept = []
        return self.bag.discard_episode() if self.bag.recording else None

    def caught_up(self, end_ns: int) -> bool:
        """True once every camera and joint_states topic delivered a stamp >= ``end_ns``."""
        return all(n >= end_ns for n in self.newest[:-1])

    def finish(self, status_json: str, end_ns: int) -> dict[str, int]:
        """Write the final status, close the bag; returns message counts per topic."""
        for stamp, index, raw in sorted(self.kept, key=lambda m: (m[0], m[1])):  # stable
            self.bag.write(self.topic_names[index], raw, stamp)
        self.kept = []
        store = self.bag.store
        msg = store.types["std_msgs/msg/String"](data=status_json)
        self.bag.write(self.status_topic, self.bag.serialize(msg, ROS_TYPES["String"]), end_ns)
        counts = {t: self.bag.counts[t] for t in self.topic_names}
        self.bag.stop_episode(custom_data={"snapflow_ros.episode_status": status_json})
        return counts


def _spin_until(executor: SingleThreadedExecutor, done: Callable[[], bool], timeout_s: float,
                what: str) -> None:
    wait_until(done, timeout_s, what, step=lambda: executor.spin_once(timeout_sec=0.01))


@dataclass
class _Graph:
    """The private ROS graph of a recording: bridge, expert and recorder on one executor."""

    bridge: MujocoBridgeNode
    expert: ExpertNode
    recorder: EpisodeRecorder
    executor: SingleThreadedExecutor
    reset: object  # the bridge's reset service client


def _make_graph(ctx: rclpy.Context, out: Path, nodes: list[Node], *, seed: int, scene: str,
                topic_map: str, episode_timeout_s: float, storage: str, namespace: str,
                task: str) -> _Graph:
    """Create the nodes (appended to ``nodes`` as they come, for the caller's cleanup) and
    wait until the recorder's subscriptions and the reset service are connected."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    remap = ["--ros-args", "-r", f"/clock:={ns or '/sim_demos'}/clock"]  # sim time stays ours
    overrides = [Parameter("mode", value="lockstep"), Parameter("lockstep_gate", value="frame"),
                 Parameter("task", value=task), Parameter("scene", value=scene),
                 Parameter("topic_map", value=topic_map), Parameter("seed", value=seed),
                 Parameter("episode_timeout_s", value=episode_timeout_s),
                 Parameter("tick_period_s", value=0.001),  # re-check the gate often
                 Parameter("lockstep_timeout_s", value=0.0)]  # sim time never runs on alone
    bridge = MujocoBridgeNode(context=ctx, parameter_overrides=overrides, cli_args=remap,
                              namespace=ns)
    nodes.append(bridge)
    tm, env = bridge.topic_map, bridge.runner.env
    if tm.action.type != "JointState":
        raise ValueError("sim_demos needs a topic map whose action type is JointState (it is "
                         f"{tm.action.type})")
    expert = ExpertNode(tm, episode_end=lambda: env.status.end_ns if env.status.done else None,
                        context=ctx, namespace=ns)
    nodes.append(expert)
    recorder = EpisodeRecorder(tm, out, storage, context=ctx, namespace=ns)
    nodes.append(recorder)
    reset = expert.create_client(Trigger, f"{bridge.get_fully_qualified_name()}/reset")
    executor = SingleThreadedExecutor(context=ctx)
    for node in nodes:
        executor.add_node(node)
    _spin_until(executor, lambda: reset.service_is_ready() and all(
        s.get_publisher_count() > 0 for s in recorder.subs), 30.0, "topic discovery")
    return _Graph(bridge, expert, recorder, executor, reset)


def _record_episode(graph: _Graph, planner: Planner, index: int, seed: int,
                    wall_timeout_s: float, balanced: bool = False) -> dict:
    """Reset the bridge with ``seed``, follow the expert's plan to the episode's end, close
    the bag; returns the episode's summary. ``balanced``: target ``index % 2``, else random."""
    env, recorder, executor = graph.bridge.runner.env, graph.recorder, graph.executor
    graph.bridge.set_parameters([Parameter("seed", value=seed)])
    name = recorder.begin()
    graph.expert.start(None, 0)
    future = graph.reset.call_async(Trigger.Request())
    _spin_until(executor, future.done, wall_timeout_s, "the reset service")
    status = json.loads(future.result().message)
    plan = (planner.plan_for(index % 2) if balanced
            else planner.plan(np.random.default_rng([status["seed"], 1])))
    graph.expert.start(plan, status["start_ns"])
    recorder.set_start(status["start_ns"])
    _spin_until(executor, lambda: env.status.done, wall_timeout_s, "the episode end")
    final = env.status
    recorder.end_ns = final.end_ns  # before any message of this spin is written
    # the bridge must also have taken the answer to the end's frame (and hold at the next):
    # a reset racing that answer started the next episode one frame earlier on a quiet machine
    _spin_until(executor, lambda: recorder.caught_up(final.end_ns) and graph.expert.holding(),
                wall_timeout_s, "the last messages")
    counts = recorder.finish(final.to_json(), final.end_ns)
    log.info("episode %d seed %d: %s, target %d, %.2f s", index, final.seed,
             "success" if final.success else final.reason, final.reached, final.time_s)
    return {"episode": index, "bag": name, "seed": final.seed, "success": final.success,
            "reached": final.reached, "planned": plan.mode,
            "duration_s": round(final.time_s, 3), "messages": counts}


def record_demos(out: Path, episodes: int, seed: int, *, scene: str = "", topic_map: str = "",
                 episode_timeout_s: float = 0.0, storage: str = "mcap", namespace: str = "",
                 wall_timeout_s: float = 120.0, task: str = "reach_two_targets",
                 balanced: bool = False) -> list[dict]:
    """Record ``episodes`` expert episodes with seeds ``seed, seed+1, ...`` under ``out``.

    The expert picks its target at random per episode. With ``balanced`` the episodes come
    in pairs with the same seed (the same scene, start pose and first images), one to each
    target (episode i: seed ``seed + i // 2``, target ``i % 2``): equal shares, and from every
    start the data shows both targets, so a policy cannot tie a target to a start.

    ``namespace`` prefixes the map's relative topics (and so the bags' topic names). Returns
    one summary dict per episode (also appended to ``out/episodes.jsonl``).
    """
    out.mkdir(parents=True, exist_ok=True)
    ctx = rclpy.Context()
    ctx.init(args=[])
    nodes: list[Node] = []
    graph: _Graph | None = None
    try:
        graph = _make_graph(ctx, out, nodes, seed=seed, scene=scene, topic_map=topic_map,
                            episode_timeout_s=episode_timeout_s, storage=storage,
                            namespace=namespace, task=task)
        planner = make_expert(graph.bridge.runner.env.scene, graph.bridge.runner.env.task)
        if balanced and not hasattr(planner, "plan_for"):
            raise ValueError(f"balanced demos need a task with two targets; {task!r} has one "
                             f"way to succeed")
        summaries = []
        for i in range(episodes):
            ep_seed = seed + i // 2 if balanced else seed + i
            summaries.append(_record_episode(graph, planner, i, ep_seed, wall_timeout_s,
                                             balanced))
            with (out / "episodes.jsonl").open("a") as f:
                f.write(json.dumps(summaries[-1]) + "\n")
        return summaries
    except BaseException:  # Ctrl-C, SIGTERM (nodes/shutdown.py) or an error: whole episodes only
        # (the signal's KeyboardInterrupt may surface wrapped, e.g. as ctypes' ArgumentError
        # when it lands in a GL call's argument conversion)
        if graph is not None and (name := graph.recorder.abort()) is not None:
            log.info("interrupted: removed the unfinished episode %s", name)
        raise
    finally:
        for node in nodes:
            node.destroy_node()
        ctx.try_shutdown()


@dataclass
class SimDemosConfig:
    """Scripted-expert demos through the MuJoCo bridge, one rosbag2 (mcap) per episode."""

    out: Path | None = None  # output directory (required)
    episodes: int = 10  # number of episodes
    seed: int = 0  # seed of the first episode (then seed + 1, ...)
    robot: str = "arm"  # arm (the packaged arm, reach tasks) or so101 (SO-101, pick cube)
    scene: str = ""  # MJCF scene (default: the robot's)
    topic_map: str = ""  # topic map YAML (default: the robot's)
    episode_timeout: float = 0.0  # episode time limit in sim s (0: the task's)
    storage: str = "mcap"  # bag storage: mcap or sqlite3
    # the robot's: arm reach_two_targets (random places) or reach_two_fixed_targets; so101
    # so101_pick_cube ("" = the robot's first)
    task: str = ""
    namespace: str = ""  # namespace of the map's relative topics
    # pairs of episodes from one seed, one to each target (seeds seed, seed, seed+1, ...)
    balanced: bool = False
    overwrite: bool = False  # replace an existing --out

    def __post_init__(self) -> None:
        if self.out is None:
            raise ValueError("--out is required (the output directory)")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {self.storage!r}")
        if self.robot not in ROBOTS:
            raise ValueError(f"robot must be one of {sorted(ROBOTS)}, got {self.robot!r}")
        tasks = ROBOTS[self.robot].tasks
        self.task = self.task or tasks[0]
        if self.balanced and self.robot != "arm":
            raise ValueError("balanced pairs one demo to each target: only the arm's reach "
                             "tasks have two")
        if self.task not in tasks:
            raise ValueError(f"task must be one of {list(tasks)} for robot {self.robot!r}, got "
                             f"{self.task!r}")


def main(argv: list[str] | None = None) -> int:
    """CLI: ``sim_demos --episodes N --seed S --out DIR [--robot so101]``."""
    prog = "sim_demos"
    args = config_cli.from_command_line(SimDemosConfig, argv, prog=prog)
    logging.basicConfig(level=logging.INFO, force=True, format="%(message)s")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            print(f"{prog}: error: {out} exists and is not empty (use --overwrite or another "  # noqa: T201
                  "--out)", file=sys.stderr)
            raise SystemExit(2)
        shutil.rmtree(out)
    robot = ROBOTS[args.robot]
    try:
        scene, topic_map = args.scene or robot.scene(), args.topic_map or robot.topic_map()
    except SceneError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None
    try:
        summaries = record_demos(out, args.episodes, args.seed, scene=scene, topic_map=topic_map,
                                 episode_timeout_s=args.episode_timeout, storage=args.storage,
                                 namespace=args.namespace, task=args.task,
                                 balanced=args.balanced)
    except BaseException as err:
        if shutdown.received() is None and not isinstance(err, KeyboardInterrupt):
            raise  # a real error, with Python's report
        done = out / "episodes.jsonl"
        n = len(done.read_text().splitlines()) if done.exists() else 0
        sig = shutdown.received() or signal.SIGINT
        log.info("stopped by %s: %d/%d episodes recorded in %s", signal.Signals(sig).name, n,
                 args.episodes, out)
        return 128 + sig
    ok = sum(s["success"] for s in summaries)
    modes = ""
    if args.robot == "arm":
        a_b = [sum(s["reached"] == m for s in summaries) for m in (0, 1)]
        modes = "; target a {}, target b {}".format(*a_b)
    log.info("%d/%d successful%s; bags in %s", ok, len(summaries), modes, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
