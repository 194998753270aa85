"""Entry points of the ROS 2 nodes (console scripts, ``ros2 run``, ``python -m``).

Each installs the process-wide signal handling of ``nodes/shutdown.py`` before importing its
node (imports take seconds: torch, MuJoCo), then runs the node's ``main``. A SIGINT or SIGTERM
that arrives before the node is up exits quietly with 0, like one that stops it later; so does
one whose shutdown race ends ``main`` with an exception after its cleanup ran (rclpy: "failed
to initialize wait set: the given context is not valid").
"""

from __future__ import annotations

import ctypes
import importlib
import signal
import sys

from snapflow_ros.nodes import shutdown
from snapflow_ros.process_exit import exit_now


def run_main(module: str, node: bool = True) -> int:
    """``module.main()``. Stopped by a signal (before the node was up, or an exception that the
    stop itself caused: rclpy's "context is not valid" races, an import cut short): 0 for a node
    (stopping is its normal end), 128 + the signal number for a batch tool (work unfinished).

    A node whose ``main`` returned, or that a signal stopped, then exits at once without Python's
    finalisation (``process_exit.exit_now``: half of its stop time); a real error keeps Python's
    report and exit, and a batch tool returns its code.
    """
    shutdown.install()
    try:
        code = int(importlib.import_module(module).main() or 0)
    except (KeyboardInterrupt, Exception) as err:
        sig = shutdown.received()
        if sig is None:
            raise  # no signal: a real error, with Python's report
        if not _caused_by_the_stop(err):
            print(f"{module.rsplit('.', 1)[-1]}: stopped by {signal.Signals(sig).name}; "  # noqa: T201
                  f"while stopping: {type(err).__name__}: {err}", file=sys.stderr)
        code = 0 if node else 128 + sig
    finally:
        if shutdown.received() is not None:
            shutdown.forget_interrupt()  # a KeyboardInterrupt caught above or in main
        shutdown.finish()
    if node:
        exit_now(code)
    return code


def _caused_by_the_stop(err: BaseException) -> bool:
    """A KeyboardInterrupt (ours), an exception raised while handling one or from one (a C
    extension's import cut short: "ImportError: initialization failed"), or rclpy's error for
    a context that the signal shut down."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt) or type(seen).__name__ == "RCLError":
            return True
        if isinstance(seen, ctypes.ArgumentError) and "KeyboardInterrupt" in str(seen):
            return True  # ctypes wraps an interrupt raised while it converted an argument
        seen = seen.__cause__ or seen.__context__
    return False


def policy_node() -> int:
    return run_main("snapflow_ros.nodes.policy_node")


def mujoco_bridge() -> int:
    return run_main("snapflow_ros.nodes.mujoco_bridge_node")


def record() -> int:
    return run_main("snapflow_ros.nodes.recorder_node")

