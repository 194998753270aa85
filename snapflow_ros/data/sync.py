"""Plan one bag's frames from its streams: which message fills each feature of each frame, why a
slot was dropped, and how the kept frames split into episodes (the rules are in ``align``).

A frame's time is its reference message's stamp, or the slot's own time where an older
reference image is reused at a gap (so state and action still advance with the timestamp).
Joint features are assembled *by joint*: each joint's value is the latest one at or before the
frame from any message on the topic (split arm/gripper drivers, partial messages), within the
feature's freshness window. A frame is dropped (reason) when a feature has no message at or
before it (``missing:<key>``), only an older one (``stale:<key>``), or its latest message is
bad (``bad:<key>``); when only some joints fail, the reason names the first:
``missing:observation.state[elbow]``.

Freshness windows: ``--max-age-for`` per feature, else ``--max-age``, else measured per bag:
1.5 × the topic's median interval (per joint for joint features), at least 2/fps.

Episodes: the whole bag, or the intervals between start/stop markers (``--episode-topic``).
Inside either, a dropped slot ends the episode and the next kept slot starts a new one, so
every LeRobot episode is gap-free; pieces shorter than ``min_frames`` are ``short_episode``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snapflow_ros.data.align import (
    MISSING,
    OK,
    STALE,
    age_stats,
    as_of,
    episode_intervals,
    interval_stats,
    median_interval,
    reference_frames,
    runs,
)
from snapflow_ros.data.streams import EPISODE_KEY, TASK_KEY, Stream

NO_REFERENCE = "no_reference"
OUTSIDE_EPISODE = "outside_episode"
SHORT_EPISODE = "short_episode"
BAD = 3  # status code beside align's OK / MISSING / STALE
CODES = {MISSING: "missing", STALE: "stale", BAD: "bad"}
AGE_FACTOR = 1.5
"""Measured freshness window: this many median intervals of the topic (at least 2/fps)."""


@dataclass
class SyncOptions:
    """Timing rules of one conversion (times in seconds)."""

    fps: float
    reference: str
    """Feature key of the stream that drives frames (a camera's ``observation.images.<name>``)."""
    max_age: dict[str, float]
    """Freshness windows given per feature key (``--max-age-for``)."""
    default_age: float | None = None
    """``--max-age`` for every other feature; None: measured per bag (``measured_ages``)."""
    min_frames: int = 1

    def age_ns(self, key: str, measured: dict[str, float] | None = None) -> float:
        return self.ages_s(measured or {}).get(key, 2.0 / self.fps) * 1e9

    def ages_s(self, measured: dict[str, float]) -> dict[str, float]:
        """Every feature's window (s): given, else ``--max-age``, else ``measured``."""
        base = {k: self.default_age if self.default_age is not None else v
                for k, v in measured.items()}
        return {**base, **self.max_age}


def measured_ages(streams: dict[str, Stream], keys: list[str], fps: float) -> dict[str, float]:
    """Per feature: ``AGE_FACTOR`` × its median message interval (per joint for joint
    features: the slowest joint's), at least 2/fps; 2/fps below two messages."""
    out = {}
    for key in keys:
        s = streams[key]
        if s.present is not None:
            gaps = [median_interval(s.stamps[s.present[:, j]]) for j in range(s.present.shape[1])]
            gap = max((g for g in gaps if np.isfinite(g)), default=float("nan"))
        else:
            gap = median_interval(s.stamps)
        out[key] = max(2.0 / fps, AGE_FACTOR * gap / 1e9) if np.isfinite(gap) else 2.0 / fps
    return out


@dataclass
class BagPlan:
    """What to write for one bag: per-slot sample indices into each stream and the episodes."""

    slots: int
    frame_ns: np.ndarray
    """(S,) time of each slot's frame (module docstring), -1 where none."""
    samples: dict[str, np.ndarray]
    """Feature key → (S,) index into that stream's sorted messages ((S, D) per joint)."""
    reasons: list[str | None]
    """Per slot: None (written) or why it was dropped."""
    episodes: list[tuple[int, int]]
    """Slot ranges ``[start, stop)`` written as LeRobot episodes."""
    tasks: list[str | None]
    """Per slot: the task text from a task topic (None: use the bag's task)."""
    ages: dict[str, float] = field(default_factory=dict)
    """Freshness window (s) used per feature."""
    repeated: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return sum(b - a for a, b in self.episodes)

    @property
    def drop_counts(self) -> Counter[str]:
        return Counter(r for r in self.reasons if r is not None)


def _sample(stream: Stream, frame_ns: np.ndarray, age_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """``(index, status)`` of each frame's message; (S, D) per joint for joint features."""
    if stream.present is None:
        idx, status = as_of(stream.stamps, frame_ns, age_ns)
        if stream.bad is not None and stream.bad.size:
            status[(status == OK) & stream.bad[np.maximum(idx, 0)]] = BAD
        return idx, status
    n, d = frame_ns.size, stream.present.shape[1]
    index = np.full((n, d), -1, dtype=np.int64)
    status = np.full((n, d), MISSING, dtype=np.int8)
    for j in range(d):
        rows = np.flatnonzero(stream.present[:, j])
        if rows.size == 0:
            continue
        idx, st = as_of(stream.stamps[rows], frame_ns, age_ns)
        has = idx >= 0
        index[has, j] = rows[idx[has]]
        st[(st == OK) & stream.bad[np.maximum(index[:, j], 0), j]] = BAD
        status[:, j] = st
    return index, status


def _reasons(key: str, status: np.ndarray, joints: tuple[str, ...]) -> list[str | None]:
    if status.ndim == 1:
        return [None if s == OK else f"{CODES[int(s)]}:{key}" for s in status.tolist()]
    out: list[str | None] = []
    for row in status.tolist():
        failing = [(c, j) for c, j in zip(row, joints, strict=True) if c != OK]
        if not failing:
            out.append(None)
        elif len(failing) == len(joints) and len({c for c, _ in failing}) == 1:
            out.append(f"{CODES[failing[0][0]]}:{key}")
        else:
            out.append(f"{CODES[failing[0][0]]}:{key}[{failing[0][1]}]")
    return out


def plan_bag(streams: dict[str, Stream], opts: SyncOptions, feature_keys: list[str],
             fallback_task: str | None) -> BagPlan:
    """Slots from the reference stream; every feature of ``feature_keys`` sampled as of each
    frame; task (if streamed) as of each frame with no age limit, else ``fallback_task``."""
    ages = opts.ages_s(measured_ages(streams, feature_keys, opts.fps))
    period = 1e9 / opts.fps
    ref = streams[opts.reference]
    frames = reference_frames(ref.stamps, period, ages[opts.reference] * 1e9)
    n = frames.slot.size
    frame_ns = np.where(frames.repeated, frames.slot,
                        np.where(frames.has_frame, ref.stamps[np.maximum(frames.index, 0)], -1))
    reasons: list[str | None] = [None] * n
    samples = {opts.reference: frames.index}

    def drop(why: list[str | None] | np.ndarray, reason: str = "") -> None:
        for i, r in enumerate(why.tolist() if isinstance(why, np.ndarray) else why):
            if reasons[i] is None and r:
                reasons[i] = reason or r

    if EPISODE_KEY in streams:
        marks = streams[EPISODE_KEY]
        end = int(max(ref.stamps[-1] if ref.stamps.size else 0, frames.slot[-1] if n else 0)) + 1
        intervals, ignored = episode_intervals(marks.stamps, marks.values, end)
        if ignored:
            marks.notes.append(f"{ignored} stop marker(s) without an open episode ignored")
    else:
        intervals = [(int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max))]
    episode_id = np.full(n, -1, dtype=np.int64)
    for e, (a, b) in enumerate(intervals):
        episode_id[(frame_ns >= a) & (frame_ns < b) & frames.has_frame] = e
    drop(~frames.has_frame, NO_REFERENCE)
    drop(episode_id < 0, OUTSIDE_EPISODE)
    if ref.bad is not None:
        drop(frames.has_frame & ref.bad[np.maximum(frames.index, 0)], f"bad:{opts.reference}")
    for key in feature_keys:
        if key == opts.reference:
            continue
        samples[key], status = _sample(streams[key], frame_ns, ages[key] * 1e9)
        drop(_reasons(key, status, streams[key].spec.joints))

    tasks: list[str | None] = [None] * n
    if TASK_KEY in streams:
        task = streams[TASK_KEY]
        idx, status = as_of(task.stamps, frame_ns, np.inf)
        samples[TASK_KEY] = idx
        for i in range(n):
            tasks[i] = task.values[idx[i]] if status[i] == OK else fallback_task
        drop(np.array([not t for t in tasks], dtype=bool), "missing:task")

    episodes: list[tuple[int, int]] = []
    valid = np.array([r is None for r in reasons], dtype=bool)
    for e in range(len(intervals)):
        for a, b in runs(valid & (episode_id == e)):
            if b - a >= opts.min_frames:
                episodes.append((a, b))
            else:
                for i in range(a, b):
                    reasons[i] = SHORT_EPISODE
    plan = BagPlan(slots=n, frame_ns=frame_ns, samples=samples, reasons=reasons,
                   episodes=episodes, tasks=tasks, ages=ages,
                   repeated=int(frames.repeated.sum()))
    plan.stats = _stats(plan, streams, feature_keys, opts)
    return plan


def _sample_ages(plan: BagPlan, stream: Stream, key: str, kept: np.ndarray) -> np.ndarray:
    idx = plan.samples[key][kept]
    if idx.ndim == 1:
        return plan.frame_ns[kept] - stream.stamps[idx]
    return (plan.frame_ns[kept][:, None] - stream.stamps[idx]).max(axis=1) if idx.size \
        else np.zeros(0)


def _stats(plan: BagPlan, streams: dict[str, Stream], keys: list[str],
           opts: SyncOptions) -> dict[str, Any]:
    kept = np.zeros(plan.slots, dtype=bool)
    for a, b in plan.episodes:
        kept[a:b] = True
    ages = {key: age_stats(_sample_ages(plan, streams[key], key, kept)) for key in keys}
    intervals = [np.diff(plan.frame_ns[a:b]) for a, b in plan.episodes if b - a > 1]
    dev = (np.concatenate(intervals) - 1e9 / opts.fps) / 1e6 if intervals else np.zeros(0)
    frame_jitter = {"std_ms": float(dev.std()) if dev.size else float("nan"),
                    "max_abs_ms": float(np.abs(dev).max()) if dev.size else float("nan")}
    topics = {}
    for key, s in streams.items():
        topics[key] = {"topic": s.spec.topic, "type": s.msgtype, **interval_stats(s.stamps),
                       "stamps_from_receive_time": s.from_receive, "skipped": s.skipped,
                       "bad_messages": s.bad_messages}
        if s.present is not None and not s.present.all():
            topics[key]["joint_rate_hz"] = {
                j: interval_stats(s.stamps[s.present[:, k]])["rate_hz"]
                for k, j in enumerate(s.spec.joints)}
    return {"sample_age": ages, "frame_interval_deviation": frame_jitter, "topics": topics,
            "faults": {key: list(s.faults) for key, s in streams.items() if s.faults},
            "notes": [f"{s.spec.topic}: {note}" for s in streams.values() for note in s.notes]}
