"""The prepared GPU benchmark (``scripts/gpu_bench.sh`` runs it after ``setup.sh``).

Steps, each a subprocess with its own time limit (a failed or late step is recorded and the
run goes on):

1. ``pytest -m gpu`` (test/gpu: the engine on CUDA, parity, captures, memory);
2. ``bench --compare`` for smolvla-full and pi05-full in bf16: eager-10, eager-1, engine-10,
   engine-1 interleaved in one process (engine auto: a CUDA graph);
3. ``bench --node`` on the GPU: node overhead (model in the node / standalone), camera stamp →
   chunk latency, control-tick period at 50 Hz;
4. distillation steps/s of smolvla-full (``bench_distill_step.py``, bf16 autocast).

Writes one JSON file (machine: GPU name and driver from nvidia-smi and torch, the versions
of the packages that matter) after every step, so a run cut short keeps what it measured, and
prints a table. ``--steps`` runs some of the steps (a device call that can carry only part of
the wheels: README, "Inference engines"). A step that runs out of time is killed with every
process it started. ``--dry-run`` runs the same steps on the CPU with the tiny models and short
windows (a smoke test of the script: the numbers mean nothing).

    bash scripts/gpu_bench.sh                    # a GPU machine: setup + every step
    bash scripts/gpu_bench.sh --dry-run          # CPU, tiny models, ~1 min
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("pytest_gpu", "compare_smolvla", "compare_pi05", "node_bench", "distill")
#: what each step imports, and where it comes from when missing (gpu_bench.sh --wheels)
NEEDS = {name: ["lerobot"] for name in STEPS} | {"node_bench": ["lerobot", "rclpy"]}
WHEEL_PART = {"lerobot": ".whl/core", "rclpy": ".whl/ros"}
#: the packages whose versions the JSON records (the GPU image's may differ from ours)
PACKAGES = ("torch", "transformers", "lerobot", "numpy", "tokenizers", "huggingface-hub",
            "ros-rclpy")


def _plan(dry: bool, py: str) -> dict[str, tuple[list[str], float]]:
    """Step name → (command, time limit s). Dry run: the same steps, tiny models, CPU."""
    bench = [py, "-m", "snapflow_ros", "bench", "--json"]
    if dry:
        compare = ["--device", "cpu", "--engine", "static", "--compare", "--reps", "3",
                   "--warmup", "1"]
        return {
            "pytest_gpu": ([py, "-m", "pytest", "test/gpu", "-m", "gpu", "-v",
                            "-p", "no:cacheprovider"], 120),
            "compare_smolvla": ([*bench, "--policy", "smolvla-tiny", *compare], 120),
            "compare_pi05": ([*bench, "--policy", "pi05-tiny", *compare], 120),
            "node_bench": ([py, "-m", "snapflow_ros", "bench", "--node", "--quick",
                            "--policy", "smolvla-tiny", "--device", "cpu", "--engine", "static",
                            "--seconds", "3", "--warmup-seconds", "1", "--idle-seconds", "0",
                            "--standalone-reps", "5"], 180),
            "distill": ([py, "scripts/bench_distill_step.py", "--shape", "tiny", "--device",
                         "cpu", "--batch", "1", "--reps", "2", "--warmup", "1",
                         "--variants", "fm_lerobot", "distill"], 120),
        }
    compare = ["--device", "cuda", "--dtype", "bfloat16", "--engine", "auto", "--compare",
               "--reps", "20", "--warmup", "3"]
    return {
        "pytest_gpu": ([py, "-m", "pytest", "test/gpu", "-m", "gpu", "-v",
                        "-p", "no:cacheprovider"], 240),
        "compare_smolvla": ([*bench, "--policy", "smolvla-full", *compare], 90),
        "compare_pi05": ([*bench, "--policy", "pi05-full", *compare], 150),
        "node_bench": ([py, "-m", "snapflow_ros", "bench", "--node", "--policy", "smolvla-full",
                        "--device", "cuda", "--engine", "auto", "--seconds", "30",
                        "--warmup-seconds", "5", "--idle-seconds", "0",
                        "--standalone-reps", "50"], 120),
        "distill": ([py, "scripts/bench_distill_step.py", "--shape", "full", "--device", "cuda",
                     "--batch", "4", "--reps", "5", "--warmup", "2",
                     "--variants", "fm_lerobot", "distill"], 75),
    }


def _missing(name: str) -> dict[str, Any] | None:
    """A failed step if a module it needs is not installed (checked before spending minutes)."""
    import importlib.util

    absent = [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    where = ", ".join(f"{m} (scripts/gpu_wheels.py's {WHEEL_PART[m]})" for m in absent)
    return {"ok": False, "seconds": 0.0, "stdout": "",
            "error": f"not installed: {where}; run scripts/setup.sh, or on an offline machine "
                     f"gpu_bench.sh --wheels with that folder (the parts are installed in "
                     f"the order core, ros; a machine that went cold between calls lost them)"}


def _run(name: str, cmd: list[str], limit: float) -> dict[str, Any]:
    """Run one step in a session of its own; its stdout (one JSON object for the benches) and
    how it went. Past ``limit`` the whole session is killed (a node process it started too)."""
    print(f"[gpu_bench] {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)  # noqa: T201
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return {"ok": False, "seconds": round(time.monotonic() - t0, 1),
                "error": f"timed out after {limit:.0f} s; its last output:\n"
                         + (stderr or stdout)[-2000:],
                "stdout": stdout}
    step = {"ok": proc.returncode == 0, "rc": proc.returncode,
            "seconds": round(time.monotonic() - t0, 1)}
    if proc.returncode != 0:
        step["error"] = (stderr or stdout)[-3000:]
    step["stdout"] = stdout
    return step


def _json(step: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(step.pop("stdout", "") or "{}")
    except json.JSONDecodeError as err:
        step["ok"], step["error"] = False, f"no JSON on stdout: {err}"
        return {}


def _pytest_counts(step: dict[str, Any]) -> dict[str, Any]:
    """pytest's summary counts; for a run cut short (no summary), its per-test ``-v`` lines."""
    text = step.pop("stdout", "")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)",
                                                text)}
    if not counts:
        for outcome in re.findall(r"::\S+ (PASSED|FAILED|SKIPPED|ERROR)", text):
            key = outcome.lower()
            counts[key] = counts.get(key, 0) + 1
    ok = step["ok"] or (step.get("rc") == 5)  # 5: nothing collected
    return {**step, "ok": ok, **{k: counts.get(k, 0) for k in
                                 ("passed", "failed", "skipped", "deselected", "error")}}


