"""scripts/bench_fidelity.py at miniature scale (``--mini``): demos → dataset → teacher → three
SnapFlow students → every method closed loop through the ROS nodes, one JSON and one plot."""

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_fidelity.py"
METHODS = {"teacher_10", "naive_1", "snapflow_1_paper", "snapflow_1_lam1", "snapflow_1_lam1_k10",
           "snapflow_2_lam1"}


def _bench(out, *args):
    return subprocess.run([sys.executable, str(SCRIPT), "--mini", "--out", str(out),
                           "--cpu-threads", "1", *args], capture_output=True, text=True,
                          timeout=900)


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


def test_mini_benchmark_reports_every_method_with_ordered_intervals(tmp_path):
    out = tmp_path / "fidelity"
    run = _bench(out)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads((out / "fidelity.json").read_text())
    assert report["mini"] and report["episodes"] == 2 and report["wall_s"] > 0
    assert list(report["tasks"]) == ["reach_two_fixed_targets", "so101_pick_cube"]
    for task_name, task in report["tasks"].items():
        _check_task(task_name, task)
    assert report["tasks"]["so101_pick_cube"]["demos"]["episodes"] == 2  # no pairs: one mode
    for name, m in report["tasks"]["reach_two_fixed_targets"]["methods"].items():
        probe = m["first_chunk"]  # the mode probe at the one pair's first frame, 4 draws
        assert probe["pairs"] == 1 and probe["draws"] == 4, name
        assert 0.0 <= probe["between_share"] <= 1.0, name
    for name, m in report["tasks"]["so101_pick_cube"]["methods"].items():
        assert m["first_chunk"] is None, name
        failed = sum(not e["success"] for e in m["episodes_"])  # how far each failed pick got
        assert sum((m["failures_got_to"] or {}).values()) == failed, (name, m["failures_got_to"])
        assert set(m["failures_got_to"] or {}) <= {"approach", "at_cube", "lifted"}, name
    assert (out / "fidelity.png").stat().st_size > 1000
    assert "SnapFlow 1, λ 0.1 (paper)" in run.stdout

    # A second run reuses every checkpoint and only runs the closed loop again.
    task = report["tasks"]["reach_two_fixed_targets"]
    teacher = out / task["dir"].split("/")[-1] / "teacher" / "model.safetensors"
    before = teacher.stat().st_mtime_ns
    # Whole chunks executed open loop (n_action_steps = the chunk size).
    again = _bench(out, "--episodes", "1", "--first-seed", "7", "--tasks",
                   "reach_two_fixed_targets", "--n-action-steps", "30")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "reusing the teacher" in again.stderr and teacher.stat().st_mtime_ns == before
    second = json.loads((out / "fidelity.json").read_text())
    assert second["episodes"] == 1 and second["n_action_steps"] == 30
    log = (out / "reach_two_fixed_targets" / "logs" / "policy_node_teacher_10.log").read_text()
    assert "30 steps of each 30-step chunk executed" in log, log[-2000:]


def _check_task(task_name, task):
    assert task["demos"]["episodes"] == (3 if task_name.startswith("reach") else 2)
    assert set(task["methods"]) == METHODS
    for name, m in task["methods"].items():
        assert m["episodes"] == 2 and len(m["episodes_"]) == 2, name
        steps = [e["chunks"] for e in m["episodes_"]]
        assert min(steps) >= 1, name  # the policy node drove the arm in every episode
        rates = [m["success"], *m["modes"].values()]
        for r in rates:
            low, high = r["ci95"]
            assert 0.0 <= low <= r["rate"] <= high <= 1.0, (name, r)
        shares = [v["rate"] for v in m["modes"].values()]
        assert sum(shares) <= 1.0 + 1e-9, (name, shares)
        assert math.isclose(sum(shares), 1.0, abs_tol=0.01)  # every episode counted once
        assert m["offline"] is not None and {"mse", "p95_abs_err"} <= set(m["offline"]), name
        numbers = list(_numbers({k: v for k, v in m.items() if k != "episodes_"}))
        assert numbers and all(math.isfinite(x) for x in numbers), name
    assert set(task["ranking_1nfe"]) == {n for n in METHODS if n.startswith("snapflow_1_")}
