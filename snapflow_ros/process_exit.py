"""Ending a process whose work is done without the interpreter's finalisation.

A ROS node stops within a second of SIGINT/SIGTERM (launch escalates after its
``sigterm_timeout``; our bar is 1 s, on a loaded 2-core machine too). Once a node's ``main``
has returned, its teardown has released what it holds (bag closed, GL context released, the
inference worker stopped), and Python's finalisation only tears down modules and objects: that
was half of the policy node's stop (0.2 s of 0.4 s measured quiet, more under load), and the
inference worker's torch took 0.1 s of the node's wait for it. ``exit_now`` flushes what Python
buffers (``logging``, stdout, stderr) and what C stdio buffers (rcutils' log lines on stdout
under ``RCUTILS_LOGGING_USE_STDOUT=1`` are block-buffered into launch's pipe), then ends the
process with ``os._exit``.

It declines (returns) while another non-daemon thread is alive: Python would wait for it at
exit, and it may still be writing something; the caller then returns normally.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading


def exit_now(code: int) -> None:
    """Flush logging, Python's stdout and stderr and C stdio, then ``os._exit(code)``; returns
    (does nothing) while a non-daemon thread other than the caller's is alive."""
    me = threading.current_thread()
    if any(t is not me and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed, or a pipe whose reader is gone
            stream.flush()
    with contextlib.suppress(Exception):  # no C library to ask (not POSIX)
        ctypes.CDLL(None).fflush(None)  # every C stdio output stream
    os._exit(code)
