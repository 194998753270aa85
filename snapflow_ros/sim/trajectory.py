"""Positions-only joint trajectories sampled on sim time, the way ros2_control's
joint_trajectory_controller (JTC) samples them.

A trajectory starts at ``start_ns`` (its header stamp; 0 means "when received"). Point i is
due at ``start_ns + time_from_start[i]``. Before the first point the reference moves linearly
from the joint targets held when the trajectory arrived (JTC's "point before the trajectory",
with ``open_loop_control``); between points it is linear in time; after the last point it
holds that point. A stamp in the past is fine: sampling at *now* skips what is already over
(latency compensation). A new trajectory replaces the old one; a per-step command cancels it.

Shapes: ``times_ns`` (K,), ``positions`` (K, len(names)); results are (N,) in policy order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TrajectoryError(ValueError):
    """A trajectory that cannot be followed; the message names the problem."""


class TrajectoryFollower:
    """The active trajectory for a fixed joint order (the policy / topic-map order)."""

    def __init__(self, joints: Sequence[str]) -> None:
        self.joints = tuple(joints)
        self._knots_ns: np.ndarray | None = None  # (K + 1,) absolute sim times
        self._knots_q: np.ndarray | None = None  # (K + 1, N)

    @property
    def active(self) -> bool:
        """True while a trajectory is loaded (it stays loaded, holding its last point)."""
        return self._knots_ns is not None

    @property
    def end_ns(self) -> int:
        """Sim time of the last point (0 without a trajectory)."""
        return int(self._knots_ns[-1]) if self._knots_ns is not None else 0

    def clear(self) -> None:
        """Drop the trajectory (per-step commands and resets do this)."""
        self._knots_ns = self._knots_q = None

    def set(self, names: Sequence[str], start_ns: int, times_ns: Sequence[int],
            positions: Sequence[Sequence[float]], now_ns: int, current: np.ndarray) -> None:
        """Load a trajectory; raises ``TrajectoryError`` (and keeps the old one) if invalid.

        Args:
            names: the message's joint names; must include every policy joint.
            start_ns: header stamp in sim ns; 0 = ``now_ns``.
            times_ns: time_from_start of each point, strictly increasing, >= 0.
            positions: one row per point, aligned with ``names``.
            now_ns: current sim time.
            current: (N,) joint targets in effect now (the segment before point 0 starts here).
        """
        names = list(names)
        if len(set(names)) != len(names):
            raise TrajectoryError(f"joint_names has duplicates: {names}")
        missing = [j for j in self.joints if j not in names]
        if missing:
            raise TrajectoryError(f"trajectory lacks joint(s) {missing}; it names {names} "
                                  f"(send all of {list(self.joints)})")
        times = np.asarray(times_ns, dtype=np.int64)
        if times.ndim != 1 or times.size == 0:
            raise TrajectoryError("trajectory has no points")
        rows = [len(p) for p in positions]
        if len(rows) != times.size or any(r != len(names) for r in rows):
            raise TrajectoryError(
                f"every point needs {len(names)} positions (one per joint name); got "
                f"{rows} for {times.size} points (velocity/acceleration-only points are not "
                f"supported)"
            )
        if np.any(times < 0) or np.any(np.diff(times) <= 0):
            raise TrajectoryError(f"time_from_start must be >= 0 and strictly increasing, got "
                                  f"{(times / 1e9).round(4).tolist()} s")
        q = np.asarray(positions, dtype=np.float64)[:, [names.index(j) for j in self.joints]]
        if not np.all(np.isfinite(q)):
            raise TrajectoryError("trajectory positions must be finite")
        start = int(start_ns) if start_ns > 0 else int(now_ns)
        self._knots_ns = np.concatenate([[start], start + times])
        self._knots_q = np.vstack([np.asarray(current, dtype=np.float64)[None], q])

    def sample(self, now_ns: int) -> np.ndarray | None:
        """(N,) reference at ``now_ns``; None before the start or without a trajectory."""
        if self._knots_ns is None or self._knots_q is None or now_ns < self._knots_ns[0]:
            return None
        knots = self._knots_ns
        if now_ns >= knots[-1]:
            return self._knots_q[-1].copy()
        i = int(np.searchsorted(knots, now_ns, side="right")) - 1
        span = knots[i + 1] - knots[i]
        w = (now_ns - knots[i]) / span if span > 0 else 1.0
        return (1.0 - w) * self._knots_q[i] + w * self._knots_q[i + 1]
