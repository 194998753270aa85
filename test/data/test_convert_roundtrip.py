"""bag_to_lerobot end to end on bags written with rosbags: exact frames, both storages, both
image message types, every encoding, LeRobot's own loader and a DataLoader with action chunks."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from bagkit import JOINTS, MS, T0, colour, joints, kept_runs, make_scenario, oracle

from snapflow_ros.data.bag_to_lerobot import ConvertConfig, convert, main

KEYS = {"wrist": "observation.images.wrist", "state": "observation.state", "action": "action"}


def _load(root, **kw):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(f"local/{root.name}", root=root, video_backend="pyav", **kw)


def _rgb(item, key):
    return (item[key].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_frames_equal_the_as_of_oracle(tmp_path, topic_map, storage):
    sc = make_scenario(30, drop_front=(7,), state_gap=(1190 * MS, 1450 * MS))
    bag = sc.write(tmp_path / "bag", storage)
    out = tmp_path / "ds"
    report = convert(ConvertConfig(bags=[bag], output=out, topic_map=topic_map, video=False,
                                   max_age_for={"wrist": 0.25}, progress=False))
    rows = oracle(sc, ages={"wrist": 0.25})
    expected = kept_runs(rows)
    # the oracle's story: slot 7 reuses front frame 6, the state gap drops slots 13-14 and
    # splits the bag, frame 0 has no wrist image yet (the wrist starts 30 ms later)
    assert rows[7]["front"] == 6 and rows[0]["reason"] == "missing:wrist"
    assert [len(e) for e in expected] == report["bags"][0]["episode_lengths"]
    assert len(expected) == 2
    dropped = Counter(r["reason"].split(":")[0] + ":" + KEYS[r["reason"].split(":")[1]]
                      for r in rows if r["reason"])
    assert report["totals"]["dropped"] == dict(dropped)
    assert report["totals"]["reference_repeated"] == 1

    ds = _load(out)
    assert ds.num_episodes == len(expected)
    flat = [row for ep in expected for row in ep]
    assert len(ds) == len(flat)
    for i, row in enumerate(flat):
        item = ds[i]
        np.testing.assert_array_equal(_rgb(item, "observation.images.front"),
                                      colour(0, row["front"]))
        np.testing.assert_array_equal(_rgb(item, "observation.images.wrist"),
                                      colour(1, row["wrist"]))
        np.testing.assert_array_equal(item["observation.state"].numpy(),
                                      joints(row["state"]).astype(np.float32))
        np.testing.assert_array_equal(item["action"].numpy(),
                                      joints(row["action"], 0.5).astype(np.float32))
        assert sc.action[sc.ids["action"].index(row["action"])] <= row["stamp"]  # never later
        assert item["task"] == "stack the blocks"
    # the sync report beside meta/: json and text, with per-topic rates
    saved = json.loads((out / "sync_report.json").read_text())
    assert saved["totals"]["frames_written"] == len(flat)
    topics = saved["bags"][0]["topics"]
    assert topics["observation.images.wrist"]["rate_hz"] == pytest.approx(5.0, rel=0.01)
    assert topics["observation.state"]["rate_hz"] == pytest.approx(50.0, rel=0.1)
    assert "stale:observation.state" in (out / "sync_report.txt").read_text()


def test_actions_are_never_from_after_the_observation(tmp_path, topic_map):
    """Actions stamped 1 ms after each image: every frame gets the previous action."""
    sc = make_scenario(12, action_lag_ms=1)
    out = tmp_path / "ds"
    convert(ConvertConfig(bags=[sc.write(tmp_path / "bag")], output=out, topic_map=topic_map,
                          video=False, max_age_for={"wrist": 0.25}, progress=False))
    ds = _load(out)
    for i in range(len(ds)):
        item = ds[i]
        front = round(item["observation.images.front"][0, 0, -1].item() * 255)
        front_index = next(k for k in range(12) if colour(0, k)[0, -1, 0] == front)
        action_index = round(item["action"][0].item() - 0.5)
        assert action_index == front_index - 1


def test_encodings_and_compressed_formats(tmp_path, topic_map):
    sc = make_scenario(12, front_encodings=("rgb8", "bgr8", "mono8"),
                       wrist_formats=("png", "jpeg"))
    out = tmp_path / "ds"
    convert(ConvertConfig(bags=[sc.write(tmp_path / "bag")], output=out, topic_map=topic_map,
                          video=False, max_age_for={"wrist": 0.25}, progress=False))
    rows = [r for r in oracle(sc, ages={"wrist": 0.25}) if r["reason"] is None]
    ds = _load(out)
    assert len(ds) == len(rows)
    for i, row in enumerate(rows):
        front = colour(0, row["front"])
        if row["front"] % 3 == 2:  # mono8 carries the red channel, replicated
            front = np.repeat(front[..., :1], 3, axis=2)
        np.testing.assert_array_equal(_rgb(ds[i], "observation.images.front"), front)
        wrist = _rgb(ds[i], "observation.images.wrist").astype(int)
        if row["wrist"] % 2 == 0:  # png is lossless
            np.testing.assert_array_equal(wrist, colour(1, row["wrist"]))
        else:  # jpeg is not, but it is nearest to its own message's image
            errors = [np.abs(wrist - colour(1, k)).mean() for k in range(7)]
            assert int(np.argmin(errors)) == row["wrist"] and min(errors) < 4


def test_video_dataset_loads_with_pyav_and_serves_action_chunks(tmp_path, topic_map_file):
    """Several bags (one recorder root), a namespace, resizing (messages 24x32 → 12x16), video
    storage, then LeRobot's loader + a torch DataLoader with delta_timestamps."""
    root = tmp_path / "recordings"
    for e in range(2):
        make_scenario(16, seed=e, ns="/robot1").write(root / f"episode_{e:06d}")
    out = tmp_path / "ds"
    assert main([str(root), "--output", str(out), "--topic-map", str(topic_map_file),
                 "--namespace", "robot1", "--max-age-for", "wrist=0.25", "--vcodec", "h264",
                 "--no-progress"]) == 0
    chunk = 4
    ds = _load(out, delta_timestamps={"action": [i / 10 for i in range(chunk)]})
    assert ds.meta.video_keys == ["observation.images.front", "observation.images.wrist"]
    assert ds.num_episodes == 2
    loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False)
    batch = next(iter(loader))
    assert batch["observation.images.front"].shape == (5, 3, 12, 16)
    assert batch["action"].shape == (5, chunk, len(JOINTS))
    assert batch["action_is_pad"].shape == (5, chunk)
    # consecutive actions inside the chunk: the action index advances by one per step
    first = batch["action"][0, :, 0]
    assert torch.allclose(first[1:] - first[:-1], torch.ones(chunk - 1))
    # the last frames of an episode are padded, never taken from the next episode
    last = ds.meta.episodes[0]["dataset_to_index"] - 1
    assert ds[last]["action_is_pad"].tolist() == [False, True, True, True]
    # video is lossy: each decoded frame is closest to the right message's image
    own = tmp_path / "own"  # lerobot's own video writing (PNGs, then encoding) agrees
    assert main([str(root), "--output", str(own), "--topic-map", str(topic_map_file),
                 "--namespace", "robot1", "--max-age-for", "wrist=0.25", "--vcodec", "h264",
                 "--video-encoder", "lerobot", "--no-progress"]) == 0
    for dataset in (ds, _load(own)):
        for i in (0, 6, len(ds) - 1):
            item = dataset[i]
            front = _rgb(item, "observation.images.front").astype(int)
            errors = [np.abs(front - colour(0, k)).mean() for k in range(16)]
            action = item["action"][0, 0] if item["action"].ndim == 2 else item["action"][0]
            assert int(np.argmin(errors)) == round(action.item() - 0.5) + 1


