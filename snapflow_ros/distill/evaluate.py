"""Offline evaluation on held-out episodes: teacher N-step, naive 1-step, SnapFlow 1/2-step.

Every method sees the same observations and the same noise ε (drawn once per batch from
``seed``), so differences come from the method alone. Against the recorded action chunk:

* ``mse``, ``cosine``, ``p95_abs_err``: in the teacher's *normalised* action space (the space
  the policy predicts in; dims comparable, cosine not dominated by offsets);
* ``mse_raw``, ``p95_abs_err_raw``: in the dataset's units (after the postprocessor).

Only chunk steps inside the episode count (``action_is_pad``). GT metrics favour the mean on
multimodal data (DESIGN §5): read them together with closed-loop results.

Writes ``eval.json`` (one entry per method: ``teacher_10``, ``naive_1``, ``snapflow_1``,
``snapflow_2``), ``eval_meta.json`` (what was evaluated) and ``eval.png``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from snapflow_ros.distill.data import evenly_spaced
from snapflow_ros.distill.metrics import chunk_metrics

log = logging.getLogger(__name__)

EVAL_FILE, META_FILE, PLOT_FILE = "eval.json", "eval_meta.json", "eval.png"


def autocast_for(device: str, dtype: torch.dtype) -> Any:
    """bf16/fp16 autocast on ``device`` (CUDA: the paper's bf16), nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def methods(teacher: Any, student: Any, teacher_steps: int = 10) -> dict[str, tuple]:
    """name → (policy, num_steps, sampler)."""
    return {
        f"teacher_{teacher_steps}": (teacher.policy, teacher_steps, "euler"),
        "naive_1": (teacher.policy, 1, "euler"),
        "snapflow_1": (student.policy, 1, "snap"),
        "snapflow_2": (student.policy, 2, "snap"),
    }


@torch.no_grad()
def evaluate(
    teacher: Any,
    student: Any,
    dataset: Any,
    frames: Sequence[int],
    *,
    teacher_steps: int = 10,
    max_samples: int = 256,
    batch_size: int = 16,
    seed: int = 1234,
    num_workers: int = 0,
    autocast: Any = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Metrics per method on ``frames`` (at most ``max_samples``, evenly spaced).

    ``teacher``/``student`` are ``LoadedPolicy`` objects; the student's processors (copies of
    the teacher's) normalise inputs and unnormalise outputs for every method.

    Returns:
        (metrics per method, an example: the first sample's raw ground truth and predictions).
    """
    picked = evenly_spaced(list(frames), max_samples)
    if not picked:
        raise ValueError("no held-out frames to evaluate")
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, picked),
                                         batch_size=batch_size, num_workers=num_workers)
    table = methods(teacher, student, teacher_steps)
    pre, post = student.preprocessor, student.postprocessor
    gen = torch.Generator().manual_seed(seed)
    norm: dict[str, list] = {k: [] for k in table}
    raw: dict[str, list] = {k: [] for k in table}
    truth_norm, truth_raw, valid = [], [], []
    bar = tqdm(loader, desc="held-out eval", file=sys.stderr, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 5.0)
    for item in bar:
        truth_raw.append(item["action"].float().clone())
        pad = item.get("action_is_pad")
        valid.append(torch.ones(item["action"].shape[:2], dtype=torch.bool) if pad is None
                     else ~pad.bool())
        batch = pre(item)
        truth_norm.append(batch["action"].float().cpu())
        noise = student.policy.noise_like(len(truth_raw[-1]), gen)
        for name, (policy, steps, sampler) in table.items():
            with autocast or contextlib.nullcontext():
                pred = policy.predict_action_chunk(batch, noise=noise, num_steps=steps,
                                                   sampler=sampler)
            norm[name].append(pred.float().cpu())
            raw[name].append(post(pred.float()).float().cpu())
    gt_n, gt_r, ok = torch.cat(truth_norm), torch.cat(truth_raw), torch.cat(valid)
    results = {}
    for name in table:
        m = chunk_metrics(torch.cat(norm[name]), gt_n, ok)
        r = chunk_metrics(torch.cat(raw[name]), gt_r, ok)
        steps = table[name][1]
        results[name] = {**m, "mse_raw": r["mse"], "p95_abs_err_raw": r["p95_abs_err"],
                         "nfe": steps, "n_samples": len(gt_n)}
    example = {"truth": gt_r[0].tolist(), "valid": ok[0].tolist(),
               "pred": {name: torch.cat(raw[name])[0].tolist() for name in table}}
    return results, example


def write_eval(out_dir: Path, results: dict[str, dict], example: dict[str, Any],
               meta: dict[str, Any]) -> None:
    """``eval.json``, ``eval_meta.json`` and ``eval.png`` into ``out_dir``."""
    from snapflow_ros.distill.plot import plot_eval

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EVAL_FILE).write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    plot_eval(results, example, out_dir / PLOT_FILE, title=meta.get("title", ""))
    log.info("held-out eval: %s", format_table(results))


def format_table(results: dict[str, dict]) -> str:
    """A small text table of the headline metrics."""
    lines = [f"\n  {'method':<12} {'NFE':>3} {'MSE':>10} {'cosine':>8} {'P95|err|':>10}"]
    for name, m in results.items():
        lines.append(f"  {name:<12} {m['nfe']:>3} {m['mse']:>10.5f} {m['cosine']:>8.4f} "
                     f"{m['p95_abs_err']:>10.5f}")
    return "\n".join(lines)
