"""BagRecorder (the recorder node's logic) without ROS: episodes, storages, numbering, task
metadata, partial episodes hidden until stopped."""

from __future__ import annotations

import numpy as np
import pytest
from bagkit import JOINTS, MS, T0, colour

from snapflow_ros.data import bag_messages as bm
from snapflow_ros.data.bag_reader import BagFile, find_bags
from snapflow_ros.data.bag_recorder import PARTIAL, BagRecorder, RecorderError

TOPICS = [("/cam/front", "sensor_msgs/msg/Image"), ("/joint_states", "sensor_msgs/msg/JointState")]


def _cdr(msg):
    return bm.ts().serialize_cdr(msg, msg.__msgtype__)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_episodes_are_separate_readable_bags(tmp_path, storage):
    rec = BagRecorder(tmp_path / "rec", TOPICS, storage=storage)
    assert rec.write("/cam/front", b"ignored", 1) is False  # idle: nothing recorded
    for e in range(2):
        name = rec.start_episode(task=f"task {e}")
        assert rec.recording and rec.current == name
        assert not (tmp_path / "rec" / name).exists()  # hidden under .partial until stopped
        assert (tmp_path / "rec" / PARTIAL / name).is_dir()
        for i in range(3):
            t = T0 + i * 100 * MS
            rec.write("/cam/front", _cdr(bm.image(colour(0, i + 10 * e), t)), t + MS)
            rec.write("/joint_states", _cdr(bm.joint_state(JOINTS, [i, e, 0], t)), t + MS)
        path = rec.stop_episode()
        assert path == tmp_path / "rec" / name
    assert not (tmp_path / "rec" / PARTIAL).exists()
    bags = find_bags([tmp_path / "rec"])
    assert [b.name for b in bags] == ["episode_000000", "episode_000001"]
    for e, bag in enumerate(bags):
        with BagFile(bag) as bf:
            assert bf.storage_id == storage and bf.custom_data == {"task": f"task {e}"}
            assert bf.topics == dict(TOPICS)
            msgs = list(bf.messages(["/cam/front"]))
            assert [m[2] for m in msgs] == [T0 + i * 100 * MS + MS for i in range(3)]
            np.testing.assert_array_equal(
                msgs[1][3].data.reshape(12, 16, 3), colour(0, 1 + 10 * e))


def test_numbering_continues_and_errors_are_clear(tmp_path):
    (tmp_path / "episode_000041").mkdir()
    rec = BagRecorder(tmp_path, TOPICS)
    assert rec.start_episode() == "episode_000042"
    with pytest.raises(RecorderError, match="already recording"):
        rec.start_episode()
    with pytest.raises(RecorderError, match="not recorded"):
        rec.write("/other", b"x", 1)
    rec.discard_episode()
    assert not (tmp_path / PARTIAL / "episode_000042").exists()
    with pytest.raises(RecorderError, match="no episode is recording"):
        rec.stop_episode()
    assert rec.close() is None
    rec.start_episode()
    assert rec.close() == tmp_path / "episode_000042"  # close keeps a running episode
    with pytest.raises(ValueError, match="storage"):
        BagRecorder(tmp_path, TOPICS, storage="rosbag1")
    with pytest.raises(ValueError, match="not in the kilted typestore"):
        BagRecorder(tmp_path, [("/x", "my_msgs/msg/Thing")])
