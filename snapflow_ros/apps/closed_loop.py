"""Closed-loop episodes: the MuJoCo bridge and the policy node on the same topics.

::

    mujoco_bridge (this process, lockstep) ── cameras, joint_states, /clock ──► policy_node
          ▲                                                  (its own process, sim time)  │
          └───────────── action_chunk (JointTrajectory), joint_commands ◄────────────────┘

The policy node runs as a separate process, exactly as deployed (``ros2 run snapflow_ros
policy_node``): the model then never competes with the simulator for one Python interpreter.
Both sit in a private namespace with ``/clock`` remapped into it, so other ROS processes on
the machine never see this sim time. In lock-step the simulation waits at the end of each
chunk while the policy computes the next, so slow inference costs wall time, not success.

Per episode: deactivate the policy node (lifecycle service; its chunks and inputs are
cleared), reset the bridge with the episode's seed, activate the node, run until the bridge
reports the episode done.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger
from tqdm import tqdm

from snapflow_ros.apps.node_process import NodeProcess, policy_node_command
from snapflow_ros.cpu_threads import resolve_cpu_threads
from snapflow_ros.nodes.mujoco_bridge_node import MujocoBridgeNode
from snapflow_ros.nodes.policy_node_params import PolicyNodeParams
from snapflow_ros.waiting import wait_until


class _Bridge:
    """The bridge in a thread of its own: its renderer's GL context belongs to that thread."""

    def __init__(self, ctx: Any, ns: str, remap: list[str], params: list[Parameter]) -> None:
        self._box: dict[str, Any] = {}
        built = threading.Event()

        def run() -> None:
            try:
                node = MujocoBridgeNode(context=ctx, namespace=ns, cli_args=remap,
                                        parameter_overrides=params)
                self._box["executor"] = SingleThreadedExecutor(context=ctx)
                self._box["executor"].add_node(node)
                self._box["node"] = node
            except Exception as err:  # re-raised in the caller's thread
                self._box["error"] = err
                return
            finally:
                built.set()
            try:
                self._box["executor"].spin()
            finally:
                node.destroy_node()

        self._thread = threading.Thread(target=run, name="mujoco_bridge", daemon=True)
        self._thread.start()
        built.wait()
        if "error" in self._box:
            raise self._box["error"]
        self.node: MujocoBridgeNode = self._box["node"]

    def close(self) -> None:
        self._box["executor"].shutdown()
        self._thread.join(timeout=30.0)


def node_params(topic_map: str, policy_params: dict[str, Any] | None = None,
                cpu_threads: int = 0, engine: str = "auto") -> dict[str, Any]:
    """The policy_node parameters of a closed-loop run; ``policy_params`` override the rest."""
    resolve_cpu_threads(cpu_threads)  # refuses a negative count, naming cpu_threads
    PolicyNodeParams(engine=engine)  # refuses an unknown engine, naming the choices
    return {"topic_map": topic_map, "warmup_iters": 1, "diagnostics_period_s": 0.2,
            "cpu_threads": int(cpu_threads), "engine": engine, **(policy_params or {})}


