"""``python -m snapflow_ros demo_synthetic`` at miniature scale: it runs end to end."""

import json
import subprocess
import sys

import torch


def _demo(*args):
    return subprocess.run([sys.executable, "-m", "snapflow_ros", "demo_synthetic", "--fm-steps", "6",
                           "--distill-steps", "6", "--batch-size", "4", "--eval-size", "6",
                           *args], capture_output=True, text=True, timeout=600)


def test_demo_distills_saves_and_reloads_a_one_step_policy(tmp_path):
    out = _demo("--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["reload_bit_identical"] is True
    assert set(summary["methods"]) == {"teacher_10", "naive_1", "snapflow_1", "snapflow_2"}
    for row in summary["methods"].values():
        assert row["nearest_mode"] >= 0 and 0 <= row["mode0_share"] <= 1
    assert "SnapFlow 1-NFE" in out.stdout

    from snapflow_ros.policies import load_policy

    loaded = load_policy(tmp_path / "run" / "checkpoint")
    assert loaded.is_snapflow and loaded.policy.default_num_steps == 1
    assert loaded.policy.phi.fc2.weight.abs().sum() > 0  # φ was trained
    assert torch.isfinite(loaded.policy.phi.fc2.weight).all()


def test_demo_refuses_to_overwrite_a_previous_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "mine.txt").write_text("x")
    out = _demo("--out", str(tmp_path / "run"))
    assert out.returncode != 0 and "--overwrite" in out.stderr
    assert (tmp_path / "run" / "mine.txt").exists()
