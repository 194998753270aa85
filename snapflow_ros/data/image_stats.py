"""lerobot's per-episode image statistics, computed from value counts (same numbers, ~50x faster).

lerobot 0.4.4 computes an episode's image statistics with ``get_feature_stats(frames,
axis=(0, 2, 3))``: one ``RunningQuantileStats.update`` over every pixel of the sampled frames
(mean, mean of squares, min, max, and a 5000-bin histogram per channel whose edges span
min..max, from which the quantiles are read). For uint8 pixels each channel holds at most 256
distinct values, so all of that follows exactly from ``np.bincount``: the sums are exact
integers either way (hence the same float64 mean), ``batch ** 2`` wraps in uint8 as lerobot's
does, and every value falls in the bin ``np.histogram`` puts it in. The quantiles are then read
by lerobot's own ``RunningQuantileStats`` from those histograms. ``test/data`` checks equality
with lerobot's function bit for bit; any other dtype goes to lerobot's function.
"""

from __future__ import annotations

import numpy as np


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """``get_feature_stats(frames, axis=(0, 2, 3), keepdims=False)`` for (N, C, H, W) frames."""
    from lerobot.datasets.compute_stats import RunningQuantileStats, get_feature_stats

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames[0, 0].size * len(frames) < 2:
        return get_feature_stats(frames, axis=(0, 2, 3), keepdims=False)
    n, c = frames.shape[:2]
    pixels = frames[:, 0].size
    counts = np.stack([np.bincount(frames[:, ch].reshape(-1), minlength=256) for ch in
                       range(c)])  # (C, 256)
    values = np.arange(256)
    squares = (values * values) % 256  # uint8 arithmetic, as lerobot's batch ** 2
    present = counts > 0
    rs = RunningQuantileStats()
    rs._count = pixels
    rs._mean = (counts @ values).astype(np.float64) / pixels
    rs._mean_of_squares = (counts @ squares).astype(np.float64) / pixels
    rs._min = np.array([values[p].min() for p in present], dtype=np.uint8)
    rs._max = np.array([values[p].max() for p in present], dtype=np.uint8)
    bins = rs._num_quantile_bins
    rs._bin_edges = [np.linspace(rs._min[i] - 1e-10, rs._max[i] + 1e-10, bins + 1)
                     for i in range(c)]
    rs._histograms = []
    for i in range(c):
        slot = np.searchsorted(rs._bin_edges[i], values.astype(np.float64), side="right") - 1
        keep = present[i]
        hist = np.zeros(bins)
        np.add.at(hist, np.minimum(slot[keep], bins - 1), counts[i][keep])
        rs._histograms.append(hist)
    stats = rs.get_statistics()
    stats["count"] = np.array([n])
    return stats
