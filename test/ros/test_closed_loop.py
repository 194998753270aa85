"""Closed-loop episodes: bridge (in process) + policy_node (its own process) on sim time."""

import yaml

from snapflow_ros.apps.closed_loop import ends_between, run_episodes, summarize, wilson
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
        assert len(episode["distances"]) == 2 and min(episode["distances"]) > 0.03  # tool to goals
    summary = summarize(episodes)
    assert summary["episodes"] == 2 and summary["success_rate"] == 0.0
    assert summary["failed_between"] == sum(ends_between(e) for e in episodes)
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


def _episode(success, reached, distances):
    return {"seed": 0, "success": success, "reached": reached, "time_s": 1.0, "wall_s": 1.0,
            "chunks": 1, "model_ms_p50": 1.0, "distances": distances}


def test_summary_counts_how_far_failed_picks_got():
    picks = [{**_episode(ok, 0 if ok else -1, None), "got_to": got}
             for ok, got in [(True, "held"), (False, "at_cube"), (False, "at_cube"),
                             (False, "lifted"), (False, "approach")]]
    summary = summarize(picks)
    assert summary["failures_got_to"] == {"at_cube": 2, "lifted": 1, "approach": 1}
    assert summarize([_episode(False, -1, [0.19, 0.2])])["failures_got_to"] == {}  # a reach


def test_wilson_interval_matches_known_values_and_stays_in_unit_range():
    low, high = wilson(27, 30)  # the textbook example: 0.9 of 30 -> 0.744-0.965
    assert abs(low - 0.744) < 1e-3 and abs(high - 0.965) < 1e-3
    assert wilson(0, 20)[0] == 0.0 and 0.0 < wilson(0, 20)[1] < 0.2
    assert wilson(20, 20)[1] == 1.0 and 0.8 < wilson(20, 20)[0] < 1.0
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(30, 60)[1] - wilson(30, 60)[0] < wilson(10, 20)[1] - wilson(10, 20)[0]


def test_failures_between_the_targets_are_told_from_near_misses_and_successes():
    goal_gap = 0.36  # the fixed targets are 2 x 0.18 m apart
    assert ends_between(_episode(False, -1, [0.19, 0.2]))  # about halfway: averaged modes
    assert not ends_between(_episode(False, -1, [0.05, goal_gap]))  # a near miss of target a
    assert not ends_between(_episode(True, 1, [0.3, 0.01]))  # a success
    assert not ends_between(_episode(False, -1, None))  # no reach task: nothing to tell
    summary = summarize([_episode(True, 0, [0.01, 0.35]), _episode(True, 1, [0.35, 0.01]),
                         _episode(False, -1, [0.18, 0.19]), _episode(False, -1, [0.06, 0.3])])
    assert (summary["reached_a"], summary["reached_b"], summary["failed_between"]) == (1, 1, 1)
    assert summary["success_rate"] == 0.5
    assert summary["success_ci95"] == [round(v, 3) for v in wilson(2, 4)]
