"""``SimRunner``: steps a ``MujocoEnv`` on a schedule and hands out what to publish (no ROS).

The bridge node calls ``advance(sink)`` from a wall-clock timer. Per physics step the
runner samples the active trajectory into the position targets, steps, and when a publication
is due calls, in this order and all with the same sim-time stamp ``t``::

    sink.clock(t) → sink.joints(t, q, qd, effort) → sink.frame(t, {camera: image}) → sink.status

Modes (how far ``advance`` goes):

- ``realtime``: sim time follows wall time × ``real_time_factor``. A lag over ``max_lag_s``
  is dropped (counted in ``overruns``) rather than caught up in a burst.
- ``lockstep``: as fast as the command sender allows; a gate decides when to wait:
  - ``chunk``: sim time may run at most ``lead_s`` past the *end* of the newest trajectory
    (its stamp, the observation time, plus its last ``time_from_start``), or past the reset
    before the first one. A chunking policy whose control timer runs on ``/clock`` asks for
    its next chunk before the current one runs out; the sim then waits at the chunk's end
    while the policy computes, so slow inference costs wall time, not sim time. ``lead_s``
    must exceed one control period so that the policy's timer fires while the sim waits.
  - ``lead``: sim time may run at most ``lead_s`` past the sim time of the last command of
    any kind received (per-step controllers whose every command is fresh).
  - ``frame``: after each camera frame, wait for a command stamped at or after that frame's
    stamp (observation-triggered controllers such as the scripted expert). Commands then take
    effect exactly at frame times, so runs are reproducible.
  While it waits the runner has published ``/clock`` at the current time. A wait longer than
  ``timeout_s`` wall seconds is given up (counted in ``gate_timeouts``; the sim then runs
  another ``lead_s``, or to the next frame); ``timeout_s <= 0`` waits forever.
- ``free``: as fast as the CPU allows, no gate (benchmarks).

Camera frames are due every ``1/camera_rate_hz`` of sim time and joint states every
``1/joint_state_rate_hz``, each at the first physics step at or after its due time. With
``render_thread`` (realtime mode only) a due frame's pose goes to a render thread
(``sim/render_worker.py``) and physics goes on; a frame due while the last one still renders is
taken at the first step the thread is free (late, stamped then), and one due while another is
still owed is lost (``frames_skipped``). Lock-step and free modes render inline: a frame is
published at its own physics step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from snapflow_ros.sim.env import NS, EpisodeStatus, MujocoEnv
from snapflow_ros.sim.render_worker import RenderWorker
from snapflow_ros.sim.trajectory import TrajectoryFollower

MODES = ("realtime", "lockstep", "free")
GATES = ("chunk", "lead", "frame")


class Sink(Protocol):
    """Receives the runner's outputs (the node publishes them)."""

    def clock(self, stamp_ns: int) -> None:
        """Sim time."""

    def joints(self, stamp_ns: int, position: np.ndarray, velocity: np.ndarray,
               effort: np.ndarray) -> None:
        """Joint state in policy order."""

    def frame(self, stamp_ns: int, images: dict[str, np.ndarray]) -> None:
        """One image per camera, all of the same instant."""

    def status(self, status: EpisodeStatus) -> None:
        """Episode status, on reset and when the episode ends."""


