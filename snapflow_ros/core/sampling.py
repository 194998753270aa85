"""Samplers from noise (t = 1) to an action chunk (t = 0); conventions in ``core/flow.py``.

* ``euler_sample``: the teacher's N-step Euler, s = t at every step (lerobot's loop, same
  arithmetic: ``t_i = 1 + i·dt``, ``x ← x + dt·F(x, t_i, t_i)``).
* ``snap_sample``: k-NFE SnapFlow jumps t_i → t_{i+1} with s = t_{i+1}; one step (the default)
  is the 1-NFE path ``a = ε − F(ε, 1, 0)``.

With a zero target-time embedding F(x, t, s) = F(x, t, t), and then both samplers give
bit-identical results for the same step count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from snapflow_ros.core.flow import VelocityFn


def uniform_times(num_steps: int) -> list[float]:
    """[1, 1 + dt, ..., 0] with dt = −1/N, computed as lerobot does (last point forced to 0)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = -1.0 / num_steps
    return [1.0 + i * dt for i in range(num_steps)] + [0.0]


def _full(value: float, like: Tensor) -> Tensor:
    return torch.full((like.shape[0],), value, dtype=torch.float32, device=like.device)


def euler_sample(velocity: VelocityFn, noise: Tensor, num_steps: int) -> Tensor:
    """N-step Euler on the local velocity (s = t): the flow-matching teacher's sampler."""
    times = uniform_times(num_steps)
    dt = -1.0 / num_steps
    x = noise
    for t in times[:-1]:
        tt = _full(t, x)
        x = x + dt * velocity(x, tt, tt)
    return x


def snap_sample(
    velocity: VelocityFn,
    noise: Tensor,
    num_steps: int = 1,
    *,
    times: Sequence[float] | None = None,
) -> Tensor:
    """SnapFlow jumps along a time grid, s = next grid time: x ← x − (t − s)·F(x, t, s).

    Args:
        velocity: F(x, t, s).
        noise: ε, (B, H, D).
        num_steps: number of jumps on the uniform grid (1 = 1-NFE).
        times: an explicit decreasing grid from 1.0 to 0.0 instead (e.g. [1.0, 0.6, 0.0]).
    """
    if times is None:
        grid = uniform_times(num_steps)
        steps = [-1.0 / num_steps] * num_steps
    else:
        grid = [float(v) for v in times]
        if len(grid) < 2 or grid[0] != 1.0 or grid[-1] != 0.0:
            raise ValueError(f"times must run from 1.0 to 0.0, got {grid}")
        if any(b >= a for a, b in zip(grid, grid[1:], strict=False)):
            raise ValueError(f"times must be strictly decreasing, got {grid}")
        steps = [b - a for a, b in zip(grid, grid[1:], strict=False)]
    x = noise
    for t, s, dt in zip(grid[:-1], grid[1:], steps, strict=True):
        x = x + dt * velocity(x, _full(t, x), _full(s, x))
    return x


def one_step_sample(velocity: VelocityFn, noise: Tensor) -> Tensor:
    """1-NFE: a = ε − F(ε, 1, 0)."""
    return snap_sample(velocity, noise, 1)
