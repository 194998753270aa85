"""``python -m snapflow_ros demo_synthetic``: SnapFlow on a tiny SmolVLA in about a minute.

The quickest look at the method (no ROS, no simulator; ``demo`` is the closed-loop pipeline),
offline, on CPU:

1. build a tiny random-weight lerobot SmolVLA (local files only);
2. fine-tune it as a flow-matching *teacher* (lerobot's own loss) on a synthetic two-target
   reaching task: each observation has two equally valid action chunks (±a bump), so a
   sampler that averages the modes fails visibly;
3. SnapFlow self-distillation (the paper's loss; ``--loss.*``): FM and
   consistency samples, one shared prefix per batch, only the action expert and φ train;
4. save the 1-NFE checkpoint, reload it, check the reload is bit-identical;
5. compare teacher 10-step, naive 1-step, SnapFlow 1- and 2-step on held-out observations
   (distance to the nearest mode relative to half the mode gap, mode share, GT-MSE) and their
   latency per chunk.

The defaults are a miniature run; quality improves with ``--fm-steps``/``--distill-steps``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from snapflow_ros import config_cli
from snapflow_ros.core import SnapFlowLossConfig
from snapflow_ros.distill.config import SamplingConfig
from snapflow_ros.distill.metrics import mode_metrics as _mode_metrics
from snapflow_ros.distill.state import optimizer_step
from snapflow_ros.policies import SnapFlowPolicy, load_policy, save_policy, wrap
from snapflow_ros.policies.tiny import make_smolvla
from snapflow_ros.timing import StageTimer, percentiles

log = logging.getLogger("snapflow_ros.apps.demo_synthetic")
TASK = "reach the nearest of the two targets"


class TwoTargetTask:
    """Synthetic reaching data with two equally likely action chunks per observation.

    state ~ N(0, 0.5²) (A dims); chunk k = state·(1 − τ_k) ± bump·sin(π τ_k), τ_k ∈ [0, 1].
    """

    def __init__(self, chunk_size: int, action_dim: int, image_keys: list[str], bump: float = 1.5):
        self.tau = torch.linspace(0, 1, chunk_size)
        self.action_dim, self.image_keys, self.bump = action_dim, image_keys, bump

    def modes(self, state: torch.Tensor) -> torch.Tensor:
        """(B, A) → the two valid chunks, (B, 2, H, A)."""
        base = state[:, None, :] * (1 - self.tau)[None, :, None]
        bump = self.bump * torch.sin(math.pi * self.tau)[None, :, None].expand_as(base)
        return torch.stack([base + bump, base - bump], 1)

    def batch(self, size: int, gen: torch.Generator) -> tuple[dict[str, Any], torch.Tensor]:
        """A raw lerobot-style batch (one mode picked per row) and its (B, 2, H, A) modes."""
        state = 0.5 * torch.randn(size, self.action_dim, generator=gen)
        modes = self.modes(state)
        pick = torch.randint(0, 2, (size,), generator=gen)
        batch: dict[str, Any] = {k: torch.full((size, 3, 64, 64), 0.5) for k in self.image_keys}
        batch.update({"observation.state": state, "action": modes[torch.arange(size), pick],
                      "task": [TASK] * size})
        return batch, modes


def mode_metrics(actions: torch.Tensor, modes: torch.Tensor, truth: torch.Tensor) -> dict:
    """Nearest-mode distance / |Δ/2|², mode-0 share and GT-MSE (``distill.metrics``), rounded."""
    m = _mode_metrics(actions, modes, truth)
    return {"nearest_mode": round(m["nearest_mode"], 4), "mode0_share": round(m["mode0_share"], 3),
            "gt_mse": round(m["gt_mse"], 4)}


@dataclass
class DemoSyntheticConfig:
    """SnapFlow on a tiny SmolVLA and synthetic two-target data (no ROS), in about a minute."""

    out: Path = Path("snapflow_demo_synthetic")  # output directory (checkpoint + summary.json)
    overwrite: bool = False  # replace an existing --out
    fm_steps: int = 300  # teacher fine-tuning steps
    distill_steps: int = 300  # SnapFlow steps
    batch_size: int = 32  # samples per step
    lr: float = 2e-3  # teacher learning rate
    distill_lr: float = 1e-3  # SnapFlow learning rate
    chunk_size: int = 16  # action chunk length
    eval_size: int = 128  # held-out observations
    seed: int = 0  # seed of weights, data and noise
    loss: SnapFlowLossConfig = field(default_factory=SnapFlowLossConfig)  # the SnapFlow loss
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # the student's sampling

    def __post_init__(self) -> None:
        for name in ("fm_steps", "distill_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "chunk_size", "eval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _train(policy: SnapFlowPolicy, steps: int, lr: float, desc: str, step_fn) -> None:
    """AdamW at a constant ``lr``, no clipping, through the optimizer step ``distill`` takes."""
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    constant = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    policy.train()
    bar = tqdm(range(steps), desc=desc, file=sys.stderr, dynamic_ncols=True, disable=steps == 0,
               mininterval=0.5 if sys.stderr.isatty() else 5.0)
    for _ in bar:
        loss, info = step_fn()
        loss.backward()
        optimizer_step(params, opt, constant, clip_norm=0.0)
        bar.set_postfix(info, refresh=False)
    policy.eval()


def run(args: DemoSyntheticConfig) -> dict[str, Any]:
    """Run the demo and return its summary (also written to ``--out/summary.json``)."""
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise SystemExit(f"'{args.out}' exists and is not empty; pass --overwrite or --out DIR")
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    lerobot_policy, pre, post = make_smolvla(
        "tiny", seed=args.seed, cameras=("front",), state_dim=4, action_dim=4,
        chunk_size=args.chunk_size,
        # trained from scratch: no need to pad to lerobot's 32 dims (that would spend 7/8 of the
        # loss on padding)
        max_state_dim=4, max_action_dim=4,
    )
    policy = wrap(lerobot_policy, default_num_steps=10, sampler="euler",
                  teacher={"source": "smolvla-tiny (demo)", "num_steps": 10})
    task = TwoTargetTask(args.chunk_size, 4, policy.image_keys)
    log.info("tiny SmolVLA: %.2f M parameters, chunk %d × %d", sum(
        p.numel() for p in policy.parameters()) / 1e6, args.chunk_size, 4)

    def teacher_step():
        loss, _ = lerobot_policy.forward(pre(task.batch(args.batch_size, gen)[0]))
        return loss, {"fm": f"{loss.item():.3f}"}

    _train(policy, args.fm_steps, args.lr, "teacher (flow matching)", teacher_step)

    policy.freeze_for_snapflow()

    def snapflow_step():
        out = policy.snapflow_loss(pre(task.batch(args.batch_size, gen)[0]), args.loss,
                                   generator=gen)
        return out.loss, {"fm": f"{out.fm_loss.item():.3f}",
                          "cons": f"{out.consistency_loss.item():.3f}"}

    eval_gen = torch.Generator().manual_seed(10_000 + args.seed)
    eval_raw, eval_modes = task.batch(args.eval_size, eval_gen)
    eval_batch = pre(eval_raw)
    noise = policy.noise_like(args.eval_size, eval_gen)
    teacher_rows = {
        "teacher_10": policy.predict_action_chunk(eval_batch, noise=noise, num_steps=10),
        "naive_1": policy.predict_action_chunk(eval_batch, noise=noise, num_steps=1),
    }
    _train(policy, args.distill_steps, args.distill_lr, "SnapFlow distillation", snapflow_step)
    policy.set_sampling(args.sampling.num_steps, args.sampling.sampler)
    ckpt = save_policy(policy, args.out / "checkpoint", preprocessor=pre, postprocessor=post,
                       extra={"recipe": args.loss.to_dict()}, overwrite=True)
    loaded = load_policy(ckpt)
    rows = dict(teacher_rows)
    rows["snapflow_1"] = loaded.policy.predict_action_chunk(eval_batch, noise=noise)
    rows["snapflow_2"] = loaded.policy.predict_action_chunk(eval_batch, noise=noise, num_steps=2)
    reload_exact = torch.equal(rows["snapflow_1"],
                               policy.predict_action_chunk(eval_batch, noise=noise))

    truth = eval_batch["action"]
    latency = _latency(loaded, eval_raw)
    methods = {}
    for name, actions in rows.items():
        nfe = {"teacher_10": 10, "naive_1": 1, "snapflow_1": 1, "snapflow_2": 2}[name]
        methods[name] = {"nfe": nfe, **mode_metrics(actions, eval_modes, truth),
                         "ms_per_chunk_p50": latency[nfe]}
    summary = {
        "checkpoint": str(ckpt),
        "reload_bit_identical": reload_exact,
        "fm_steps": args.fm_steps, "distill_steps": args.distill_steps,
        "batch_size": args.batch_size, "chunk_size": args.chunk_size,
        "recipe": args.loss.to_dict(),
        "methods": methods,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _latency(loaded: Any, raw: dict[str, Any], reps: int = 15) -> dict[int, float]:
    """p50 ms per chunk (batch 1, preprocessing included) for 1, 2 and 10 steps, interleaved."""
    obs = {k: v[0] for k, v in raw.items() if k != "action"}
    times: dict[int, list[float]] = {1: [], 2: [], 10: []}
    for rep in range(reps + 2):
        for n in times:
            timer = StageTimer()
            with timer.stage("e2e"):
                loaded.postprocessor(loaded.policy.predict_action_chunk(
                    loaded.preprocessor(dict(obs)), num_steps=n,
                    sampler="euler" if n == 10 else "snap"))
            if rep >= 2:
                times[n].append(timer.total("e2e"))
    return {n: round(percentiles(v)["p50"] * 1e3, 2) for n, v in times.items()}


def _report(summary: dict[str, Any]) -> str:
    names = {"teacher_10": "teacher, Euler 10 steps", "naive_1": "teacher, naive 1 step",
             "snapflow_1": "SnapFlow 1-NFE", "snapflow_2": "SnapFlow 2 steps"}
    lines = [
        "",
        f"Held-out observations, two valid chunks each ({summary['fm_steps']} teacher steps, "
        f"{summary['distill_steps']} SnapFlow steps):",
        f"  {'method':<24} {'NFE':>3} {'nearest-mode':>12} {'mode-0 share':>12} {'GT-MSE':>7} "
        f"{'ms/chunk':>9}",
    ]
    for key, m in summary["methods"].items():
        lines.append(f"  {names[key]:<24} {m['nfe']:>3} {m['nearest_mode']:>12.3f} "
                     f"{m['mode0_share']:>12.2f} {m['gt_mse']:>7.3f} "
                     f"{m['ms_per_chunk_p50']:>9.2f}")
    speedup = (summary["methods"]["teacher_10"]["ms_per_chunk_p50"]
               / summary["methods"]["snapflow_1"]["ms_per_chunk_p50"])
    lines += [
        "  nearest-mode: squared distance to the closer valid chunk / (half the gap)²;"
        " averaging the modes scores 1.0",
        f"1-NFE chunk is {speedup:.1f}x faster than the 10-step teacher (CPU, batch 1).",
        f"checkpoint: {summary['checkpoint']} (reload bit-identical: "
        f"{'yes' if summary['reload_bit_identical'] else 'NO'})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # --recipe FILE: the old flag; a recipe file is a config file with loss:/sampling: sections
    args = config_cli.from_command_line(DemoSyntheticConfig, argv,
                                        prog="snapflow_ros demo_synthetic",
                                        short={"--recipe": "--config_path"})
    logging.basicConfig(level=logging.INFO, format="[demo_synthetic] %(message)s",
                        stream=sys.stderr,
                        force=True)
    start = time.perf_counter()
    summary = run(args)
    print(_report(summary))  # noqa: T201
    log.info("done in %.0f s; summary in %s", time.perf_counter() - start,
             args.out / "summary.json")
    return 0 if summary["reload_bit_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
