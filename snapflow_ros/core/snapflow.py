"""The SnapFlow objective (arXiv 2604.05656) on any velocity field F(x, t, s).

Conventions in ``core/flow.py`` (t = 1 noise, t = 0 actions). Each sample of a batch goes to
one of two branches:

* **FM** (probability α): t ~ 0.999·Beta(1.5, 1) + 0.001, s = t,
  ℓ = ‖F(x_t, t, t) − (ε − a)‖².
* **Consistency** (probability 1 − α): start from pure noise ε at t = 1; the target is the
  model's own K-step Euler shortcut under stop-gradient (K = 2 in the paper)

      v₁ = sg F(ε, 1, 1),  x_½ = ε − ½·v₁,  v_½ = sg F(x_½, ½, ½),  ū = ½(v₁ + v_½),
      ℓ = ‖F(ε, 1, 0) − ū‖².

The batch loss is L = (1/B)·(Σ_FM ℓᵢ + λ·Σ_cons ℓᵢ), whose expectation over the routing is
α·L_FM + (1 − α)·λ·L_cons (λ = 0.1). ℓᵢ is the mean squared error over the row's valid chunk
steps and all action dims (padded dims included, as lerobot's own loss does), so with every row
routed to FM, L equals lerobot's flow-matching loss for the same noise and time.

Cost: one gradient-carrying pass of F over the whole batch (FM rows at (x_t, t, t), consistency
rows at (ε, 1, 0)) plus K stop-gradient passes over the consistency rows only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from snapflow_ros.core.flow import VelocityFn, fm_target, interpolate, restrict_rows, time_like
from snapflow_ros.core.sampling import uniform_times


@dataclass(frozen=True)
class SnapFlowLossConfig:
    """Hyper-parameters of the SnapFlow objective (paper defaults)."""

    alpha: float = 0.5  # probability that a sample goes to the FM branch (``route_to_fm``)
    consistency_weight: float = 0.1  # lambda, weight of the consistency branch
    target_steps: int = 2  # K: Euler steps of the model's own field in the shortcut target
    velocity_clamp: float | None = None  # clamp target velocities to +-value (null: off)

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.consistency_weight < 0:
            raise ValueError(f"consistency_weight must be >= 0, got {self.consistency_weight}")
        if self.target_steps < 1:
            raise ValueError(f"target_steps must be >= 1, got {self.target_steps}")
        if self.velocity_clamp is not None and self.velocity_clamp <= 0:
            raise ValueError(f"velocity_clamp must be > 0 or None, got {self.velocity_clamp}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapFlowLossConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown SnapFlow loss keys {sorted(unknown)}; "
                f"known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)


@dataclass
class SnapFlowLossOutput:
    """The scalar loss (with grad) and detached diagnostics."""

    loss: Tensor  # scalar, carries the gradient
    fm_loss: Tensor  # mean ℓ over FM rows (nan when there are none)
    consistency_loss: Tensor  # mean ℓ over consistency rows (nan when there are none)
    per_row: Tensor  # (B,) ℓᵢ
    fm_mask: Tensor  # (B,) True where the row went to the FM branch


def route_to_fm(
    batch_size: int,
    alpha: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Per-sample routing: True (FM branch) with probability α, shape (B,)."""
    return torch.rand(batch_size, generator=generator, device=device) < alpha


def shortcut_target(
    velocity: VelocityFn,
    noise: Tensor,
    num_steps: int = 2,
    *,
    velocity_clamp: float | None = None,
) -> Tensor:
    """ū: the average velocity of K Euler steps of the model's own field from t = 1 to 0.

    ū = (1/K)·Σₖ sg F(xₖ, tₖ, tₖ) with x₀ = ε and x_{k+1} = xₖ − (1/K)·vₖ, so that
    ε − ū is exactly where the K-step Euler sampler lands. K = 2 gives ½(v₁ + v_½).

    Args:
        velocity: F(x, t, s), evaluated only at s = t here.
        noise: ε, (B, H, D).
        num_steps: K.
        velocity_clamp: clamp each vₖ to ±value (None: no clamp).

    Returns:
        (B, H, D), without gradient.
    """
    times = uniform_times(num_steps)
    dt = -1.0 / num_steps
    x = noise
    velocities = []
    with torch.no_grad():
        for t in times[:-1]:
            tt = torch.full((noise.shape[0],), t, dtype=torch.float32, device=noise.device)
            v = velocity(x, tt, tt)
            if velocity_clamp is not None:
                v = v.clamp(-velocity_clamp, velocity_clamp)
            velocities.append(v)
            x = x + dt * v
    return torch.stack(velocities).mean(dim=0)


