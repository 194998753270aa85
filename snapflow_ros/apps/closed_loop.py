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

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
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

from snapflow_ros.cpu_threads import resolve_cpu_threads
from snapflow_ros.nodes.mujoco_bridge_node import MujocoBridgeNode


def _wait(done: Callable[[], bool], timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > end:
            raise TimeoutError(f"closed loop: gave up waiting for {what} after {timeout_s:g} s")
        time.sleep(0.005)


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


def _policy_process(ns: str, remap: list[str], policy_path: str, params: dict[str, Any],
                    log_path: Path | None) -> subprocess.Popen:
    args = [sys.executable, "-m", "snapflow_ros", "policy_node", "--ros-args",
            "-r", f"__ns:={ns}", *remap[1:], "-p", f"policy_path:={policy_path}",
            "-p", "use_sim_time:=true", "-p", "autostart:=false"]
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{key}:={text}"]
    out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


def node_params(topic_map: str, policy_params: dict[str, Any] | None = None,
                cpu_threads: int = 0) -> dict[str, Any]:
    """The policy_node parameters of a closed-loop run; ``policy_params`` override the rest."""
    resolve_cpu_threads(cpu_threads)  # refuses a negative count, naming cpu_threads
    return {"topic_map": topic_map, "warmup_iters": 1, "diagnostics_period_s": 0.2,
            "cpu_threads": int(cpu_threads), **(policy_params or {})}


def run_episodes(policy_path: str | Path, seeds: Sequence[int], *, topic_map: str = "",
                 task: str = "reach_two_targets", episode_timeout_s: float = 0.0,
                 policy_params: dict[str, Any] | None = None, log_path: Path | None = None,
                 wall_timeout_s: float = 300.0, desc: str = "closed loop",
                 cpu_threads: int = 0) -> list[dict[str, Any]]:
    """Run one episode per seed with the policy at ``policy_path`` driving the arm.

    ``policy_params`` are policy_node parameters (e.g. ``num_steps``, ``device``).
    ``cpu_threads`` goes to the node as its ``cpu_threads`` parameter (0 = the node picks:
    auto). Returns per episode: seed, success, reached (target index, -1 = none), time_s
    (sim), wall_s, chunks, and the node's model latency p50 (ms) as reported on /diagnostics.
    """
    params = node_params(topic_map, policy_params, cpu_threads)
    ns = f"/closed_loop_{uuid.uuid4().hex[:8]}"
    remap = ["--ros-args", "-r", f"/clock:={ns}/clock"]
    ctx = rclpy.Context()
    ctx.init(args=[])
    bridge = _Bridge(ctx, ns, [*remap, "--log-level", "warn"], [
        Parameter("mode", value="lockstep"), Parameter("lockstep_gate", value="chunk"),
        Parameter("task", value=task), Parameter("topic_map", value=topic_map),
        Parameter("episode_timeout_s", value=episode_timeout_s)])
    proc = _policy_process(ns, remap, str(policy_path), params, log_path)
    node = rclpy.create_node("closed_loop", context=ctx, namespace=ns)
    diag: dict[str, Any] = {"received": 0}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if (status.name == "snapflow_ros: policy_node"
                    and status.hardware_id == str(policy_path)):
                diag.update({kv.key: kv.value for kv in status.values})
                diag["received"] += 1

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    change = node.create_client(ChangeState, "policy_node/change_state")
    reset = node.create_client(Trigger, "mujoco_bridge/reset")
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    env = bridge.node.runner.env

    def call(client: Any, request: Any, what: str, timeout_s: float = 60.0) -> Any:
        future = client.call_async(request)
        _wait(future.done, timeout_s, what)
        return future.result()

    def transition(tid: int, label: str) -> None:
        if not call(change, ChangeState.Request(transition=Transition(id=tid)), label).success:
            raise RuntimeError(f"policy_node refused to {label}; see {log_path or 'its log'}")

    results: list[dict[str, Any]] = []
    try:
        _wait(lambda: change.service_is_ready() or proc.poll() is not None, 120.0,
              "policy_node to start")
        if proc.poll() is not None:
            raise RuntimeError(f"policy_node exited with {proc.returncode}; see "
                               f"{log_path or 'its log'}")
        transition(Transition.TRANSITION_CONFIGURE, "configure")  # loads and warms up
        active = False
        for seed in tqdm(seeds, desc=desc, unit="episode", leave=False, file=sys.stderr):
            if active:
                transition(Transition.TRANSITION_DEACTIVATE, "deactivate")
            bridge.node.set_parameters([Parameter("seed", value=int(seed))])
            call(reset, Trigger.Request(), "the bridge reset")
            chunks0, start = bridge.node.runner.trajectories, time.monotonic()
            transition(Transition.TRANSITION_ACTIVATE, "activate")
            active = True
            _wait(lambda: env.status.done, wall_timeout_s, f"the end of episode seed {seed}")
            seen = diag["received"]  # one more diagnostics message, with this episode's latency
            try:
                _wait(lambda: diag["received"] > seen, 5.0, "policy_node diagnostics")
            except TimeoutError:
                pass  # latency then reads from the last message; the episode result stands
            status = env.status
            results.append({
                "seed": int(seed), "success": bool(status.success), "reached": status.reached,
                "time_s": round(status.time_s, 3), "wall_s": round(time.monotonic() - start, 3),
                "chunks": bridge.node.runner.trajectories - chunks0,  # as the sim received them
                "model_ms_p50": float(diag.get("model_ms_p50", "nan")),
            })
        return results
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        executor.shutdown()
        node.destroy_node()
        bridge.close()
        ctx.try_shutdown()


def summarize(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Success rate, which target was reached, mean episode time and policy latency."""
    n = max(len(episodes), 1)
    reached = [e["reached"] for e in episodes]
    model = sorted(e["model_ms_p50"] for e in episodes if e["model_ms_p50"] == e["model_ms_p50"])
    return {
        "episodes": len(episodes),
        "success_rate": round(sum(e["success"] for e in episodes) / n, 3),
        "reached_a": reached.count(0), "reached_b": reached.count(1),
        "mean_time_s": round(sum(e["time_s"] for e in episodes) / n, 3),
        "mean_wall_s": round(sum(e["wall_s"] for e in episodes) / n, 3),
        "model_ms_p50": round(model[len(model) // 2], 3) if model else None,
    }
