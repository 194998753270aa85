"""SnapFlow options on bimodal action chunks: which 1-step student lands on a mode?

A small MLP velocity field F(x, t, s | obs) through ``snapflow_ros.core`` (the same loss,
targets, φ and samplers the policies use). Data: an observation c ~ N(0, I₄) and a 32-dim chunk
(8 steps × 4 dims), equally likely one of two modes that differ over the whole chunk:

    chunk_k = c·(1 − τ_k) ± b·sin(π τ_k)·1,   τ_k = k/7,   |Δ| = |mode₊ − mode₋| ≈ 5.7

1. Train a flow-matching teacher (every row FM, s = t) to convergence.
2. From copies of that teacher, distil each variant for the same number of steps.
3. On held-out observations with the same noise for every method, report the squared distance
   to the nearest mode over (half the mode gap)² (``nearest``: the mode average scores 1.0, a
   mode 0.0), the share of samples choosing mode +, and GT-MSE against a randomly recorded mode
   (it favours the mean on such data: reported, not the criterion).

    bash scripts/run.sh python scripts/bench_distill_modes.py --distill-lr 1e-3 --seeds 0 \
        --only paper lam1 k10 lam1_k10 lam1_k10_ema          # ~5 min on one core
    bash scripts/run.sh python scripts/bench_distill_modes.py --seeds 0 1 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this source tree first

import torch
from script_args import add_cpu_threads_argument
from torch import Tensor, nn

from snapflow_ros.core import (
    SnapFlowLossConfig,
    TargetTimeEmbedding,
    TargetTimeEmbeddingConfig,
    euler_sample,
    route_to_fm,
    sample_fm_time,
    sinusoidal_embedding,
    snap_sample,
    snapflow_loss,
)
from snapflow_ros.cpu_threads import apply_cpu_threads
from snapflow_ros.distill.metrics import mode_metrics
from snapflow_ros.distill.state import lr_factor

H, D, OBS, WIDTH = 8, 4, 4, 32
TAU = torch.linspace(0, 1, H)
BUMP = 0.76  # |Δ| = 2·b·sqrt(D·Σ sin²(πτ)) ≈ 5.69


def modes(obs: Tensor) -> Tensor:
    """(N, OBS) → the two valid chunks (N, 2, H, D)."""
    base = obs[:, None, :] * (1 - TAU)[None, :, None]
    bump = BUMP * torch.sin(math.pi * TAU)[None, :, None].expand_as(base)
    return torch.stack([base + bump, base - bump], 1)


def sample_data(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(obs, recorded chunk, both modes) with the mode picked at random, small jitter."""
    obs = torch.randn(n, OBS, generator=gen)
    both = modes(obs)
    pick = torch.randint(0, 2, (n,), generator=gen)
    chunk = both[torch.arange(n), pick] + 0.05 * torch.randn(n, H, D, generator=gen)
    return obs, chunk, both


class Field(nn.Module):
    """F(x, t, s | obs): an MLP on [x, obs, sincos(t) + φ(t, s)] (φ enters where time does)."""

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.phi = TargetTimeEmbedding(TargetTimeEmbeddingConfig(width=WIDTH))
        self.net = nn.Sequential(
            nn.Linear(H * D + OBS + WIDTH, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
            nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, H * D))
        self.obs: Tensor | None = None

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        time_emb = sinusoidal_embedding(t, WIDTH) + self.phi(t, s)
        return self.net(torch.cat([x.flatten(1), self.obs, time_emb], 1)).view(-1, H, D)


class Conditioned:
    """The field for one batch of observations; ``rows`` restricts it (core/flow.py)."""

    def __init__(self, model: Field, obs: Tensor, target_model: Field | None = None) -> None:
        self.model, self.obs, self.target_model = model, obs, target_model

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        self.model.obs = self.obs
        return self.model(x, t, s)

    def rows(self, index: Tensor) -> Conditioned:
        # The shortcut target's passes go through rows(): an EMA copy can serve them.
        return Conditioned(self.target_model or self.model, self.obs[index])


@dataclass
class Variant:
    id: str
    name: str
    loss: SnapFlowLossConfig
    ema_target: float | None = None  # decay of an EMA copy that computes the targets