def _row_mse(pred: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
    """Mean squared error per row over valid chunk steps × all dims: (B, H, D) → (B,)."""
    err = (pred.float() - target.float()).pow(2)
    if valid is None:
        return err.mean(dim=tuple(range(1, err.ndim)))
    mask = valid.to(err.dtype).reshape(*valid.shape, *([1] * (err.ndim - valid.ndim)))
    denom = (mask.sum(dim=tuple(range(1, mask.ndim))) * err[0].shape[-1]).clamp_min(1.0)
    return (err * mask).sum(dim=tuple(range(1, err.ndim))) / denom


def snapflow_loss(
    velocity: VelocityFn,
    actions: Tensor,
    *,
    noise: Tensor,
    time: Tensor,
    fm_mask: Tensor,
    config: SnapFlowLossConfig | None = None,
    valid: Tensor | None = None,
) -> SnapFlowLossOutput:
    """SnapFlow loss for one batch.

    Args:
        velocity: F(x, t, s); a conditioned field must implement ``rows`` (see core/flow.py).
        actions: clean (normalised, padded) chunks a, (B, H, D).
        noise: ε, (B, H, D): the FM rows' noise and the consistency rows' starting point.
        time: FM times t, (B,) (ignored for consistency rows).
        fm_mask: (B,) bool, True for FM rows (see ``route_to_fm``).
        config: α is used only by ``route_to_fm``; λ, K and the clamp here.
        valid: (B, H) bool, False for padded chunk steps beyond the episode end.
    """
    config = config or SnapFlowLossConfig()
    if actions.shape != noise.shape:
        raise ValueError(f"actions {tuple(actions.shape)} and noise {tuple(noise.shape)} differ")
    batch = actions.shape[0]
    if time.shape != (batch,) or fm_mask.shape != (batch,):
        raise ValueError(
            f"time {tuple(time.shape)} and fm_mask {tuple(fm_mask.shape)} must be ({batch},)"
        )
    fm_mask = fm_mask.to(device=actions.device, dtype=torch.bool)
    one, zero = torch.ones_like(time), torch.zeros_like(time)
    fm_x = time_like(fm_mask, actions).bool()

    # One gradient pass: FM rows at (x_t, t, t), consistency rows at (ε, 1, 0).
    x_in = torch.where(fm_x, interpolate(actions, noise, time), noise)
    t_in = torch.where(fm_mask, time, one)
    s_in = torch.where(fm_mask, time, zero)
    pred = velocity(x_in, t_in, s_in)

    target = fm_target(actions, noise)
    cons_idx = torch.nonzero(~fm_mask).flatten()
    if cons_idx.numel():
        shortcut = shortcut_target(
            restrict_rows(velocity, cons_idx),
            noise[cons_idx],
            config.target_steps,
            velocity_clamp=config.velocity_clamp,
        )
        target = target.index_copy(0, cons_idx, shortcut.to(target.dtype))

    per_row = _row_mse(pred, target, valid)
    weights = torch.where(fm_mask, 1.0, config.consistency_weight).to(per_row.dtype)
    loss = (weights * per_row).sum() / batch
    detached = per_row.detach()
    nan = torch.full((), float("nan"), device=detached.device)
    return SnapFlowLossOutput(
        loss=loss,
        fm_loss=detached[fm_mask].mean() if fm_mask.any() else nan,
        consistency_loss=detached[~fm_mask].mean() if (~fm_mask).any() else nan,
        per_row=detached,
        fm_mask=fm_mask,
    )
