"""One CPU thread policy for every tool: how many threads torch and OpenMP may use.

A robot computer runs camera and controller drivers beside the policy, and our reference
machines have 2 cores. Letting torch/OpenMP spin on every core makes a busy neighbour cost 5x
(measured: the tiny policy's 10-step chunk 39 → 210 ms p50 with one competing process and torch's
default 2 threads; 53 ms with 1 thread). So every tool takes ``cpu_threads``:

* ``0`` (default) = *auto*: the cores this process may run on (its affinity mask) minus
  ``reserved`` (the node's own ROS thread, a data loader, a driver), at least 1;
* ``N >= 1``: exactly N.

``apply_cpu_threads`` sets torch's intra-op threads and one inter-op thread, and exports
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (for child processes and for libraries that read them
late); ``OPENBLAS_NUM_THREADS`` is always 1 (idle BLAS threads ate 93 % of a core in a ROS
process). Torch is imported only when the caller already uses it.

Every tool's config has a ``cpu_threads`` field (``--cpu-threads N``; ``config_cli.py``); the
benchmark scripts add the same option with ``scripts/script_args.py``.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (affinity mask; ``os.cpu_count`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_cpu_threads(requested: int = 0, reserved: int = 1) -> int:
    """``requested`` if >= 1, else the cores left after ``reserved``, at least 1."""
    if requested < 0:
        raise ValueError(f"cpu_threads must be >= 0 (0 = auto), got {requested}")
    if requested:
        return int(requested)
    return max(1, available_cores() - max(0, int(reserved)))


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that make a child process (and its OpenMP) use ``threads``."""
    env = {name: str(int(threads)) for name in THREAD_ENV}
    env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def apply_cpu_threads(requested: int = 0, reserved: int = 1) -> int:
    """Resolve and apply the policy to this process; returns the thread count used."""
    threads = resolve_cpu_threads(requested, reserved)
    os.environ.update(thread_env(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set, or parallel work already ran: keep what it is
            log.debug("torch inter-op threads already fixed at %d",
                      torch.get_num_interop_threads())
    return threads
