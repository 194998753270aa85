"""Entry point of ``sim_demos``: the signal handling of the nodes (``nodes/entry.py``) is
installed before the heavy imports (rclpy, MuJoCo, rosbags); stopped early, it exits 128 + the
signal number (a batch tool's work is unfinished)."""

from __future__ import annotations

from snapflow_ros.nodes.entry import run_main


def sim_demos() -> int:
    return run_main("snapflow_ros.apps.sim_demos", node=False)
