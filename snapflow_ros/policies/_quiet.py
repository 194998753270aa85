"""Keep lerobot's construction-time ``print`` calls off stdout (tools print JSON there), and
its load-time log lines that say nothing true off the log."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send anything printed inside the block to stderr instead of stdout."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def without_root_log_lines(*fragments: str) -> Iterator[None]:
    """Drop records on the root logger whose message contains any of ``fragments`` (lerobot
    logs through ``logging.warning``) while the block runs."""
    def keep(record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in fragments)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
