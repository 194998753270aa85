"""The pieces of ``distill``: config file ↔ dataclass, flag parsing, the LR schedule, the
restartable batch sampler, EMA and the eval metrics (no model needed)."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml

from snapflow_ros.core import SnapFlowLossConfig
from snapflow_ros.distill.config import (
    RESUMABLE_CHANGES,
    DistillConfig,
    DistillError,
    EvalConfig,
    SamplingConfig,
    parse_config,
)
from snapflow_ros.distill.data import EpochBatchSampler, evenly_spaced, split_episodes
from snapflow_ros.distill.metrics import chunk_metrics, mode_metrics
from snapflow_ros.distill.state import EMA, lr_factor

ROOT = Path(__file__).resolve().parents[2]


def test_config_yaml_lists_every_field_with_its_default():
    path = ROOT / "config" / "distill.yaml"
    data = yaml.safe_load(path.read_text())
    assert set(data) == {f.name for f in dataclasses.fields(DistillConfig)}
    assert set(data["loss"]) == {f.name for f in dataclasses.fields(SnapFlowLossConfig)}
    assert parse_config(DistillConfig, [], config_path=path) == DistillConfig()
    # the recipe file is the loss: and sampling: sections, with the code's defaults
    recipe = ROOT / "config" / "snapflow.yaml"
    assert set(yaml.safe_load(recipe.read_text())) == {"loss", "sampling"}
    assert parse_config(DistillConfig, [], config_path=recipe) == DistillConfig()


def test_loss_is_a_section_and_old_flat_flags_and_recipe_files_still_load(tmp_path):
    cfg = parse_config(DistillConfig, ["--loss.consistency_weight", "1",
                                       "--loss.target_steps", "10", "--sampling.num_steps", "2"])
    assert cfg.loss == SnapFlowLossConfig(consistency_weight=1.0, target_steps=10)
    assert cfg.sampling == SamplingConfig(num_steps=2)
    # the old flat flags (velocity_clamp 0 meant off: now null)
    old = parse_config(DistillConfig, ["--consistency_weight", "1", "--target_steps", "10",
                                       "--velocity_clamp", "0"])
    assert old.loss == SnapFlowLossConfig(consistency_weight=1.0, target_steps=10)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("loss:\n  alpha: 0.25\n  velocity_clamp: 20\nphi:\n  input: s\n")
    cfg = parse_config(DistillConfig, ["--recipe", str(recipe), "--loss.alpha", "0.3"])
    assert cfg.loss == SnapFlowLossConfig(alpha=0.3, velocity_clamp=20.0)  # the flag wins
    # an old run directory's distill_config.yaml (flat keys, a recipe path)
    saved = tmp_path / "distill_config.yaml"
    saved.write_text(f"steps: 5\nrecipe: {recipe}\nalpha: null\nconsistency_weight: 0.5\n"
                     "target_steps: null\nvelocity_clamp: null\n")
    cfg = parse_config(DistillConfig, [], config_path=saved)
    assert cfg.steps == 5
    assert cfg.loss == SnapFlowLossConfig(alpha=0.25, consistency_weight=0.5,
                                          velocity_clamp=20.0)
    with pytest.raises(DistillError, match="velocity_clamp must be > 0"):
        parse_config(DistillConfig, ["--loss.velocity_clamp", "0"])  # one meaning: null = off
    with pytest.raises(DistillError, match="sampler must be one of"):
        parse_config(DistillConfig, ["--sampling.sampler", "heun"])


def test_paper_defaults():
    cfg = DistillConfig()
    assert (cfg.lr, cfg.warmup_steps, cfg.steps, cfg.batch_size) == (2.5e-5, 500, 30_000, 4)
    assert (cfg.loss.alpha, cfg.loss.consistency_weight, cfg.loss.target_steps) == (0.5, 0.1, 2)
    assert (cfg.sampling.num_steps, cfg.sampling.sampler) == (1, "snap")


def test_flags_override_the_file_and_bare_bools_mean_true(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\nbatch_size: 2\n")
    cfg = parse_config(DistillConfig, ["--config_path", str(path), "--steps", "9", "--resume"])
    assert (cfg.steps, cfg.batch_size, cfg.resume) == (9, 2, True)


def test_bad_values_and_files_raise_distill_errors(tmp_path):
    with pytest.raises(DistillError, match="ema_decay must be in"):
        parse_config(DistillConfig, ["--ema_decay", "1.0"])
    with pytest.raises(DistillError, match="does not exist"):
        parse_config(DistillConfig, ["--config_path", str(tmp_path / "nope.yaml")])
    with pytest.raises(ValueError, match="target_steps must be >= 1"):
        SnapFlowLossConfig(target_steps=0)
    with pytest.raises(DistillError, match="target_steps must be >= 1"):
        parse_config(DistillConfig, ["--loss.target_steps", "0"])
    with pytest.raises(DistillError, match="`steps`: Couldn't parse 'many' into an int"):
        parse_config(DistillConfig, ["--steps", "many"])


@pytest.mark.parametrize("cls", [DistillConfig, EvalConfig])
def test_cpu_threads_defaults_to_auto_and_refuses_negative_counts(cls):
    assert cls().cpu_threads == 0 and parse_config(cls, ["--cpu_threads", "2"]).cpu_threads == 2
    with pytest.raises(ValueError, match=r"cpu_threads must be >= 0 \(0 = auto\), got -1"):
        cls(cpu_threads=-1)
    with pytest.raises(DistillError, match="cpu_threads must be >= 0"):
        parse_config(cls, ["--cpu_threads", "-2"])
    assert "cpu_threads" in RESUMABLE_CHANGES  # a resumed run may use another machine
    assert "torch_threads" not in {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(("old", "expected"), [("null", 0), ("3", 3)])
def test_the_old_torch_threads_name_still_loads(tmp_path, old, expected):
    """Configs (and run dirs) written before the rename hold ``torch_threads``."""
    path = tmp_path / "old.yaml"
    path.write_text(f"steps: 7\ntorch_threads: {old}\nadam_betas:\n- 0.8\n- 0.9\n")
    cfg = parse_config(DistillConfig, ["--config_path", str(path), "--batch_size", "2"])
    assert (cfg.cpu_threads, cfg.steps, cfg.batch_size, cfg.adam_betas) == (expected, 7, 2,
                                                                             [0.8, 0.9])
    cfg = parse_config(DistillConfig, ["--steps", "3"], config_path=path)
    assert (cfg.cpu_threads, cfg.steps) == (expected, 3)
    cfg = parse_config(DistillConfig, ["--config_path", str(path), "--cpu_threads", "1"])
    assert cfg.cpu_threads == 1  # a flag still overrides the file
    assert parse_config(DistillConfig, ["--torch_threads", old]).cpu_threads == expected
    assert parse_config(DistillConfig, [f"--torch_threads={old}"]).cpu_threads == expected
    both = tmp_path / "both.yaml"
    both.write_text(f"torch_threads: {old}\ncpu_threads: 2\n")
    assert parse_config(DistillConfig, [], config_path=both).cpu_threads == 2  # new name wins


@pytest.mark.parametrize(("tool", "cls"), [("distill", DistillConfig), ("eval", EvalConfig)])
def test_help_shows_every_option_with_its_default_and_meaning(tool, cls):
    import subprocess
    import sys

    from snapflow_ros.config_cli import field_kinds

    out = subprocess.run([sys.executable, "-m", "snapflow_ros", tool, "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps lines
    for name in field_kinds(cls):
        assert f"--{name}" in text, name
    # the meaning comes from the field's comment, the default from the field
    assert "optimizer steps (default: 30000)" in text or cls is EvalConfig
    assert "probability that a sample goes to the FM branch" in text or cls is EvalConfig
    assert "Euler steps of the reference teacher (default: 10)" in text or cls is DistillConfig


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    f = [lr_factor(s, steps=100, warmup_steps=10, final_ratio=0.01) for s in range(100)]
    assert f[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert f[10] == 1.0 and f[55] == pytest.approx(0.01 + 0.99 * 0.5)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(100, steps=100, warmup_steps=10, final_ratio=0.01) == pytest.approx(0.01)
    assert lr_factor(5, steps=10, warmup_steps=0, final_ratio=0.0) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.5)))


def test_sampler_restarts_exactly_where_it_stopped():
    def all_batches(sampler, epochs):
        out = []
        for e in range(epochs):
            sampler.set_position(e, 0)
            out += list(sampler)
        return out

    frames = list(range(100, 137))
    full = all_batches(EpochBatchSampler(frames, 4, seed=5), 3)
    assert len(full) == 27 and all(len(b) == 4 for b in full)
    epoch0 = [i for b in full[:9] for i in b]
    assert len(set(epoch0)) == 36 and set(epoch0) < set(frames)  # no repeats; 1 dropped
    assert full[:9] != full[9:18]  # reshuffled every epoch
    resumed = EpochBatchSampler(frames, 4, seed=5)
    resumed.set_position(1, 4)
    assert list(resumed) == full[13:18]
    assert all_batches(EpochBatchSampler(frames, 4, seed=6), 1) != full[:9]


def test_sampler_shards_disjoint_batches_across_processes():
    frames = list(range(40))
    shards = [list(EpochBatchSampler(frames, 4, seed=0, rank=r, world=2)) for r in (0, 1)]
    single = list(EpochBatchSampler(frames, 4, seed=0))
    assert shards[0] == single[0::2] and shards[1] == single[1::2]
    with pytest.raises(DistillError, match="no full batch of 8"):
        EpochBatchSampler(range(6), 8, seed=0)


def test_split_and_spacing():
    assert split_episodes(5, 2) == ([0, 1, 2], [3, 4])
    assert split_episodes(3, 0) == ([0, 1, 2], [])
    assert evenly_spaced(list(range(10, 20)), 3) == [10, 14, 19]
    assert evenly_spaced([7, 8], 5) == [7, 8]


def test_ema_tracks_and_swaps_weights():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([p], decay=0.5)
    with torch.no_grad():
        p.fill_(4.0)
    ema.update()
    assert torch.equal(ema.shadow[0], torch.full((3,), 2.0))
    with ema.applied():
        assert torch.equal(p.detach(), torch.full((3,), 2.0))
    assert torch.equal(p.detach(), torch.full((3,), 4.0))


def test_chunk_metrics_on_known_cases():
    truth = torch.randn(5, 6, 3, generator=torch.Generator().manual_seed(0))
    exact = chunk_metrics(truth, truth)
    assert exact["mse"] == 0 and exact["cosine"] == pytest.approx(1.0)
    flipped = chunk_metrics(-truth, truth)
    assert flipped["cosine"] == pytest.approx(-1.0)
    assert flipped["mse"] == pytest.approx(4 * truth.double().pow(2).mean().item())
    off = truth + 0.5
    assert chunk_metrics(off, truth)["p95_abs_err"] == pytest.approx(0.5, abs=1e-5)
    # Padded steps do not count, however wrong they are.
    junk = truth.clone()
    junk[:, 4:] = 100.0
    valid = torch.ones(5, 6, dtype=torch.bool)
    valid[:, 4:] = False
    assert chunk_metrics(junk, truth, valid)["mse"] == 0


def test_mode_metrics_score_the_mean_as_one_and_a_mode_as_zero():
    modes = torch.stack([torch.ones(4, 2, 3), -torch.ones(4, 2, 3)], 1)  # (N=4, 2, H, A)
    mean = mode_metrics(torch.zeros(4, 2, 3), modes)
    assert mean["nearest_mode"] == pytest.approx(1.0) and mean["between_share"] == 1.0
    picks = torch.stack([torch.ones(2, 3), -torch.ones(2, 3)] * 2)
    exact = mode_metrics(picks, modes, truth=picks)
    assert exact == {"nearest_mode": 0.0, "mode0_share": 0.5, "between_share": 0.0,
                     "gt_mse": 0.0}