class _ClosedLoop:
    """One run's private graph: the bridge (a thread here), the policy node (a process) and a
    driver node that resets the bridge and moves the policy node through its lifecycle."""

    def __init__(self, policy_path: str, params: dict[str, Any], *, topic_map: str, task: str,
                 episode_timeout_s: float, log_path: Path | None, scene: str = "") -> None:
        self.policy_path, self.log_path = policy_path, log_path
        ns = f"/closed_loop_{uuid.uuid4().hex[:8]}"
        clock = f"/clock:={ns}/clock"
        self.ctx = rclpy.Context()
        self.ctx.init(args=[])
        self.bridge = _Bridge(self.ctx, ns, ["--ros-args", "-r", clock, "--log-level", "warn"], [
            Parameter("mode", value="lockstep"), Parameter("lockstep_gate", value="chunk"),
            Parameter("task", value=task), Parameter("topic_map", value=topic_map),
            Parameter("scene", value=scene),
            Parameter("episode_timeout_s", value=episode_timeout_s)])
        self.proc = NodeProcess(policy_node_command(ns, {
            "policy_path": policy_path, "use_sim_time": True, "autostart": False, **params},
            remaps=[clock]), log_path)
        self.node = rclpy.create_node("closed_loop", context=self.ctx, namespace=ns)
        self.diag: dict[str, Any] = {"received": 0}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.change = self.node.create_client(ChangeState, "policy_node/change_state")
        self.reset = self.node.create_client(Trigger, "mujoco_bridge/reset")
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        self.active = False

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if (status.name == "snapflow_ros: policy_node"
                    and status.hardware_id == self.policy_path):
                self.diag.update({kv.key: kv.value for kv in status.values})
                self.diag["received"] += 1

    def _call(self, client: Any, request: Any, what: str, timeout_s: float = 60.0) -> Any:
        future = client.call_async(request)
        wait_until(future.done, timeout_s, f"{what} (closed loop)")
        return future.result()

    def _transition(self, tid: int, label: str) -> None:
        request = ChangeState.Request(transition=Transition(id=tid))
        if not self._call(self.change, request, label).success:
            raise RuntimeError(f"policy_node refused to {label}; see "
                               f"{self.log_path or 'its log'}")

    def configure(self) -> None:
        """Wait for the policy node, then configure it (loads and warms up the model)."""
        wait_until(lambda: self.change.service_is_ready() or self.proc.poll() is not None,
                   120.0, "policy_node to start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"policy_node exited with {self.proc.poll()}; see "
                               f"{self.log_path or 'its log'}")
        self._transition(Transition.TRANSITION_CONFIGURE, "configure")

    def episode(self, seed: int, wall_timeout_s: float) -> dict[str, Any]:
        """Deactivate, reset the bridge with ``seed``, activate, run to the episode's end."""
        bridge = self.bridge.node
        if self.active:
            self._transition(Transition.TRANSITION_DEACTIVATE, "deactivate")
        bridge.set_parameters([Parameter("seed", value=int(seed))])
        self._call(self.reset, Trigger.Request(), "the bridge reset")
        chunks0, start = bridge.runner.trajectories, time.monotonic()
        self._transition(Transition.TRANSITION_ACTIVATE, "activate")
        self.active = True
        env = bridge.runner.env
        wait_until(lambda: env.status.done, wall_timeout_s, f"the end of episode seed {seed}")
        seen = self.diag["received"]  # one more diagnostics message: this episode's latency
        with contextlib.suppress(TimeoutError):  # else the last message's; the result stands
            wait_until(lambda: self.diag["received"] > seen, 5.0, "policy_node diagnostics")
        status = env.status
        return {"seed": int(seed), "success": bool(status.success), "reached": status.reached,
                "time_s": round(status.time_s, 3), "wall_s": round(time.monotonic() - start, 3),
                "chunks": bridge.runner.trajectories - chunks0,  # as the sim received them
                "model_ms_p50": float(self.diag.get("model_ms_p50", "nan")),
                "distances": status.info.get("distances"),  # to each goal at the end (reach)
                "got_to": status.info.get("got_to")}  # how far a pick got (SO-101 pick)

    def close(self) -> None:
        self.proc.stop(timeout_s=30.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self.bridge.close()
        self.ctx.try_shutdown()


def run_episodes(policy_path: str | Path, seeds: Sequence[int], *, topic_map: str = "",
                 task: str = "reach_two_targets", episode_timeout_s: float = 0.0,
                 policy_params: dict[str, Any] | None = None, log_path: Path | None = None,
                 wall_timeout_s: float = 300.0, desc: str = "closed loop",
                 cpu_threads: int = 0, engine: str = "auto",
                 scene: str = "") -> list[dict[str, Any]]:
    """Run one episode per seed with the policy at ``policy_path`` driving the arm.

    ``policy_params`` are policy_node parameters (e.g. ``num_steps``, ``device``); ``scene``
    and ``topic_map`` the bridge's ("": the packaged arm; ``sim/robots.py`` names others).
    ``cpu_threads`` goes to the node as its ``cpu_threads`` parameter (0 = the node picks:
    auto). ``engine`` is the node's inference engine (auto, eager, static, compile, graph;
    prepared at configure, before the first episode). Returns per episode: seed, success,
    reached (target index, -1 = none), time_s (sim), wall_s, chunks, the node's model latency
    p50 (ms) as reported on /diagnostics, and ``distances`` (m, the tool to each goal when the
    episode ended; None: not a reach task).
    """
    params = node_params(topic_map, policy_params, cpu_threads, engine)
    loop = _ClosedLoop(str(policy_path), params,
                       topic_map=topic_map, task=task, episode_timeout_s=episode_timeout_s,
                       log_path=log_path, scene=scene)
    try:
        loop.configure()
        return [loop.episode(seed, wall_timeout_s)
                for seed in tqdm(seeds, desc=desc, unit="episode", leave=False, file=sys.stderr)]
    finally:
        loop.close()


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate (``successes`` of ``n``; (0, 1) when n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def ends_between(episode: dict[str, Any]) -> bool:
    """A failed reach that ended between the two targets: its tool nearer to the plane
    halfway between the goals than to either goal (|d_a − d_b| < min(d_a, d_b)), the end of
    an averaged reach. False for successes and for episodes without ``distances``."""
    dist = episode.get("distances")
    if episode["success"] or not dist or len(dist) != 2:
        return False
    return abs(dist[0] - dist[1]) < min(dist)


def summarize(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Success rate (with its 95 % Wilson interval), which target was reached, failures that
    ended between the targets, how far failed picks got (``got_to`` counts; tasks that
    report it), mean episode time and policy latency."""
    n = max(len(episodes), 1)
    reached = [e["reached"] for e in episodes]
    wins = sum(e["success"] for e in episodes)
    model = sorted(e["model_ms_p50"] for e in episodes if e["model_ms_p50"] == e["model_ms_p50"])
    return {
        "episodes": len(episodes),
        "success_rate": round(wins / n, 3),
        "success_ci95": [round(v, 3) for v in wilson(wins, len(episodes))],
        "reached_a": reached.count(0), "reached_b": reached.count(1),
        "failed_between": sum(ends_between(e) for e in episodes),
        "mean_time_s": round(sum(e["time_s"] for e in episodes) / n, 3),
        "mean_wall_s": round(sum(e["wall_s"] for e in episodes) / n, 3),
        "model_ms_p50": round(model[len(model) // 2], 3) if model else None,
        "failures_got_to": dict(Counter(e["got_to"] for e in episodes
                                        if not e["success"] and e.get("got_to"))),
    }
