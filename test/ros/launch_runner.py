"""Run a launch file for a test: ``LaunchService.run`` in the main thread, a peer node beside it.

``launch`` refuses to run outside the main thread ("LaunchService can only be run in the main
thread"), so the test's own ROS node (the *peer*: publishes inputs, collects outputs) spins in a
background thread on its own ``rclpy.Context`` and executor, and stops the launch
(``LaunchService.shutdown()``, thread-safe) once it has what it waited for or on timeout.
Only usable where ``launch``/``launch_ros`` import (a ROS 2 install, or the CLI built from
source); callers call ``require_launch()`` first, which skips otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

SKIP_REASON = ("launch/launch_ros have no wheels on PyPI: needs a ROS 2 install (apt) or the "
               "ROS 2 CLI built from source on PYTHONPATH")


def require_launch() -> None:
    """Skip the calling test unless the real ``launch`` and ``launch_ros`` import. (A bare
    ``import launch`` succeeds in this repo: its ``launch/`` folder is a namespace package.)"""
    pytest.importorskip("launch.launch_service", reason=SKIP_REASON)
    pytest.importorskip("launch_ros", reason=SKIP_REASON)


@dataclass
class LaunchRun:
    """What happened: the launch's exit code, whether the peer was satisfied, and when."""

    returncode: int | None = None
    done: bool = False
    seconds: float = 0.0
    error: BaseException | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_launch(launch_file: Path, arguments: dict[str, str],
               make_peer: Callable[[Node], Callable[[], bool]], timeout_s: float) -> LaunchRun:
    """Launch ``launch_file`` with ``arguments``; ``make_peer(node)`` sets up the peer's
    publishers/subscriptions and returns ``step()``, called every ~50 ms from the peer's thread
    (publish inputs, return True once the test has what it needs). Returns when the launch has
    shut down (all its processes gone)."""
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchService

    # noninteractive: launch itself sends SIGINT to its processes on shutdown (no terminal did)
    service = LaunchService(argv=[], noninteractive=True)
    service.include_launch_description(IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(launch_file)), launch_arguments=arguments.items()))
    result = LaunchRun()
    launch_ended = threading.Event()
    start = time.monotonic()

    def peer() -> None:
        ctx = rclpy.Context()
        rclpy.init(context=ctx, args=[])  # a private context: no signal handlers of its own
        node = rclpy.create_node("launch_test_peer", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        try:
            step = make_peer(node)
            while not launch_ended.is_set() and time.monotonic() - start < timeout_s:
                if step():
                    result.done = True
                    break
                executor.spin_once(timeout_sec=0.05)
        except BaseException as err:  # reported by the test, after the launch has stopped
            result.error = err
        finally:
            result.seconds = time.monotonic() - start
            service.shutdown()  # no-op when the launch has already ended
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown(context=ctx)

    thread = threading.Thread(target=peer, name="launch_test_peer", daemon=True)
    thread.start()
    try:
        result.returncode = service.run()
    finally:
        launch_ended.set()
        thread.join(timeout=30.0)
    return result
