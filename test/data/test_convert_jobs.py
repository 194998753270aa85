"""``--jobs N`` gives the serial conversion's dataset (issue 11, speed): the same frames and
episodes in bag order (video frames: the same image up to the encoder's noise, VIDEO_NOISE), the
same statistics up to float rounding; and the direct video encoder gives lerobot's own image
statistics (the same sampled frames) without writing PNGs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from bagkit import load, make_scenario

from snapflow_ros.data.bag_to_lerobot import ConvertConfig, convert

KEYS = ("observation.images.front", "observation.images.wrist")


def _bags(tmp_path):
    return [make_scenario(12 + 3 * s, seed=s, drop_front=(5,) if s == 1 else (),
                          state_gap=(500 * 10**6, 950 * 10**6) if s == 2 else None
                          ).write(tmp_path / f"bag{s}") for s in range(3)]


def _kw(topic_map, video, **kw):
    return dict(topic_map=topic_map, video=video, vcodec="h264", max_age_for={"wrist": 0.25},
                progress=False, **kw)


def _episodes(root):
    files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _num(cell):
    """A parquet cell of nested arrays (image statistics are (3, 1, 1)) → a float array."""
    if isinstance(cell, (list, np.ndarray)) and len(cell) and \
            isinstance(cell[0], (list, np.ndarray)):
        return np.stack([_num(x) for x in cell])
    return np.asarray(cell, dtype=np.float64)


def _column(df, col):
    return np.stack([_num(v) for v in df[col]])


def _same_stats(a, b, rtol=1e-6, atol=1e-6):
    sa = json.loads((a / "meta" / "stats.json").read_text())
    sb = json.loads((b / "meta" / "stats.json").read_text())
    assert sa.keys() == sb.keys()
    for key in sa:
        for name in sa[key]:
            np.testing.assert_allclose(sa[key][name], sb[key][name], rtol=rtol, atol=atol,
                                       err_msg=f"{key}.{name}")


def _same_rows(a, b, video):
    assert len(a) == len(b) and a.num_episodes == b.num_episodes
    a, b = [a[i] for i in range(len(a))], [b[i] for i in range(len(b))]  # decoded once
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        for key in ("episode_index", "frame_index", "index", "timestamp", "task_index",
                    "observation.state", "action"):
            assert np.array_equal(np.asarray(x[key]), np.asarray(y[key])), (i, key)
        assert x["task"] == y["task"]
        for key in KEYS:
            if video:
                _same_video_frame(a, b, i, key)
            else:  # PNGs are lossless
                assert (x[key] - y[key]).abs().max().item() == 0, (i, key)


# Two encodings of the same frames are not always bit-identical: under load, about one
# conversion in ten re-encodes one GOP (two frames) differently (measured 2026-12-02: up to 14
# levels in one pixel, 2.0-3.0 levels on average over the frame; the packets differ although
# the input arrays are identical, copied or not; not reproduced by re-encoding the same frames
# outside the converter). bagkit's images of neighbouring messages differ by 7.3 levels on
# average or more.
VIDEO_NOISE = 6.0


def _mean_levels(u, v) -> float:
    return (u - v).abs().mean().item() * 255


def _same_video_frame(a, b, i, key):
    """``b[i]`` shows ``a[i]``'s frame (``a``, ``b``: lists of decoded items): within the
    encoder's noise of it, and closer to it than ``b``'s neighbouring frames are, wherever those
    show another image."""
    near = range(max(0, i - 2), min(len(b), i + 3))
    mine = a[i][key]

    def report():  # for a failure: mean/max levels from b's frames near i
        return {j: (round(_mean_levels(mine, b[j][key]), 2),
                    round((mine - b[j][key]).abs().max().item() * 255, 1)) for j in near}

    same = _mean_levels(mine, b[i][key])
    assert same <= VIDEO_NOISE, (i, key, report())
    for j in near:
        if j != i and _mean_levels(mine, a[j][key]) > VIDEO_NOISE:  # another image
            assert same < _mean_levels(mine, b[j][key]), (i, key, "closer to frame", j, report())


@pytest.mark.parametrize("video", [False, True])
def test_jobs_give_the_serial_dataset(tmp_path, topic_map, video):
    bags = _bags(tmp_path)
    serial = convert(ConvertConfig(bags=bags, output=tmp_path / "serial", **_kw(topic_map,
                                                                                video)))
    parallel = convert(ConvertConfig(bags=bags, output=tmp_path / "parallel", jobs=2,
                                     **_kw(topic_map, video)))
    assert parallel["bags"] == serial["bags"]  # same plans, bag order kept
    assert serial["totals"]["episodes_written"] > len(bags)  # gaps split some bags
    _same_rows(load(tmp_path / "serial"), load(tmp_path / "parallel"), video)
    _same_stats(tmp_path / "serial", tmp_path / "parallel")
    ea, eb = _episodes(tmp_path / "serial"), _episodes(tmp_path / "parallel")
    cols = ["episode_index", "length", "dataset_from_index", "dataset_to_index"]
    cols += [c for c in ea.columns if c.startswith("videos/") and "timestamp" in c]
    pd.testing.assert_frame_equal(ea[cols], eb[cols])
    for col in (c for c in ea.columns if c.startswith("stats/")):
        np.testing.assert_allclose(_column(ea, col), _column(eb, col), rtol=1e-6, atol=1e-6,
                                   err_msg=col)
    assert not list(tmp_path.glob(".parallel.*"))


def test_parallel_append_equals_one_serial_conversion(tmp_path, topic_map):
    bags = _bags(tmp_path)
    convert(ConvertConfig(bags=bags, output=tmp_path / "all", **_kw(topic_map, False)))
    convert(ConvertConfig(bags=bags[:1], output=tmp_path / "ds", **_kw(topic_map, False)))
    report = convert(ConvertConfig(bags=bags[1:], output=tmp_path / "ds", append=True, jobs=2,
                                   **_kw(topic_map, False)))
    assert [b["bag"] for b in report["bags"]] == [str(b) for b in bags]
    _same_rows(load(tmp_path / "all"), load(tmp_path / "ds"), video=False)
    _same_stats(tmp_path / "all", tmp_path / "ds")


def test_direct_encoder_gives_lerobots_image_statistics(tmp_path, topic_map):
    """lerobot's writer (PNG frames, statistics on its sample of them) and the direct encoder
    (no PNGs, the same sample kept in memory) give the same statistics and frames."""
    bags = _bags(tmp_path)[:2]
    convert(ConvertConfig(bags=bags, output=tmp_path / "direct", **_kw(topic_map, True)))
    convert(ConvertConfig(bags=bags, output=tmp_path / "lerobot", video_encoder="lerobot",
                          **_kw(topic_map, True)))
    _same_stats(tmp_path / "direct", tmp_path / "lerobot", rtol=1e-12, atol=1e-12)
    ea, eb = _episodes(tmp_path / "direct"), _episodes(tmp_path / "lerobot")
    for col in (c for c in ea.columns if c.startswith("stats/observation.images")):
        np.testing.assert_array_equal(_column(ea, col), _column(eb, col), err_msg=col)
    _same_rows(load(tmp_path / "direct"), load(tmp_path / "lerobot"), video=True)


def test_image_stats_equal_lerobots_bit_for_bit():
    from lerobot.datasets.compute_stats import get_feature_stats

    from snapflow_ros.data.image_stats import image_stats

    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 256, (40, 3, 60, 80), dtype=np.uint8),
             np.full((5, 3, 8, 8), 7, np.uint8),  # one value: min == max
             rng.integers(250, 256, (20, 3, 30, 40), dtype=np.uint8),  # squares wrap in uint8
             (rng.random((30, 3, 50, 60)) ** 4 * 255).astype(np.uint8),  # skewed quantiles
             np.zeros((1, 3, 1, 2), np.uint8),
             rng.random((4, 3, 5, 5))]  # not uint8: lerobot's own function
    for frames in cases:
        want = get_feature_stats(frames, axis=(0, 2, 3), keepdims=False)
        got = image_stats(frames)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_bags_are_split_into_ordered_runs_of_similar_size(tmp_path):
    from snapflow_ros.data.parallel import split_bags

    sizes = [1, 2, 3, 4, 5, 6, 7, 8]
    bags = []
    for i, size in enumerate(sizes):
        bag = tmp_path / f"bag{i}"
        bag.mkdir()
        (bag / "data.mcap").write_bytes(b"x" * size * 1000)
        bags.append(bag)
    for jobs in (1, 2, 3, 4, 8, 20):
        runs = split_bags(bags, jobs)
        assert [b for run in runs for b in run] == bags  # every bag once, in order
        assert len(runs) == min(jobs, len(bags)) and all(runs)
    runs = split_bags(bags, 2)
    totals = [sum(sizes[bags.index(b)] for b in run) for run in runs]
    assert max(totals) - min(totals) <= max(sizes)
