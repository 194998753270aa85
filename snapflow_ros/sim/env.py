"""``MujocoEnv``: a scene plus a task, in episodes (openpi's Environment shape, no ROS).

Time is counted in integer nanoseconds of sim time, **strictly increasing across episodes**: a
reset never rewinds ``time_ns`` (so a ROS ``/clock`` fed from it never jumps back) and takes
one physics step of sim time, so every stamp of a new episode is later than every stamp of the
previous one. Episode time restarts at 0 on every reset. An episode is done on task success or
when its episode time reaches the timeout; after that the sim keeps running but the outcome is
frozen.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from snapflow_ros.sim.scene import Scene
from snapflow_ros.sim.tasks import NoTask, Task

NS = 1_000_000_000


@dataclass
class EpisodeStatus:
    """One episode's outcome; ``reason`` is "" while running, then "success" or "timeout"."""

    episode: int = 0
    seed: int = 0
    start_ns: int = 0  # sim time of the reset
    end_ns: int = 0  # sim time the episode ended (0 while running)
    time_s: float = 0.0  # episode time
    success: bool = False
    done: bool = False
    reason: str = ""
    reached: int = -1  # which way the task was solved (its ``modes``), -1 = none
    info: dict[str, Any] = field(default_factory=dict)  # the task's own fields
    has_modes: bool = True  # False: the task has no ``modes``; ``reached`` is left out

    def to_json(self) -> str:
        """One-line JSON (the bridge's ``episode/status`` message): ``reached`` only for a
        task with ``modes``."""
        fields = asdict(self)
        if not fields.pop("has_modes"):
            del fields["reached"]
        return json.dumps(fields, sort_keys=True)


class MujocoEnv:
    """Episodes on a ``Scene``: reset(seed), apply_action, step, observation, status.

    Args:
        scene: the scene (joints/cameras already validated).
        task: scores episodes; ``NoTask`` when None.
        episode_timeout_s: > 0 overrides the task's own time limit.
    """

    def __init__(self, scene: Scene, task: Task | None = None,
                 episode_timeout_s: float = 0.0) -> None:
        if episode_timeout_s < 0:
            raise ValueError(f"episode_timeout_s must be >= 0 (0 = the task's), got "
                             f"{episode_timeout_s}")
        self.scene = scene
        self.task: Task = task if task is not None else NoTask()
        self.timeout_s = episode_timeout_s or self.task.timeout_s
        self.dt_ns = round(scene.timestep * NS)
        self.time_ns = 0
        self._episode_steps = 0
        self.status = EpisodeStatus(episode=-1)

    def reset(self, seed: int | None = None) -> EpisodeStatus:
        """New episode: home pose, task randomised from ``seed`` (None/negative: a fresh one).

        Same seed, same initial state (and so the same first images).
        """
        if seed is None or seed < 0:
            seed = secrets.randbits(31)
        if self.status.episode >= 0:
            self.time_ns += self.dt_ns
        self.scene.reset()
        self.task.reset(self.scene, np.random.default_rng(seed))
        self.scene.forward()
        self._episode_steps = 0
        self.status = EpisodeStatus(episode=self.status.episode + 1, seed=int(seed),
                                    start_ns=self.time_ns, info=dict(self.task.state.info),
                                    has_modes=getattr(self.task, "modes", 0) > 0)
        return self.status

    @property
    def episode_time_ns(self) -> int:
        """Sim time since the last reset (ns)."""
        return self._episode_steps * self.dt_ns

    def step(self, n: int = 1) -> None:
        """``n`` physics steps; the task is scored after each and the outcome updated."""
        for _ in range(n):
            self.scene.step(1)
            self.time_ns += self.dt_ns
            self._episode_steps += 1
            if not self.status.done:
                self.task.update(self.scene)
                self._update_status()

    def _update_status(self) -> None:
        s, t = self.status, self.episode_time_ns / NS
        s.time_s = t
        if self.task.state.success:
            s.success, s.done, s.reason, s.reached = True, True, "success", self.task.state.reached
        elif t >= self.timeout_s - 1e-9:
            s.done, s.reason = True, "timeout"
        if s.done:
            s.end_ns, s.info = self.time_ns, dict(self.task.state.info)

    def apply_action(self, q: np.ndarray, duration_s: float) -> None:
        """Hold joint targets ``q`` (action order) for ``duration_s`` of sim time."""
        self.scene.set_joint_targets(q)
        self.step(max(1, round(duration_s / self.scene.timestep)))

    def get_observation(self) -> dict[str, Any]:
        """{"images": {camera: (H, W, 3) uint8}, "state": (N,) joint positions, "time_ns"}."""
        return {"images": self.scene.render_all(), "state": self.scene.joint_positions(),
                "time_ns": self.time_ns}

    def is_episode_complete(self) -> bool:
        """True once the episode succeeded or timed out."""
        return self.status.done
