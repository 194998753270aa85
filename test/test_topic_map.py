"""The shared topic map (config/topic_map.yaml ↔ snapflow_ros.topic_map)."""

from pathlib import Path

import pytest
import yaml

from snapflow_ros.topic_map import TopicMapError, load_topic_map, topic_map_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _base():
    return yaml.safe_load((ROOT / "config" / "topic_map.yaml").read_text())


def test_packaged_map_loads_and_round_trips():
    tm = load_topic_map(ROOT / "config" / "topic_map.yaml")
    assert tm.fps == 30 and tm.camera_names == ["front", "wrist"]
    assert tm.state_names == [f"joint{i}" for i in range(1, 7)]
    assert tm.action.type == "JointState" and tm.action_names == tm.state_names
    assert topic_map_from_dict(tm.to_dict()) == tm
    assert load_topic_map() == tm  # the installed copy is the same file


def test_lerobot_features():
    tm = load_topic_map(ROOT / "config" / "topic_map.yaml")
    feats = tm.lerobot_features(video=True)
    assert feats["observation.images.front"]["shape"] == (224, 224, 3)
    assert feats["observation.images.front"]["dtype"] == "video"
    assert feats["observation.state"]["names"] == tm.state_names
    assert feats["action"]["shape"] == (6,)


def test_action_joints_default_to_the_state_joints():
    data = _base()
    del data["action"]["joints"]
    assert topic_map_from_dict(data).action_names == data["joint_states"]["joints"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.pop("fps"), "'fps' is required"),
    (lambda d: d.update(fps=-1), "fps must be in"),
    (lambda d: d["cameras"]["front"].update(type="Depth"), "cameras.front: type must be one of"),
    (lambda d: d["cameras"]["front"].update(encoding="rgb8"), r"unknown keys \['encoding'\]"),
    (lambda d: d["cameras"].update({"front cam": {"topic": "x"}}), "identifiers"),
    (lambda d: d["joint_states"].update(joints=[]), "non-empty list"),
    (lambda d: d["joint_states"].update(joints=["a", "a"]), r"duplicate joint names \['a'\]"),
    (lambda d: d["action"].update(type="Twist"), "action.type must be one of"),
    (lambda d: d["task"].update(source="topic", topic=""), "task.topic is empty"),
    (lambda d: d["cameras"]["wrist"].update(topic="camera/front/image_raw"), "topics used twice"),
    (lambda d: d.update(extra=1), r"unknown keys \['extra'\]"),
])
def test_errors_name_the_key(edit, message):
    data = _base()
    edit(data)
    with pytest.raises(TopicMapError, match=message):
        topic_map_from_dict(data)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(TopicMapError, match="does not exist"):
        load_topic_map(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fps: [1, 2\n")
    with pytest.raises(TopicMapError, match="not valid YAML"):
        load_topic_map(bad)