def test_task_from_bag_metadata_and_from_a_topic(tmp_path, topic_map_file):
    import yaml

    from snapflow_ros.data import bag_messages as bm
    from snapflow_ros.topic_map import topic_map_from_dict

    data = yaml.safe_load(topic_map_file.read_text())
    sc = make_scenario(10)
    bag_a = sc.write(tmp_path / "a", custom_data={"task": "open the drawer"})
    data["task"] = {"source": "per_bag", "text": "fallback"}
    out = tmp_path / "per_bag"
    convert(ConvertConfig(bags=[bag_a], output=out, topic_map=topic_map_from_dict(data),
                          video=False, max_age_for={"wrist": 0.25}, progress=False))
    assert {_load(out)[i]["task"] for i in range(3)} == {"open the drawer"}

    sc = make_scenario(10)
    sc.messages += [("/task", T0 - 50 * MS, bm.string("pick red")),
                    ("/task", T0 + 450 * MS, bm.string("pick blue"))]
    data["task"] = {"source": "topic", "topic": "/task", "text": ""}
    out = tmp_path / "topic"
    convert(ConvertConfig(bags=[sc.write(tmp_path / "b")], output=out, video=False,
                          topic_map=topic_map_from_dict(data), max_age_for={"wrist": 0.25},
                          progress=False))
    ds = _load(out)
    tasks = [ds[i]["task"] for i in range(len(ds))]
    # a task is in force from its stamp on (receive time placed on the header clock)
    assert tasks[:3] == ["pick red"] * 3 and tasks[-1] == "pick blue"
    assert tasks == sorted(tasks, key=["pick red", "pick blue"].index)


