"""``python -m snapflow_ros bench --node``: what the ROS node adds on top of the model.

Starts ``policy_node`` as a separate process (tiny built-in policy by default, CPU), feeds it
two 224x224 rgb8 cameras at 30 Hz and joint states at 100 Hz from this process, and reports:

* node overhead per chunk (inference start → chunk scheduled, minus model time), from the
  node's own /diagnostics, plus the end-to-end camera stamp → chunk received latency;
* control-timer jitter at the command rate (50 Hz default), from the command stamps the node
  sets at each tick and from their receive times here;
* CPU use of the node process while active and while idle (no inputs: it holds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from snapflow_ros.paths import config_path


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "n": 0}
    arr = np.asarray(values)
    return {"p50": round(float(np.percentile(arr, 50)), 3),
            "p99": round(float(np.percentile(arr, 99)), 3), "n": len(values)}


def run_node_bench(policy: str = "smolvla-tiny", seconds: float = 20.0, rate_hz: float = 50.0,
                   idle_seconds: float = 10.0, n_action_steps: int = 10) -> dict[str, Any]:
    """Measure (see module docstring); returns a JSON-able report."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    from snapflow_ros.conversions.image import fill_image_msg

    ns = f"/bench{os.getpid()}"
    tm = yaml.safe_load(config_path("topic_map.yaml").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="snapflow_node_bench_"))
    (tmp / "topic_map.yaml").write_text(yaml.safe_dump(tm))
    cmd = [sys.executable, "-m", "snapflow_ros", "policy_node", "--ros-args", "-r", f"__ns:={ns}",
           "-p", f"policy_path:={policy}", "-p", f"topic_map:={tmp / 'topic_map.yaml'}",
           "-p", "device:=cpu", "-p", f"control_rate_hz:={rate_hz}",
           "-p", f"n_action_steps:={n_action_steps}", "-p", "diagnostics_period_s:=0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rclpy.init()
    node = rclpy.create_node("node_bench", namespace=ns)
    chunks: list[float] = []
    commands: list[tuple[int, int]] = []
    diag: dict[str, str] = {}

    def on_chunk(msg: JointTrajectory) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        chunks.append((node.get_clock().now().nanoseconds - stamp) / 1e6)

    def on_command(msg: JointState) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        commands.append((stamp, time.perf_counter_ns()))

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "snapflow_ros: policy_node":
                diag.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(JointTrajectory, "action_chunk", on_chunk, 10)
    node.create_subscription(JointState, tm["action"]["topic"], on_command, 100)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    cams = {name: node.create_publisher(Image, c["topic"], 10)
            for name, c in tm["cameras"].items()}
    joints = node.create_publisher(JointState, tm["joint_states"]["topic"], 10)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(4)]
    spin = threading.Thread(target=rclpy.spin, args=(node,), daemon=True)
    spin.start()
    try:
        deadline = time.monotonic() + 300
        while diag.get("state") != "active":  # model load + warm-up
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"policy_node did not come up: {proc.stderr.read()[-2000:]}")
            time.sleep(0.2)
        start, k = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            stamp = node.get_clock().now().to_msg()
            if k % 3 == 0:  # 30 Hz cameras, 100 Hz joints
                for pub in cams.values():
                    msg = fill_image_msg(Image(), frames[k % 4])
                    msg.header.stamp = stamp
                    pub.publish(msg)
            js = JointState(name=tm["joint_states"]["joints"], position=[0.0] * 6)
            js.header.stamp = stamp
            joints.publish(js)
            k += 1
            time.sleep(max(0.0, start + k / 100.0 - time.monotonic()))
        active_cpu = _cpu_seconds(proc.pid)
        time.sleep(0.5)
        diag_active = dict(diag)
        idle0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_seconds)  # no inputs: the node holds
        idle_cpu = (_cpu_seconds(proc.pid) - idle0) / (time.monotonic() - t0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        node.destroy_node()
        rclpy.try_shutdown()
    ticks = np.diff([s for s, _ in commands[: len(commands)]]) / 1e6
    arrivals = np.diff([r for _, r in commands]) / 1e6
    period = 1e3 / rate_hz
    return {
        "policy": policy, "cameras": f"{len(cams)} x 224x224 rgb8 @ 30 Hz", "seconds": seconds,
        "control_rate_hz": rate_hz, "n_action_steps": n_action_steps,
        "chunks_received": len(chunks),
        "camera_stamp_to_chunk_received_ms": _ms(chunks),
        "node_overhead_ms": {"p50": float(diag_active.get("node_overhead_ms_p50", "nan")),
                             "p99": float(diag_active.get("node_overhead_ms_p99", "nan"))},
        "model_ms": {"p50": float(diag_active.get("model_ms_p50", "nan")),
                     "p99": float(diag_active.get("model_ms_p99", "nan"))},
        "obs_age_at_inference_start_ms_p50": float(diag_active.get("obs_age_at_start_ms_p50",
                                                                   "nan")),
        "tick_period_ms": {**_ms(list(ticks)), "target": period,
                           "abs_jitter_p99": round(float(np.percentile(
                               np.abs(ticks - period), 99)), 3) if ticks.size else None},
        "command_arrival_period_ms": {**_ms(list(arrivals)), "abs_jitter_p99": round(float(
            np.percentile(np.abs(arrivals - period), 99)), 3) if arrivals.size else None},
        "cpu_active_cores": round(active_cpu / max(seconds, 1e-9), 3),
        "cpu_idle_cores": round(idle_cpu, 4),
        "node_counters": {k: diag_active[k] for k in ("chunks", "commands", "starved_ticks",
                                                      "skipped_steps") if k in diag_active},
    }


def main_node_bench(args: Any) -> int:
    report = run_node_bench(args.policy, seconds=args.seconds, rate_hz=args.rate)
    print(json.dumps(report, indent=2))  # noqa: T201
    return 0
