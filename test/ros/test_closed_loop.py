"""Closed-loop episodes: bridge (in process) + policy_node (its own process) on sim time."""

import yaml

from snapflow_ros.apps.closed_loop import run_episodes, summarize
from snapflow_ros.paths import config_path


def test_a_policy_node_process_drives_the_simulated_arm(tmp_path):
    """Also the static engine end to end: prepared in the worker at configure, chunks in a loop."""
    data = yaml.safe_load(config_path("topic_map.yaml").read_text())
    for cam in data["cameras"].values():
        cam.update(height=64, width=64)
    topic_map = tmp_path / "map.yaml"
    topic_map.write_text(yaml.safe_dump(data))
    log = tmp_path / "policy_node.log"
    episodes = run_episodes("smolvla-tiny", [3, 4], topic_map=str(topic_map),
                            task="reach_two_fixed_targets", episode_timeout_s=0.5,
                            policy_params={"num_steps": 1, "device": "cpu"}, log_path=log,
                            engine="static")
    assert [e["seed"] for e in episodes] == [3, 4]
    for episode in episodes:
        assert episode["chunks"] >= 1  # chunks came back through ROS and the sim advanced
        assert 0.5 <= episode["time_s"] < 0.6  # it ran to the timeout (random weights)
        assert not episode["success"] and episode["reached"] == -1
    summary = summarize(episodes)
    assert summary["episodes"] == 2 and summary["success_rate"] == 0.0
    assert "configured" in log.read_text()  # the node's own log was kept
    assert "prepared on the first chunk" not in log.read_text()  # prepared at configure


def test_cpu_threads_reach_the_policy_node_as_its_parameter():
    import itertools

    import pytest

    from snapflow_ros.apps import closed_loop
    from snapflow_ros.apps.node_process import policy_node_command

    for threads in (0, 2):
        params = closed_loop.node_params("map.yaml", {"num_steps": 1}, cpu_threads=threads)
        cmd = policy_node_command("/ns", {"use_sim_time": True, "inference_cpus": [0, 1],
                                          **params}, remaps=["/clock:=/ns/clock"])
        assert cmd[1:5] == ["-m", "snapflow_ros", "policy_node", "--ros-args"]
        pairs = list(itertools.pairwise(cmd))
        assert ("-r", "__ns:=/ns") in pairs and ("-r", "/clock:=/ns/clock") in pairs
        assert ("-p", f"cpu_threads:={threads}") in pairs  # 0: the node resolves auto itself
        assert ("-p", "num_steps:=1") in pairs and ("-p", "use_sim_time:=true") in pairs
        assert ("-p", "inference_cpus:=[0,1]") in pairs
    assert closed_loop.node_params("m", {"cpu_threads": 3}, cpu_threads=1)["cpu_threads"] == 3
    with pytest.raises(ValueError, match="cpu_threads must be >= 0"):
        closed_loop.node_params("m", None, cpu_threads=-1)
    params = closed_loop.node_params("m", None, engine="static")
    assert ("-p", "engine:=static") in list(itertools.pairwise(policy_node_command("/ns", params)))
    assert closed_loop.node_params("m")["engine"] == "auto"
    with pytest.raises(ValueError, match="engine='fastest'"):
        closed_loop.node_params("m", None, engine="fastest")
