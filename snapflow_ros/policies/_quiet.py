"""Keep lerobot's construction-time ``print`` calls off stdout (tools print JSON there)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send anything printed inside the block to stderr instead of stdout."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
