"""The policy node's control logic without ROS or torch: sync → infer → safety → schedule.

``ChunkEngine`` is driven by two loops with an injected clock (integer ns):

* the **control loop** calls ``tick(now)`` at control rate: the (safety-filtered) command for
  now, or None (hold: command nothing new);
* the **inference loop** calls ``infer(now_fn, decode, predict)`` when ``tick`` asked for a
  chunk: a consistent observation snapshot is decoded (messages → numpy, by the caller),
  the policy predicts a chunk, NaN/inf chunks are refused, the chunk is clamped and
  rate-limited from the current command, and the scheduler adopts it.

Anything wrong (missing, stale or unsynchronised input, a bad message, NaN) is a *hold* with a
reason; counters and latency statistics feed ``/diagnostics``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from snapflow_ros.runtime.chunking import ActionChunk, ChunkScheduler
from snapflow_ros.runtime.observation import Hold, ObservationBuffer, Snapshot
from snapflow_ros.runtime.safety import SafetyFilter
from snapflow_ros.runtime.timing import RollingStats, StageTimer


class BadInput(ValueError):
    """Raised by a decode function for a message that cannot be used (the reason is shown)."""


@dataclass(frozen=True)
class Decoded:
    """A decoded observation: images by camera, state (S,), measured action joints (A,) or None."""

    images: dict[str, np.ndarray]
    state: np.ndarray
    measured_action: np.ndarray | None


@dataclass(frozen=True)
class ChunkResult:
    """A chunk that was adopted: (H, A) filtered targets, its obs stamp, steps already past."""

    stamp_ns: int
    positions: np.ndarray
    skipped: int


Decode = Callable[[Snapshot], Decoded]
Predict = Callable[[Decoded, StageTimer], np.ndarray]


class ChunkEngine:
    """See module docstring. Thread-safe between one control and one inference loop."""

    def __init__(self, buffer: ObservationBuffer, scheduler: ChunkScheduler,
                 safety: SafetyFilter, stats: RollingStats | None = None,
                 wall_ns: Callable[[], int] = time.perf_counter_ns) -> None:
        self.buffer, self.scheduler, self.safety = buffer, scheduler, safety
        self._wall_ns = wall_ns  # latency of our own work (ROS time may be paused sim time)
        self.stats = stats or RollingStats()
        self.counters: Counter[str] = Counter()
        self.last_hold: Hold | None = None
        self.last_command: np.ndarray | None = None
        self._lock = threading.Lock()
        self._unchanged_since: int | None = None  # buffer version of the last fruitless try

    def reset(self) -> None:
        """Forget chunks, commands and inputs (on deactivate)."""
        with self._lock:
            self.scheduler.clear()
            self.last_command = None
        self.buffer.clear()

    def tick(self, now_ns: int) -> tuple[np.ndarray | None, bool]:
        """(command for now or None, whether a new chunk is wanted)."""
        with self._lock:
            target = self.scheduler.command(now_ns)
            want = self.scheduler.needs_chunk(now_ns)
            if target is None:
                if self.scheduler.current is not None:
                    self.counters["starved_ticks"] += 1
                return None, want
            command = self.safety.step(target, self.last_command)
            self.last_command = command
            self.counters["commands"] += 1
            return command, want

    def _hold(self, hold: Hold) -> Hold:
        self.counters[f"hold_{hold.kind}"] += 1
        self.last_hold = hold
        return hold

    def infer(self, now: Callable[[], int], decode: Decode, predict: Predict,
              timer: StageTimer | None = None) -> ChunkResult | Hold:
        """One inference: snapshot at ``now()``, decode, predict, filter, schedule.

        Without a new message since the last attempt that produced no chunk, the answer cannot
        improve (inputs only get older), so the previous hold is returned at no cost: an idle
        node does no work at control rate.
        """
        version = self.buffer.version
        if version == self._unchanged_since and self.last_hold is not None:
            return self.last_hold
        result = self._infer(now, decode, predict, timer)
        self._unchanged_since = None if isinstance(result, ChunkResult) else version
        return result

    def _infer(self, now: Callable[[], int], decode: Decode, predict: Predict,
               timer: StageTimer | None) -> ChunkResult | Hold:
        start_ns, wall_start = now(), self._wall_ns()
        snap = self.buffer.snapshot(start_ns)
        if isinstance(snap, Hold):
            return self._hold(snap)
        current = self.scheduler.current
        if current is not None and snap.stamp_ns <= current.stamp_ns:
            # nothing newer than what the current chunk was predicted from: not a fault
            self.counters["waits"] += 1
            return Hold("waiting", "no observation newer than the current chunk's")
        try:
            decoded = decode(snap)
        except BadInput as err:
            return self._hold(Hold("bad_input", str(err)))
        if not SafetyFilter.finite(decoded.state):
            return self._hold(Hold("nan", "NaN or inf in the joint state"))
        timer = timer or StageTimer()
        actions = predict(decoded, timer)
        if not SafetyFilter.finite(actions):
            return self._hold(Hold("nan", "the policy produced NaN or inf actions"))
        with self._lock:
            start = self.last_command if self.last_command is not None else decoded.measured_action
            positions = self.safety.trajectory(actions, start)
            done_ns = now()
            skipped = self.scheduler.push(ActionChunk(snap.stamp_ns, positions), done_ns)
        wall_ms = (self._wall_ns() - wall_start) / 1e6
        if skipped is None:
            self.counters["late_chunks"] += 1
            return self._hold(Hold("late", "chunk older than the one being executed; dropped"))
        model_ms = sum(timer.total(s) for s in timer.durations) * 1e3
        self.stats.add_timer(timer)
        self.stats.add("model", model_ms)
        self.stats.add("obs_age_at_start", (start_ns - snap.stamp_ns) / 1e6)
        self.stats.add("obs_to_chunk", (done_ns - snap.stamp_ns) / 1e6)
        # what the node adds on top of the model: sync, decoding, safety, scheduling
        self.stats.add("node_overhead", wall_ms - model_ms)
        self.counters["chunks"] += 1
        self.counters["skipped_steps"] += skipped
        self.last_hold = None
        return ChunkResult(snap.stamp_ns, positions, skipped)

    def status(self) -> dict[str, Any]:
        """Counters, latency percentiles (ms) and the last hold reason, for diagnostics.

        Latencies per chunk: ``preprocess``/``prefix``/``expert`` (all passes)/``postprocess`` and
        their sum ``model``; ``obs_age_at_start`` (observation stamp → inference start: transport
        and waiting for the control tick); ``node_overhead`` (inference start → chunk scheduled,
        minus the model); ``obs_to_chunk`` (stamp → scheduled).
        """
        values: dict[str, Any] = dict(self.counters)
        for name, pct in self.stats.summary().items():
            for key, value in pct.items():
                values[f"{name}_ms_{key}"] = round(value, 3)
        values["last_hold"] = "" if self.last_hold is None else self.last_hold.reason
        return values
