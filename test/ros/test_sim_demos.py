"""sim_demos bags (reproducible, converter-ready) and the bridge → recorder episode wiring."""

import json
import time
import uuid

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from std_srvs.srv import Trigger

from snapflow_ros.apps.sim_demos import main, record_demos
from snapflow_ros.conversions.cdr import header_stamp_ns
from snapflow_ros.nodes.mujoco_bridge_node import MujocoBridgeNode
from snapflow_ros.topic_map import load_topic_map

TS = get_typestore(Stores.ROS2_KILTED)
NS = f"/t{uuid.uuid4().hex[:8]}"  # private topics: other test runs may share the domain


def _read(bag):
    out = {}
    with Reader(bag) as reader:
        assert list(reader.path.glob("*.mcap"))  # rosbag2 with the mcap storage plugin
        for conn, stamp, raw in reader.messages():
            msg = TS.deserialize_cdr(raw, conn.msgtype)
            out.setdefault(conn.topic, []).append((stamp, msg, conn.msgtype))
    return out


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    return out, record_demos(out, episodes=2, seed=4, namespace=NS)


def test_bags_hold_the_topic_maps_topics_stamped_in_sim_time(demos):
    out, summaries = demos
    tm = load_topic_map()
    assert [s["bag"] for s in summaries] == ["episode_000000", "episode_000001"]
    assert sorted(p.name for p in out.iterdir()) == ["episode_000000", "episode_000001",
                                                     "episodes.jsonl"]  # no .partial left
    lines = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert lines == summaries
    for summary in summaries:
        assert summary["success"] and summary["reached"] == summary["planned"]
        bag = _read(out / summary["bag"])
        expected = {f"{NS}/{t}" for t in [c.topic for c in tm.cameras]
                    + [tm.joint_states.topic, tm.action.topic]}
        assert set(bag) == expected | {f"{NS}/episode/status"}
        status = json.loads(bag[f"{NS}/episode/status"][0][1].data)
        assert status["success"] and status["seed"] == summary["seed"]
        start, end = status["start_ns"], status["end_ns"]
        for topic in expected:
            stamps = [s for s, m, _ in bag[topic]]
            headers = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
                       for _, m, _ in bag[topic]]
            assert stamps == headers and stamps == sorted(stamps)
            assert start <= stamps[0] and stamps[-1] <= end
        front = bag[f"{NS}/camera/front/image_raw"]
        assert front[0][0] == start and front[0][2] == "sensor_msgs/msg/Image"
        assert len(front) == pytest.approx(30 * (end - start) / 1e9, abs=2)
        image = front[0][1]
        assert (image.encoding, image.height, image.width) == ("rgb8", 224, 224)
        commands = bag[f"{NS}/joint_commands"]
        assert [m.name for _, m, _ in commands[:1]] == [tm.action_names]
        # every command answers a frame: same stamps
        assert [s for s, _, _ in commands] == [s for s, _, _ in front][:len(commands)]
        assert len(bag[f"{NS}/joint_states"]) == pytest.approx(100 * (end - start) / 1e9, abs=2)


def test_same_seed_same_episode(demos, tmp_path):
    out, summaries = demos
    again = record_demos(tmp_path, episodes=1, seed=summaries[0]["seed"], namespace=NS + "b")
    a, b = _read(out / summaries[0]["bag"]), _read(tmp_path / again[0]["bag"])
    qa = np.array([m.position for _, m, _ in a[f"{NS}/joint_states"]])
    qb = np.array([m.position for _, m, _ in b[f"{NS}b/joint_states"]])
    assert qa.shape == qb.shape and np.array_equal(qa, qb)
    assert summaries[0]["planned"] == again[0]["planned"]


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "x").write_text("keep")
    with pytest.raises(SystemExit):
        main(["--episodes", "1", "--out", str(tmp_path)])
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "x").read_text() == "keep"


def test_header_stamp_is_read_from_raw_cdr():  # what the recorder stamps bags with
    msg = TS.types["sensor_msgs/msg/JointState"](
        header=TS.types["std_msgs/msg/Header"](
            stamp=TS.types["builtin_interfaces/msg/Time"](sec=3, nanosec=5), frame_id="x"),
        name=["a"], position=np.array([1.0]), velocity=np.array([]), effort=np.array([]))
    raw = TS.serialize_cdr(msg, "sensor_msgs/msg/JointState")
    assert header_stamp_ns(raw) == 3 * 10**9 + 5


