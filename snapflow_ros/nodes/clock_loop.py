"""``ClockLoop``: call a function at a fixed period of a node's ROS clock, in its own thread.

The policy node's control tick must not wait behind message callbacks in the executor, so it
runs here: a thread that sleeps until the next period on the ROS clock. With ``use_sim_time``
the ROS clock only moves when ``/clock`` does: a jump callback (run by the executor's time
source on every ``/clock`` message) wakes the thread, so a paused simulator means no ticks, as a
ROS timer would behave. Missed periods are skipped (never a burst of late ticks); a clock that
goes back restarts the schedule from now.

The jump callback lives in a ``JumpSignal``, registered once per node before it spins: while the
executor's time source sets the time (every ``/clock`` message), rcl walks the clock's array of
jump callbacks without a lock, calling into Python, which may hand the GIL to another thread; a
callback added or removed there (a lifecycle transition from another thread) would reallocate
the array under that walk. Loops that start and stop subscribe an event to the signal instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rclpy.clock import JumpThreshold
from rclpy.duration import Duration

MAX_WAIT_S = 0.05  # how often a waiting loop re-checks its stop flag


def next_deadline(deadline: int | None, now: int, period: int) -> int:
    """The tick time after ``now``'s tick: one period on, skipping periods already past and
    restarting from ``now`` when there is no schedule yet or the clock went back."""
    if deadline is None or now < deadline - period:
        return now + period
    deadline += period
    if deadline <= now:
        deadline += ((now - deadline) // period + 1) * period
    return deadline


class JumpSignal:
    """Sets every subscribed ``threading.Event`` whenever ``clock`` jumps (any change of ROS
    time, or a change of clock source). Create it before the node spins; ``close`` it after."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._events: set[threading.Event] = set()
        self._lock = threading.Lock()
        self._handle = clock.create_jump_callback(
            JumpThreshold(min_forward=Duration(nanoseconds=1),
                          min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._notify)

    def _notify(self, _jump: Any) -> None:
        with self._lock:
            events = list(self._events)
        for event in events:
            event.set()

    def subscribe(self, event: threading.Event) -> None:
        with self._lock:
            self._events.add(event)

    def unsubscribe(self, event: threading.Event) -> None:
        with self._lock:
            self._events.discard(event)

    def close(self) -> None:
        """Unregister from the clock (once nothing sets the time any more: spin has ended)."""
        if self._handle is not None:
            self._handle.unregister()
            self._handle = None


class ClockLoop:
    """Runs ``tick(now_ns)`` every ``period_ns`` of ``jumps.clock`` (a node's ROS clock)."""

    def __init__(self, jumps: JumpSignal, period_ns: int, tick: Callable[[int], None],
                 name: str = "control") -> None:
        if period_ns <= 0:
            raise ValueError(f"period must be > 0 ns, got {period_ns}")
        self._clock, self._period, self._tick = jumps.clock, int(period_ns), tick
        self._wake, self._stop = threading.Event(), threading.Event()
        self._jumps = jumps
        jumps.subscribe(self._wake)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due: int | None = None
        while not self._stop.is_set():
            now = self._clock.now().nanoseconds
            if due is None or now < due - self._period:  # start, or the clock went back
                due = now
            if now >= due:
                self._tick(now)
                due = next_deadline(due, now, self._period)
                continue
            self._wake.wait(min((due - now) / 1e9, MAX_WAIT_S))
            self._wake.clear()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop ticking (waits for a tick in progress, up to ``timeout_s``)."""
        self._stop.set()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        self._jumps.unsubscribe(self._wake)
