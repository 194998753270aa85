"""``python -m snapflow_ros bench``: the JSON report it prints (structure, not speed)."""

import json
import subprocess
import sys

import pytest

KEYS = ("num_steps", "e2e_ms_p50", "e2e_ms_p99", "prefix_ms_p50", "expert_ms_p50",
        "preprocess_ms_p50", "postprocess_ms_p50", "expert_passes_per_chunk")


def _bench(*args):
    out = subprocess.run([sys.executable, "-m", "snapflow_ros", "bench", "--json", "--reps", "2",
                          "--warmup", "1", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)  # stdout holds exactly one JSON object


def test_bench_tiny_reports_each_step_count():
    report = _bench("--policy", "smolvla-tiny", "--num-steps", "3", "1")
    assert report["model"] == "smolvla-tiny" and report["device"] == "cpu"
    assert report["dtype"] == "float32" and report["params"] > 100_000
    rows = {r["num_steps"]: r for r in report["results"]}
    assert set(rows) == {3, 1}
    for n, row in rows.items():
        assert all(k in row for k in KEYS)
        assert row["expert_passes_per_chunk"] == n  # one expert pass per step, counted
        assert 0 < row["prefix_ms_p50"] < row["e2e_ms_p50"] <= row["e2e_ms_p99"]
    assert rows[1]["e2e_p50_vs_1_step"] == 1.0


def test_bench_a_snapflow_checkpoint_defaults_to_its_sampler(tmp_path, tiny_teacher):
    from snapflow_ros.policies import save_policy

    tiny_teacher.policy.set_sampling(1, "snap")
    save_policy(tiny_teacher.policy, tmp_path / "ckpt", preprocessor=tiny_teacher.preprocessor,
                postprocessor=tiny_teacher.postprocessor)
    report = _bench("--policy", str(tmp_path / "ckpt"), "--num-steps", "1")
    assert report["snapflow_checkpoint"] is True and report["sampler"] == "snap"


def test_bench_rejects_an_unknown_policy_with_a_hint():
    out = subprocess.run([sys.executable, "-m", "snapflow_ros", "bench", "--policy",
                          "smolvla-tiy"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "smolvla-tiy" in out.stderr


@pytest.mark.parametrize("bad", [["--num-steps", "0"], ["--device", "cuda:0"]])
def test_bench_rejects_bad_arguments(bad):
    out = subprocess.run([sys.executable, "-m", "snapflow_ros", "bench", *bad],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
