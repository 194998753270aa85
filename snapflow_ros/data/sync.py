"""Plan one bag's frames from its streams: which message fills each feature of each frame, why a
slot was dropped, and how the kept frames split into episodes (the rules are in ``align``).

Episodes: the whole bag, or the intervals between start/stop markers (``--episode-topic``).
Inside either, a dropped slot ends the episode and the next kept slot starts a new one, so
every LeRobot episode is gap-free (row i is exactly i/fps after row 0, as LeRobot's
``delta_timestamps`` and video frames assume); pieces shorter than ``min_frames`` are dropped
as ``short_episode``.
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
    reference_frames,
    runs,
)
from snapflow_ros.data.streams import EPISODE_KEY, TASK_KEY, Stream

NO_REFERENCE = "no_reference"
OUTSIDE_EPISODE = "outside_episode"
SHORT_EPISODE = "short_episode"


@dataclass
class SyncOptions:
    """Timing rules of one conversion (times in seconds)."""

    fps: float
    reference: str
    """Feature key of the stream that drives frames (a camera's ``observation.images.<name>``)."""
    max_age: dict[str, float]
    """Freshness window per feature key (the reference's too); keys absent use ``default_age``."""
    default_age: float
    min_frames: int = 1

    def age_ns(self, key: str) -> float:
        return self.max_age.get(key, self.default_age) * 1e9


@dataclass
class BagPlan:
    """What to write for one bag: per-slot sample indices into each stream and the episodes."""

    slots: int
    frame_ns: np.ndarray
    """(S,) stamp of each slot's frame (its reference message), -1 where none."""
    samples: dict[str, np.ndarray]
    """Feature key → (S,) index into that stream's sorted messages."""
    reasons: list[str | None]
    """Per slot: None (written) or why it was dropped."""
    episodes: list[tuple[int, int]]
    """Slot ranges ``[start, stop)`` written as LeRobot episodes."""
    tasks: list[str | None]
    """Per slot: the task text from a task topic (None: use the bag's task)."""
    repeated: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return sum(b - a for a, b in self.episodes)

    @property
    def drop_counts(self) -> Counter[str]:
        return Counter(r for r in self.reasons if r is not None)


def plan_bag(streams: dict[str, Stream], opts: SyncOptions, feature_keys: list[str],
             fallback_task: str | None) -> BagPlan:
    """Slots from the reference stream; every feature of ``feature_keys`` sampled as of each
    frame; task (if streamed) as of each frame with no age limit, else ``fallback_task``."""
    period = 1e9 / opts.fps
    ref = streams[opts.reference]
    frames = reference_frames(ref.stamps, period, opts.age_ns(opts.reference))
    n = frames.slot.size
    frame_ns = np.where(frames.has_frame, ref.stamps[np.maximum(frames.index, 0)], -1)
    reasons: list[str | None] = [None] * n
    samples = {opts.reference: frames.index}

    def drop(mask: np.ndarray, reason: str) -> None:
        for i in np.flatnonzero(mask).tolist():
            if reasons[i] is None:
                reasons[i] = reason

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

    for key in feature_keys:
        if key == opts.reference:
            continue
        idx, status = as_of(streams[key].stamps, frame_ns, opts.age_ns(key))
        samples[key] = idx
        drop(status == MISSING, f"missing:{key}")
        drop(status == STALE, f"stale:{key}")

    tasks: list[str | None] = [None] * n
    if TASK_KEY in streams:
        task = streams[TASK_KEY]
        idx, status = as_of(task.stamps, frame_ns, np.inf)
        samples[TASK_KEY] = idx
        for i in range(n):
            tasks[i] = task.values[idx[i]] if status[i] == OK else fallback_task
        drop(np.array([t is None or t == "" for t in tasks], dtype=bool), "missing:task")

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
                   episodes=episodes, tasks=tasks, repeated=int(frames.repeated.sum()))
    plan.stats = _stats(plan, streams, feature_keys, opts)
    return plan


def _stats(plan: BagPlan, streams: dict[str, Stream], keys: list[str],
           opts: SyncOptions) -> dict[str, Any]:
    kept = np.zeros(plan.slots, dtype=bool)
    for a, b in plan.episodes:
        kept[a:b] = True
    ages = {}
    for key in keys:
        idx = plan.samples[key][kept]
        ages[key] = age_stats(plan.frame_ns[kept] - streams[key].stamps[idx]) if idx.size \
            else age_stats(np.zeros(0))
    intervals = [np.diff(plan.frame_ns[a:b]) for a, b in plan.episodes if b - a > 1]
    dev = (np.concatenate(intervals) - 1e9 / opts.fps) / 1e6 if intervals else np.zeros(0)
    frame_jitter = {"std_ms": float(dev.std()) if dev.size else float("nan"),
                    "max_abs_ms": float(np.abs(dev).max()) if dev.size else float("nan")}
    topics = {}
    for key, s in streams.items():
        topics[key] = {"topic": s.spec.topic, "type": s.msgtype, **interval_stats(s.stamps),
                       "stamps_from_receive_time": s.from_receive, "skipped": s.skipped}
    return {"sample_age": ages, "frame_interval_deviation": frame_jitter, "topics": topics,
            "notes": [f"{s.spec.topic}: {note}" for s in streams.values() for note in s.notes]}
