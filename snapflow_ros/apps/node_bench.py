"""``python -m snapflow_ros bench --node``: the policy node as deployed, measured honestly.

One run starts ``policy_node`` as a separate process (its model in its own inference process),
feeds it two rgb8 cameras at 30 Hz (``--camera-size``, 224x224 or 640x480; the topic map keeps
the policy's 224x224 input, the node resizes) and joint states at 100 Hz from this process, and
subscribes to its chunks, commands and ``/diagnostics``:

1. **start-up and warm-up are excluded**: once the node is active, inputs flow for
   ``--warmup-seconds`` (default 5 s) before the measured window (``--seconds``, default and
   minimum 30 s; ``--quick`` lifts the minimum, for tests) starts;
2. **distributions from raw samples** taken in the window (p50, p99, max, count):
   camera stamp → chunk received (the chunk's header stamp is its observation stamp, the newest
   input stamp; the camera stamp is the newest camera frame this process published at or
   before it), the same to when the node published the chunk (DDS source timestamp),
   observation stamp → chunk received, the control tick period from the command stamps the node
   sets (header.stamp = tick time) and from the commands' receive times, and that period split
   into the timer's own error and the ticks that sent no command (starved: no chunk yet);
3. **model time in the node** is the node's own ``/diagnostics`` ``model_ms_p50``/``p99``: a
   rolling window of the last 200 chunks, read at the end of the measured window (the report
   says how many of those 200 chunks were made inside the window); the node publishes no
   per-chunk model times;
4. **CPU of the window only**, summed over the node process and all its descendants (the
   inference worker), from ``/proc/<pid>/stat`` utime+stime at window start and end; the same
   after the inputs stop (``--idle-seconds``: the node holds and should do nothing);
5. **the same model standalone, in the same run**: after the node is stopped, a subprocess runs
   ``PolicyRunner.predict_chunk`` (as the inference worker does) with the same thread count on
   random images at the topic map's size, ``--standalone-reps`` timed chunks after warm-up,
   under the same load; ``model_in_node_over_standalone`` = node model p50 / standalone p50;
6. ``--load N``: N busy processes run for the whole run (node start-up, warm-up, window, idle,
   standalone) and are killed at its end;
7. ``--sizes``/``--loads`` (``--matrix`` = 224x224 and 640x480 × load 0 and 1) run several
   configurations; one JSON object on stdout holds every run, a table goes to stderr.

Fast DDS's default shared-memory segment (512 KiB) cannot carry a 640x480 rgb8 frame (900 KiB):
best-effort frames then go fragmented over UDP and are mostly lost. The benchmark sets
``FASTDDS_DEFAULT_PROFILES_FILE`` to ``config/fastdds_large_images.xml`` (a 16 MiB segment) for
itself and the node unless the variable is already set; the segment that matters is the
*publisher's* (the camera driver's).

The targets of the control-rate issue (2 cores, ``smolvla-tiny``, two cameras, 50 Hz commands)
are reported as pass/fail flags: model time in the node ≤ 1.3× standalone; camera stamp → chunk
p50 ≤ model p50 + 15 ms and p99 ≤ 2× p50; tick period p99 ≤ 25 ms; with one busy process each
figure within 1.5× of the quiet run (``load_comparison``, when the loads include 0).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from snapflow_ros.apps.node_process import NodeProcess, policy_node_command
from snapflow_ros.inference.process_runner import WORKER_MODULE  # numpy + stdlib only
from snapflow_ros.paths import SOURCE_ROOT, config_path
from snapflow_ros.waiting import wait_until

NAME = "snapflow_ros: policy_node"
FASTDDS_PROFILE = "fastdds_large_images.xml"
FASTDDS_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
MIN_SECONDS = 30.0
MATRIX_SIZES = ("224x224", "640x480")
MATRIX_LOADS = (0, 1)
CAMERA_HZ, JOINTS_HZ = 30, 100
ROLLING_WINDOW = 200  # RollingStats' window in snapflow_ros/timing.py: the node's percentiles
BUSY_LOOP = "while True: pass"

#: The issue's targets (2 cores, smolvla-tiny, two cameras, 50 Hz commands).
TARGET_MODEL_RATIO = 1.3
TARGET_CAMERA_TO_CHUNK_P50_SLACK_MS = 15.0
TARGET_CAMERA_TO_CHUNK_P99_OVER_P50 = 2.0
TARGET_TICK_PERIOD_P99_MS = 25.0
TARGET_LOADED_OVER_QUIET = 1.5


# -- configuration ----------------------------------------------------------------------------


def normalise_size(text: str) -> str:
    """A camera size ``WIDTHxHEIGHT`` (e.g. 224x224, 640x480) as ``"640x480"``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"camera size must be WIDTHxHEIGHT (e.g. 640x480), got {text!r}")
    return f"{int(match[1])}x{int(match[2])}"


