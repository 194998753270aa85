"""process_exit.exit_now: a finished process ends at once, with what it printed, or declines."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent("""
    import atexit, ctypes, logging, sys, threading
    from snapflow_ros.process_exit import exit_now

    logging.basicConfig(stream=sys.stderr, format="%(message)s")
    atexit.register(lambda: print("finalised", flush=True))
    print("work done")  # stdout is a pipe: block-buffered, not yet written
    logging.getLogger("t").warning("logged")
    ctypes.CDLL(None).printf(b"from C\\n")  # C stdio into a pipe: block-buffered (rcutils')
    go = threading.Event()
    if {with_thread}:
        threading.Thread(target=go.wait).start()  # a non-daemon thread still at work
    threading.Thread(target=go.wait, daemon=True).start()  # a daemon thread: never waited for
    exit_now(3)
    print("declined")
    go.set()
""")


def _run(with_thread: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # it unbuffers C's too
    return subprocess.run([sys.executable, "-c", _SCRIPT.format(with_thread=with_thread)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


def test_exit_now_flushes_then_skips_finalisation():
    proc = _run(with_thread=False)
    assert proc.returncode == 3, proc.stderr
    # flushed (Python's and C's buffers); atexit (finalisation) never ran
    assert sorted(proc.stdout.splitlines()) == ["from C", "work done"]
    assert proc.stderr.splitlines() == ["logged"]


def test_exit_now_declines_while_a_non_daemon_thread_runs():
    proc = _run(with_thread=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == ["declined", "finalised", "from C", "work done"]
