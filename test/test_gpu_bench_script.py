"""``scripts/gpu_bench.sh --dry-run``: the prepared GPU benchmark's steps on CPU with the tiny
models; the JSON file has every section, with finite numbers (not their values)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    """scripts/<name>.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finite(value):
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow  # ~30 s quiet, ~60 s on a busy 2-core machine
def test_gpu_bench_dry_run_writes_every_section_with_finite_numbers(tmp_path):
    out_file = tmp_path / "gpu_bench.json"
    out = subprocess.run(["bash", "scripts/gpu_bench.sh", "--dry-run", "--skip-setup",
                          "--out", str(out_file)], cwd=ROOT, capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "all steps ok" in out.stdout and "dry run" in out.stdout  # the table
    result = json.loads(out_file.read_text())
    assert result["dry_run"] is True and result["ok"] is True
    assert all(step["ok"] for step in result["steps"].values())
    assert set(result["steps"]) == {"pytest_gpu", "compare_smolvla", "compare_pi05",
                                    "node_bench", "distill"}
    machine = result["machine"]
    assert machine["torch"] and machine["git_commit"] and _finite(machine["cores"])
    tests = result["pytest_gpu"]
    assert tests["failed"] == 0 and tests["passed"] + tests["skipped"] >= 4
    for model, report in result["bench_compare"].items():
        rows = {(r["engine"], r["num_steps"]): r for r in report["results"]}
        assert set(rows) == {("eager", 10), ("eager", 1), ("static", 10), ("static", 1)}, model
        for row in rows.values():
            for key in ("e2e_ms_p50", "e2e_ms_p99", "preprocess_ms_p50", "prefix_ms_p50",
                        "expert_ms_p50", "postprocess_ms_p50", "e2e_p50_vs_eager"):
                assert _finite(row[key]), (model, key, row[key])
    run = result["node_bench"]["runs"][0]
    assert run["config"]["engine"] == "static"
    for key in ("camera_stamp_to_chunk_received_ms", "tick_period_ms"):
        assert _finite(run[key]["p50"]) and _finite(run[key]["p99"])
    assert _finite(run["model_in_node_over_standalone"])
    assert result["distill"]["runs"][0]["steps_per_s"]["distill"] > 0
    summary = result["summary"]
    assert {summary["smolvla_engine"], summary["pi05_engine"]} == {"static"}
    numbers = {k: v for k, v in summary.items() if not k.endswith("_engine")}
    assert len(numbers) >= 15 and all(_finite(v) for v in numbers.values()), numbers


def test_steps_runs_only_the_chosen_steps_and_names_unknown_ones(tmp_path):
    out_file = tmp_path / "part.json"
    out = subprocess.run([sys.executable, "scripts/gpu_bench.py", "--dry-run", "--steps",
                          "distill", "--out", str(out_file)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    result = json.loads(out_file.read_text())
    assert set(result["steps"]) == {"distill"} and result["ok"] is True
    assert result["summary"]["distill_steps_per_s"] > 0
    assert result["summary"]["node_tick_period_p50_ms"] is None  # not run, not invented
    assert "pytest -m gpu: not run" in out.stdout
    assert result["machine"]["packages"]["torch"] and result["machine"]["packages"]["lerobot"]
    bad = subprocess.run([sys.executable, "scripts/gpu_bench.py", "--dry-run", "--steps",
                          "distill,fast"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown step(s) fast" in bad.stderr
    assert "pytest_gpu, compare_smolvla" in bad.stderr


def test_the_gpu_wheel_list_is_pinned_and_covers_lerobot_and_every_ros_requirement():
    gpu_wheels = _script("gpu_wheels")
    listed = gpu_wheels.parts(gpu_wheels.LIST.read_text())
    assert set(listed) == {"core", "ros"}
    pinned = gpu_wheels.pins((ROOT / "constraints.txt").read_text())
    wanted = {part: gpu_wheels.requirements(names, pinned) for part, names in listed.items()}
    assert f"lerobot=={pinned['lerobot']}" in wanted["core"]
    assert f"transformers=={pinned['transformers']}" in wanted["core"]
    ros = {gpu_wheels.normalise(n) for n in listed["ros"]}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith("ros-"):  # what the product's ROS side needs
            assert gpu_wheels.normalise(line.split("==")[0]) in ros, line
    with pytest.raises(ValueError, match=r"not pinned in constraints\.txt: no-such-package"):
        gpu_wheels.requirements(["lerobot", "no-such-package"], pinned)
    with pytest.raises(ValueError, match="before any"):
        gpu_wheels.parts("lerobot\n[core]\n")


def test_a_step_whose_module_is_missing_fails_at_once_naming_the_wheel_part(monkeypatch):
    gpu_bench = _script("gpu_bench")
    assert gpu_bench._missing("node_bench") is None  # this venv has lerobot and rclpy
    monkeypatch.setitem(gpu_bench.NEEDS, "node_bench", ["lerobot", "rclpy_not_here"])
    monkeypatch.setitem(gpu_bench.WHEEL_PART, "rclpy_not_here", ".whl/ros")
    step = gpu_bench._missing("node_bench")
    assert step["ok"] is False and step["seconds"] == 0.0
    assert step["error"].startswith("not installed: rclpy_not_here (scripts/gpu_wheels.py's "
                                    ".whl/ros)")
