"""Offline action-chunk metrics (torch only): against ground truth, and against known modes.

Shapes: predictions and ground truth (N, H, A) (samples, chunk steps, action dims); ``valid``
(N, H) bool marks the chunk steps inside the episode (False where LeRobot padded the chunk).

* ``chunk_metrics``: MSE, mean per-chunk cosine similarity, P95 absolute error, against the
  recorded chunk. GT-MSE rewards averaging on multimodal data (DESIGN §5): keep it for
  near-unimodal held-out data.
* ``mode_metrics``: for synthetic data with known modes, the squared distance to the nearest
  mode relative to (half the mode gap)² (the mean of two modes scores 1.0, a mode 0.0), how
  often each mode is chosen, and GT-MSE.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _valid_mask(pred: Tensor, valid: Tensor | None) -> Tensor:
    if valid is None:
        return torch.ones(pred.shape, dtype=torch.bool, device=pred.device)
    if valid.shape != pred.shape[:2]:
        raise ValueError(f"valid {tuple(valid.shape)} must be (N, H) = {tuple(pred.shape[:2])}")
    return valid.bool()[..., None].expand_as(pred)


def chunk_metrics(pred: Tensor, truth: Tensor, valid: Tensor | None = None) -> dict[str, float]:
    """MSE, cosine similarity and P95 absolute error of (N, H, A) chunks over valid steps.

    ``cosine`` is the cosine similarity of each flattened chunk (valid steps only) with its
    ground truth, averaged over chunks; ``p95_abs_err`` the 95th percentile of the element-wise
    absolute error.
    """
    if pred.shape != truth.shape or pred.ndim != 3:
        raise ValueError(
            f"pred {tuple(pred.shape)} and truth {tuple(truth.shape)} must both be (N, H, A)"
        )
    mask = _valid_mask(pred, valid)
    err = (pred.double() - truth.double())[mask]
    if err.numel() == 0:
        raise ValueError("no valid chunk steps to evaluate")
    p = torch.where(mask, pred.double(), 0.0).flatten(1)
    g = torch.where(mask, truth.double(), 0.0).flatten(1)
    cosine = torch.nn.functional.cosine_similarity(p, g, dim=1, eps=1e-12)
    return {
        "mse": err.pow(2).mean().item(),
        "cosine": cosine.mean().item(),
        "p95_abs_err": torch.quantile(err.abs().float(), 0.95).item(),
    }


def mode_metrics(actions: Tensor, modes: Tensor, truth: Tensor | None = None) -> dict[str, float]:
    """Nearest-mode distance, mode-0 share and GT-MSE for (N, H, A) samples.

    Args:
        actions: sampled chunks, (N, H, A).
        modes: the two valid chunks per sample, (N, 2, H, A).
        truth: the recorded chunk (one of the modes), (N, H, A); GT-MSE is omitted without it.

    Returns:
        ``nearest_mode``: mean over samples of min_k ‖a − m_k‖² / ‖(m_0 − m_1)/2‖²;
        ``mode0_share``: fraction of samples nearer to mode 0; ``between_share``: fraction
        nearer to the modes' midpoint than to either mode (an averaged chunk); ``gt_mse`` when
        ``truth`` given.
    """
    dist = (actions[:, None] - modes).pow(2).sum((2, 3))
    half_gap = ((modes[:, 0] - modes[:, 1]) / 2).pow(2).sum((1, 2))
    to_mid = (actions - modes.mean(1)).pow(2).sum((1, 2))
    out = {
        "nearest_mode": (dist.min(1).values / half_gap).mean().item(),
        "mode0_share": (dist.argmin(1) == 0).float().mean().item(),
        "between_share": (to_mid < dist.min(1).values).float().mean().item(),
    }
    if truth is not None:
        out["gt_mse"] = (actions - truth).pow(2).mean().item()
    return out