def parse_size(size: str) -> tuple[int, int]:
    """``"640x480"`` → (height, width) = (480, 640)."""
    width, height = normalise_size(size).split("x")
    return int(height), int(width)


@dataclass(frozen=True)
class NodeBenchConfig:
    """One benchmark run."""

    policy: str = "smolvla-tiny"
    seconds: float = MIN_SECONDS
    warmup_s: float = 5.0
    idle_s: float = 5.0
    rate_hz: float = 50.0
    camera_size: str = "224x224"
    load: int = 0
    cpu_threads: int = 0  # 0 = auto (cores - 1), as the node and `bench` resolve it
    inference_cpus: tuple[int, ...] = ()  # the node's inference_cpus (empty: not pinned)
    n_action_steps: int = 10
    replan_lead_steps: int = 0  # the node's (0: auto, from the measured latency)
    overrun_steps: int = -1  # the node's (-1: as many as n_action_steps, 0: none)
    standalone_reps: int = 50
    standalone_warmup: int = 5
    device: str = "cpu"
    engine: str = "auto"  # the node's inference engine (policies/engine.py)
    quick: bool = False

    def check(self) -> None:
        if self.seconds < MIN_SECONDS and not self.quick:
            raise ValueError(f"--seconds {self.seconds:g} is under {MIN_SECONDS:g} s: too few "
                             f"chunks for a p99 (use --quick for a smoke test)")
        if self.seconds <= 0 or self.warmup_s < 0 or self.idle_s < 0:
            raise ValueError("--seconds must be > 0, --warmup-seconds and --idle-seconds >= 0")
        if self.load < 0:
            raise ValueError(f"--load must be >= 0, got {self.load}")
        if self.replan_lead_steps < 0:
            raise ValueError(f"--replan-lead-steps must be >= 0 (0 = auto), got "
                             f"{self.replan_lead_steps}")
        if self.overrun_steps < -1:
            raise ValueError(f"--overrun-steps must be >= -1 (-1 = n_action_steps), got "
                             f"{self.overrun_steps}")
        if self.standalone_reps < 1 or self.rate_hz <= 0:
            raise ValueError("--standalone-reps must be >= 1 and --rate > 0")
        parse_size(self.camera_size)


def configs_from_args(args: Any) -> list[NodeBenchConfig]:
    """The runs ``bench --node`` asked for (``--matrix``, ``--sizes``/``--loads`` or one);
    ``args``: a ``BenchConfig``."""
    sizes = list(MATRIX_SIZES) if args.matrix else (args.sizes or [args.camera_size])
    loads = list(MATRIX_LOADS) if args.matrix else (args.loads or [args.load])
    device = "cpu" if args.device == "auto" else args.device
    configs = [NodeBenchConfig(
        policy=args.policy, seconds=args.seconds, warmup_s=args.warmup_seconds,
        idle_s=args.idle_seconds, rate_hz=args.rate, camera_size=size, load=load,
        cpu_threads=args.cpu_threads, n_action_steps=args.n_action_steps,
        replan_lead_steps=args.replan_lead_steps, overrun_steps=args.overrun_steps,
        inference_cpus=tuple(args.inference_cpus or ()),
        standalone_reps=args.standalone_reps, device=device, engine=args.engine,
        quick=args.quick)
        for size in sizes for load in loads]
    for config in configs:
        config.check()
    return configs


# -- statistics -------------------------------------------------------------------------------


def distribution(values_ms: Any) -> dict[str, Any]:
    """p50, p99, max (ms) and count of raw samples (NaN and count 0 when there are none)."""
    arr = np.asarray(list(values_ms), dtype=float)
    if arr.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "count": 0}
    return {"p50": round(float(np.percentile(arr, 50)), 3),
            "p99": round(float(np.percentile(arr, 99)), 3),
            "max": round(float(arr.max()), 3), "count": int(arr.size)}


def _number(text: Any) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


# -- processes: CPU of a tree, busy load ------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime + stime in seconds) of ``pid``, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``: /proc/<pid>/task/*/children, else a /proc scan by ppid."""
    kids: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return kids
    readable = False
    for task in tasks:
        with contextlib.suppress(OSError):
            kids += [int(k) for k in (task / "children").read_text().split()]
            readable = True
    if readable:
        return sorted(set(kids))
    for entry in Path("/proc").iterdir():  # kernels without CONFIG_PROC_CHILDREN
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] == pid:
                kids.append(int(entry.name))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (breadth first)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        if current in tree:
            continue
        tree.append(current)
        todo += _children(current)
    return tree


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "node"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    return "inference_worker" if WORKER_MODULE in cmdline else cmdline.strip()[:80]


