"""``--resume`` is exact: stop after a checkpoint, resume, and the final weights (raw and EMA)
equal those of an uninterrupted run with the same seed (CPU). Data order, loss noise, routing,
optimizer, LR schedule, EMA and every RNG are restored."""

import json

import torch
from safetensors.torch import load_file

from snapflow_ros.cpu_threads import resolve_cpu_threads
from snapflow_ros.distill.cli import main_distill
from snapflow_ros.waiting import wait_until

# The stop falls mid-epoch (36 training frames // batch 4 = 9 batches per epoch, 2 per step),
# with gradient accumulation and EMA on, so every piece of state matters.
RUN = ("--steps", "9", "--save_every", "4", "--batch_size", "4", "--grad_accum_steps", "2",
       "--ema_decay", "0.8", "--eval_episodes", "1", "--eval_max_samples", "4", "--seed", "3")


def _weights(directory):
    out = {}
    for name in ("model.safetensors", "snapflow_phi.safetensors"):
        out.update({f"{name}:{k}": v for k, v in load_file(str(directory / name)).items()})
    return out


def _assert_equal(a, b):
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, distill_args):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main_distill(distill_args(whole, *RUN)) == 0

    assert main_distill(distill_args(parts, *RUN, "--stop_after", "5")) == 0
    done = sorted(p.name for p in (parts / "checkpoints").iterdir())
    assert done == ["step_0000004", "step_0000005"]
    assert not (parts / "student").exists()
    # Resume from the run directory alone: its saved config supplies everything else.
    assert main_distill(["--output_dir", str(parts), "--resume", "--num_workers", "0",
                         "--cpu_threads", "1"]) == 0

    final = "checkpoints/step_0000009/policy"
    _assert_equal(_weights(whole / final), _weights(parts / final))  # raw weights
    _assert_equal(_weights(whole / "student"), _weights(parts / "student"))  # EMA weights
    assert not all(torch.equal(a, b) for a, b in zip(  # EMA really differs from raw
        _weights(parts / final).values(), _weights(parts / "student").values(), strict=True))
    assert (json.loads((whole / "eval.json").read_text())
            == json.loads((parts / "eval.json").read_text()))

    def losses(run):
        lines = (run / "log.jsonl").read_text().splitlines()
        return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}

    assert losses(whole)[9] == losses(parts)[9]
    events = [json.loads(x).get("event") for x in (parts / "log.jsonl").read_text().splitlines()]
    assert "stopped" in events and "resume" in events


def test_resume_refuses_changed_training_settings(tmp_path, distill_args, capsys):
    run = tmp_path / "run"
    assert main_distill(distill_args(run, "--steps", "3", "--save_every", "2",
                                     "--stop_after", "2", "--eval_episodes", "0")) == 0
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert main_distill(["--output_dir", str(run), "--resume", "--lr", "0.5"]) == 2
    assert "lr: run has 0.001, now 0.5" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    # --steps may change: the run continues to the new end.
    assert main_distill(["--output_dir", str(run), "--resume", "--steps", "4",
                         "--num_workers", "0"]) == 0
    assert (run / "checkpoints" / "step_0000004").is_dir() and (run / "student").is_dir()


def test_a_run_saved_with_the_old_torch_threads_key_resumes(tmp_path, distill_args):
    """Run dirs from before ``cpu_threads`` hold ``torch_threads`` in distill_config.yaml."""
    run = tmp_path / "run"
    assert main_distill(distill_args(run, "--steps", "3", "--save_every", "2",
                                     "--stop_after", "2", "--eval_episodes", "0")) == 0
    saved = run / "distill_config.yaml"
    old = 2 if resolve_cpu_threads(0, reserved=1) != 2 else 3  # not what auto would pick
    assert "cpu_threads: 1\n" in saved.read_text()
    saved.write_text(saved.read_text().replace("cpu_threads: 1\n", f"torch_threads: {old}\n"))
    assert main_distill(["--output_dir", str(run), "--resume", "--num_workers", "0"]) == 0
    assert (run / "student").is_dir()
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["cpu_threads"] for r in records if r.get("event") in ("start", "resume")] == [1, old]
    text = saved.read_text()  # rewritten under the new name
    assert f"cpu_threads: {old}\n" in text and "torch_threads" not in text


def test_sigterm_checkpoints_after_the_current_step_and_the_run_resumes(tmp_path, distill_args):
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    args = distill_args(run, "--steps", "100000", "--save_every", "100000", "--log_every", "5",
                        "--eval_episodes", "0")
    proc = subprocess.Popen([sys.executable, "-m", "snapflow_ros", "distill", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run / "log.jsonl"
    def training():  # a step is logged: training has started
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        return log.is_file() and '"loss"' in log.read_text()

    wait_until(training, 300, "the first logged step", interval_s=0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "continue with --resume" in out
    records = [json.loads(x) for x in log.read_text().splitlines()]
    stopped = [r["step"] for r in records if r.get("event") == "stopped"]
    assert len(stopped) == 1 and 5 <= stopped[0] < 100000
    assert (run / "checkpoints" / f"step_{stopped[0]:07d}" / "training_state.pt").is_file()
    assert main_distill(["--output_dir", str(run), "--resume", "--steps", str(stopped[0] + 2),
                         "--num_workers", "0", "--cpu_threads", "1"]) == 0
    assert (run / "student").is_dir()


def test_cached_dataset_trains_exactly_like_the_uncached_one(tmp_path, distill_args):
    run = ("--steps", "4", "--batch_size", "4", "--eval_episodes", "1", "--seed", "5",
           "--eval_max_samples", "4")
    assert main_distill(distill_args(tmp_path / "plain", *run)) == 0
    assert main_distill(distill_args(tmp_path / "cached", *run, "--cache_dataset")) == 0
    _assert_equal(_weights(tmp_path / "plain" / "student"),
                  _weights(tmp_path / "cached" / "student"))


def test_cache_limit_is_enforced_before_anything_is_written(tmp_path, distill_args, capsys):
    out = tmp_path / "run"
    assert main_distill(distill_args(out, "--steps", "2", "--cache_dataset",
                                     "--cache_limit_gb", "0.000001")) != 0
    assert "cache_dataset would hold" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
