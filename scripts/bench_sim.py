"""Benchmark the MuJoCo bridge: render time per camera, real-time factor, the bridge's CPU.

    bash scripts/run.sh python scripts/bench_sim.py [--seconds 20] [--json]
    bash scripts/run.sh python scripts/bench_sim.py --scene X.xml --topic-map map.yaml

1. In-process, no ROS: median/p95 render time of each camera of the scene (default: the
   packaged one with its two 224x224 cameras; else the topic map's cameras and sizes; EGL/OSMesa
   on CPU, shadows/reflections off) and the physics step time.
2. ``mujoco_bridge`` as a separate process in ``realtime`` mode (cameras at 30 Hz, joint states
   at 100 Hz, physics at 500 Hz), observed by this process for ``--seconds``:
   real-time factor from its /clock, frames received per wall second, the bridge's CPU use
   (utime + stime from /proc, in % of one core); once with the cameras in their own thread
   (``render_thread``, the default: ``realtime``) and once rendered inside the physics loop
   (``realtime_inline``).
3. The same in ``free`` mode: how much faster than real time the bridge can run.

Numbers depend on the machine and its load; report them with the command and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def render_bench(reps: int, scene_path: str, topic_map: str) -> dict[str, float]:
    """Render time per camera (ms) and physics step time (µs), in this process."""
    from snapflow_ros.sim import GL_BACKEND
    from snapflow_ros.sim.scene import Scene, SceneCamera, load_model
    from snapflow_ros.topic_map import load_topic_map

    tm = load_topic_map(topic_map or None)
    cams = [SceneCamera(c.name, c.height, c.width, c.model_camera) for c in tm.cameras]
    scene = Scene(load_model(scene_path or None), tm.state_names, cams, 500.0,
                  actuated=tm.action_names)
    out: dict[str, float] = {"gl_backend": GL_BACKEND}  # type: ignore[dict-item]
    for cam in cams:
        times = []
        for _ in range(reps + 5):
            start = time.perf_counter()
            scene.render(cam)
            times.append(time.perf_counter() - start)
        out[f"render_{cam.name}_ms_p50"] = 1e3 * float(np.median(times[5:]))
        out[f"render_{cam.name}_ms_p95"] = 1e3 * float(np.percentile(times[5:], 95))
    start = time.perf_counter()
    scene.step(5000)
    out["physics_step_us"] = 1e6 * (time.perf_counter() - start) / 5000
    scene.close()
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bridge_bench(mode: str, seconds: float, extra: list[str], topic_map: str
                 ) -> dict[str, float]:
    """Run the bridge in a subprocess and watch its topics from this process."""
    import rclpy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState

    from snapflow_ros.topic_map import load_topic_map

    tm = load_topic_map(topic_map or None)
    cameras = [c.name for c in tm.cameras]

    ns = f"/bench{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, "-m", "snapflow_ros", "mujoco_bridge", "--ros-args",
           "-r", f"__ns:={ns}", "-r", f"/clock:={ns}/clock", "-r", f"/diagnostics:={ns}/diag",
           "-p", f"mode:={mode}", "-p", "task:=none", "--log-level", "warn"]
    for param in extra:
        cmd += ["-p", param]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bench_listener", context=ctx, namespace=ns)
    counts = {**dict.fromkeys(cameras, 0), "joints": 0}
    clock: list[tuple[float, int]] = []

    def count(key: str) -> Callable[[object], None]:
        def callback(_msg: object) -> None:
            counts[key] += 1
        return callback

    for cam in tm.cameras:
        node.create_subscription(Image, cam.topic, count(cam.name), 10)
    node.create_subscription(JointState, tm.joint_states.topic, count("joints"), 10)
    node.create_subscription(
        Clock, "clock",
        lambda m: clock.append((time.monotonic(), m.clock.sec * 10**9 + m.clock.nanosec)), 10)
    try:
        deadline = time.monotonic() + 60
        while not clock and time.monotonic() < deadline:  # started and discovered
            _spin(node, ctx, 0.05)
        time.sleep(0.5)
        _spin(node, ctx, 1.0)  # warm-up
        counts.update(dict.fromkeys(counts, 0))
        clock.clear()
        cpu0, wall0 = _cpu_seconds(proc.pid), time.monotonic()
        _spin(node, ctx, seconds)
        cpu1, wall1 = _cpu_seconds(proc.pid), time.monotonic()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    wall = wall1 - wall0
    sim = (clock[-1][1] - clock[0][1]) / 1e9 if len(clock) > 1 else float("nan")
    return {"mode": mode, "wall_s": wall, "real_time_factor": sim / (clock[-1][0] - clock[0][0]),
            **{f"{c}_fps_wall": counts[c] / wall for c in cameras},
            "joint_states_hz_wall": counts["joints"] / wall,
            "bridge_cpu_percent_of_one_core": 100 * (cpu1 - cpu0) / wall}


def _spin(node: object, ctx: object, seconds: float) -> None:
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.02)
    executor.remove_node(node)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="observation per mode")
    parser.add_argument("--reps", type=int, default=200, help="renders per camera")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--scene", default="", help="MJCF scene (default: the packaged arm)")
    parser.add_argument("--topic-map", default="", help="its topic map (default: packaged)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra bridge parameter (repeatable), e.g. tick_period_s:=0.005")
    args = parser.parse_args()
    extra = [*args.param, *([f"scene:={args.scene}"] if args.scene else []),
             *([f"topic_map:={args.topic_map}"] if args.topic_map else [])]
    result = {"cpu_count": os.cpu_count(), "loadavg_before": os.getloadavg()[0],
              "scene": args.scene or "packaged",
              "render": render_bench(args.reps, args.scene, args.topic_map),
              "realtime": bridge_bench("realtime", args.seconds, extra, args.topic_map),
              "realtime_inline": bridge_bench("realtime", args.seconds,
                                              [*extra, "render_thread:=false"], args.topic_map),
              "free": bridge_bench("free", args.seconds / 2, extra, args.topic_map),
              "loadavg_after": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(result))  # noqa: T201
    else:
        for section, values in result.items():
            if isinstance(values, dict):
                line = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in values.items())
                print(f"{section}: {line}")  # noqa: T201
            else:
                print(f"{section}: {values}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
