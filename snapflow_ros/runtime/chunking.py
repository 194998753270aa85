"""Executing action chunks at control rate (no ROS, no torch; times in ns on one clock).

Timeline of one chunk predicted from the observation at ``stamp`` (dt = 1 / control rate)::

    stamp        stamp+dt     stamp+2dt          stamp+n·dt
      |  a[0]     |  a[1]      |  a[2] ...   ...   |   (n = n_action_steps executed)
      ^ observation             ^ now: a[0], a[1] are in the past -> skipped (latency compensation)

``a[i]`` is the joint target for the period [stamp + i·dt, stamp + (i+1)·dt); as a trajectory
point it is reached at ``time_from_start = (i+1)·dt`` (ros2_control's positions-only chunk
convention). A newer chunk replaces the current one; with ``blend_steps`` > 0 the command
cross-fades from the old chunk to the new over that many periods. When the current chunk has
``replan_lead_steps`` or fewer executable steps left, a new one is due.

When the next chunk is late but coming (``command(..., overrun=True)``: the caller is not
holding), the current chunk runs on past ``n_action_steps`` for up to ``overrun_steps`` more of
its own predicted steps (never past its end): a slow inference delays the new plan instead of
stopping the commands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActionChunk:
    """Actions (H, A) predicted from the observation at ``stamp_ns``."""

    stamp_ns: int
    actions: np.ndarray

    def __post_init__(self) -> None:
        if self.actions.ndim != 2 or self.actions.shape[0] < 1:
            raise ValueError(f"actions must be (H, A) with H >= 1, got {self.actions.shape}")


class ChunkScheduler:
    """Which action to command at time ``now`` given the chunks received so far."""

    def __init__(self, dt_ns: int, n_action_steps: int, *, blend_steps: int = 0,
                 replan_lead_steps: int = 1, overrun_steps: int = 0) -> None:
        self.check(dt_ns, n_action_steps, blend_steps, replan_lead_steps, overrun_steps)
        self.dt_ns = int(dt_ns)
        self.configure(n_action_steps, blend_steps, replan_lead_steps, overrun_steps)
        self.current: ActionChunk | None = None
        self._previous: ActionChunk | None = None
        self._adopted_ns = 0

    @staticmethod
    def check(dt_ns: int, n_action_steps: int, blend_steps: int, replan_lead_steps: int,
              overrun_steps: int = 0) -> None:
        """Raise ValueError unless the values make a schedule."""
        if dt_ns <= 0 or n_action_steps < 1 or blend_steps < 0 or replan_lead_steps < 0 \
                or overrun_steps < 0:
            raise ValueError(
                f"need dt_ns > 0, n_action_steps >= 1, blend_steps >= 0, replan_lead_steps >= 0,"
                f" overrun_steps >= 0; got {dt_ns}, {n_action_steps}, {blend_steps}, "
                f"{replan_lead_steps}, {overrun_steps}"
            )

    def configure(self, n_action_steps: int, blend_steps: int, replan_lead_steps: int,
                  overrun_steps: int = 0) -> None:
        """Change the tunables (validated first)."""
        self.check(self.dt_ns, n_action_steps, blend_steps, replan_lead_steps, overrun_steps)
        self.n_action_steps = int(n_action_steps)
        self.blend_steps, self.replan_lead_steps = int(blend_steps), int(replan_lead_steps)
        self.overrun_steps = int(overrun_steps)

    def clear(self) -> None:
        self.current = self._previous = None

    def step_index(self, chunk: ActionChunk, now_ns: int) -> int:
        """Index of the step whose period contains ``now`` (0 before the stamp)."""
        return max(0, (now_ns - chunk.stamp_ns) // self.dt_ns)

    def _executable(self, chunk: ActionChunk) -> int:
        return min(self.n_action_steps, chunk.actions.shape[0])

    def push(self, chunk: ActionChunk, now_ns: int) -> int | None:
        """Adopt ``chunk``; returns how many of its steps are already past (skipped), or None
        when it is not newer than the current chunk (a late result is dropped)."""
        if self.current is not None and chunk.stamp_ns <= self.current.stamp_ns:
            return None
        self._previous, self.current, self._adopted_ns = self.current, chunk, int(now_ns)
        return min(self.step_index(chunk, now_ns), chunk.actions.shape[0])

    def remaining(self, now_ns: int) -> int:
        """Executable steps of the current chunk from ``now`` on (0 without a chunk)."""
        if self.current is None:
            return 0
        return max(0, self._executable(self.current) - self.step_index(self.current, now_ns))

    def needs_chunk(self, now_ns: int) -> bool:
        return self.remaining(now_ns) <= self.replan_lead_steps

    def overrunning(self, now_ns: int) -> bool:
        """Whether ``now`` is past the current chunk's ``n_action_steps``."""
        chunk = self.current
        return chunk is not None and self.step_index(chunk, now_ns) >= self._executable(chunk)

    def command(self, now_ns: int, overrun: bool = False) -> np.ndarray | None:
        """The (A,) target for ``now``, or None when there is nothing left to execute; with
        ``overrun`` (a next chunk is coming), up to ``overrun_steps`` steps past the horizon."""
        chunk = self.current
        if chunk is None:
            return None
        i = self.step_index(chunk, now_ns)
        end = self._executable(chunk)
        if overrun:
            end = min(end + self.overrun_steps, chunk.actions.shape[0])
        if i >= end:
            return None
        action = chunk.actions[i]
        old = self._previous
        if self.blend_steps and old is not None:
            j = self.step_index(old, now_ns)
            weight = (now_ns - self._adopted_ns) / (self.blend_steps * self.dt_ns)
            if j < old.actions.shape[0] and weight < 1.0:
                w = max(weight, 0.0)
                return (1.0 - w) * old.actions[j] + w * action
        return action
