"""One wait-until helper for everything that polls (apps, scripts, tests).

``wait_until(done, timeout_s, what)`` returns as soon as ``done()`` is true and raises
``TimeoutError("timed out after T s waiting for WHAT")`` otherwise. Between checks it runs
``step`` — e.g. ``lambda: executor.spin_once(timeout_sec=0.01)`` to spin a ROS executor in this
thread — or sleeps ``interval_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(done: Callable[[], object], timeout_s: float, what: str, *,
               step: Callable[[], object] | None = None, interval_s: float = 0.005) -> None:
    """Return once ``done()`` is truthy; TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        if step is not None:
            step()
        else:
            time.sleep(interval_s)