def machine() -> dict[str, Any]:
    """GPU name and driver (nvidia-smi, torch), torch/CUDA versions, the commit."""
    import torch

    info: dict[str, Any] = {"host": platform.node(), "python": platform.python_version(),
                            "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cpu": platform.processor() or platform.machine(),
                            "cores": os.cpu_count()}
    if torch.cuda.is_available():
        info["torch_device_name"] = torch.cuda.get_device_name(0)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30).stdout.strip().splitlines()
        if smi:
            name, driver, memory = (part.strip() for part in smi[0].split(","))
            info.update(gpu_name=name, driver=driver, gpu_memory=memory)
    except (OSError, subprocess.SubprocessError, ValueError):
        info["nvidia_smi"] = "not available"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    info["git_commit"] = commit or None
    info["packages"] = {name: _version(name) for name in PACKAGES}
    return info


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _row(report: dict[str, Any], engine: str, steps: int) -> dict[str, Any]:
    rows = report.get("results", [])
    return next((r for r in rows if r["engine"] == engine and r["num_steps"] == steps), {})


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers (None where a step failed)."""
    out: dict[str, Any] = {}
    for model, report in result["bench_compare"].items():
        engine = next((e for e in report.get("engines", {}) if e != "eager"), None)
        eager10, eager1 = _row(report, "eager", 10), _row(report, "eager", 1)
        fast1 = _row(report, engine, 1) if engine else {}
        out[f"{model}_engine"] = engine
        out[f"{model}_engine_1step_e2e_p50_ms"] = fast1.get("e2e_ms_p50")
        out[f"{model}_eager_1step_e2e_p50_ms"] = eager1.get("e2e_ms_p50")
        out[f"{model}_eager_10step_e2e_p50_ms"] = eager10.get("e2e_ms_p50")
        out[f"{model}_engine_vs_eager_1step"] = fast1.get("e2e_p50_vs_eager")
    run = (result.get("node_bench", {}).get("runs") or [{}])[0]
    camera, tick = run.get("camera_stamp_to_chunk_received_ms", {}), run.get("tick_period_ms", {})
    out["node_model_in_node_over_standalone"] = run.get("model_in_node_over_standalone")
    out["node_camera_to_chunk_p50_ms"] = camera.get("p50")
    out["node_camera_to_chunk_p99_ms"] = camera.get("p99")
    out["node_tick_period_p50_ms"] = tick.get("p50")
    out["node_tick_period_p99_ms"] = tick.get("p99")
    distill = (result.get("distill", {}).get("runs") or [{}])[0]
    out["distill_steps_per_s"] = distill.get("steps_per_s", {}).get("distill")
    out["fm_steps_per_s"] = distill.get("steps_per_s", {}).get("fm_lerobot")
    return out


def table(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["summary"]

    def f(value: Any, unit: str = "") -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else f"{value:.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"

    lines = [f"gpu_bench{' (dry run: CPU, tiny models)' if result['dry_run'] else ''}: "
             f"{m.get('gpu_name') or m.get('torch_device_name') or m['cpu']} driver "
             f"{m.get('driver', '-')}, torch {m['torch']}, commit {m['git_commit']}, "
             f"{result['wall_s']:.0f} s"]
    p = result.get("pytest_gpu")
    lines.append("pytest -m gpu: not run" if p is None else
                 f"pytest -m gpu: {p['passed']} passed, {p['failed']} failed, "
                 f"{p['skipped']} skipped ({p['seconds']:.0f} s)")
    for model in result["bench_compare"]:
        def get(key: str, unit: str = "", model: str = model) -> str:
            return f(s[f"{model}_{key}"], unit)

        lines.append(f"{model:>8}: 1-NFE e2e p50 {get('engine_1step_e2e_p50_ms', ' ms')} "
                     f"({get('engine')}) vs eager {get('eager_1step_e2e_p50_ms', ' ms')} "
                     f"(x{get('engine_vs_eager_1step')}); eager 10-step "
                     f"{get('eager_10step_e2e_p50_ms', ' ms')}")
    lines.append(f"    node: model in node / standalone "
                 f"x{f(s['node_model_in_node_over_standalone'])}, camera -> chunk p50 "
                 f"{f(s['node_camera_to_chunk_p50_ms'], ' ms')} p99 "
                 f"{f(s['node_camera_to_chunk_p99_ms'], ' ms')}, tick period p50 "
                 f"{f(s['node_tick_period_p50_ms'], ' ms')} p99 "
                 f"{f(s['node_tick_period_p99_ms'], ' ms')}")
    lines.append(f" distill: {f(s['distill_steps_per_s'])} steps/s (plain FM "
                 f"{f(s['fm_steps_per_s'])} steps/s)")
    failed = [name for name, step in result["steps"].items() if not step["ok"]]
    lines.append("all steps ok" if not failed else f"FAILED steps: {', '.join(failed)}")
    return "\n".join(lines)


def _no_nan(value: Any) -> Any:
    """NaN/inf → None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def _steps(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown step(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(STEPS)}")
    return names


def _record(result: dict[str, Any], name: str, step: dict[str, Any]) -> None:
    """Put one finished step's report into its section of ``result``."""
    if name == "pytest_gpu":
        result["pytest_gpu"] = _pytest_counts(step)
        step["ok"] = result["pytest_gpu"]["ok"]
    elif name.startswith("compare_"):
        result["bench_compare"][name.removeprefix("compare_")] = _json(step)
    else:
        result[name] = _json(step)
    result["steps"][name] = {k: v for k, v in step.items() if k != "stdout"}


def _write(out: Path, result: dict[str, Any]) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(_no_nan(result), indent=2, allow_nan=False, default=str) + "\n")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny models, short windows")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON file (default: gpu_bench[_dry_run]_<UTC time>.json here)")
    p.add_argument("--steps", type=_steps, default=list(STEPS),
                   help=f"comma-separated steps to run (default: all: {','.join(STEPS)})")
    p.add_argument("--setup-s", type=float, default=None, help="setup time (gpu_bench.sh)")
    args = p.parse_args(argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path(f"gpu_bench{'_dry_run' if args.dry_run else ''}_{stamp}.json")
    t0 = time.monotonic()
    plan = _plan(args.dry_run, sys.executable)
    result: dict[str, Any] = {
        "dry_run": args.dry_run, "started_utc": stamp, "setup_s": args.setup_s,
        "machine": machine(), "steps": {}, "bench_compare": {}, "ok": False,
    }
    for name in (n for n in STEPS if n in args.steps):
        cmd, limit = plan[name]
        _record(result, name, _missing(name) or _run(name, cmd, limit))
        _write(out, result)  # a run cut short keeps the steps it finished
    result["summary"] = summary(result)
    result["wall_s"] = round(time.monotonic() - t0 + (args.setup_s or 0.0), 1)
    result["ok"] = all(step["ok"] for step in result["steps"].values())
    _write(out, result)
    print(table(result))  # noqa: T201
    print(f"[gpu_bench] wrote {out}", file=sys.stderr)  # noqa: T201
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
