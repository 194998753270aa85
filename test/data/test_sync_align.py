"""align.py on synthetic stamps: as-of sampling, frame resampling with drops and jitter, runs,
episode markers, clock offset, rates."""

from __future__ import annotations

import numpy as np
import pytest

from snapflow_ros.data.align import (
    MISSING,
    OK,
    STALE,
    as_of,
    episode_intervals,
    interval_stats,
    receive_offset,
    reference_frames,
    runs,
)

P = 100.0  # period, ns-like units keep the numbers readable


def test_as_of_takes_the_latest_at_or_before_and_never_a_later_one():
    stamps = np.array([10, 20, 30, 60])
    idx, status = as_of(stamps, np.array([5, 10, 29, 30, 59, 100, 61]), max_age=15)
    assert idx.tolist() == [-1, 0, 1, 2, 2, 3, 3]
    assert status.tolist() == [MISSING, OK, OK, OK, STALE, STALE, OK]
    # property: on random data the chosen stamp is <= query and the next one is > query
    rng = np.random.default_rng(0)
    s = np.sort(rng.integers(0, 10_000, 500))
    q = rng.integers(-100, 10_100, 2000)
    idx, status = as_of(s, q, max_age=np.inf)
    has = idx >= 0
    assert np.all(s[idx[has]] <= q[has])
    nxt = idx[has] + 1
    assert np.all((nxt >= s.size) | (s[np.minimum(nxt, s.size - 1)] > q[has]))
    assert np.all(status[~has] == MISSING) and np.all(q[~has] < s[0])


def test_as_of_rejects_unsorted_stamps():
    with pytest.raises(ValueError, match="sorted"):
        as_of(np.array([3, 1, 2]), np.array([2]), 1)


def test_reference_frames_on_a_clean_stream_use_every_message_once():
    stamps = (1000 + np.arange(20) * P).astype(np.int64)
    rf = reference_frames(stamps, P, max_age=2 * P)
    assert rf.index.tolist() == list(range(20)) and not rf.repeated.any()


def test_reference_frames_with_jitter_drops_and_a_long_gap():
    rng = np.random.default_rng(1)
    nominal = 1000 + np.arange(40) * P
    jitter = rng.uniform(-0.35 * P, 0.35 * P, 40)
    jitter[0] = 0.45 * P  # a late first message must not shift the slot grid
    keep = np.ones(40, bool)
    keep[[5]] = False  # one lost frame: reused (fresh enough)
    keep[20:24] = False  # four lost frames: the first two reuse frame 19, then nothing
    stamps = np.round(nominal + jitter)[keep].astype(np.int64)
    ids = np.flatnonzero(keep)
    rf = reference_frames(stamps, P, max_age=2.5 * P)
    got = [int(ids[i]) if i >= 0 else None for i in rf.index]
    assert rf.slot.size == 40
    assert got[:5] == [0, 1, 2, 3, 4] and got[5] == 4 and got[6:20] == list(range(6, 20))
    assert got[20:22] == [19, 19] and got[22:24] == [None, None]
    assert got[24:] == list(range(24, 40))
    assert rf.repeated.sum() == 3
    used = rf.index[(rf.index >= 0) & ~rf.repeated]
    assert len(set(used.tolist())) == used.size  # no message drives two slots
    frame = stamps[rf.index[rf.index >= 0]]
    assert np.all(np.diff(frame) >= 0)  # frames stay in time order


def test_reference_faster_than_fps_takes_the_nearest_message():
    stamps = (np.arange(0, 1000, 25) + 3).astype(np.int64)  # 4x the frame rate
    rf = reference_frames(stamps, P, max_age=2 * P)
    # (978 is nearest to the eleventh slot, 25 ns before it)
    assert stamps[rf.index].tolist()[:10] == [3, 103, 203, 303, 403, 503, 603, 703, 803, 903]
    assert not rf.repeated.any()


def test_runs():
    assert runs(np.array([1, 1, 0, 1, 0, 0, 1, 1, 1], bool)) == [(0, 2), (3, 4), (6, 9)]
    assert runs(np.zeros(3, bool)) == []


def test_episode_intervals_from_markers():
    events = np.array([5, 10, 20, 25, 30, 40])
    starts = np.array([False, True, False, True, True, False])  # stop, start, stop, start,
    intervals, ignored = episode_intervals(events, starts, end=100)  # start, stop
    assert intervals == [(10, 20), (25, 30), (30, 40)] and ignored == 1
    intervals, _ = episode_intervals(np.array([50]), np.array([True]), end=100)
    assert intervals == [(50, 100)]  # still open at the end of the bag


def test_receive_offset_is_the_median_delay_of_stamped_messages():
    header = np.array([0, 100, 200, 300, 400])
    receive = header + np.array([999, 5, 7, 6, 500])
    assert receive_offset(header, receive) == 6  # median of 5, 7, 6, 500; header 0 ignored
    assert receive_offset(np.zeros(3), np.arange(3)) == 0


def test_interval_stats():
    s = np.array([0, 10, 20, 30, 45]) * 1_000_000
    st = interval_stats(s)
    assert st["messages"] == 5 and st["rate_hz"] == pytest.approx(4 / 0.045)
    assert st["max_gap_ms"] == pytest.approx(15.0) and st["jitter_ms"] > 0
    assert np.isnan(interval_stats(np.array([1]))["rate_hz"])
