"""bag_to_lerobot never writes a wrong value (issue 11, items 1-2): a NaN joint position, an
Image whose buffer disagrees with step × height, an undecodable or wrongly sized image are
faults of that one message: the frame that would use it is dropped (``bad:<feature>``), the
episode splits there, the report counts it, and every other frame is exactly the oracle's."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from bagkit import (
    JOINTS,
    colour,
    joints,
    kept_runs,
    load,
    make_scenario,
    nearest,
    oracle,
    raw_image,
    replace,
    rgb_of,
    truncated_png,
)

from snapflow_ros.data import bag_messages as bm
from snapflow_ros.data.bag_to_lerobot import ConvertConfig, convert
from snapflow_ros.data.lerobot_writer import DatasetCheckError, check_stats
from snapflow_ros.data.sync_report import format_summary

AGES = {"wrist": 0.25}


def _convert(tmp_path, topic_map, bag, **kw):
    kw.setdefault("video", False)
    return convert(ConvertConfig(bags=[bag], output=tmp_path / "ds", topic_map=topic_map,
                                 vcodec="h264", max_age_for=dict(AGES), progress=False, **kw))


def _expect(rows, bad):
    """The oracle's rows with ``bad(row)`` → reason applied (kept rows only)."""
    out = []
    for row in rows:
        reason = row["reason"] or bad(row)
        out.append({**row, "reason": reason})
    return out


def test_nan_joint_position_drops_its_frame_and_nothing_is_nan(tmp_path, topic_map):
    sc = make_scenario(30)
    rows = oracle(sc, ages=AGES)
    victim = rows[12]["state"]  # the state message that frame 12 would use
    stamp = sc.state[sc.ids["state"].index(victim)]
    names = JOINTS[::-1]
    pos = [np.nan if n == "b" else joints(victim)[JOINTS.index(n)] for n in names]
    replace(sc, "/joint_states", stamp, bm.joint_state(names, pos, stamp))
    report = _convert(tmp_path, topic_map, sc.write(tmp_path / "bag"))

    expected = _expect(rows, lambda r: "bad:observation.state[b]" if r["state"] == victim
                       else None)
    episodes = kept_runs(expected)
    bag = report["bags"][0]
    assert bag["dropped"]["bad:observation.state[b]"] == 1
    assert bag["episode_lengths"] == [len(e) for e in episodes] and len(episodes) == 2
    assert bag["bad_messages"] == {"observation.state": 1}
    assert "joint 'b' is nan" in bag["faults"]["observation.state"][0]
    assert "bad:observation.state[b] 1" in format_summary(report)
    ds = load(tmp_path / "ds")
    flat = [r for e in episodes for r in e]
    states = np.stack([ds[i]["observation.state"].numpy() for i in range(len(ds))])
    assert len(ds) == len(flat) and np.isfinite(states).all()
    for i, row in enumerate(flat):
        np.testing.assert_array_equal(states[i], joints(row["state"]).astype(np.float32))
    stats = json.loads((tmp_path / "ds" / "meta" / "stats.json").read_text())
    np.testing.assert_allclose(stats["observation.state"]["mean"], states.mean(0), rtol=1e-5)
    assert np.isfinite(stats["observation.state"]["std"]).all()


def test_final_check_refuses_non_finite_statistics(tmp_path, topic_map):
    _convert(tmp_path, topic_map, make_scenario(10).write(tmp_path / "bag"))
    path = tmp_path / "ds" / "meta" / "stats.json"
    check_stats(tmp_path / "ds")  # the converter's own output passes
    stats = json.loads(path.read_text())
    stats["action"]["mean"][1] = float("nan")
    path.write_text(json.dumps(stats))  # json writes NaN, as lerobot's writer would
    with pytest.raises(DatasetCheckError, match=r"non-finite values in action\.mean"):
        check_stats(tmp_path / "ds")


@pytest.mark.parametrize("video", [False, True])
def test_broken_images_drop_their_frames_only(tmp_path, topic_map, video):
    """front 5: 10 bytes short of step × height; front 6: padded rows (valid); wrist 3: a PNG
    cut in half (found only when decoding: the episode being written is redone); wrist 5:
    24x32 among 12x16 images."""
    sc = make_scenario(30)
    t5, t6 = (sc.front[sc.ids["front"].index(i)] for i in (5, 6))
    img = colour(0, 5).reshape(-1)
    replace(sc, "/cam/front", t5, raw_image(img[:-10], 12, 16, 48, t5))
    padded = np.zeros((12, 52), np.uint8)
    padded[:, :48] = colour(0, 6).reshape(12, 48)
    replace(sc, "/cam/front", t6, raw_image(padded, 12, 16, 52, t6))
    w3, w5 = (sc.wrist[sc.ids["wrist"].index(k)] for k in (3, 5))
    replace(sc, "/cam/wrist", w3, truncated_png(colour(1, 3), w3))
    big = np.repeat(np.repeat(colour(1, 5), 2, axis=0), 2, axis=1)
    replace(sc, "/cam/wrist", w5, bm.compressed_image(big, w5, "png"))
    report = _convert(tmp_path, topic_map, sc.write(tmp_path / "bag"), video=video)

    def bad(row):
        if row["front"] == 5:
            return "bad:observation.images.front"
        return "bad:observation.images.wrist" if row["wrist"] in (3, 5) else None

    expected = _expect(oracle(sc, ages=AGES), bad)
    episodes = kept_runs(expected)
    if video:  # h264: 1-frame pieces are dropped (lerobot cannot append their video)
        episodes = [e for e in episodes if len(e) > 1]
    bag = report["bags"][0]
    want = Counter(r["reason"] for r in expected if r["reason"] and r["reason"].startswith("bad"))
    assert {k: v for k, v in bag["dropped"].items() if k.startswith("bad")} == dict(want)
    assert want["bad:observation.images.wrist"] >= 2 and want["bad:observation.images.front"]
    assert bag["episode_lengths"] == [len(e) for e in episodes]
    assert bag["bad_messages"] == {"observation.images.front": 1, "observation.images.wrist": 2}
    faults = " | ".join(f for fs in bag["faults"].values() for f in fs)
    assert "10 bytes too short" in faults and "declares 24x32" in faults
    assert "truncated" in faults.lower() or "could not decode" in faults
    ds = load(tmp_path / "ds")
    flat = [r for e in episodes for r in e]
    assert len(ds) == len(flat) and ds.num_episodes == len(episodes)
    for i, row in enumerate(flat):
        item = ds[i]
        front, wrist = rgb_of(item, "observation.images.front"), rgb_of(item,
                                                                         "observation.images.wrist")
        if video:  # lossy: the nearest message's image
            assert nearest(front, 0, range(30)) == row["front"]
            assert nearest(wrist, 1, range(16)) == row["wrist"]
        else:
            np.testing.assert_array_equal(front, colour(0, row["front"]))
            np.testing.assert_array_equal(wrist, colour(1, row["wrist"]))
        np.testing.assert_array_equal(item["observation.state"].numpy(),
                                      joints(row["state"]).astype(np.float32))
