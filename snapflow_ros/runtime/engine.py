"""The policy node's control logic without ROS or torch: sync → infer → gate → schedule.

``ChunkEngine`` is driven by two loops with an injected clock (integer ns):

* the **control loop** calls ``tick(now)`` at control rate: the command for now (through the
  one ``CommandGate``, see runtime/safety.py) or None (hold: command nothing new);
* the **inference loop** calls ``infer(now_fn, decode, predict)`` when ``tick`` asked for a
  chunk: a consistent observation snapshot is decoded (messages → numpy, by the caller), checked
  (finite, within bounds), the policy predicts a chunk, the chunk is limited by the gate's rules
  from where the robot is, and the scheduler adopts it.

Anything wrong (missing, stale, future or unsynchronised input, a bad message, NaN, a reading
far outside the limits, an arm the gate cannot start from) is a *hold* with a reason; counters
and latency statistics feed ``/diagnostics``. ``activate``/``deactivate``, a dry-run toggle and
a backwards clock jump make the next command start from the measured position, and a result of
an inference started before them is dropped. ``reconfigure`` swaps validated settings at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from snapflow_ros.runtime.chunking import ActionChunk, ChunkScheduler
from snapflow_ros.runtime.holds import Hold, HoldKind
from snapflow_ros.runtime.observation import ObservationBuffer, Snapshot
from snapflow_ros.runtime.safety import CommandGate, Refusal, SafetyLimits, finite
from snapflow_ros.timing import RollingStats, StageTimer


class BadInput(ValueError):
    """Raised by a decode function for a message that cannot be used (the reason is shown)."""


@dataclass(frozen=True)
class Decoded:
    """A decoded observation: images by camera, state (S,), measured action joints (A,) or None."""

    images: dict[str, np.ndarray]
    state: np.ndarray
    measured_action: np.ndarray | None


@dataclass(frozen=True)
class ChunkResult:
    """A chunk that was adopted: (H, A) gated targets, its obs stamp, steps already past, and
    whether it was made in dry run (then it goes to the debug topic, whatever comes later)."""

    stamp_ns: int
    positions: np.ndarray
    skipped: int
    dry_run: bool = False


@dataclass(frozen=True)
class Tick:
    """One control period: the command (None: send nothing), whether a chunk is wanted, and
    whether the command is a dry-run one (decided with the command, under the same lock)."""

    command: np.ndarray | None
    want_chunk: bool
    dry_run: bool = False


@dataclass(frozen=True)
class EngineSettings:
    """Everything tunable at run time, validated as a whole (a bad value raises ValueError)."""

    limits: SafetyLimits
    max_age_ns: int
    max_skew_ns: int
    future_tolerance_ns: int
    n_action_steps: int
    replan_lead_steps: int = 0  # 0: auto, from the measured inference latency
    blend_steps: int = 0
    max_abs_state: float = 1e4
    # past n_action_steps while the next chunk is late (not while holding); -1: n_action_steps
    overrun_steps: int = -1

    def __post_init__(self) -> None:
        if self.overrun_steps < -1:
            raise ValueError(f"overrun_steps must be >= -1 (-1: as many as n_action_steps), "
                             f"got {self.overrun_steps}")
        ChunkScheduler.check(1, self.n_action_steps, self.blend_steps, self.replan_lead_steps,
                             self.overrun_steps_resolved)
        if self.max_age_ns <= 0 or self.max_skew_ns <= 0 or self.future_tolerance_ns < 0:
            raise ValueError(f"max_obs_age_s and max_obs_skew_s must be > 0 and "
                             f"future_tolerance_s >= 0, got {self.max_age_ns / 1e9}, "
                             f"{self.max_skew_ns / 1e9}, {self.future_tolerance_ns / 1e9}")
        if not np.isfinite(self.max_abs_state) or self.max_abs_state <= 0:
            raise ValueError(f"max_abs_state={self.max_abs_state} must be finite and > 0")

    @property
    def overrun_steps_resolved(self) -> int:
        return self.n_action_steps if self.overrun_steps < 0 else self.overrun_steps


Decode = Callable[[Snapshot], Decoded]
Send = Callable[[np.ndarray, bool], None]
Predict = Callable[[Decoded, StageTimer], np.ndarray]
Measure = Callable[[Any], "np.ndarray | None"]


class ChunkEngine:
    """See module docstring. Thread-safe between one control, one inference and one
    configuration thread."""

    def __init__(self, inputs: Sequence[str], dt_ns: int, settings: EngineSettings,
                 measure: Measure, joints: str = "joint_states",
                 wall_ns: Callable[[], int] = time.perf_counter_ns) -> None:
        if joints not in inputs:
            raise ValueError(f"the joint input {joints!r} is not among the inputs {inputs}")
        self.buffer = ObservationBuffer(inputs, settings.max_age_ns, settings.max_skew_ns,
                                        settings.future_tolerance_ns)
        self.scheduler = ChunkScheduler(dt_ns, settings.n_action_steps,
                                        blend_steps=settings.blend_steps,
                                        replan_lead_steps=self._lead(settings),
                                        overrun_steps=settings.overrun_steps_resolved)
        self.gate = CommandGate(settings.limits)
        self.settings = settings
        self._measure, self._joints = measure, joints
        self._wall_ns = wall_ns  # latency of our own work (ROS time may be paused sim time)
        self.stats = RollingStats()
        self.counters: Counter[str] = Counter()
        self.last_hold: Hold | None = None  # why the last inference made no chunk
        self.command_hold: Hold | None = None  # why the last tick sent no command
        self._lock = threading.Lock()
        self._epoch = 0  # bumped by every reset: older inferences are dropped
        self._dry_run = False
        self._last_tick_ns: int | None = None
        self._failed_key: tuple | None = None  # the inputs whose decode failed
        self._cameras = [n for n in inputs if n != joints]
        self.want_soon = False  # a chunk is due within about one camera frame
        # a next chunk is coming: the last inference made one, none held or failed since
        self._flowing = False

    # -- configuration (any thread) -------------------------------------------------------

    def reconfigure(self, settings: EngineSettings) -> None:
        """Apply validated settings at once. The gate keeps its reference: the next command
        is within the step limit of the last one sent, inside the new limits, or not sent."""
        with self._lock:
            self.buffer.set_limits(settings.max_age_ns, settings.max_skew_ns,
                                   settings.future_tolerance_ns)
            self.scheduler.configure(settings.n_action_steps, settings.blend_steps,
                                     self._lead(settings), settings.overrun_steps_resolved)
            self.gate.limits = settings.limits
            self.settings = settings

    def set_dry_run(self, dry_run: bool) -> None:
        """Commands go elsewhere now: the next one starts from the measured position."""
        with self._lock:
            if dry_run != self._dry_run:
                self._dry_run = dry_run
                self.gate.forget()

    def reset(self, clear_inputs: bool = True) -> None:
        """Forget chunks, the command reference and (optionally) inputs; drop inferences in
        flight (activation, deactivation, a backwards clock jump)."""
        with self._lock:
            self._epoch += 1
            self._flowing = False
            self.scheduler.clear()
            self.gate.forget()
            self._last_tick_ns = None
            self._failed_key = None
        if clear_inputs:
            self.buffer.clear()

    def _lead(self, settings: EngineSettings) -> int:
        """Executable steps left when the next chunk is requested: the setting, or (auto) the
        p90 of request → adoption latency plus one period, between 1 and n_action_steps - 1."""
        if settings.replan_lead_steps:
            return settings.replan_lead_steps
        dt = self.scheduler.dt_ns if hasattr(self, "scheduler") else None
        latency = self.stats.percentile("request_to_chunk", 90) if dt else None
        steps = 2 if latency is None else int(np.ceil(latency * 1e6 / dt)) + 1
        return int(min(max(steps, 1), max(settings.n_action_steps - 1, 1)))

    def wants_chunk(self, now_ns: int) -> bool:
        """Whether a new chunk is needed now (none yet, or the current one runs out soon)."""
        with self._lock:
            return self.scheduler.needs_chunk(now_ns)

    def frame_ready(self) -> bool:
        """After a camera frame is stored: start inference now? Yes when a chunk is due within
        about one frame and every camera has a frame of (nearly) the same stamp — so the chunk
        is made from the freshest frames instead of up to one frame period old ones."""
        if not self.want_soon:
            return False
        stamps = []
        for name in self._cameras:
            latest = self.buffer.latest(name)
            if latest is None:
                return False
            stamps.append(latest.stamp_ns)
        return max(stamps) - min(stamps) <= self.scheduler.dt_ns // 2

    # -- control loop -------------------------------------------------------------------------

    def tick(self, now_ns: int, send: Send | None = None) -> Tick:
        """The command for now (or None: hold) and whether a new chunk is wanted.

        ``send(command, dry_run)``, if given, is called under the engine's lock: no parameter
        change or reset can fall between the gate's decision and the command leaving."""
        last = self._last_tick_ns
        if last is not None and now_ns < last:
            self.counters["clock_jumps_back"] += 1
            self.reset(clear_inputs=True)
            self._set_command_hold(Hold(HoldKind.CLOCK, "the clock jumped back: chunks and inputs "
                                                        "dropped, waiting for new inputs"))
            self._last_tick_ns = now_ns
            return Tick(None, True, self._dry_run)
        with self._lock:
            self._last_tick_ns = now_ns
            target = self.scheduler.command(now_ns, overrun=self._flowing)
            want = self.scheduler.needs_chunk(now_ns)
            frame_steps = -(-self.buffer.interval_ns(self._cameras[0]) // self.scheduler.dt_ns) \
                if self._cameras else 0
            self.want_soon = want or (self.scheduler.remaining(now_ns)
                                      <= self.scheduler.replan_lead_steps + frame_steps)
            if target is None:
                self.gate.forget()
                if self.scheduler.current is not None:
                    self.counters["starved_ticks"] += 1
                self.command_hold = Hold(HoldKind.STARVED, "no chunk to execute (waiting for one)")
                return Tick(None, want, self._dry_run)
            measured = self._measured(now_ns) if self.gate.needs_measured else None
            result = self.gate.command(target, None if isinstance(measured, Hold) else measured)
            if isinstance(result, Refusal):
                reason = measured.reason if isinstance(measured, Hold) else result.reason
                self.command_hold = Hold(result.kind, reason)
                self.counters[f"refused_{result.kind}"] += 1
                return Tick(None, want, self._dry_run)
            self.command_hold = None
            self.counters["commands"] += 1
            if self.scheduler.overrunning(now_ns):
                self.counters["overrun_ticks"] += 1
            if send is not None:
                send(result, self._dry_run)
            return Tick(result, want, self._dry_run)

    def _set_command_hold(self, hold: Hold) -> None:
        with self._lock:
            self.command_hold = hold

    def _measured(self, now_ns: int) -> np.ndarray | Hold:
        """The measured action-joint position, if fresh and plausible."""
        latest = self.buffer.latest(self._joints)
        if latest is None:
            return Hold(HoldKind.NO_REFERENCE, "no joint state yet to start commanding from")
        age = now_ns - latest.stamp_ns
        if age > self.settings.max_age_ns or -age > self.settings.future_tolerance_ns:
            return Hold(HoldKind.NO_REFERENCE,
                        f"joint state {age / 1e9:.3f} s old: no fresh measured "
                        f"position to start commanding from")
        try:
            measured = self._measure(latest.msg)
        except BadInput as err:
            return Hold(HoldKind.NO_REFERENCE, f"joint state unusable: {err}")
        if measured is None or not finite(measured):
            return Hold(HoldKind.NO_REFERENCE, "the joint state has no finite position for every "
                                               "action joint: nothing to start commanding from")
        implausible = self._implausible(measured)
        if implausible:
            return Hold(HoldKind.NO_REFERENCE, f"{implausible}: nothing to start commanding from")
        return measured

    def _implausible(self, measured: np.ndarray) -> str:
        """Why a measured action-joint position cannot be real ('' when it can)."""
        bound = self.settings.max_abs_state
        big = np.flatnonzero(np.abs(measured) > bound)
        if big.size:
            i = int(big[0])
            return (f"action joint {i} measured at {measured[i]:g}, beyond max_abs_state="
                    f"{bound:g}: check the joint state publisher (units, joint order)")
        far = self.gate.limits.far_outside(measured)
        if far is not None:
            return (f"action joint {far} measured at {measured[far]:g}, far outside its limits "
                    f"{self.gate.limits.describe(far)}: check the joint state publisher "
                    f"(units, joint order)")
        return ""

    # -- inference loop -------------------------------------------------------------------

    def _hold(self, hold: Hold) -> Hold:
        self._flowing = False  # no chunk is coming: stop at n_action_steps
        self.counters[f"hold_{hold.kind}"] += 1
        self.last_hold = hold
        return hold

    def infer(self, now: Callable[[], int], decode: Decode, predict: Predict,
              timer: StageTimer | None = None,
              publish: Callable[[ChunkResult], None] | None = None) -> ChunkResult | Hold:
        """One inference: snapshot at ``now()``, decode, check, predict, gate, schedule.

        ``publish(result)``, if given, is called under the engine's lock when the chunk is
        adopted, so the published chunk obeys the limits in force when it leaves.

        The snapshot is re-checked every call (hold reasons stay current), but inputs whose
        decode already failed are not decoded again: an idle node does no work at control rate.
        """
        epoch = self._epoch
        start_ns, wall_start = now(), self._wall_ns()
        snap = self.buffer.snapshot(start_ns)
        if isinstance(snap, Hold):
            return self._hold(snap)
        current = self.scheduler.current
        if current is not None and snap.stamp_ns <= current.stamp_ns:
            # nothing newer than what the current chunk was predicted from: not a fault
            self.counters["waits"] += 1
            return Hold(HoldKind.WAITING, "no observation newer than the current chunk's")
        key = tuple(snap.items.values())  # the very messages (a re-sent fix is new)
        failed = self._failed_key
        if failed is not None and self.last_hold is not None and len(key) == len(failed) \
                and all(a is b for a, b in zip(key, failed, strict=True)):
            return self.last_hold
        hold = self._check(snap, decode)
        if isinstance(hold, Hold):
            self._failed_key = key
            return self._hold(hold)
        decoded = hold
        timer = timer or StageTimer()
        try:
            actions = np.asarray(predict(decoded, timer), dtype=np.float64)
        except BaseException:
            self._flowing = False  # a failing model: no chunk is coming
            raise
        if not finite(actions):
            return self._hold(Hold(HoldKind.NAN, "the policy produced NaN or inf actions"))
        with self._lock:
            if epoch != self._epoch:
                return Hold(HoldKind.WAITING, "reset while inferring: result dropped")
            start = (self.gate.reference if self.gate.reference is not None
                     else decoded.measured_action)
            positions = self.gate.trajectory(actions, start)
            if isinstance(positions, Refusal):
                return self._hold(Hold(positions.kind, positions.reason))
            done_ns, dry_run = now(), self._dry_run
            skipped = self.scheduler.push(ActionChunk(snap.stamp_ns, positions), done_ns)
            self.want_soon = False
            self._flowing = skipped is not None
            result = None if skipped is None else ChunkResult(snap.stamp_ns, positions, skipped,
                                                              dry_run)
            if result is not None and publish is not None:
                publish(result)
        if result is None:
            self.counters["late_chunks"] += 1
            return self._hold(Hold(HoldKind.LATE,
                                   "chunk older than the one being executed; dropped"))
        self._record(timer, start_ns, done_ns, snap.stamp_ns, wall_start, skipped)
        return result

    def _check(self, snap: Snapshot, decode: Decode) -> Decoded | Hold:
        try:
            decoded = decode(snap)
        except BadInput as err:
            return Hold(HoldKind.BAD_INPUT, str(err))
        if not finite(decoded.state):
            return Hold(HoldKind.NAN, "NaN or inf in the joint state")
        bound = self.settings.max_abs_state
        big = np.flatnonzero(np.abs(decoded.state) > bound)
        if big.size:
            i = int(big[0])
            return Hold(HoldKind.OUT_OF_BOUND, f"state value {decoded.state[i]:g} at index {i} is "
                                               f"beyond max_abs_state={bound:g}: check the joint "
                                               f"state publisher (units, joint order)")
        measured = decoded.measured_action
        if measured is not None:
            if not finite(measured):
                return Hold(HoldKind.NAN, "NaN or inf in the measured action joints")
            implausible = self._implausible(measured)
            if implausible:
                return Hold(HoldKind.OUT_OF_BOUND, implausible)
        return decoded

    def _record(self, timer: StageTimer, start_ns: int, done_ns: int, stamp_ns: int,
                wall_start: int, skipped: int) -> None:
        wall_ms = (self._wall_ns() - wall_start) / 1e6
        model_ms = sum(timer.total(s) for s in timer.durations) * 1e3
        self.stats.add_timer(timer)
        self.stats.add("model", model_ms)
        self.stats.add("obs_age_at_start", (start_ns - stamp_ns) / 1e6)
        self.stats.add("obs_to_chunk", (done_ns - stamp_ns) / 1e6)
        # what the node adds on top of the model: sync, decoding, IPC, gate, scheduling
        self.stats.add("node_overhead", wall_ms - model_ms)
        self.stats.add("request_to_chunk", wall_ms)
        if not self.settings.replan_lead_steps:
            with self._lock:
                self.scheduler.replan_lead_steps = self._lead(self.settings)
        self.counters["chunks"] += 1
        self.counters["skipped_steps"] += skipped
        self.last_hold = None
        self._failed_key = None

    # -- reporting --------------------------------------------------------------------------

    def hold_reason(self) -> str:
        """Why no new chunk / command flows now ('' while chunks flow)."""
        if self.last_hold is not None:
            return self.last_hold.reason
        hold = self.command_hold
        return "" if hold is None else hold.reason

    def status(self) -> dict[str, Any]:
        """Counters, latency percentiles (ms) and the current hold reason, for diagnostics.

        Latencies per chunk: ``preprocess``/``prefix``/``expert`` (all passes)/``postprocess`` and
        their sum ``model``; ``obs_age_at_start`` (observation stamp → inference start: transport
        and waiting for the control tick); ``node_overhead`` (inference start → chunk scheduled,
        minus the model); ``obs_to_chunk`` (stamp → scheduled).
        """
        values: dict[str, Any] = dict(self.counters)
        for name, pct in self.stats.summary().items():
            for key, value in pct.items():
                values[f"{name}_ms_{key}"] = round(value, 3)
        values["last_hold"] = self.hold_reason()
        return values
