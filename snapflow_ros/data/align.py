"""As-of sampling on stamp arrays: pure numpy, all times int64 nanoseconds.

The converter's timing rules, kept free of bags and messages so they are testable on
synthetic stamps:

- **Frames** come from a reference stream resampled at ``fps``: nominal slots
  ``t0 + k·period`` (``t0``: the first reference stamp, moved by the mean phase of the first 31
  stamps, ``slot_phase``). Each message belongs to its nearest slot and each slot takes the
  nearest of its messages, so a message drives at most one slot. A slot with no message reuses
  the latest reference message at or before the slot if that is at most ``max_age`` old
  (``repeated``); otherwise the slot has no frame.
- **Every other feature** is sampled *as of* the frame's stamp (the chosen reference message's
  stamp): the latest message at or before it, never one after it, and only if it is at most
  ``max_age`` older than the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OK, MISSING, STALE = 0, 1, 2
"""``as_of`` status codes: sampled / no message at or before the query / older than max_age."""
PHASE_MESSAGES = 31


def _sorted_stamps(stamps: np.ndarray, what: str) -> np.ndarray:
    stamps = np.asarray(stamps, dtype=np.int64)
    if stamps.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D stamp array, got shape {stamps.shape}")
    if stamps.size > 1 and np.any(np.diff(stamps) < 0):
        raise ValueError(f"{what}: stamps must be sorted ascending (sort them with their values)")
    return stamps


def as_of(stamps: np.ndarray, query: np.ndarray,
          max_age: int | float) -> tuple[np.ndarray, np.ndarray]:
    """For each query time, the index of the latest stamp ``<= query`` and a status code.

    Args:
        stamps: (N,) sorted stamps of one stream.
        query: (Q,) query times (any order).
        max_age: largest allowed ``query − stamp`` (ns); ``inf`` for no limit.

    Returns:
        ``index`` (Q,) int64, -1 where there is no stamp at or before the query, and
        ``status`` (Q,) int8: ``OK``, ``MISSING`` or ``STALE`` (index still set).
    """
    stamps = _sorted_stamps(stamps, "as_of")
    query = np.asarray(query, dtype=np.int64)
    index = np.searchsorted(stamps, query, side="right").astype(np.int64) - 1
    status = np.full(query.shape, OK, dtype=np.int8)
    missing = index < 0
    status[missing] = MISSING
    age = query - stamps[np.maximum(index, 0)] if stamps.size else np.zeros_like(query)
    status[~missing & (age > max_age)] = STALE
    return index, status


@dataclass(frozen=True)
class ReferenceFrames:
    """The frame slots of one bag: (S,) arrays, one entry per nominal slot."""

    slot: np.ndarray
    """Nominal slot times ``t0 + round(k·period)``."""
    index: np.ndarray
    """Index into the reference stamps of the message that drives the slot, -1 for none."""
    repeated: np.ndarray
    """True where no reference message was within half a period and an older one was reused."""

    @property
    def has_frame(self) -> np.ndarray:
        return self.index >= 0


def slot_phase(stamps: np.ndarray, period: float, first: int = PHASE_MESSAGES) -> int:
    """Offset (ns, within ±period/2) of the slot grid from the first stamp: the circular mean
    phase of the first ``first`` stamps, so one early or late first message does not shift
    every slot; 0 when the phases are spread out (mean resultant length < 0.3)."""
    angle = 2 * np.pi * ((stamps[:first] - stamps[0]) % period) / period
    x, y = np.cos(angle).mean(), np.sin(angle).mean()
    if np.hypot(x, y) < 0.3:  # phases spread out (a reference faster than fps): no phase
        return 0
    return int(np.round(np.arctan2(y, x) / (2 * np.pi) * period))


def reference_frames(stamps: np.ndarray, period: float, max_age: int | float) -> ReferenceFrames:
    """Resample a sorted reference stream onto slots one ``period`` (ns) apart (module rules)."""
    stamps = _sorted_stamps(stamps, "reference_frames")
    if period <= 0:
        raise ValueError(f"period must be > 0 ns, got {period}")
    if stamps.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ReferenceFrames(empty, empty.copy(), np.zeros(0, dtype=bool))
    t0 = stamps[0] + slot_phase(stamps, period)
    n_slots = int(np.floor((stamps[-1] - t0) / period + 0.5)) + 1
    slot = t0 + np.round(np.arange(n_slots) * period).astype(np.int64)
    # each message belongs to its nearest slot; each slot takes its nearest message
    k = np.clip(np.floor((stamps - t0) / period + 0.5).astype(np.int64), 0, n_slots - 1)
    dist = np.abs(stamps - slot[np.minimum(k, n_slots - 1)])
    order = np.lexsort((dist, k))
    first = np.ones(order.size, dtype=bool)
    first[1:] = k[order][1:] != k[order][:-1]
    best = np.full(n_slots, -1, dtype=np.int64)
    best[k[order][first]] = order[first]
    fallback, status = as_of(stamps, slot, max_age)
    repeated = (best < 0) & (status == OK)
    best[repeated] = fallback[repeated]
    return ReferenceFrames(slot=slot, index=best, repeated=repeated)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of consecutive True values."""
    mask = np.asarray(mask, dtype=bool)
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(),
                    strict=True))