def test_episode_markers_split_one_bag(tmp_path, topic_map):
    from snapflow_ros.data import bag_messages as bm

    sc = make_scenario(30)
    # start at 0.25 s, stop at 1.05 s, start at 1.55 s (open until the end); receive time only
    for t, word in ((250, "start"), (1050, "stop"), (1550, "start")):
        sc.messages.append(("/events", T0 + t * MS + 3 * MS, bm.string(word)))
    out = tmp_path / "ds"
    report = convert(ConvertConfig(bags=[sc.write(tmp_path / "bag")], output=out,
                                   topic_map=topic_map, video=False, episode_topic="/events",
                                   max_age_for={"wrist": 0.25}, progress=False))
    rows = oracle(sc, ages={"wrist": 0.25})
    inside = [(250 * MS, 1050 * MS), (1550 * MS, 10**12)]

    def episode(row):
        return next((e for e, (a, b) in enumerate(inside) if a <= row["stamp"] - T0 < b), None)

    kept = [r for r in rows if r["reason"] is None]
    lengths = [sum(1 for r in kept if episode(r) == e) for e in range(2)]
    assert report["bags"][0]["episode_lengths"] == lengths
    assert min(lengths) >= 5
    outside = sum(1 for r in rows if r["front"] is not None and episode(r) is None)
    assert report["totals"]["dropped"]["outside_episode"] == outside


@pytest.mark.parametrize("video", [False, True])
def test_append_adds_episodes_and_keeps_the_old_ones(tmp_path, topic_map, video):
    """--append: the old episodes stay frame for frame, the new ones equal a fresh conversion
    of the same bags, the sync report covers all bags, and LeRobot loads the result."""
    first = make_scenario(12, seed=0).write(tmp_path / "first")
    second = make_scenario(14, seed=1).write(tmp_path / "second")
    kw = {"topic_map": topic_map, "video": video, "vcodec": "h264",
          "max_age_for": {"wrist": 0.25}, "progress": False}
    convert(ConvertConfig(bags=[first], output=tmp_path / "ds", **kw))
    before = _load(tmp_path / "ds")
    old = [before[i]["observation.state"] for i in range(len(before))]
    report = convert(ConvertConfig(bags=[second], output=tmp_path / "ds", append=True, **kw))
    convert(ConvertConfig(bags=[second], output=tmp_path / "only_second", **kw))
    ds, alone = _load(tmp_path / "ds"), _load(tmp_path / "only_second")
    assert ds.num_episodes == before.num_episodes + alone.num_episodes
    assert len(ds) == len(old) + len(alone)
    assert [b["bag"] for b in report["bags"]] == [str(first), str(second)]
    assert report["totals"]["frames_written"] == len(ds)
    for i, state in enumerate(old):
        assert torch.equal(ds[i]["observation.state"], state)
    for i in range(len(alone)):
        new, ref = ds[len(old) + i], alone[i]
        assert int(new["episode_index"]) == before.num_episodes + int(ref["episode_index"])
        assert torch.equal(new["action"], ref["action"])
        front = _rgb(new, "observation.images.front").astype(int)
        assert np.abs(front - _rgb(ref, "observation.images.front")).max() <= (3 if video else 0)
    assert not list(tmp_path.glob(".ds.*"))
