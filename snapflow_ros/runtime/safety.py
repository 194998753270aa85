"""Joint-limit clamp and per-step delta limit for commanded positions (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SafetyFilter:
    """Clamp targets to [lower, upper] and limit each joint's change per control step.

    Empty limits disable the clamp; ``max_step_delta`` <= 0 disables the rate limit.
    """

    def __init__(self, num_joints: int, lower: Sequence[float] = (), upper: Sequence[float] = (),
                 max_step_delta: float = 0.0) -> None:
        for name, bound in (("lower", lower), ("upper", upper)):
            if len(bound) not in (0, num_joints):
                raise ValueError(f"joint {name} limits need {num_joints} values (or none), "
                                 f"got {len(bound)}")
        self.lower = np.asarray(lower, dtype=np.float64) if len(lower) else None
        self.upper = np.asarray(upper, dtype=np.float64) if len(upper) else None
        if self.lower is not None and self.upper is not None and np.any(self.lower > self.upper):
            raise ValueError("joint lower limits must not exceed upper limits")
        self.max_step_delta = float(max_step_delta)

    @staticmethod
    def finite(values: np.ndarray) -> bool:
        return bool(np.all(np.isfinite(values)))

    def clamp(self, target: np.ndarray) -> np.ndarray:
        if self.lower is None and self.upper is None:
            return target
        return np.clip(target, self.lower, self.upper)

    def step(self, target: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """One command: clamped, then moved at most ``max_step_delta`` from ``previous``."""
        target = self.clamp(np.asarray(target, dtype=np.float64))
        if self.max_step_delta > 0 and previous is not None:
            target = previous + np.clip(target - previous, -self.max_step_delta,
                                        self.max_step_delta)
        return target

    def trajectory(self, targets: np.ndarray, start: np.ndarray | None) -> np.ndarray:
        """A chunk (H, A): each point through ``step`` from the previous one (from ``start``)."""
        out = np.empty_like(targets, dtype=np.float64)
        previous = start
        for i, target in enumerate(targets):
            previous = out[i] = self.step(target, previous)
        return out