def train(model: Field, steps: int, gen: torch.Generator, loss: SnapFlowLossConfig, *,
          lr: float, batch: int, ema_target: float | None = None) -> None:
    opt = torch.optim.Adam(model.parameters(), lr)
    ema = copy.deepcopy(model).requires_grad_(False) if ema_target else None
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(step, steps=steps, warmup_steps=steps // 20,
                                         final_ratio=0.01)
        obs, chunk, _ = sample_data(batch, gen)
        out = snapflow_loss(
            Conditioned(model, obs, ema), chunk, noise=torch.randn(chunk.shape, generator=gen),
            time=sample_fm_time(batch, generator=gen),
            fm_mask=route_to_fm(batch, loss.alpha, generator=gen), config=loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                    e.lerp_(p, 1 - ema_target)


@torch.no_grad()
def score(model: Field, obs: Tensor, noise: Tensor, both: Tensor, truth: Tensor,
          rows: dict[str, tuple[str, int]]) -> dict[str, dict[str, float]]:
    field = Conditioned(model, obs)
    out = {}
    for name, (sampler, steps) in rows.items():
        fn = euler_sample if sampler == "euler" else snap_sample
        m = mode_metrics(fn(field, noise, steps), both, truth)
        out[name] = {k: round(v, 3) for k, v in m.items()}
    return out


def variants(names: list[str]) -> list[Variant]:
    table = [
        Variant("paper", "paper (α .5, λ .1, K 2)", SnapFlowLossConfig()),
        Variant("lam1", "λ 1", SnapFlowLossConfig(consistency_weight=1.0)),
        Variant("k10", "λ .1, K 10", SnapFlowLossConfig(target_steps=10)),
        Variant("lam1_k10", "λ 1, K 10",
                SnapFlowLossConfig(consistency_weight=1.0, target_steps=10)),
        Variant("lam1_k10_a25", "λ 1, K 10, α .25",
                SnapFlowLossConfig(alpha=0.25, consistency_weight=1.0, target_steps=10)),
        Variant("lam1_k10_ema", "λ 1, K 10, EMA target .99",
                SnapFlowLossConfig(consistency_weight=1.0, target_steps=10), ema_target=0.99),
        Variant("lam3_k10", "λ 3, K 10",
                SnapFlowLossConfig(consistency_weight=3.0, target_steps=10)),
        Variant("lam10_k10", "λ 10, K 10",
                SnapFlowLossConfig(consistency_weight=10.0, target_steps=10)),
    ]
    return [v for v in table if not names or v.id in names]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher-steps", type=int, default=6000)
    p.add_argument("--distill-steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="teacher lr")
    p.add_argument("--distill-lr", type=float, default=3e-4)
    p.add_argument("--eval", type=int, default=4096, help="held-out observations")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--only", nargs="*", default=[],
                   help="variant ids (default: all): paper lam1 k10 lam1_k10 lam1_k10_a25 "
                   "lam1_k10_ema lam3_k10 lam10_k10")
    add_cpu_threads_argument(p, reserved=1, alias="--threads")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    threads = apply_cpu_threads(args.cpu_threads, reserved=1)  # as distill resolves it
    print(f"CPU threads: {threads}", file=sys.stderr, flush=True)  # noqa: T201
    results: dict[str, list] = {}
    for seed in args.seeds:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        teacher = Field()
        t0 = time.perf_counter()
        train(teacher, args.teacher_steps, gen, SnapFlowLossConfig(alpha=1.0), lr=args.lr,
              batch=args.batch)
        ev = torch.Generator().manual_seed(10_000 + seed)
        obs, truth, both = sample_data(args.eval, ev)
        noise = torch.randn(truth.shape, generator=ev)
        base = score(teacher, obs, noise, both, truth, {
            "teacher_10": ("euler", 10), "teacher_2": ("euler", 2), "naive_1": ("euler", 1)})
        print(f"seed {seed}: teacher trained in {time.perf_counter() - t0:.0f} s: {base}",
              file=sys.stderr, flush=True)
        for name, row in base.items():
            results.setdefault(name, []).append(row)
        for v in variants(args.only):
            student = copy.deepcopy(teacher)
            t0 = time.perf_counter()
            train(student, args.distill_steps, torch.Generator().manual_seed(100 + seed),
                  v.loss, lr=args.distill_lr, batch=args.batch, ema_target=v.ema_target)
            rows = score(student, obs, noise, both, truth, {
                "1": ("snap", 1), "2": ("snap", 2), "teacher_10": ("euler", 10)})
            print(f"seed {seed}: {v.name}: {rows} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
            for k in ("1", "2"):
                results.setdefault(f"SnapFlow-{k}: {v.name}", []).append(rows[k])
            results.setdefault(f"10-step after: {v.name}", []).append(rows["teacher_10"])
    print(f"\n{'method':<44} {'nearest':>8} {'mode+':>6} {'GT-MSE':>7}  "  # noqa: T201
          f"(mean over seeds {args.seeds})")
    for name, rows in results.items():
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        print(f"{name:<44} {mean['nearest_mode']:>8.3f} {mean['mode0_share']:>6.2f} "  # noqa: T201
              f"{mean['gt_mse']:>7.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "cpu_threads": threads, "results": results}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
