"""Stamp-based synchronisation of the policy's inputs (no ROS, no torch; clocks passed in).

Subscription callbacks only ``put`` the newest message of each input with its header stamp;
the inference thread asks for a ``snapshot`` at time ``now``. A snapshot is a consistent set:
every input present, none older than ``max_age`` at ``now``, and all within ``max_skew`` of
each other. Otherwise the answer is a ``Hold`` naming the inputs at fault: the node then
publishes no new chunk (never zero-filled data).

Clock sanity: ``put`` refuses (and says why) a stamp more than ``future_tolerance`` ahead of
``now`` or an invalid one, so one bad stamp never poisons the buffer: a stored message that is
later found in the future (the clock went back, e.g. a simulator reset) is replaced by the next
message and never used for a snapshot.

Times are integer nanoseconds on one clock (ROS time; sim time under ``use_sim_time``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from snapflow_ros.runtime.holds import Hold, HoldKind


@dataclass(frozen=True)
class Stamped:
    """One received message and its header stamp (ns)."""

    stamp_ns: int
    msg: Any


@dataclass(frozen=True)
class Snapshot:
    """A consistent set of inputs; ``stamp_ns`` is the newest input stamp (the obs time)."""

    stamp_ns: int
    items: dict[str, Stamped]




DEFAULT_FUTURE_TOLERANCE_NS = 300_000_000


class ObservationBuffer:
    """Thread-safe newest-message store for a fixed set of named inputs."""

    def __init__(self, names: Iterable[str], max_age_ns: int, max_skew_ns: int,
                 future_tolerance_ns: int = DEFAULT_FUTURE_TOLERANCE_NS) -> None:
        self.names = tuple(names)
        if not self.names:
            raise ValueError("ObservationBuffer needs at least one input name")
        self.set_limits(max_age_ns, max_skew_ns, future_tolerance_ns)
        self._latest: dict[str, Stamped] = {}
        self._interval: dict[str, float] = {}  # smoothed stamp interval per input (ns)
        self._lock = threading.Lock()
        self.version = 0  # bumped by every stored message

    def set_limits(self, max_age_ns: int, max_skew_ns: int,
                   future_tolerance_ns: int | None = None) -> None:
        """Change the limits (validated first: a bad value changes nothing)."""
        future = self.future_tolerance_ns if future_tolerance_ns is None else future_tolerance_ns
        if max_age_ns <= 0 or max_skew_ns <= 0 or future < 0:
            raise ValueError(f"max_age and max_skew must be > 0 ns and the future tolerance "
                             f">= 0, got {max_age_ns}, {max_skew_ns}, {future}")
        self.max_age_ns, self.max_skew_ns = int(max_age_ns), int(max_skew_ns)
        self.future_tolerance_ns = int(future)

    def put(self, name: str, stamp_ns: int, msg: Any, now_ns: int | None = None) -> str | None:
        """Store ``msg`` as the newest ``name`` input; returns None, or why it was refused.

        An older stamp than the stored one is ignored (out-of-order delivery never moves an
        input back in time) unless the stored one is in the future of ``now_ns``. With
        ``now_ns``, a stamp further ahead than the future tolerance is refused.
        """
        if name not in self.names:
            raise KeyError(f"unknown input {name!r}; inputs: {self.names}")
        stamp_ns = int(stamp_ns)
        if stamp_ns < 0:
            return f"{name}: invalid stamp {stamp_ns} ns (negative)"
        ahead = None if now_ns is None else stamp_ns - now_ns
        if ahead is not None and ahead > self.future_tolerance_ns:
            return (f"{name}: stamp {ahead / 1e9:.3f} s in the future of this node's clock "
                    f"(tolerance {self.future_tolerance_ns / 1e9:.3f} s): check the "
                    f"publisher's clock / use_sim_time")
        with self._lock:
            current = self._latest.get(name)
            if (current is None or stamp_ns >= current.stamp_ns
                    or (now_ns is not None
                        and current.stamp_ns - now_ns > self.future_tolerance_ns)):
                if current is not None and stamp_ns > current.stamp_ns:
                    step = stamp_ns - current.stamp_ns
                    old = self._interval.get(name, step)
                    self._interval[name] = 0.9 * old + 0.1 * min(step, 10 * old)
                self._latest[name] = Stamped(stamp_ns, msg)
                self.version += 1
        return None

    def interval_ns(self, name: str) -> int:
        """Smoothed interval between ``name``'s stamps (0 before two messages)."""
        return int(self._interval.get(name, 0))

    def clear(self) -> None:
        with self._lock:
            self._latest.clear()

    def latest(self, name: str) -> Stamped | None:
        with self._lock:
            return self._latest.get(name)

    def snapshot(self, now_ns: int) -> Snapshot | Hold:
        """The freshest consistent set at ``now_ns``, or why there is none."""
        with self._lock:
            items = dict(self._latest)
        missing = [n for n in self.names if n not in items]
        if missing:
            return Hold(HoldKind.MISSING, f"no message yet from {missing}")
        future = sorted(n for n, s in items.items()
                        if s.stamp_ns - now_ns > self.future_tolerance_ns)
        if future:
            return Hold(HoldKind.FUTURE,
                        f"newest {future} stamped in the future of this node's clock "
                        f"(did the clock go back?): waiting for new messages")
        stale = {n: (now_ns - s.stamp_ns) / 1e9 for n, s in items.items()
                 if now_ns - s.stamp_ns > self.max_age_ns}
        if stale:
            ages = ", ".join(f"{n} {age:.3f} s" for n, age in sorted(stale.items()))
            return Hold(HoldKind.STALE,
                        f"stale input (age > {self.max_age_ns / 1e9:.3f} s): {ages}")
        stamps = [s.stamp_ns for s in items.values()]
        skew = max(stamps) - min(stamps)
        if skew > self.max_skew_ns:
            oldest = min(items, key=lambda n: items[n].stamp_ns)
            newest = max(items, key=lambda n: items[n].stamp_ns)
            return Hold(HoldKind.SKEW,
                        f"inputs {skew / 1e9:.3f} s apart ({oldest} oldest, {newest} "
                        f"newest; max_skew {self.max_skew_ns / 1e9:.3f} s)")
        return Snapshot(max(stamps), {n: items[n] for n in self.names})
