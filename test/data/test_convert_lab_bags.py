"""bag_to_lerobot on bags shaped like a lab's (issue 11, items 3, 4, 6): joint states assembled
by name across messages (partial messages, split arm/gripper drivers), freshness windows
measured from each topic's rate, and the report/errors a new user reads."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from bagkit import JOINTS, MS, T0, colour, joints, kept_runs, load, make_scenario, oracle

from snapflow_ros.data import bag_messages as bm
from snapflow_ros.data.bag_reader import BagError
from snapflow_ros.data.bag_to_lerobot import ConvertConfig, convert
from snapflow_ros.data.sync_report import format_summary
from snapflow_ros.topic_map import topic_map_from_dict

AGES = {"wrist": 0.25}


def _convert(tmp_path, topic_map, bags, **kw):
    kw.setdefault("max_age_for", dict(AGES))
    return convert(ConvertConfig(bags=bags, output=tmp_path / "ds", topic_map=topic_map,
                                 video=False, progress=False, **kw))


def _per_joint(messages, stamp):
    """Per joint, the value of the latest message naming it at or before ``stamp``."""
    out = {}
    for t, names, pos in sorted(messages, key=lambda m: m[0]):
        if t <= stamp:
            out.update(zip(names, pos, strict=True))
    return np.array([out[j] for j in JOINTS], np.float32)


def _states(ds):
    return np.stack([ds[i]["observation.state"].numpy() for i in range(len(ds))])


def test_messages_missing_a_joint_take_it_from_earlier_messages(tmp_path, topic_map):
    """Every third JointState lacks joint b (50 of 150 here): no frame is lost, and b is the
    latest value published for b at or before each frame."""
    sc = make_scenario(30)
    sent = []
    for n, (topic, recv, msg) in enumerate(sc.messages):
        if topic != "/joint_states":
            continue
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        names, pos = list(msg.name), list(msg.position)
        k = sc.ids["state"][sc.state.index(stamp)]
        if k % 3 == 1:
            keep = [i for i, name in enumerate(names) if name != "b"]
            names, pos = [names[i] for i in keep], [pos[i] for i in keep]
            sc.messages[n] = (topic, recv, bm.joint_state(names, pos, stamp))
        sent.append((stamp, names, pos))
    report = _convert(tmp_path, topic_map, [sc.write(tmp_path / "bag")])
    rows = [r for r in oracle(sc, ages=AGES) if r["reason"] is None]
    assert report["totals"]["frames_written"] == len(rows)
    assert sum(1 for _, names, _ in sent if "b" not in names) >= 50
    got = _states(load(tmp_path / "ds"))
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(got[i], _per_joint(sent, row["stamp"]))
    joint_rates = report["bags"][0]["topics"]["observation.state"]["joint_rate_hz"]
    assert joint_rates["b"] == pytest.approx(joint_rates["a"] * 2 / 3, rel=0.1)


def test_split_arm_and_gripper_drivers_on_one_topic(tmp_path, topic_map):
    """The arm driver publishes a, b at 50 Hz, the gripper's c at 10 Hz, as separate messages;
    then the gripper driver dies: its frames are dropped as stale:observation.state[c] and the
    report warns, naming --max-age-for state."""
    sc = make_scenario(30)
    sc.messages = [m for m in sc.messages if m[0] != "/joint_states"]
    sent, arm, ids = [], [], []
    for k in range(155):
        t = T0 - 40 * MS + k * 20 * MS
        arm.append(t)
        ids.append(k)
        sent.append((t, ["b", "a"], [joints(k)[1], joints(k)[0]]))
    for g in range(22):  # gripper until 2.1 s, the bag's frames run to ~2.9 s
        t = T0 - 33 * MS + g * 100 * MS
        sent.append((t, ["c"], [100.0 + g]))
    for t, names, pos in sent:
        sc.messages.append(("/joint_states", t + 3 * MS, bm.joint_state(names, pos, t)))
    sc.state, sc.ids["state"] = arm, ids
    report = _convert(tmp_path, topic_map, [sc.write(tmp_path / "bag")])
    bag = report["bags"][0]
    rows = oracle(sc, ages=AGES)
    window = bag["max_age_s"]["observation.state"]
    last_c = T0 - 33 * MS + 21 * 100 * MS
    for r in rows:
        if r["reason"] is None and r["stamp"] - last_c > window * 1e9:
            r["reason"] = "stale:observation.state[c]"
    kept = [r for r in rows if r["reason"] is None]
    assert bag["dropped"]["stale:observation.state[c]"] == \
        sum(r["reason"] == "stale:observation.state[c]" for r in rows) >= 5
    assert bag["episode_lengths"] == [len(e) for e in kept_runs(rows)]
    got = _states(load(tmp_path / "ds"))
    for i, row in enumerate(kept):
        np.testing.assert_array_equal(got[i], _per_joint(sent, row["stamp"]))
    rates = bag["topics"]["observation.state"]["joint_rate_hz"]
    assert rates["a"] == pytest.approx(50, rel=0.02) and rates["c"] == pytest.approx(10, rel=0.02)
    assert any("--max-age-for state=" in w for w in report["totals"]["warnings"])
    assert "joint c: 10.0 Hz" in format_summary(report)


def _map_30fps(tmp_path):
    data = {"fps": 30, "robot_type": "lab_arm",
            "cameras": {"front": {"topic": "cam/front", "type": "Image", "height": 12,
                                  "width": 16},
                        "wrist": {"topic": "cam/wrist", "type": "Image", "height": 12,
                                  "width": 16}},
            "joint_states": {"topic": "joint_states", "joints": JOINTS},
            "action": {"topic": "cmd", "type": "JointState", "joints": JOINTS},
            "task": {"source": "fixed", "text": "wipe"}}
    return topic_map_from_dict(data)


def _lab_bag(path, seconds=3.0):
    """30 Hz front (±3 ms jitter), 15 Hz wrist (±5 ms), 100 Hz joints, 30 Hz commands."""
    rng = np.random.default_rng(3)
    msgs = []
    for i in range(int(seconds * 30)):
        t = T0 + round(i * 1e9 / 30) + int(rng.integers(-3, 4)) * MS
        msgs.append(("/cam/front", t + MS, bm.image(colour(0, i % 200), t)))
        msgs.append(("/cmd", t + 2 * MS, bm.joint_state(JOINTS, joints(i, 0.5), t - MS)))
        if i % 2 == 0:
            w = T0 + round(i * 1e9 / 30) + MS + int(rng.integers(-5, 6)) * MS
            msgs.append(("/cam/wrist", w + MS, bm.image(colour(1, i % 200), w)))
    for k in range(int(seconds * 100) + 5):
        t = T0 - 30 * MS + k * 10 * MS
        msgs.append(("/joint_states", t + MS, bm.joint_state(JOINTS, joints(k), t)))
    return bm.write_bag(path, msgs)


def test_measured_windows_keep_a_15hz_wrist_camera_in_one_episode(tmp_path):
    """Before: 2/fps (67 ms) for every feature split such a bag into dozens of episodes. The
    window is now measured per topic (1.5 x its median interval, at least 2/fps)."""
    tm = _map_30fps(tmp_path)
    bag = _lab_bag(tmp_path / "bag")
    report = convert(ConvertConfig(bags=[bag], output=tmp_path / "ds", topic_map=tm,
                                   video=False, progress=False))
    b = report["bags"][0]
    assert b["episodes_written"] == 1 and b["frames_written"] >= 88
    assert b["max_age_s"]["observation.images.wrist"] == pytest.approx(0.1, abs=0.002)
    assert b["max_age_s"]["observation.state"] == pytest.approx(2 / 30, abs=1e-6)
    assert b["max_age_from"]["observation.images.wrist"] == "measured"
    assert "wrist 100 ms (measured)" in format_summary(report)
    assert not report["totals"]["warnings"]
    # the old default, given explicitly: most frames dropped, and the report says which flag
    report = convert(ConvertConfig(bags=[bag], output=tmp_path / "old", topic_map=tm,
                                   video=False, progress=False, max_age=2 / 30))
    b = report["bags"][0]
    assert b["episodes_written"] > 5 and b["max_age_from"]["observation.images.wrist"] \
        == "--max-age"
    (warning,) = report["totals"]["warnings"]
    assert "stale:observation.images.wrist" in warning and "--max-age-for wrist=" in warning
    assert "WARNING" in (tmp_path / "old" / "sync_report.txt").read_text()


def test_reused_image_rows_advance_state_and_action(tmp_path, topic_map):
    """At a lost reference image the previous image is reused; the row's state and action
    are those at the slot's time, not copies of the previous row's."""
    sc = make_scenario(20, drop_front=(7,))
    _convert(tmp_path, topic_map, [sc.write(tmp_path / "bag")])
    rows = [r for r in oracle(sc, ages=AGES) if r["reason"] is None]
    i = next(n for n, r in enumerate(rows) if r["slot"] == 7)
    assert rows[i]["front"] == rows[i - 1]["front"] == 6
    ds = load(tmp_path / "ds")
    assert ds[i]["observation.state"][0] > ds[i - 1]["observation.state"][0]
    assert ds[i]["action"][0] > ds[i - 1]["action"][0]
    np.testing.assert_array_equal(ds[i]["observation.state"].numpy(),
                                  joints(rows[i]["state"]).astype(np.float32))


def test_task_topic_report_lists_the_tasks_written(tmp_path, topic_map_file):
    data = yaml.safe_load(topic_map_file.read_text())
    data["task"] = {"source": "topic", "topic": "/task", "text": "fallback text"}
    sc = make_scenario(10)
    sc.messages += [("/task", T0 - 50 * MS, bm.string("pick red")),
                    ("/task", T0 + 450 * MS, bm.string("pick blue"))]
    report = _convert(tmp_path, topic_map_from_dict(data), [sc.write(tmp_path / "b")])
    tasks = report["bags"][0]["tasks"]
    assert set(tasks) == {"pick red", "pick blue"}
    assert sum(tasks.values()) == report["totals"]["frames_written"]
    text = format_summary(report)
    assert "'pick red' (" in text and "fallback text" not in text


QOS = """
      - history: keep_last
        depth: 10
        reliability: reliable
        durability: volatile
        deadline: {sec: 9223372036, nsec: 854775807}
        lifespan: {sec: 9223372036, nsec: 854775807}
        liveliness: automatic
        liveliness_lease_duration: {sec: 9223372036, nsec: 854775807}
        avoid_ros_namespace_conventions: false"""


def test_metadata_that_does_not_match_the_storage_is_named(tmp_path, topic_map):
    """A hand-joined metadata.yaml whose QoS for /cam/front differs from the recorded one:
    rosbags returns none of its messages; the error names the topic, counts and cause."""
    bag = make_scenario(10).write(tmp_path / "bag")
    meta = bag / "metadata.yaml"
    text = meta.read_text()
    old = "      name: /cam/front\n      offered_qos_profiles: []"
    assert old in text
    meta.write_text(text.replace(old, "      name: /cam/front\n      offered_qos_profiles:"
                                 + QOS))
    with pytest.raises(BagError) as err:
        _convert(tmp_path, topic_map, [bag])
    msg = str(err.value)
    assert "lists 10 messages on '/cam/front' but the storage returned 0" in msg
    assert "offered_qos_profiles" in msg and "ros2 bag reindex" in msg
    assert "reference topic is empty" not in msg
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.*"))


def test_missing_metadata_points_to_reindex(tmp_path, topic_map):
    root = tmp_path / "recordings"
    make_scenario(10).write(root / "episode_0")
    killed = make_scenario(10).write(root / "episode_1")
    (killed / "metadata.yaml").unlink()
    for path in (killed, root):  # the bag itself, or the recorder root holding it
        with pytest.raises(BagError, match=r"episode_1.*no metadata.yaml.*ros2 bag reindex"):
            _convert(tmp_path, topic_map, [path])
