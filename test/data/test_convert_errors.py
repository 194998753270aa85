"""bag_to_lerobot on bad input: clear errors naming the problem and the fix, nothing half
written, an existing dataset untouched."""

from __future__ import annotations

import pytest
from bagkit import JOINTS, MS, T0, colour, make_scenario

from snapflow_ros.data import bag_messages as bm
from snapflow_ros.data.bag_reader import BagError
from snapflow_ros.data.bag_to_lerobot import ConvertConfig, convert, main
from snapflow_ros.data.lerobot_writer import DatasetExistsError
from snapflow_ros.data.streams import ConversionError


def _convert(tmp_path, topic_map, bags, out="ds", **kw):
    kw.setdefault("max_age_for", {"wrist": 0.25})
    kw.setdefault("video", False)
    return convert(ConvertConfig(bags=bags, output=tmp_path / out, topic_map=topic_map,
                                 progress=False, **kw))


def _truncated(bag):
    """Cut the bag's mcap file in half (a recorder killed mid-write)."""
    data = next(bag.glob("*.mcap"))
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2])
    return bag


def _nothing_written(tmp_path, out="ds"):
    """No dataset and no temporary directory left beside it."""
    return not (tmp_path / out).exists() and not list(tmp_path.glob(f".{out}.*"))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_or_corrupt_bag(tmp_path, topic_map, storage):
    good = make_scenario(10).write(tmp_path / "good", storage)
    bad = make_scenario(10).write(tmp_path / "bad", storage)
    data = next(f for f in bad.iterdir() if f.suffix in (".mcap", ".db3"))
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2] if storage == "mcap" else b"\0garbage" * 100)
    with pytest.raises(BagError, match="bad") as err:
        _convert(tmp_path, topic_map, [good, bad])  # the good bag was converted first
    assert "truncated or corrupt" in str(err.value)
    assert _nothing_written(tmp_path)


def test_not_a_bag(tmp_path, topic_map):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"no metadata\.yaml"):
        _convert(tmp_path, topic_map, [tmp_path / "empty"])
    with pytest.raises(BagError, match="does not exist"):
        _convert(tmp_path, topic_map, [tmp_path / "nowhere"])
    assert _nothing_written(tmp_path)


def test_missing_topic_lists_the_topics_of_the_bag(tmp_path, topic_map):
    sc = make_scenario(10)
    sc.messages = [m for m in sc.messages if m[0] != "/cam/wrist"]
    with pytest.raises(BagError) as err:
        _convert(tmp_path, topic_map, [sc.write(tmp_path / "bag")])
    text = str(err.value)
    assert "no topic '/cam/wrist'" in text and "camera 'wrist'" in text
    assert "/cam/front (sensor_msgs/msg/Image)" in text and "/joint_states" in text
    assert "--namespace" in text
    assert _nothing_written(tmp_path)


def test_wrong_message_type(tmp_path, topic_map):
    sc = make_scenario(10)
    sc.messages = [m for m in sc.messages if m[0] != "/cmd"]
    sc.messages.append(("/cmd", T0, bm.multi_array([1.0, 2.0, 3.0])))
    with pytest.raises(BagError, match=r"'/cmd' \(action \(JointState\)\) is .*Float64MultiArray"):
        _convert(tmp_path, topic_map, [sc.write(tmp_path / "bag")])
    assert _nothing_written(tmp_path)


def test_unknown_encoding(tmp_path, topic_map):
    sc = make_scenario(10)
    sc.messages.append(("/cam/front", T0 + 405 * MS, bm.image(colour(0, 0), T0 + 402 * MS,
                                                                "yuv422")))
    with pytest.raises(ConversionError) as err:
        _convert(tmp_path, topic_map, [sc.write(tmp_path / "bag")])
    text = str(err.value)
    assert "'yuv422'" in text and "/cam/front" in text and "rgb8" in text
    assert _nothing_written(tmp_path)


def test_joints_missing_from_joint_state_are_named(tmp_path, topic_map):
    sc = make_scenario(10, state_names=["a", "c", "gripper"])
    with pytest.raises(ConversionError) as err:
        _convert(tmp_path, topic_map, [sc.write(tmp_path / "bag")])
    text = str(err.value)
    assert "['b']" in text and "/joint_states" in text and "topic map" in text
    assert _nothing_written(tmp_path)


def test_no_frame_can_be_filled(tmp_path, topic_map):
    sc = make_scenario(10)
    sc.messages = [m for m in sc.messages if m[0] != "/cmd"]
    sc.messages.append(("/cmd", T0 - 10**9, bm.joint_state(JOINTS, [0, 0, 0], T0 - 10**9)))
    with pytest.raises(ConversionError, match=r"no frame could be filled.*stale:action"):
        _convert(tmp_path, topic_map, [sc.write(tmp_path / "bag")])
    assert _nothing_written(tmp_path)


