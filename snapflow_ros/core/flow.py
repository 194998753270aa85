"""Flow-matching conventions shared by every SnapFlow component (lerobot 0.4.4's convention).

Time runs from noise to data:

    t = 1 : pure noise ε ~ N(0, I)          t = 0 : the action chunk a
    x_t = t·ε + (1 − t)·a                   conditional velocity  u = ε − a
    Euler sampling from t = 1 with dt = −1/N:  x ← x + dt·v(x, t)

SnapFlow's network is F(x_t, t, s): the average velocity of the jump from time t to the
*target time* s, so that

    x_s = x_t − (t − s)·F(x_t, t, s).

s = t is ordinary flow matching (the local velocity); (t, s) = (1, 0) is the one-step jump.
Arguments always come in the order (x, t, s).

Shapes: x, a, ε: (B, H, D) (batch, chunk length, padded action dim); t, s: (B,).

A *velocity field* is any callable ``velocity(x, t, s) -> (B, H, D)``. A field whose output
depends on per-row conditioning (a policy with a per-row observation prefix) also implements
``rows(index) -> velocity field`` for a subset of the batch; plain callables are row-wise.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

#: lerobot's FM time distribution: t = SCALE·Beta(1.5, 1) + OFFSET (density ∝ t^0.5, noise-heavy).
FM_TIME_BETA_ALPHA = 1.5
FM_TIME_SCALE = 0.999
FM_TIME_OFFSET = 0.001


class VelocityFn(Protocol):
    """``F(x, t, s)``: x (B, H, D), t (B,), s (B,) → velocity (B, H, D)."""

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor: ...


@runtime_checkable
class RowSelectable(Protocol):
    """A conditioned velocity field that can be restricted to a subset of its batch rows."""

    def rows(self, index: Tensor) -> VelocityFn: ...


def restrict_rows(velocity: VelocityFn, index: Tensor) -> VelocityFn:
    """The field for the batch rows ``index`` (1-D long tensor).

    Conditioned fields implement ``rows``; a plain callable is assumed row-wise (its output for
    a row depends only on that row's inputs) and is returned unchanged.
    """
    if isinstance(velocity, RowSelectable):
        return velocity.rows(index)
    return velocity


def time_like(t: Tensor, x: Tensor) -> Tensor:
    """Reshape per-row times (B,) to broadcast against x (B, ...)."""
    return t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def interpolate(actions: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = t·ε + (1 − t)·a, written as lerobot writes it (bit-identical to its forward)."""
    te = time_like(t, actions)
    return te * noise + (1 - te) * actions


def fm_target(actions: Tensor, noise: Tensor) -> Tensor:
    """The conditional flow-matching velocity u = ε − a."""
    return noise - actions


def jump(x: Tensor, t: Tensor, s: Tensor, velocity: Tensor) -> Tensor:
    """x_s = x_t − (t − s)·F(x_t, t, s)."""
    return x - time_like(t - s, x) * velocity


def sample_fm_time(
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """FM training times as lerobot samples them: 0.999·Beta(1.5, 1) + 0.001, shape (B,).

    Beta(α, 1) is drawn by inverse CDF, U^(1/α), so a ``generator`` makes it reproducible.
    """
    u = torch.rand(batch_size, generator=generator, device=device)
    return u.pow(1.0 / FM_TIME_BETA_ALPHA) * FM_TIME_SCALE + FM_TIME_OFFSET
