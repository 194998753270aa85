"""The one safety invariant, enforced in one place (numpy only).

Every command the robot receives is

* **finite**,
* **inside the joint limits** ``[lower, upper]`` (when set), and
* **within ``max_step_delta``** (when > 0) of the previous command the robot *received*, or of
  the measured position when there is none (start, activation, dry-run toggle, after a hold).

``SafetyLimits`` is the validated, immutable description (a bad one cannot be built, so a
parameter change that would break the invariant is refused before anything changes).
``CommandGate`` is the only object that turns targets into commands: it remembers the last
command it let through (its *reference*) and answers a ``Refusal`` when no command can satisfy
the invariant (non-finite target, no measured position to start from, the arm further outside
the limits than one step). ``gate.trajectory`` applies the same rules to a whole chunk, point by
point, for the published ``action_chunk``. Comparisons allow ``STEP_TOLERANCE`` for float
rounding (``ref + d - ref`` may exceed ``d`` by one ulp).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from snapflow_ros.runtime.holds import HoldKind

STEP_TOLERANCE = 1e-9


def finite(values: np.ndarray) -> bool:
    """All values finite (no NaN, no inf)."""
    return bool(np.all(np.isfinite(values)))


@dataclass(frozen=True)
class Refusal:
    """Why no safe command exists now (``kind`` classifies, ``reason`` explains)."""

    kind: HoldKind
    reason: str


class SafetyLimits:
    """Validated joint limits and step limit for ``num_joints`` action joints.

    Empty ``lower``/``upper`` mean no position limit on that side; ``max_step_delta`` 0 means no
    step limit. Raises ValueError (naming the problem) for wrong lengths, non-finite values,
    ``lower > upper`` or a negative / non-finite step.
    """

    def __init__(self, num_joints: int, lower: Sequence[float] = (),
                 upper: Sequence[float] = (), max_step_delta: float = 0.0) -> None:
        self.num_joints = int(num_joints)
        self.lower = self._bound("joint_lower_limits", lower)
        self.upper = self._bound("joint_upper_limits", upper)
        if self.lower is not None and self.upper is not None:
            bad = np.flatnonzero(self.lower > self.upper)
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"joint_lower_limits[{i}]={self.lower[i]} exceeds "
                                 f"joint_upper_limits[{i}]={self.upper[i]}")
        step = float(max_step_delta)
        if not np.isfinite(step) or step < 0:
            raise ValueError(f"max_step_delta={max_step_delta} must be finite and >= 0 "
                             f"(0 = no step limit)")
        self.max_step_delta = step

    def _bound(self, name: str, values: Sequence[float]) -> np.ndarray | None:
        if len(values) == 0:
            return None
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (self.num_joints,):
            raise ValueError(f"{name} needs {self.num_joints} values (one per action joint) "
                             f"or none, got {len(values)}")
        if not finite(arr):
            raise ValueError(f"{name}={list(values)} must be finite (NaN/inf are not limits)")
        return arr

    def clamp(self, x: np.ndarray) -> np.ndarray:
        """``x`` clipped into the limits (unchanged where there are none)."""
        if self.lower is None and self.upper is None:
            return x
        return np.clip(x, self.lower, self.upper)

    def inside(self, x: np.ndarray) -> bool:
        lo_ok = self.lower is None or bool(np.all(x >= self.lower))
        return lo_ok and (self.upper is None or bool(np.all(x <= self.upper)))

    def far_outside(self, x: np.ndarray) -> int | None:
        """Index of a joint more than its limit range outside the limits (None: none is).

        Such a reading is not a real arm position (wrong units, joint order or a broken
        encoder): the node holds instead of feeding it to the policy.
        """
        if self.lower is None or self.upper is None:
            return None
        margin = np.maximum(self.upper - self.lower, 1e-3)
        bad = np.flatnonzero((x < self.lower - margin) | (x > self.upper + margin))
        return int(bad[0]) if bad.size else None

    def describe(self, i: int) -> str:
        lo = "-inf" if self.lower is None else f"{self.lower[i]:g}"
        hi = "inf" if self.upper is None else f"{self.upper[i]:g}"
        return f"[{lo}, {hi}]"


class CommandGate:
    """Turns targets into commands that satisfy the invariant (see module docstring)."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self.reference: np.ndarray | None = None  # the last command let through

    @property
    def needs_measured(self) -> bool:
        """Whether the next command needs a measured position (no reference, step limited)."""
        return self.reference is None and self.limits.max_step_delta > 0

    def forget(self) -> None:
        """The robot did not receive our last command (hold, activation, dry-run toggle):
        the next one starts from the measured position."""
        self.reference = None

    def command(self, target: np.ndarray, measured: np.ndarray | None = None
                ) -> np.ndarray | Refusal:
        """The command for ``target``; ``measured`` is used when there is no reference."""
        start = self.reference if self.reference is not None else measured
        result = self._limit(np.asarray(target, dtype=np.float64), start)
        self.reference = None if isinstance(result, Refusal) else result
        return result

    def trajectory(self, targets: np.ndarray, start: np.ndarray | None) -> np.ndarray | Refusal:
        """A chunk (H, A): each point limited from the previous one (the first from ``start``);
        the gate's reference is not changed (the chunk is a plan, not a command)."""
        out = np.empty(np.shape(targets), dtype=np.float64)
        previous = start
        for i, target in enumerate(np.asarray(targets, dtype=np.float64)):
            point = self._limit(target, previous)
            if isinstance(point, Refusal):
                return Refusal(point.kind, f"chunk point {i}: {point.reason}")
            previous = out[i] = point
        return out

    def _limit(self, target: np.ndarray, start: np.ndarray | None) -> np.ndarray | Refusal:
        lim = self.limits
        if target.shape != (lim.num_joints,):
            return Refusal(HoldKind.SHAPE, f"target has shape {target.shape}, expected "
                                           f"({lim.num_joints},)")
        if not finite(target):
            return Refusal(HoldKind.NAN, "NaN or inf in the target")
        command = lim.clamp(target)
        step = lim.max_step_delta
        if step > 0:
            if start is None:
                return Refusal(HoldKind.NO_REFERENCE, "no fresh measured position to start from "
                                                      "(max_step_delta is set)")
            if not finite(start):
                return Refusal(HoldKind.NAN, "NaN or inf in the measured position")
            command = np.clip(command, start - step, start + step)
            if not lim.inside(command):
                i = int(np.flatnonzero(lim.clamp(command) != command)[0])
                return Refusal(HoldKind.OUTSIDE_LIMITS,
                               f"joint {i} is at {start[i]:g}, more than max_step_delta="
                               f"{step:g} outside its limits {lim.describe(i)}: move the arm "
                               f"inside the limits (or widen them)")
        return command


def satisfies_invariant(command: np.ndarray, limits: SafetyLimits,
                        previous: np.ndarray | None) -> bool:
    """The invariant as a predicate (for tests and fuzzing), with ``STEP_TOLERANCE``."""
    command = np.asarray(command, dtype=np.float64)
    if command.shape != (limits.num_joints,) or not finite(command):
        return False
    if not limits.inside(command):
        return False
    if limits.max_step_delta > 0:
        if previous is None:
            return False
        return bool(np.all(np.abs(command - previous) <= limits.max_step_delta
                           + STEP_TOLERANCE))
    return True
