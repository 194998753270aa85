"""One shutdown per process: the first SIGINT or SIGTERM stops a ROS executable, later ones wait.

A node often gets more than one: Ctrl-C reaches every process of the terminal's foreground
group, and ``ros2 launch`` sends each node a SIGINT of its own whenever its stdin is not a
terminal (scripts, containers, CI, ``--noninteractive``), then SIGTERM after
``sigterm_timeout``; ``timeout``/systemd signal whole groups too. Python's default handler
turned the second signal into a ``KeyboardInterrupt`` in the middle of the node's cleanup
(traceback, exit code -2 and "process has died" in launch, bag or GL context not closed, the
policy node's worker process left to its parent-death signal). ``install`` (called by the
executables' entry points in ``nodes/entry.py``, never by library code or tests) replaces the
Python-level handlers of SIGINT and SIGTERM:

- the first signal raises ``KeyboardInterrupt`` (SIGTERM too: imports, start-up and model
  loading stop at once; every node's ``main`` catches it), except while the main thread is
  inside an rclpy executor and rclpy's own handlers (``rclpy.init``'s, run before ours) are
  installed: they have shut the context down and the spin ends after the callback in progress
  (``ExternalShutdownException``), so no callback or executor internals are cut in half (a
  half-written bag message; "Exception ignored in Future.__del__" from a half-built Task);
- a later signal is ignored while the process is on its way out (launch's SIGINT right after
  the group's), unless it comes ``FORCE_AFTER_S`` or more after the first: then cleanup hangs
  and the process exits at once (a user's second Ctrl-C);
- a first signal's ``KeyboardInterrupt`` that lands where Python ignores exceptions (a weakref
  callback such as importlib's module-lock cleanup during an import, a ``__del__``: "Exception
  ignored in ...") would leave the process running with the signal spent; ``sys.unraisablehook``
  catches it and the signal is delivered again (from a helper thread, so the new
  ``KeyboardInterrupt`` is raised in the main thread's own code);
- once the node's ``main`` has returned, ``finish`` ignores both signals at the OS level:
  Python restores their default action (termination) while it finalises, and launch's signal
  landing there killed the node (exit -2) after a clean stop.

``received()`` tells which signal, if any, arrived (a tool's exit code). ``forget_interrupt``
undoes a CPython quirk that turned a clean stop under ``python -m`` into exit -2 (see there).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_EXECUTORS = os.path.join("rclpy", "executors.py")
FORCE_AFTER_S = 2.0
_received: list[tuple[int, float]] = []  # (signal number, monotonic time)


def _on_signal(signum: int, frame: Any) -> None:
    now = time.monotonic()
    _received.append((signum, now))
    if len(_received) == 1:
        if not (_in_executor(frame) and _rclpy_handles_signals()):
            raise KeyboardInterrupt(signal.Signals(signum).name)
        return
    first, since = _received[0]
    if now - since >= FORCE_AFTER_S:
        print(f"{signal.Signals(signum).name}: still stopping {now - since:.1f} s after "  # noqa: T201
              f"{signal.Signals(first).name}; exiting now", file=sys.stderr, flush=True)
        os._exit(128 + signum)


def _on_unraisable(args: Any) -> None:
    """Our KeyboardInterrupt swallowed (see module docstring): deliver the signal again."""
    exc = args.exc_value
    names = {s.name: s for s in SIGNALS}
    if (isinstance(exc, KeyboardInterrupt) and len(_received) == 1
            and str(exc) == signal.Signals(_received[0][0]).name and str(exc) in names):
        _received.clear()  # the redelivered signal is the first one again
        threading.Timer(0.005, os.kill, (os.getpid(), names[str(exc)])).start()
        return
    _previous_unraisablehook(args)


_previous_unraisablehook = sys.unraisablehook


def install() -> None:
    """Process-wide handlers for SIGINT and SIGTERM (see module docstring). A signal that the
    parent made this process ignore (``nohup``, ``&`` in a script) stays ignored."""
    global _previous_unraisablehook
    for sig in SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _on_signal)
    if sys.unraisablehook is not _on_unraisable:
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _on_unraisable


def received() -> int | None:
    """The first SIGINT/SIGTERM received since ``install`` (None: none)."""
    return _received[0][0] if _received else None


def finish() -> None:
    """Once the tool's ``main`` has returned: ignore SIGINT/SIGTERM while the interpreter exits.

    Also when none reached our handler: rclpy's own handler may have taken the first signal
    (the context shut down, the spin ended) without it, and the group's second Ctrl-C then
    landed in finalisation, where Python restores the default action (exit -2). The process
    is on its way out either way; SIGKILL still ends a finalisation that hangs.
    """
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def forget_interrupt() -> None:
    """Clear CPython's "ended by an unhandled KeyboardInterrupt" mark after a signal stop.

    CPython 3.11 sets that mark whenever a ``KeyboardInterrupt`` leaves code run by ``exec()``
    of a string (``PyRun_String``), caught or not: ``dataclasses`` builds every ``__init__``
    and ``__eq__`` that way, so a Ctrl-C landing in an import such as rosbags' type stores
    sets it. ``Py_RunMain`` (``python -m``, ``python -c``) then re-raises SIGINT with the
    default action after a clean finalisation: exit -2, no output, the node's own exit code
    lost. The mark is reset at the start of every such ``exec``; one of an empty string does
    exactly that, through public API only. Console scripts (``ros2 run``) end through
    ``Py_Exit`` and never looked at the mark.
    """
    exec("")  # the reset described above; no code runs


def _in_executor(frame: Any) -> bool:
    """True when ``frame`` (where the main thread was interrupted) runs inside rclpy's
    executors module: a spin, or a callback that it called."""
    while frame is not None:
        if frame.f_code.co_filename.endswith(_EXECUTORS):
            return True
        frame = frame.f_back
    return False


def _rclpy_handles_signals() -> bool:
    """rclpy's SIGINT and SIGTERM handlers are installed (``rclpy.init`` of the default
    context; a private ``Context.init`` installs none)."""
    from rclpy.signals import SignalHandlerOptions, get_current_signal_handlers_options

    return get_current_signal_handlers_options() == SignalHandlerOptions.ALL