def test_bridge_episodes_drive_the_recorder(tmp_path):
    """sim.launch.py record:=true wiring: the recorder's episode_topic is the bridge's
    episode/active, so every bridge episode becomes one bag."""
    from snapflow_ros.nodes import recorder_node

    ns = NS + "rec"
    remap = ["--ros-args", "-r", f"/clock:={ns}/clock", "-r", f"/diagnostics:={ns}/diag"]
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = []
    try:
        nodes.append(MujocoBridgeNode(
            context=ctx, namespace=ns, cli_args=remap, parameter_overrides=[
                Parameter("real_time_factor", value=4.0),
                Parameter("episode_timeout_s", value=0.4)]))
        nodes.append(recorder_node.RecorderNode(
            context=ctx, namespace=ns, cli_args=remap, parameter_overrides=[
                Parameter("use_sim_time", value=True),
                Parameter("output_dir", value=str(tmp_path)),
                Parameter("episode_topic", value="episode/active"),
                Parameter("autostart", value=True)]))
        client = nodes[1].create_client(Trigger, f"{ns}/mujoco_bridge/reset")
        executor = SingleThreadedExecutor(context=ctx)
        for node in nodes:
            executor.add_node(node)

        def spin(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.01)

        spin(1.0)  # episode 0 ends after 0.4 s of sim time (0.1 s of wall)
        future = client.call_async(Trigger.Request())
        while not future.done():
            executor.spin_once(timeout_sec=0.01)
        spin(1.0)
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=ctx)
    bags = sorted(p.parent for p in tmp_path.rglob("metadata.yaml"))
    assert len(bags) == 2
    for bag in bags:
        with Reader(bag) as reader:
            topics = {c.topic for c in reader.connections}
            assert f"{ns}/camera/front/image_raw" in topics and reader.message_count > 10


def test_the_same_seed_gives_byte_identical_bags_on_a_busy_machine(tmp_path):
    """Load used to leak into the bags: topics were written in arrival order, and the sim ran
    on between episodes while a bag was written (the next episode started at a later sim time,
    so every stamp differed), and the reset raced the bridge's taking of the expert's last
    answer (on a quiet machine the next episode mostly started a frame earlier). Two recordings
    of the same two episodes, the second beside a busy process on every core, must be the same
    bytes."""
    import os
    import subprocess
    import sys

    ns = f"/t{uuid.uuid4().hex[:8]}"
    record_demos(tmp_path / "quiet", episodes=2, seed=7, namespace=ns)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)]
    try:
        record_demos(tmp_path / "busy", episodes=2, seed=7, namespace=ns)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    quiet = sorted(p.relative_to(tmp_path / "quiet") for p in (tmp_path / "quiet").rglob("*")
                   if p.is_file())
    assert len(quiet) == 5  # two bags (mcap + metadata.yaml each) and episodes.jsonl
    for rel in quiet:
        same = (tmp_path / "quiet" / rel).read_bytes() == (tmp_path / "busy" / rel).read_bytes()
        assert same, rel


@pytest.mark.parametrize("robot, cameras", [("so101", ["front"]),
                                             ("so101_wrist", ["front", "wrist"])])
def test_so101_pick_demos_record_and_convert(robot, cameras, tmp_path, capsys, monkeypatch):
    """``sim_demos --robot so101`` (and ``so101_wrist``: the generated scene with a wrist
    camera, written to the cache directory): the SO-101 pick expert through the bridge, one
    bag per episode, every episode a success; bag_to_lerobot makes a dataset with the arm's 6
    joints and the robot's cameras."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from snapflow_ros.data.bag_to_lerobot import ConvertConfig, convert
    from snapflow_ros.sim.robots import ROBOTS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out, ns = tmp_path / robot, f"/t{uuid.uuid4().hex[:8]}"
    assert main(["--robot", robot, "--episodes", "2", "--seed", "11", "--out", str(out),
                 "--namespace", ns]) == 0
    assert "2/2 successful" in capsys.readouterr().err
    made = (tmp_path / "cache" / "snapflow_ros" / "so101" / "pick_scene_wrist.xml").is_file()
    assert made == (robot == "so101_wrist")
    lines = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert [x["success"] for x in lines] == [True, True]
    status = json.loads(_read(out / lines[0]["bag"])[f"{ns}/episode/status"][0][1].data)
    assert status["info"]["lift_m"] > 0.03 and status["reached"] == 0
    tm = load_topic_map(ROBOTS[robot].topic_map())
    convert(ConvertConfig(bags=[out], output=tmp_path / "dataset", topic_map=tm, namespace=ns,
                          video=False))
    dataset = LeRobotDataset(f"local/{robot}", root=tmp_path / "dataset")
    assert dataset.num_episodes == 2 and dataset.num_frames > 150  # ~3.5 s each at 30 fps
    item = dataset[dataset.num_frames - 1]  # the end of a pick: the gripper closed on the cube
    assert item["observation.state"].shape == (6,) and item["action"].shape == (6,)
    assert 0.3 < float(item["observation.state"][5]) < 0.6  # the cube holds the jaws apart
    images = {k.removeprefix("observation.images."): v for k, v in item.items()
              if k.startswith("observation.images.")}
    assert sorted(images) == sorted(cameras)
    for name, image in images.items():
        assert image.shape == (3, 240, 320) and float(image.std()) > 0.02, name


def test_sim_demos_refuses_a_task_of_another_robot(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--robot", "so101", "--task", "reach_two_targets", "--out", str(tmp_path)])
    assert "['so101_pick_cube'] for robot 'so101'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one way to succeed: no pairs of targets
        main(["--robot", "so101", "--balanced", "--out", str(tmp_path)])
    assert "only the arm's reach tasks have two" in capsys.readouterr().err