def tree_cpu(pid: int) -> dict[int, dict[str, Any]]:
    """CPU seconds (user + system) of ``pid`` and each descendant, with its role."""
    out = {}
    for p in process_tree(pid):
        stat = _stat(p)
        if stat is not None:
            out[p] = {"role": _role(p, pid), "cpu_s": stat[1]}
    return out


def cpu_between(start: dict[int, dict[str, Any]], end: dict[int, dict[str, Any]],
                seconds: float) -> dict[str, Any]:
    """Cores used between two ``tree_cpu`` readings: total, node process, each descendant."""
    per = {}
    for pid, info in end.items():
        used = info["cpu_s"] - start.get(pid, {"cpu_s": 0.0})["cpu_s"]  # new: all of it
        per[pid] = {"role": info["role"], "cores": round(used / max(seconds, 1e-9), 3)}
    node = next((v["cores"] for v in per.values() if v["role"] == "node"), float("nan"))
    return {"total_cores": round(sum(v["cores"] for v in per.values()), 3),
            "node_process_cores": node,
            "children": [{"pid": pid, **v} for pid, v in per.items() if v["role"] != "node"],
            "processes_gone_during_window": sorted(set(start) - set(end))}


class BusyLoad:
    """``n`` busy processes (``python -c 'while True: pass'``) while the block runs."""

    def __init__(self, n: int) -> None:
        self.n, self.procs, self.pids = n, [], []

    def __enter__(self) -> BusyLoad:
        env = {**os.environ, "PYTHONPATH": ""}
        self.procs = [subprocess.Popen([sys.executable, "-S", "-c", BUSY_LOOP], env=env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL) for _ in range(self.n)]
        self.pids = [p.pid for p in self.procs]
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(timeout=10)

    def left(self) -> list[int]:
        """Load processes still present (should be none after the block)."""
        return [pid for pid in self.pids if Path(f"/proc/{pid}").exists()]


# -- machine ----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    from snapflow_ros.cpu_threads import available_cores

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu_model": model, "cores_online": os.cpu_count(),
            "cores_available": available_cores(),
            "loadavg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)")}


def git_commit() -> dict[str, Any]:
    """The source tree's commit and whether it has uncommitted changes (None outside git)."""
    try:
        commit = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(SOURCE_ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"git_commit": None, "git_dirty": None}
    if commit.returncode != 0:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


def use_fastdds_profile() -> str:
    """Point Fast DDS (this process and the node, which inherits it) at the large-image
    profile unless the variable is already set; returns the profile in use."""
    if not os.environ.get(FASTDDS_ENV):
        os.environ[FASTDDS_ENV] = str(config_path(FASTDDS_PROFILE))
    return os.environ[FASTDDS_ENV]


# -- the model alone --------------------------------------------------------------------------


