"""Keep the calling thread's CPU scheduling policy across video encoding with SVT-AV1.

Why this exists: SVT-AV1 3.0 (the ``libsvtav1`` encoder in PyAV's wheels, lerobot's default
codec) switches the thread that opens an encoder to ``SCHED_FIFO`` priority 99 whenever it is
allowed to (running as root, as in most robot containers). In lerobot that thread is the one
calling ``save_episode``, usually the main thread; every thread and process started from it
afterwards inherits real-time priority. A real-time thread that busy-waits (OpenMP workers, DDS)
never yields its core to another thread of the same priority, so a policy node or simulator
started later by the same process can freeze the machine (seen here: ``demo`` hung with two
spinning FIFO-99 threads on a 2-core machine, load average 24).

``keep_scheduling_policy()`` records the policy and priority on entry and puts them back on
exit. It changes nothing in the library; lowering one's own priority needs no privilege.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)


def current_policy() -> tuple[int, int] | None:
    """(policy, priority) of the calling thread, or None where the OS has no such API."""
    try:
        return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def keep_scheduling_policy() -> Iterator[None]:
    """Restore the calling thread's scheduling policy and priority when the block ends."""
    before = current_policy()
    try:
        yield
    finally:
        after = current_policy()
        if before is not None and after != before:
            os.sched_setscheduler(0, before[0], os.sched_param(before[1]))
            log.debug("scheduling policy %s was changed to %s inside the block; restored",
                      before, after)
