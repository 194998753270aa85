"""``python -m snapflow_ros distill`` end to end on a tiny LeRobot dataset and SmolVLA teacher:
checkpoints, the 1-NFE student, the jsonl log and the held-out evaluation (json + png)."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from snapflow_ros.policies import load_policy
from snapflow_ros.timing import StageTimer

METHODS = {"teacher_10", "naive_1", "snapflow_1", "snapflow_2"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_teacher_dir, tiny_dataset):
    """One miniature distillation through the real CLI (a subprocess), shared by the tests."""
    out = tmp_path_factory.mktemp("distill") / "run"
    args = ["--teacher", str(tiny_teacher_dir), "--dataset_root", str(tiny_dataset),
            "--output_dir", str(out), "--steps", "24", "--save_every", "10", "--log_every", "4",
            "--warmup_steps", "4", "--lr", "1e-3", "--num_workers", "0", "--cpu_threads", "1",
            "--eval_max_samples", "12", "--eval_batch_size", "6"]
    proc = subprocess.run([sys.executable, "-m", "snapflow_ros", "distill", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


def test_distill_writes_checkpoints_and_a_one_step_student(run, tiny_teacher_dir):
    out, proc = run
    assert "student:" in proc.stdout and "snapflow_1" in proc.stdout
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step_0000010", "step_0000020", "step_0000024"]

    student = load_policy(out / "student")
    assert student.is_snapflow
    assert (student.policy.default_num_steps, student.policy.sampler) == (1, "snap")
    sidecar = json.loads((out / "student" / "snapflow.json").read_text())
    prov = sidecar["distill"]
    assert prov["recipe"] == {"alpha": 0.5, "consistency_weight": 0.1, "target_steps": 2,
                              "velocity_clamp": None}
    assert prov["train_episodes"] == [0, 1, 2] and prov["held_out_episodes"] == [3]
    assert prov["step"] == 24 and sidecar["teacher"]["source"] == str(tiny_teacher_dir)

    # One step = one prefix pass and one action-expert pass, and it gives finite actions.
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    item = LeRobotDataset("local/tiny_distill", root=sidecar["distill"]["dataset"])[30]
    obs = {k: v for k, v in item.items() if k.startswith("observation.") or k == "task"}
    timer = StageTimer()
    chunk = student.policy.predict_action_chunk(student.preprocessor(obs), timer=timer)
    assert len(timer.durations["expert"]) == 1 and len(timer.durations["prefix"]) == 1
    actions = student.postprocessor(chunk)
    assert actions.shape == (1, 8, 4) and torch.isfinite(actions).all()


def test_only_the_action_expert_and_phi_changed(run, tiny_teacher_dir):
    out, _ = run
    before = load_file(str(tiny_teacher_dir / "model.safetensors"))
    after = load_file(str(out / "student" / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    trainable = ("lm_expert", "action_in_proj", "action_out_proj", "action_time_mlp")
    assert all(any(t in k for t in trainable) for k in changed), sorted(changed)[:5]
    assert any("lm_expert" in k for k in changed)
    phi = load_file(str(out / "student" / "snapflow_phi.safetensors"))
    assert phi["fc2.weight"].abs().sum() > 0  # φ left its zero init


def test_log_has_losses_and_the_warmup_then_cosine_lr(run):
    out, _ = run
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [4, 8, 12, 16, 20, 24]
    for r in steps:
        assert {"loss", "fm", "cons", "lr", "grad_norm", "steps_per_s"} <= set(r)
        assert r["loss"] > 0 and r["steps_per_s"] > 0
    lrs = [r["lr"] for r in steps]
    assert lrs[0] == pytest.approx(1e-3)  # step 4 is the last warm-up step (lr·4/4)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # cosine decay afterwards
    events = [r["event"] for r in records if "event" in r]
    assert events[0] == "start" and events.count("checkpoint") == 3 and events[-1] == "student"


def test_eval_json_png_and_the_eval_command_agree(run, tmp_path):
    out, _ = run
    results = json.loads((out / "eval.json").read_text())
    assert set(results) == METHODS
    for name, m in results.items():
        assert {"mse", "cosine", "p95_abs_err", "mse_raw", "p95_abs_err_raw"} <= set(m), name
        assert m["mse"] > 0 and -1 <= m["cosine"] <= 1 and m["p95_abs_err"] > 0
        assert m["n_samples"] == 12
    assert [results[k]["nfe"] for k in sorted(METHODS)] == [1, 1, 2, 10]
    assert results["teacher_10"] != results["naive_1"]
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((out / "eval_meta.json").read_text())
    assert meta["episodes"] == [3]

    # `eval` on the run directory: same held-out split, same noise seed → the same numbers.
    again = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-m", "snapflow_ros", "eval", "--run_dir", str(out),
                           "--output_dir", str(again), "--max_samples", "12",
                           "--batch_size", "6"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((again / "eval.json").read_text()) == results
    assert (again / "eval.png").is_file()


def test_every_checkpoint_is_a_loadable_policy(run):
    out, _ = run
    first = load_policy(out / "checkpoints" / "step_0000010" / "policy")
    last = load_policy(out / "checkpoints" / "step_0000024" / "policy")
    assert first.is_snapflow and first.policy.default_num_steps == 1
    w0, w1 = first.policy.phi.fc2.weight, last.policy.phi.fc2.weight
    assert not torch.equal(w0, w1)  # training went on between them


def test_distill_runs_under_bf16_autocast_on_cpu(tmp_path, tiny_teacher_dir, tiny_dataset):
    """The paper's bf16 autocast (the CUDA default) runs on CPU too: finite losses, a student
    that loads and samples finite actions."""
    out = tmp_path / "run"
    args = ["--teacher", str(tiny_teacher_dir), "--dataset_root", str(tiny_dataset),
            "--output_dir", str(out), "--steps", "4", "--save_every", "4", "--log_every", "1",
            "--num_workers", "0", "--cpu_threads", "1", "--dtype", "bfloat16",
            "--eval_max_samples", "6", "--eval_batch_size", "6"]
    proc = subprocess.run([sys.executable, "-m", "snapflow_ros", "distill", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    results = json.loads((out / "eval.json").read_text())
    assert all(torch.isfinite(torch.tensor(results[m]["mse"])) for m in METHODS)
