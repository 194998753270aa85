"""Entry points of the tools that start ROS nodes or processes (``sim_demos``, ``demo``,
``bench``): the signal handling of the nodes (``nodes/entry.py``) is installed before the heavy
imports (rclpy, MuJoCo, torch), so a SIGTERM, like Ctrl-C, unwinds the tool and stops the node
processes it started (Python's default SIGTERM would leave them running); stopped early, a tool
exits 128 + the signal number (its work is unfinished)."""

from __future__ import annotations

from snapflow_ros.nodes.entry import run_main


def sim_demos() -> int:
    return run_main("snapflow_ros.apps.sim_demos", node=False)


def demo() -> int:
    return run_main("snapflow_ros.apps.demo", node=False)


def bench() -> int:
    return run_main("snapflow_ros.apps.bench", node=False)