@dataclass(frozen=True)
class RunnerConfig:
    """Rates (Hz of sim time), pacing mode and lock-step gate (see module docstring)."""

    camera_rate_hz: float = 30.0
    joint_state_rate_hz: float = 100.0
    mode: str = "realtime"
    real_time_factor: float = 1.0
    gate: str = "chunk"
    lead_s: float = 0.1
    timeout_s: float = 10.0
    max_lag_s: float = 0.25
    batch_s: float = 0.02  # wall budget of one ``advance`` call in lockstep/free mode
    render_thread: bool = False  # realtime mode: cameras rendered off the physics loop

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not one of {list(MODES)}")
        if self.gate not in GATES:
            raise ValueError(f"lockstep gate={self.gate!r} is not one of {list(GATES)}")
        for name in ("camera_rate_hz", "joint_state_rate_hz", "real_time_factor", "lead_s",
                     "max_lag_s", "batch_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


class SimRunner:
    """Schedules stepping, publication, trajectory sampling and lock-step waits."""

    def __init__(self, env: MujocoEnv, config: RunnerConfig,
                 wall: Callable[[], float] = time.monotonic) -> None:
        self.env, self.config, self._wall = env, config, wall
        self.follower = TrajectoryFollower(env.scene.actuated)
        self.camera_period_ns = round(NS / config.camera_rate_hz)
        self.joint_period_ns = round(NS / config.joint_state_rate_hz)
        self.lead_ns = round(config.lead_s * NS)
        self.steps = self.frames = self.overruns = self.gate_timeouts = 0
        self.trajectories = 0  # trajectories (chunks) accepted, over all episodes
        self.render_s: list[float] = []  # per frame (all cameras), the last ~300
        self._next_frame = self._next_joints = 0
        self._anchor: tuple[float, int] | None = None  # (wall s, sim ns) for realtime
        self._last_cmd_sim = 0  # lead gate: sim time of the last command received
        self._chunk_end = 0  # chunk gate: end of the newest trajectory (or the reset time)
        self._last_clock = -1  # newest time given to sink.clock
        self._last_cmd_stamp = -1  # frame gate: newest command stamp
        self._waiting_frame = -1  # frame gate: stamp of the frame awaiting an answer
        self._wait_since: float | None = None
        self.worker: RenderWorker | None = None
        self._frame_owed = False  # render thread: a due frame waits for the worker
        self.frames_lost = 0  # render thread: frames dropped because it was still busy
        self._frame_sink: Sink | None = None  # where the render thread delivers frames
        if config.render_thread and config.mode == "realtime":
            self.worker = RenderWorker(env.scene, self._deliver)

    def _deliver(self, stamp_ns: int, images: dict[str, np.ndarray]) -> None:
        if self._frame_sink is not None:
            self._frame_sink.frame(stamp_ns, images)

    @property
    def frames_skipped(self) -> int:
        """Frames lost because the render thread was still busy (see ``_frame_to_worker``)."""
        return self.frames_lost

    @property
    def render_times(self) -> list[float]:
        """Seconds per frame set (all cameras), the last ~300."""
        return self.worker.render_s if self.worker is not None else self.render_s

    def close(self) -> None:
        """Stop the render thread (if any) and free the GL contexts."""
        if self.worker is not None:
            self.worker.close()
        self.env.scene.close()

    # -- inputs ---------------------------------------------------------------------------
    def reset(self, seed: int | None, sink: Sink) -> EpisodeStatus:
        """New episode; publishes its first state and frame at once (stamp = reset time)."""
        self.follower.clear()
        status = self.env.reset(seed)
        now = self.env.time_ns
        self._next_frame = self._next_joints = now
        self._anchor = None
        self._last_cmd_sim, self._waiting_frame, self._wait_since = now, -1, None
        self._chunk_end = now
        sink.status(status)
        self._publish_due(sink)
        return status

    def command_positions(self, q: np.ndarray, stamp_ns: int) -> None:
        """Per-step position targets (M,) in action order; cancels any trajectory."""
        self.env.scene.set_joint_targets(q)
        self.follower.clear()
        self._note_command(stamp_ns)

    def command_trajectory(self, names: Sequence[str], start_ns: int, times_ns: Sequence[int],
                           positions: Sequence[Sequence[float]]) -> None:
        """Replace the trajectory (see ``TrajectoryFollower.set``); raises on bad input."""
        self.follower.set(names, start_ns, times_ns, positions, self.env.time_ns,
                          self.env.scene.joint_targets())
        self._apply_trajectory()
        self._chunk_end = max(self._chunk_end, self.follower.end_ns)
        self._note_command(start_ns)
        self.trajectories += 1

    def _note_command(self, stamp_ns: int) -> None:
        self._last_cmd_sim = self.env.time_ns
        self._last_cmd_stamp = max(self._last_cmd_stamp, stamp_ns or self.env.time_ns)

    # -- stepping -------------------------------------------------------------------------
    def advance(self, sink: Sink) -> int:
        """Step as far as the mode allows now; returns the number of physics steps taken."""
        cfg, env = self.config, self.env
        wall = self._wall()
        taken = 0
        if cfg.mode == "realtime":
            if self._anchor is None:
                self._anchor = (wall, env.time_ns)
            target = self._anchor[1] + round((wall - self._anchor[0]) * cfg.real_time_factor * NS)
            if target - env.time_ns > cfg.max_lag_s * cfg.real_time_factor * NS:
                self.overruns += 1
                self._anchor = (wall, env.time_ns)
                target = env.time_ns + env.dt_ns
            while env.time_ns + env.dt_ns <= target:
                self.step(sink)
                taken += 1
            return taken
        deadline = wall + cfg.batch_s
        while self._gate_open(sink) and self._wall() < deadline:
            self.step(sink)
            taken += 1
        return taken

    @property
    def waiting(self) -> bool:
        """True while a lock-step gate holds the simulation."""
        cfg, now = self.config, self.env.time_ns
        if cfg.mode != "lockstep":
            return False
        if cfg.gate == "chunk":
            return now >= self._chunk_end + self.lead_ns
        if cfg.gate == "lead":
            return now >= self._last_cmd_sim + self.lead_ns
        return self._waiting_frame >= 0 and self._last_cmd_stamp < self._waiting_frame

    def _gate_open(self, sink: Sink) -> bool:
        if not self.waiting:
            self._wait_since = None
            return True
        now, wall = self.env.time_ns, self._wall()
        if self._wait_since is None:
            self._wait_since = wall
            if self._last_clock < now:  # timers on /clock up to now can fire while we wait
                self._last_clock = now
                sink.clock(now)
        timeout = self.config.timeout_s
        if timeout > 0 and wall - self._wait_since >= timeout:
            self.gate_timeouts += 1
            self._wait_since = None
            self._last_cmd_sim, self._chunk_end, self._waiting_frame = now, now, -1
            return True
        return False

    def _apply_trajectory(self) -> None:
        q = self.follower.sample(self.env.time_ns)
        if q is not None:
            self.env.scene.set_joint_targets(q)

    def step(self, sink: Sink) -> None:
        """One physics step (trajectory sampled first), then whatever publication is due."""
        self._apply_trajectory()
        was_done = self.env.status.done
        self.env.step(1)
        self.steps += 1
        self._publish_due(sink)
        if self.env.status.done and not was_done:
            sink.status(self.env.status)

    def _publish_due(self, sink: Sink) -> None:
        now, scene = self.env.time_ns, self.env.scene
        joints_due, frame_due = now >= self._next_joints, now >= self._next_frame
        late = self._frame_owed and self.worker is not None and not self.worker.busy
        if not (joints_due or frame_due or late):
            return
        self._last_clock = now
        sink.clock(now)
        if joints_due:
            self._next_joints += self.joint_period_ns * (
                (now - self._next_joints) // self.joint_period_ns + 1)
            sink.joints(now, scene.joint_positions(), scene.joint_velocities(),
                        scene.joint_efforts())
        if self.worker is not None:
            self._frame_to_worker(sink, now, frame_due)
        elif frame_due:
            self._next_frame += self.camera_period_ns * (
                (now - self._next_frame) // self.camera_period_ns + 1)
            start = time.perf_counter()
            images = scene.render_all()
            self.render_s = [*self.render_s[-299:], time.perf_counter() - start]
            self.frames += 1
            if self.config.gate == "frame":
                self._waiting_frame = now
            sink.frame(now, images)

    def _frame_to_worker(self, sink: Sink, now: int, due: bool) -> None:
        """Render thread: a due frame goes to the worker; one due while it still renders is
        owed and taken at the first step it is free (stamped then; the next one is due a
        period later); a frame due while one is already owed replaces it (one frame lost)."""
        assert self.worker is not None
        if due:
            self._next_frame += self.camera_period_ns * (
                (now - self._next_frame) // self.camera_period_ns + 1)
            if self.worker.busy:
                self.frames_lost += self._frame_owed
                self._frame_owed = True
                return
        elif not self._frame_owed or self.worker.busy:
            return
        else:  # the owed frame, late: keep at least a period to the next
            self._next_frame = now + self.camera_period_ns
        self._frame_sink = sink
        self._frame_owed = False
        if self.worker.submit(now):
            self.frames += 1
