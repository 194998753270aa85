"""Per-stage latency bookkeeping with an injectable clock (no ROS, no torch).

``StageTimer`` collects durations per named stage; ``percentiles`` summarises them. A GPU
caller passes ``sync=torch.cuda.synchronize`` so that asynchronous kernels are counted in the
stage that launched them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence

import numpy as np


class StageTimer:
    """Accumulates wall-clock durations (seconds) per stage name."""

    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        sync: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self._sync = sync
        self.durations: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block and append its duration to ``durations[name]``."""
        if self._sync:
            self._sync()
        start = self._clock()
        try:
            yield
        finally:
            if self._sync:
                self._sync()
            self.durations[name].append(self._clock() - start)

    def total(self, name: str) -> float:
        return float(sum(self.durations.get(name, ())))

    def reset(self) -> None:
        self.durations.clear()


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 99)) -> dict[str, float]:
    """{"p50": ..., "p99": ...} of ``values`` (nan when empty)."""
    if len(values) == 0:
        return {f"p{q:g}": float("nan") for q in qs}
    arr = np.asarray(values, dtype=float)
    return {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}


class RollingStats:
    """The last ``window`` samples per name, summarised as p50/p99 (thread-safe)."""

    def __init__(self, window: int = 200) -> None:
        self._window = window
        self._values: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=self._window))
        self._lock = threading.Lock()

    def add(self, name: str, value: float) -> None:
        with self._lock:
            self._values[name].append(float(value))

    def add_timer(self, timer: StageTimer, scale: float = 1e3) -> None:
        """Add each stage's total from ``timer`` (seconds → ms by default)."""
        for name in list(timer.durations):
            self.add(name, timer.total(name) * scale)

    def percentile(self, name: str, q: float) -> float | None:
        """The q-th percentile of ``name``'s window (None before any sample)."""
        with self._lock:
            values = list(self._values.get(name, ()))
        return float(np.percentile(values, q)) if values else None

    def summary(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {name: percentiles(list(v)) for name, v in self._values.items() if v}