def episode_intervals(
    events: np.ndarray, is_start: np.ndarray, end: int
) -> tuple[list[tuple[int, int]], int]:
    """Episodes ``[start, stop)`` from start/stop marker events sorted by time.

    A start opens an episode (a start while one is open ends it there and opens the next); a
    stop closes it; an episode still open at the end closes at ``end``. Stops with no open
    episode are ignored. Returns the intervals and the number of ignored events.
    """
    events = _sorted_stamps(events, "episode markers")
    intervals: list[tuple[int, int]] = []
    opened: int | None = None
    ignored = 0
    starts = np.asarray(is_start, dtype=bool).tolist()
    for stamp, start in zip(events.tolist(), starts, strict=True):
        if start:
            if opened is not None:
                intervals.append((opened, stamp))
            opened = stamp
        elif opened is not None:
            intervals.append((opened, stamp))
            opened = None
        else:
            ignored += 1
    if opened is not None:
        intervals.append((opened, max(int(end), opened + 1)))
    return [(a, b) for a, b in intervals if b > a], ignored


def receive_offset(header: np.ndarray, receive: np.ndarray) -> int:
    """Median ``receive − header`` (ns) over messages with a header stamp (> 0); 0 if none.

    Places header-less messages (markers, task strings, Float64MultiArray actions) on the
    header clock: ``stamp = receive − offset``. Works for sim time as for wall time.
    """
    header = np.asarray(header, dtype=np.int64)
    receive = np.asarray(receive, dtype=np.int64)
    valid = header > 0
    return int(np.median(receive[valid] - header[valid])) if valid.any() else 0


def interval_stats(stamps: np.ndarray) -> dict[str, float]:
    """Rate and jitter of one stream: messages, rate_hz (messages per second between the first
    and last stamp), interval mean, std (jitter) and max gap in ms. NaN below two stamps."""
    stamps = np.sort(np.asarray(stamps, dtype=np.int64))
    out = {"messages": float(stamps.size), "rate_hz": float("nan"), "interval_ms": float("nan"),
           "jitter_ms": float("nan"), "max_gap_ms": float("nan")}
    if stamps.size >= 2:
        d = np.diff(stamps) / 1e6
        span = float(d.sum())
        out.update(rate_hz=1e3 * d.size / span if span > 0 else float("inf"),
                   interval_ms=float(d.mean()),
                   jitter_ms=float(d.std()), max_gap_ms=float(d.max()))
    return out


def median_interval(stamps: np.ndarray) -> float:
    """Median interval (ns) between consecutive distinct stamps; NaN below two."""
    stamps = np.unique(np.asarray(stamps, dtype=np.int64))
    return float(np.median(np.diff(stamps))) if stamps.size >= 2 else float("nan")


def age_stats(ages: np.ndarray) -> dict[str, float]:
    """Sample ages (ns) → mean / p95 / max in ms (NaN when empty)."""
    ages = np.asarray(ages, dtype=np.float64) / 1e6
    if ages.size == 0:
        return {"mean_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan")}
    return {"mean_ms": float(ages.mean()), "p95_ms": float(np.percentile(ages, 95)),
            "max_ms": float(ages.max())}
