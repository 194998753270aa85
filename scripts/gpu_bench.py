"""The prepared GPU benchmark (``scripts/gpu_bench.sh`` runs it after ``setup.sh``).

Steps, each a subprocess with its own time limit (a failed or late step is recorded and the
run goes on):

1. ``pytest -m gpu`` (test/gpu: the engine on CUDA, parity, captures, memory);
2. ``bench --compare`` for smolvla-full and pi05-full in bf16: eager-10, eager-1, engine-10,
   engine-1 interleaved in one process (engine auto: a CUDA graph);
3. ``bench --node`` on the GPU: node overhead (model in the node / standalone), camera stamp →
   chunk latency, control-tick period at 50 Hz;
4. distillation steps/s of smolvla-full (``bench_distill_step.py``, bf16 autocast).

Writes one JSON file (machine: GPU name and driver from nvidia-smi and torch) and prints a
table. ``--dry-run`` runs the same steps on the CPU with the tiny models and short windows (a
smoke test of the script: the numbers mean nothing).

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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("machine", "pytest_gpu", "bench_compare", "node_bench", "distill", "summary")


def _plan(dry: bool, py: str) -> dict[str, tuple[list[str], float]]:
    """Step name → (command, time limit s). Dry run: the same steps, tiny models, CPU."""
    bench = [py, "-m", "snapflow_ros", "bench", "--json"]
    if dry:
        compare = ["--device", "cpu", "--engine", "static", "--compare", "--reps", "3",
                   "--warmup", "1"]
        return {
            "pytest_gpu": ([py, "-m", "pytest", "test/gpu", "-m", "gpu", "-q",
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
        "pytest_gpu": ([py, "-m", "pytest", "test/gpu", "-m", "gpu", "-q",
                        "-p", "no:cacheprovider"], 150),
        "compare_smolvla": ([*bench, "--policy", "smolvla-full", *compare], 75),
        "compare_pi05": ([*bench, "--policy", "pi05-full", *compare], 120),
        "node_bench": ([py, "-m", "snapflow_ros", "bench", "--node", "--policy", "smolvla-full",
                        "--device", "cuda", "--engine", "auto", "--seconds", "30",
                        "--warmup-seconds", "5", "--idle-seconds", "0",
                        "--standalone-reps", "50"], 110),
        "distill": ([py, "scripts/bench_distill_step.py", "--shape", "full", "--device", "cuda",
                     "--batch", "4", "--reps", "5", "--warmup", "2",
                     "--variants", "fm_lerobot", "distill"], 75),
    }


def _run(name: str, cmd: list[str], limit: float) -> dict[str, Any]:
    """Run one step; its stdout (one JSON object for the benches) and how it went."""
    print(f"[gpu_bench] {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)  # noqa: T201
    t0 = time.monotonic()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"ok": False, "seconds": round(time.monotonic() - t0, 1),
                "error": f"timed out after {limit:.0f} s"}
    step = {"ok": out.returncode == 0, "rc": out.returncode,
            "seconds": round(time.monotonic() - t0, 1)}
    if out.returncode != 0:
        step["error"] = (out.stderr or out.stdout)[-3000:]
    step["stdout"] = out.stdout
    return step


def _json(step: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(step.pop("stdout", "") or "{}")
    except json.JSONDecodeError as err:
        step["ok"], step["error"] = False, f"no JSON on stdout: {err}"
        return {}


def _pytest_counts(step: dict[str, Any]) -> dict[str, Any]:
    text = step.pop("stdout", "")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)",
                                                text)}
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
    return info


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
    run = (result["node_bench"].get("runs") or [{}])[0]
    camera, tick = run.get("camera_stamp_to_chunk_received_ms", {}), run.get("tick_period_ms", {})
    out["node_model_in_node_over_standalone"] = run.get("model_in_node_over_standalone")
    out["node_camera_to_chunk_p50_ms"] = camera.get("p50")
    out["node_camera_to_chunk_p99_ms"] = camera.get("p99")
    out["node_tick_period_p50_ms"] = tick.get("p50")
    out["node_tick_period_p99_ms"] = tick.get("p99")
    distill = (result["distill"].get("runs") or [{}])[0]
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
    p = result["pytest_gpu"]
    lines.append(f"pytest -m gpu: {p['passed']} passed, {p['failed']} failed, "
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny models, short windows")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON file (default: gpu_bench[_dry_run]_<UTC time>.json here)")
    p.add_argument("--setup-s", type=float, default=None, help="setup time (gpu_bench.sh)")
    args = p.parse_args(argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path(f"gpu_bench{'_dry_run' if args.dry_run else ''}_{stamp}.json")
    t0 = time.monotonic()
    steps = {name: _run(name, cmd, limit)
             for name, (cmd, limit) in _plan(args.dry_run, sys.executable).items()}
    result: dict[str, Any] = {
        "dry_run": args.dry_run, "started_utc": stamp, "setup_s": args.setup_s,
        "machine": machine(),
        "pytest_gpu": _pytest_counts(steps["pytest_gpu"]),
        "bench_compare": {"smolvla": _json(steps["compare_smolvla"]),
                          "pi05": _json(steps["compare_pi05"])},
        "node_bench": _json(steps["node_bench"]),
        "distill": _json(steps["distill"]),
    }
    result["steps"] = {name: {k: v for k, v in step.items() if k != "stdout"}
                       for name, step in steps.items()}
    result["steps"]["pytest_gpu"]["ok"] = result["pytest_gpu"]["ok"]
    result["summary"] = summary(result)
    result["wall_s"] = round(time.monotonic() - t0 + (args.setup_s or 0.0), 1)
    result["ok"] = all(step["ok"] for step in result["steps"].values())
    out.write_text(json.dumps(_no_nan(result), indent=2, allow_nan=False, default=str) + "\n")
    print(table(result))  # noqa: T201
    print(f"[gpu_bench] wrote {out}", file=sys.stderr)  # noqa: T201
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