def standalone_model(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``PolicyRunner.predict_chunk`` as the inference worker runs it (in this process;
    ``run_standalone`` calls it in a fresh one). Model time = the sum of the stage times, as the
    node's ``model_ms``; wall = around the call."""
    from snapflow_ros.cpu_threads import apply_cpu_threads

    if spec.get("cpus"):
        os.sched_setaffinity(0, spec["cpus"])  # as the node's pinned inference process
    apply_cpu_threads(spec["threads"])
    import torch

    apply_cpu_threads(spec["threads"])
    from snapflow_ros.policies.runner import PolicyRunner
    from snapflow_ros.timing import StageTimer

    runner = PolicyRunner.load(spec["policy"], device=spec["device"], num_steps=0, seed=-1,
                               engine=spec.get("engine", "auto"))
    h, w = spec["height"], spec["width"]
    runner.warmup(2, dict.fromkeys(runner.camera_names, (h, w)))  # as the worker
    rng = np.random.default_rng(0)
    frames = [{name: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
               for name in runner.camera_names} for _ in range(4)]
    model, wall = [], []
    for i in range(spec["warmup"] + spec["reps"]):
        state = rng.normal(size=runner.state_dim) * 0.1
        timer = StageTimer(sync=runner._sync)
        t0 = time.perf_counter()
        runner.predict_chunk(frames[i % 4], state, spec["task"], timer)
        t1 = time.perf_counter()
        if i >= spec["warmup"]:
            model.append(sum(timer.total(s) for s in timer.durations) * 1e3)
            wall.append((t1 - t0) * 1e3)
    return {"model_ms": distribution(model), "wall_ms": distribution(wall),
            "reps": spec["reps"], "warmup_reps": spec["warmup"], "threads": spec["threads"],
            "torch_threads": torch.get_num_threads(), "num_steps": runner.num_steps,
            "image_hw": [h, w], "cameras": runner.camera_names, "engine": runner.engine_name}


def run_standalone(spec: dict[str, Any]) -> dict[str, Any]:
    """``standalone_model`` in a subprocess (fresh interpreter, the thread env applied)."""
    from snapflow_ros.cpu_threads import thread_env

    out = subprocess.run([sys.executable, "-m", "snapflow_ros.apps.node_bench", "--standalone",
                          json.dumps(spec)], capture_output=True, text=True, timeout=900,
                         env={**os.environ, **thread_env(spec["threads"])})
    if out.returncode != 0:
        raise RuntimeError(f"standalone model timing failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- one run ----------------------------------------------------------------------------------


class _Recorder:
    """This process's ROS side: publishes inputs, records what comes back (with DDS times)."""

    def __init__(self, ns: str, tm: dict[str, Any], size: tuple[int, int]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from trajectory_msgs.msg import JointTrajectory

        from snapflow_ros.conversions.image import fill_image_msg

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("node_bench", namespace=ns, context=self.context)
        self.clock = self.node.get_clock()
        self.chunks: list[tuple[int, int, int]] = []  # (obs stamp, source ts, received ts) ns
        self.commands: list[tuple[int, int, int]] = []  # (tick stamp, source ts, received ts)
        self.diags: list[tuple[int, dict[str, Any]]] = []  # (received ns, values)
        self.camera_stamps: list[int] = []
        self.camera_frames = 0  # per camera
        self.joint_msgs = 0
        node = self.node
        node.create_subscription(JointTrajectory, "action_chunk", self._on_chunk, 50)
        node.create_subscription(JointState, tm["action"]["topic"], self._on_command, 200)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.cams = [node.create_publisher(Image, c["topic"], qos_profile_sensor_data)
                     for c in tm["cameras"].values()]
        self.joints_pub = node.create_publisher(JointState, tm["joint_states"]["topic"], 10)
        self.joint_names = list(tm["joint_states"]["joints"])
        rng = np.random.default_rng(0)
        self.frames = [fill_image_msg(Image(), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
                       for _ in range(4)]
        self._joint_state = JointState
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(node)
        self.error: Exception | None = None
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._spin.start()
        self._k = 0

    def _spin_loop(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass
        except Exception as err:  # a failing callback: the run reports it, not a silent stall
            self.error = err

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the benchmark's ROS thread failed: {self.error!r}")

    @staticmethod
    def _ns(stamp: Any) -> int:
        return stamp.sec * 10**9 + stamp.nanosec

    def _on_chunk(self, msg: Any, info: Any) -> None:
        self.chunks.append((self._ns(msg.header.stamp), info["source_timestamp"],
                            info["received_timestamp"]))

    def _on_command(self, msg: Any, info: Any) -> None:
        self.commands.append((self._ns(msg.header.stamp), info["source_timestamp"],
                              info["received_timestamp"]))

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == NAME:
                values = {kv.key: _number(kv.value) for kv in status.values}
                level = status.level
                values["_level"] = level[0] if isinstance(level, bytes) else int(level)
                values["_message"] = status.message
                self.diags.append((self.now(), values))

    def now(self) -> int:
        return self.clock.now().nanoseconds

    def latest_diag(self) -> dict[str, Any] | None:
        return self.diags[-1][1] if self.diags else None

    def feed(self, seconds: float, until: Any = None) -> None:
        """Publish cameras at 30 Hz and joint states at 100 Hz for ``seconds`` (or until
        ``until()`` is true), on this process's ROS clock."""
        start = time.monotonic()
        k0 = 0
        while time.monotonic() - start < seconds and not (until and until()):
            stamp = self.clock.now().to_msg()
            if self._k % (JOINTS_HZ // CAMERA_HZ) == 0:
                frame = self.frames[(self._k // 3) % len(self.frames)]
                frame.header.stamp = stamp
                for pub in self.cams:
                    pub.publish(frame)
                self.camera_stamps.append(self._ns(stamp))
                self.camera_frames += 1
            js = self._joint_state(name=self.joint_names, position=[0.0] * len(self.joint_names))
            js.header.stamp = stamp
            self.joints_pub.publish(js)
            self.joint_msgs += 1
            self._k += 1
            k0 += 1
            time.sleep(max(0.0, start + k0 / JOINTS_HZ - time.monotonic()))

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spin.join(timeout=2.0)


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p in pids if _stat(p) is not None]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@dataclass
class _Window:
    """What the measured window saw: its clock marks, CPU readings and the node's counters."""

    t0_ns: int
    t1_ns: int
    window_s: float
    cpu0: dict
    cpu1: dict
    own_cpu_s: float
    camera_frames: int
    joint_msgs: int
    diag0: dict
    diag1: dict
    chunks_in_warmup: int


def _wait_active(rec: _Recorder, node: NodeProcess, timeout_s: float = 600.0) -> float:
    """Seconds until the node reports ``active`` (model load + the worker's warm-up)."""
    t_launch = time.monotonic()

    def active() -> bool:
        diag = rec.latest_diag()
        if diag is not None and diag.get("state") == "active":
            return True
        rec.check()
        if node.poll() is not None:
            raise RuntimeError(f"policy_node exited with {node.poll()}:\n{node.log_tail()}")
        return False

    try:
        wait_until(active, timeout_s, "policy_node to become active", interval_s=0.1)
    except TimeoutError as err:
        raise RuntimeError(f"{err}:\n{node.log_tail()}") from None
    return time.monotonic() - t_launch


def _measure_window(cfg: NodeBenchConfig, rec: _Recorder, node: NodeProcess) -> _Window:
    """Warm-up (inputs flow, nothing recorded), the measured window, the node's figures."""
    rec.feed(cfg.warmup_s)
    chunks_in_warmup = len(rec.chunks)
    diag0 = rec.latest_diag() or {}
    cams0, joints0 = rec.camera_frames, rec.joint_msgs
    t0_ns, t0 = rec.now(), time.monotonic()
    cpu0, own0 = tree_cpu(node.pid), _own_cpu_s()
    rec.feed(cfg.seconds)
    cpu1, own1 = tree_cpu(node.pid), _own_cpu_s()
    t1_ns, t1 = rec.now(), time.monotonic()
    cams1, joints1 = rec.camera_frames, rec.joint_msgs
    n_diag = len(rec.diags)
    rec.feed(2.0, until=lambda: len(rec.diags) > n_diag)  # the node's figures at the end
    rec.check()
    return _Window(t0_ns, t1_ns, t1 - t0, cpu0, cpu1, own1 - own0, cams1 - cams0,
                   joints1 - joints0, diag0, rec.latest_diag() or {}, chunks_in_warmup)


def _measure_idle(cfg: NodeBenchConfig, node: NodeProcess) -> dict[str, Any]:
    """CPU of the node and its inference process with no inputs (the node holds)."""
    idle: dict[str, Any] = {"seconds": cfg.idle_s}
    if cfg.idle_s > 0:
        time.sleep(0.5)  # the last inputs drain
        i0, ti = tree_cpu(node.pid), time.monotonic()
        time.sleep(cfg.idle_s)  # the measurement itself: a fixed span of wall time
        idle.update(cpu_between(i0, tree_cpu(node.pid), time.monotonic() - ti))
        idle.pop("processes_gone_during_window", None)
    return idle


def _latency_figures(cfg: NodeBenchConfig, rec: _Recorder, win: _Window) -> dict[str, Any]:
    """Camera stamp → chunk, tick period and command arrival distributions of the window."""
    chunks = [c for c in rec.chunks if win.t0_ns <= c[2] <= win.t1_ns]
    commands = [c for c in rec.commands if win.t0_ns <= c[2] <= win.t1_ns]
    cams = rec.camera_stamps

    def camera_stamp(obs_ns: int) -> int | None:
        i = bisect.bisect_right(cams, obs_ns)
        return cams[i - 1] if i else None

    cam_pairs = [(camera_stamp(obs), src, rcv) for obs, src, rcv in chunks]
    cam_pairs = [p for p in cam_pairs if p[0] is not None]
    stamps = np.array([c[0] for c in commands], dtype=np.int64)
    received = np.array([c[2] for c in commands], dtype=np.int64)
    period = 1e3 / cfg.rate_hz
    tick = np.diff(stamps) / 1e6 if stamps.size > 1 else np.array([])
    # a gap of n periods is n - 1 ticks without a command (starved or refused) plus the timer's
    # error: split the two so that a late timer and a missing chunk are told apart
    slots = np.maximum(1, np.rint(tick / period)) if tick.size else np.array([])
    arrival = np.diff(received) / 1e6 if received.size > 1 else np.array([])

    def p99_error(values: np.ndarray) -> float:
        return (round(float(np.percentile(np.abs(values - period), 99)), 3) if values.size
                else float("nan"))

    return {
        "chunks_received": len(chunks),
        "commands_received": len(commands),
        "commands_expected": int(win.window_s * cfg.rate_hz),
        "camera_stamp_to_chunk_received_ms": distribution(
            (rcv - cam) / 1e6 for cam, _, rcv in cam_pairs),
        "camera_stamp_to_chunk_published_ms": distribution(
            (src - cam) / 1e6 for cam, src, _ in cam_pairs),
        "obs_stamp_to_chunk_received_ms": distribution((rcv - obs) / 1e6
                                                       for obs, _, rcv in chunks),
        "chunk_interval_ms": distribution(np.diff([c[2] for c in chunks]) / 1e6
                                          if len(chunks) > 1 else []),
        "tick_period_ms": {**distribution(tick), "target": round(period, 3),
                           "abs_error_p99": p99_error(tick)},
        "tick_timer_error_ms": {
            **distribution(np.abs(tick - slots * period)),
            "note": "|gap - n x period| with n = round(gap / period): the control timer's "
                    "error with the ticks that sent no command taken out"},
        "ticks_without_command": int((slots - 1).sum()) if slots.size else 0,
        "command_gaps_over_one_period_ms": distribution(tick[slots > 1]),
        "command_arrival_period_ms": {**distribution(arrival),
                                      "abs_error_p99": p99_error(arrival)},
        "tick_to_command_received_ms": distribution((rcv - st) / 1e6
                                                    for st, _, rcv in commands),
    }


def _node_figures(win: _Window) -> dict[str, Any]:
    """The node's own /diagnostics figures and counters over the window."""
    diag0, diag1 = win.diag0, win.diag1

    def delta(key: str) -> Any:
        a, b = diag0.get(key, 0.0), diag1.get(key, 0.0)
        return b - a if isinstance(a, float) and isinstance(b, float) else None

    # how many of the node's rolling-window chunks were made inside the measured window
    rolling_n = int(min(ROLLING_WINDOW, diag1.get("chunks", 0.0)))
    rolling_in_window = int(min(delta("chunks") or 0.0, rolling_n))
    rolling_keys = ("model", "preprocess", "prefix", "expert", "postprocess", "node_overhead",
                    "obs_age_at_start", "obs_to_chunk")
    counters = ("chunks", "chunks_on_frame", "chunks_on_deadline", "commands", "starved_ticks",
                "overrun_ticks", "skipped_steps", "late_chunks", "waits", "errors",
                "hold_missing", "hold_stale", "hold_skew", "hold_bad_input")
    return {
        "node_rolling_ms": {
            "note": (f"the node's /diagnostics percentiles over its last {ROLLING_WINDOW} chunks "
                     f"(read at the end of the window): {rolling_in_window} of these "
                     f"{rolling_n} chunks were made after the warm-up"),
            "chunks_in_rolling_window": rolling_n,
            "chunks_in_rolling_window_from_measured_window": rolling_in_window,
            **{f"{name}_{q}": diag1.get(f"{name}_ms_{q}", float("nan"))
               for name in rolling_keys for q in ("p50", "p99")},
        },
        "node_counters_window": {k: delta(k) for k in counters if k in diag1 or k in diag0},
        "node_rejected_messages": {k: v for k, v in diag1.items() if k.startswith("rejected_")},
        "node_state_at_end": {"state": diag1.get("state"), "level": diag1.get("_level"),
                              "message": diag1.get("_message"),
                              "num_steps": diag1.get("num_steps"),
                              "engine": diag1.get("engine"),
                              "inference": diag1.get("inference"),
                              "replan_lead_steps": diag1.get("replan_lead_steps"),
                              "overrun_steps": diag1.get("overrun_steps")},
    }


def _node_part(cfg: NodeBenchConfig, threads: int, ns: str, tmp: Path) -> dict[str, Any]:
    """Start the node, warm up, measure the window and the idle period, stop it."""
    tm = yaml.safe_load(config_path("topic_map.yaml").read_text())  # 224x224 policy input
    (tmp / "topic_map.yaml").write_text(yaml.safe_dump(tm))
    params: dict[str, Any] = {
        "policy_path": cfg.policy, "topic_map": str(tmp / "topic_map.yaml"),
        "device": cfg.device, "engine": cfg.engine, "control_rate_hz": cfg.rate_hz,
        "n_action_steps": cfg.n_action_steps, "replan_lead_steps": cfg.replan_lead_steps,
        "overrun_steps": cfg.overrun_steps,
        "cpu_threads": threads, "diagnostics_period_s": 0.5}
    if cfg.inference_cpus:
        params["inference_cpus"] = list(cfg.inference_cpus)
    node = NodeProcess(policy_node_command(ns, params), tmp / "policy_node.log")
    rec, descendants = None, []
    try:
        rec = _Recorder(ns, tm, parse_size(cfg.camera_size))
        startup_s = _wait_active(rec, node)
        worker = [p for p in process_tree(node.pid)[1:] if _role(p, node.pid) != "gone"]
        win = _measure_window(cfg, rec, node)
        idle = _measure_idle(cfg, node)
        descendants = process_tree(node.pid)[1:]
    finally:
        node.stop(timeout_s=20.0)
        if rec is not None:
            rec.close()
    left = _wait_gone(descendants, 10.0)
    return {
        "node_startup_s": round(startup_s, 2),
        "window_s": round(win.window_s, 3),
        "chunks_received_in_warmup": win.chunks_in_warmup,
        "camera_frames_published_per_camera": win.camera_frames,
        "joint_states_published": win.joint_msgs,
        **_latency_figures(cfg, rec, win),
        **_node_figures(win),
        "cpu_window": cpu_between(win.cpu0, win.cpu1, win.window_s),
        "cpu_window_bench_process_cores": round(win.own_cpu_s / max(win.window_s, 1e-9), 3),
        "cpu_idle": idle,
        "inference_worker_pids": worker,
        "node_descendants_left_after_stop": left,
    }


def run_once(cfg: NodeBenchConfig, index: int = 0) -> dict[str, Any]:
    """One configuration: the node part, then the model standalone, all under the load."""
    from snapflow_ros.cpu_threads import resolve_cpu_threads

    cfg.check()
    threads = resolve_cpu_threads(cfg.cpu_threads, reserved=1)
    tm = yaml.safe_load(config_path("topic_map.yaml").read_text())
    cam0 = next(iter(tm["cameras"].values()))
    ns = f"/node_bench_{os.getpid()}_{index}"
    load = BusyLoad(cfg.load)
    started, loadavg_start = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="snapflow_node_bench_") as tmp, load:
        node = _node_part(cfg, threads, ns, Path(tmp))
        standalone = run_standalone({
            "policy": cfg.policy, "threads": threads, "device": cfg.device,
            "engine": cfg.engine, "height": int(cam0["height"]), "width": int(cam0["width"]),
            "reps": cfg.standalone_reps, "warmup": cfg.standalone_warmup,
            "task": tm["task"]["text"], "cpus": list(cfg.inference_cpus)})
    node_p50 = node["node_rolling_ms"]["model_p50"]
    ratio = node_p50 / standalone["model_ms"]["p50"]
    report = {
        "config": {**asdict(cfg), "threads": threads, "cameras": len(tm["cameras"]),
                   "camera_hz": CAMERA_HZ, "joint_states_hz": JOINTS_HZ,
                   "policy_input_hw": [int(cam0["height"]), int(cam0["width"])]},
        "load_processes": cfg.load,
        "load_pids": load.pids,
        "load_processes_left": load.left(),
        **node,
        "standalone": standalone,
        "model_ms_p50_in_node": node_p50,
        "model_ms_p50_standalone": standalone["model_ms"]["p50"],
        "model_in_node_over_standalone": round(ratio, 3),
        "run_s": round(time.monotonic() - started, 1),
        # the machine's 1-min load average (ours included): other work shows up here
        "loadavg_1min_at_run_start": round(loadavg_start, 2),
        "loadavg_1min_at_run_end": round(os.getloadavg()[0], 2),
    }
    report["targets"] = targets(report)
    return report


# -- targets ----------------------------------------------------------------------------------


def _flag(value: float, limit: float) -> dict[str, Any]:
    ok = bool(np.isfinite(value) and np.isfinite(limit) and value <= limit)
    return {"value": round(float(value), 3), "limit": round(float(limit), 3), "pass": ok}


def targets(run: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for one run, as pass/fail flags."""
    from snapflow_ros.cpu_threads import available_cores

    cam = run["camera_stamp_to_chunk_received_ms"]
    model = run["model_ms_p50_in_node"]
    flags = {
        "model_in_node_le_1.3x_standalone": _flag(run["model_in_node_over_standalone"],
                                                  TARGET_MODEL_RATIO),
        "camera_to_chunk_p50_le_model_p50_plus_15ms": _flag(
            cam["p50"], model + TARGET_CAMERA_TO_CHUNK_P50_SLACK_MS),
        "camera_to_chunk_p99_le_2x_p50": _flag(cam["p99"],
                                               TARGET_CAMERA_TO_CHUNK_P99_OVER_P50 * cam["p50"]),
        "tick_period_p99_le_25ms": _flag(run["tick_period_ms"]["p99"],
                                         TARGET_TICK_PERIOD_P99_MS),
    }
    cfg = run["config"]
    flags["all_pass"] = all(f["pass"] for f in flags.values())
    flags["conditions_as_in_the_issue"] = bool(
        available_cores() == 2 and cfg["policy"] == "smolvla-tiny" and cfg["cameras"] == 2
        and cfg["rate_hz"] == 50.0)
    return flags


LOAD_FIGURES = {
    "model_ms_p50_in_node": lambda r: r["model_ms_p50_in_node"],
    "camera_to_chunk_p50_ms": lambda r: r["camera_stamp_to_chunk_received_ms"]["p50"],
    "camera_to_chunk_p99_ms": lambda r: r["camera_stamp_to_chunk_received_ms"]["p99"],
    "tick_period_p99_ms": lambda r: r["tick_period_ms"]["p99"],
}


def load_comparison(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each loaded run against the quiet run of the same camera size: every figure ≤ 1.5×."""
    out = []
    for run in runs:
        if run["load_processes"] == 0:
            continue
        quiet = next((r for r in runs if r["load_processes"] == 0
                      and r["config"]["camera_size"] == run["config"]["camera_size"]), None)
        if quiet is None:
            continue
        figures = {}
        for name, get in LOAD_FIGURES.items():
            q, loaded = get(quiet), get(run)
            ratio = loaded / q if q else float("nan")
            figures[name] = {"quiet": q, "loaded": loaded, **_flag(ratio,
                                                                   TARGET_LOADED_OVER_QUIET)}
        out.append({"camera_size": run["config"]["camera_size"],
                    "load_processes": run["load_processes"], "figures": figures,
                    "all_within_1.5x": all(f["pass"] for f in figures.values())})
    return out


# -- report -----------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """NaN/inf → None (strict JSON: a missing figure reads as null)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def run_matrix(configs: list[NodeBenchConfig]) -> dict[str, Any]:
    """Every configuration, in order; one JSON-able report."""
    machine = machine_info()  # load average before we add ours
    profile = use_fastdds_profile()
    runs = []
    for i, cfg in enumerate(configs):
        print(f"[bench --node] run {i + 1}/{len(configs)}: {cfg.camera_size}, load "  # noqa: T201
              f"{cfg.load}, {cfg.seconds:g} s window after {cfg.warmup_s:g} s warm-up",
              file=sys.stderr, flush=True)
        runs.append(run_once(cfg, i))
    return {
        "bench": "policy_node",
        "machine": machine,
        **git_commit(),
        "fastdds_profiles_file": profile,
        "units": "ms for latencies and periods, cores for CPU (1.0 = one core busy), s for "
                 "durations",
        "targets_note": "issue targets for 2 cores, smolvla-tiny, two cameras, 50 Hz commands; "
                        "reported, not tuned for",
        "runs": runs,
        "load_comparison": load_comparison(runs),
    }


def _overrun(run: dict[str, Any]) -> str:
    """Commands sent past n_action_steps in the window (the node's counter), as text."""
    value = run.get("node_counters_window", {}).get("overrun_ticks")
    return "-" if value is None else f"{value:.0f}"


def table(report: dict[str, Any]) -> str:
    """A compact text table of the runs (stderr)."""
    head = (f"{'camera':>8} {'load':>4} {'chunks':>6} {'model node':>10} {'standalone':>10} "
            f"{'ratio':>5} {'cam>chunk p50':>13} {'p99':>7} {'tick p99':>8} {'timer err':>9} "
            f"{'no cmd':>6} {'overrun':>7} {'cpu':>5} {'idle':>5} {'targets':>7}")
    lines = [head]
    for r in report["runs"]:
        cam = r["camera_stamp_to_chunk_received_ms"]
        lines.append(
            f"{r['config']['camera_size']:>8} {r['load_processes']:>4} {r['chunks_received']:>6} "
            f"{r['model_ms_p50_in_node']:>8.1f}ms {r['model_ms_p50_standalone']:>8.1f}ms "
            f"{r['model_in_node_over_standalone']:>5.2f} {cam['p50']:>11.1f}ms "
            f"{cam['p99']:>5.1f}ms {r['tick_period_ms']['p99']:>6.1f}ms "
            f"{r['tick_timer_error_ms']['p99']:>7.2f}ms {r['ticks_without_command']:>6} "
            f"{_overrun(r):>7} {r['cpu_window']['total_cores']:>5.2f} "
            f"{r['cpu_idle'].get('total_cores', float('nan')):>5.2f} "
            f"{'pass' if r['targets']['all_pass'] else 'FAIL':>7}")
    for c in report["load_comparison"]:
        worst = max(c["figures"].items(), key=lambda kv: kv[1]["value"])
        lines.append(f"load {c['load_processes']} vs quiet at {c['camera_size']}: worst "
                     f"{worst[0]} {worst[1]['value']:.2f}x -> "
                     f"{'pass' if c['all_within_1.5x'] else 'FAIL'} (limit 1.5x)")
    return "\n".join(lines)


def main_node_bench(args: Any) -> int:
    try:
        configs = configs_from_args(args)
    except ValueError as err:
        print(f"bench --node: {err}", file=sys.stderr)  # noqa: T201
        return 2
    report = run_matrix(configs)
    print(table(report), file=sys.stderr)  # noqa: T201
    print(json.dumps(json_safe(report), indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":  # the standalone timing subprocess (run_standalone)
    if len(sys.argv) == 3 and sys.argv[1] == "--standalone":
        print(json.dumps(standalone_model(json.loads(sys.argv[2]))))  # noqa: T201
        sys.exit(0)
    sys.exit("usage: python -m snapflow_ros bench --node [...]")
