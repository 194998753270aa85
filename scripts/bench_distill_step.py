"""Cost of one SnapFlow distillation step vs one plain flow-matching training step.

Same policy, same batch, same trainable parameters (``freeze_for_snapflow``: action expert,
its projections/time MLP, φ), same AdamW; the variants run interleaved (round-robin) so their
ratio comes from one machine state:

* ``fm_lerobot``: lerobot's own ``SmolVLAPolicy.forward`` loss (prefix and suffix in one pass)
  + backward + step: a plain flow-matching training step;
* ``fm_snapflow``: ``snapflow_loss`` with every row FM (prefix once + one grad expert pass);
* ``distill``: ``snapflow_loss`` with the paper's α = 0.5 (half the rows consistency; rows
  alternate per repetition, so batch 1 averages an FM and a consistency row): prefix once,
  one grad pass, K = 2 no-grad passes over the consistency rows;
* ``distill_all_cons``: every row consistency (the worst case of the routing);
* ``distill_k10``: like ``distill`` with the K = 10 Euler-step target (an option beyond the
  paper): 10 no-grad passes over the consistency rows.

    bash scripts/run.sh python scripts/bench_distill_step.py                      # tiny
    bash scripts/run.sh python scripts/bench_distill_step.py --shape full --batch 1 2 --reps 3
    bash scripts/run.sh python scripts/bench_distill_step.py --shape full --device cuda \
        --batch 4 --variants fm_lerobot distill          # GPU: bf16 autocast, as distill runs

Prints one JSON object (mean and p50 ms per step, steps/s, ratios of means to ``fm_lerobot``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this source tree first

import torch
from script_args import add_cpu_threads_argument

from snapflow_ros.core import SnapFlowLossConfig
from snapflow_ros.cpu_threads import apply_cpu_threads
from snapflow_ros.distill.evaluate import autocast_for
from snapflow_ros.policies import SnapFlowPolicy, wrap
from snapflow_ros.policies.device import resolve_device, resolve_dtype
from snapflow_ros.policies.tiny import make_smolvla, random_batch

VARIANTS = ("fm_lerobot", "fm_snapflow", "distill", "distill_all_cons", "distill_k10")


def _step(policy: SnapFlowPolicy, batch: dict, variant: str, rep: int,
          opt: torch.optim.Optimizer, gen: torch.Generator, autocast: Any) -> None:
    with autocast or contextlib.nullcontext():
        loss = _loss(policy, batch, variant, rep, gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _loss(policy: SnapFlowPolicy, batch: dict, variant: str, rep: int,
          gen: torch.Generator) -> torch.Tensor:
    size = batch["action"].shape[0]
    if variant == "fm_lerobot":
        loss, _ = policy.policy.forward(batch)
    else:
        if variant == "fm_snapflow":
            mask = torch.ones(size, dtype=torch.bool)
        elif variant in ("distill", "distill_k10"):
            mask = (torch.arange(size) + rep) % 2 == 0
        else:
            mask = torch.zeros(size, dtype=torch.bool)
        config = SnapFlowLossConfig(target_steps=10 if variant == "distill_k10" else 2)
        loss = policy.snapflow_loss(batch, config, generator=gen,
                                    fm_mask=mask.to(policy.device)).loss
    return loss


def measure(shape: str, batch_size: int, reps: int, warmup: int, device: str = "cpu",
            dtype: torch.dtype = torch.float32, variants: tuple[str, ...] = VARIANTS) -> dict:
    lerobot_policy, pre, _ = make_smolvla(shape, seed=0, device=device)
    policy = wrap(lerobot_policy).to(device)
    autocast = autocast_for(device, dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    params = policy.freeze_for_snapflow()
    opt = torch.optim.AdamW(params, lr=1e-6)
    policy.train()
    gen = torch.Generator().manual_seed(0)
    batch = pre(random_batch(policy.config, batch_size, generator=gen))
    times: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(warmup + reps):
        for variant in variants:
            sync()
            start = time.perf_counter()
            _step(policy, batch, variant, rep, opt, gen, autocast)
            sync()
            if rep >= warmup:
                times[variant].append((time.perf_counter() - start) * 1e3)
    base = statistics.fmean(times[variants[0]])
    return {
        "shape": shape, "batch": batch_size, "reps": reps,
        "params_total_M": round(sum(p.numel() for p in policy.parameters()) / 1e6, 2),
        "params_trained_M": round(sum(p.numel() for p in params) / 1e6, 2),
        "chunk": policy.config.chunk_size,
        "ms_mean": {v: round(statistics.fmean(t), 2) for v, t in times.items()},
        "ms_p50": {v: round(statistics.median(t), 2) for v, t in times.items()},
        "steps_per_s": {v: round(1e3 / statistics.fmean(t), 3) for v, t in times.items()},
        f"ratio_to_{variants[0]}": {v: round(statistics.fmean(t) / base, 3)
                                for v, t in times.items()},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=["tiny", "full"], default="tiny")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--reps", type=int, default=None, help="default: 30 (tiny), 3 (full)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--dtype", default="auto",
                   help="autocast: auto (bf16 on CUDA, as distill), float32, bfloat16")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                   help="the first is the ratios' reference (default: all, fm_lerobot first)")
    add_cpu_threads_argument(p, reserved=1, alias="--threads")
    args = p.parse_args()
    threads = apply_cpu_threads(args.cpu_threads, reserved=1)  # as distill resolves it
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    reps = args.reps or (30 if args.shape == "tiny" else 3)
    runs = [measure(args.shape, b, reps, args.warmup, device, dtype, tuple(args.variants))
            for b in args.batch]
    machine = (torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda")
               else platform.processor() or platform.machine())
    report = {"device": device, "dtype": str(dtype).replace("torch.", ""), "threads": threads,
              "torch": torch.__version__, "machine": machine, "runs": runs}
    print(json.dumps(report, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