def test_existing_output_is_refused_unless_overwrite(tmp_path, topic_map):
    bag = make_scenario(10).write(tmp_path / "bag")
    first = _convert(tmp_path, topic_map, [bag])
    info = (tmp_path / "ds" / "meta" / "info.json").read_text()
    with pytest.raises(DatasetExistsError, match="--overwrite"):
        _convert(tmp_path, topic_map, [bag])
    # a failing overwrite leaves the old dataset as it was
    broken = make_scenario(10, state_names=["a"]).write(tmp_path / "broken")
    with pytest.raises(ConversionError):
        _convert(tmp_path, topic_map, [broken], overwrite=True)
    assert (tmp_path / "ds" / "meta" / "info.json").read_text() == info
    assert not list(tmp_path.glob(".ds.*"))
    # a successful overwrite replaces it
    again = _convert(tmp_path, topic_map, [bag, make_scenario(10, seed=1).write(tmp_path / "b2")],
                     overwrite=True)
    assert again["totals"]["episodes_written"] == 2 * first["totals"]["episodes_written"]
    # a folder that is not a dataset is never deleted, even with --overwrite
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetExistsError, match=r"not a LeRobot dataset.*refusing to delete"):
        _convert(tmp_path, topic_map, [bag], out="notes", overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_libsvtav1_on_narrow_cameras_is_refused_before_anything_is_written(tmp_path,
                                                                          topic_map):
    """SVT-AV1 3.0 dies of SIGFPE on frames under ~26 pixels wide (no cleanup could run)."""
    bag = make_scenario(10).write(tmp_path / "bag")
    with pytest.raises(ValueError, match=r"libsvtav1.*narrower than 32.*--vcodec h264"):
        _convert(tmp_path, topic_map, [bag], video=True, vcodec="libsvtav1")
    assert _nothing_written(tmp_path)


def test_cli_reports_errors_without_a_traceback(tmp_path, topic_map_file, capsys):
    bag = make_scenario(10).write(tmp_path / "bag")
    args = [str(bag), "--output", str(tmp_path / "ds"), "--topic-map", str(topic_map_file),
            "--no-progress", "--no-video"]
    assert main([*args, "--reference", "side"]) == 1
    err = capsys.readouterr().err
    assert "--reference 'side' is not a camera" in err and "Traceback" not in err
    assert main([*args, "--max-age-for", "elbow=0.1"]) == 1
    assert "unknown feature" in capsys.readouterr().err
    assert _nothing_written(tmp_path)
    with pytest.raises(SystemExit):
        main([*args, "--max-age-for", "wrist"])
    assert "expected NAME=VALUE, got 'wrist'" in capsys.readouterr().err
    assert main([str(tmp_path / "ds")]) == 2  # no --output
    assert "give the bags to convert and --output" in capsys.readouterr().err


def test_cli_short_flags_positional_bags_and_a_config_file(tmp_path, topic_map_file):
    """The converter's options are ConvertConfig's fields: the Unix spellings (positional bags,
    -o, -j, --no-video, repeated NAME=S) and a YAML file give the same dataset."""
    import json

    bag = make_scenario(10).write(tmp_path / "bag")
    assert main([str(bag), "-o", str(tmp_path / "a"), "--topic-map", str(topic_map_file),
                 "-j", "1", "--no-video", "--no-progress", "--max-age-for", "wrist=0.25",
                 "--max-age-for", "state=0.05"]) == 0
    config = tmp_path / "convert.yaml"
    config.write_text(f"bags: [{bag}]\noutput: {tmp_path / 'b'}\ntopic_map: {topic_map_file}\n"
                      "video: false\nprogress: false\nmax_age_for: {wrist: 0.25, state: 0.05}\n")
    assert main(["--config_path", str(config)]) == 0
    reports = [json.loads((tmp_path / d / "sync_report.json").read_text()) for d in "ab"]
    assert reports[0]["totals"] == reports[1]["totals"]
    assert reports[0]["totals"]["frames_written"] > 0


def test_append_refuses_a_different_layout_and_a_failed_append_loses_nothing(tmp_path,
                                                                             topic_map):
    bag = make_scenario(10).write(tmp_path / "bag")
    _convert(tmp_path, topic_map, [bag])
    info = (tmp_path / "ds" / "meta" / "info.json").read_text()
    with pytest.raises(ValueError, match="exclude each other"):
        _convert(tmp_path, topic_map, [bag], overwrite=True, append=True)
    # video instead of images: named, nothing touched
    with pytest.raises(DatasetExistsError, match="cannot append") as err:
        convert(ConvertConfig(bags=[bag], output=tmp_path / "ds", topic_map=topic_map,
                              video=True, vcodec="h264", max_age_for={"wrist": 0.25},
                              progress=False, append=True))
    assert "observation.images.front: ('image'" in str(err.value)
    # a bag that fails half-way through the append: the dataset is as it was
    broken = _truncated(make_scenario(10).write(tmp_path / "broken"))
    with pytest.raises(BagError):
        _convert(tmp_path, topic_map, [bag, broken], append=True)
    assert (tmp_path / "ds" / "meta" / "info.json").read_text() == info
    assert not list(tmp_path.glob(".ds.*"))
    # a folder that is not a dataset is never appended to
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetExistsError, match="refusing to append to"):
        _convert(tmp_path, topic_map, [bag], out="notes", append=True)
