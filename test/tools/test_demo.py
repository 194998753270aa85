"""``python -m snapflow_ros demo`` (the README's main job) at miniature scale (``--quick``):
sim demonstrations → bags → dataset → teacher → SnapFlow → closed loop through the ROS nodes."""

import json
import subprocess
import sys

import pytest

from snapflow_ros.policies import load_policy


def _demo(*args):
    return subprocess.run([sys.executable, "-m", "snapflow_ros", "demo", "--quick", *args],
                          capture_output=True, text=True, timeout=900)


def test_quick_demo_runs_the_whole_pipeline_closed_loop(tmp_path):
    out = tmp_path / "demo"
    run = _demo("--out", str(out))
    assert run.returncode == 0, run.stderr[-4000:]
    assert len(list((out / "bags").glob("episode_*"))) == 3  # recorded expert episodes
    demos = [json.loads(x) for x in (out / "bags" / "episodes.jsonl").read_text().splitlines()]
    # pairs from one seed (same start), one to each target
    assert [(d["seed"], d["reached"]) for d in demos] == [(0, 0), (0, 1), (1, 0)]
    assert (out / "dataset" / "meta" / "info.json").is_file()
    assert (out / "teacher" / "config.json").is_file()
    assert not (out / "teacher" / "snapflow.json").exists()  # a plain LeRobot teacher
    student = load_policy(out / "distill" / "student")
    assert student.is_snapflow and student.policy.default_num_steps == 1
    assert set(json.loads((out / "distill" / "eval.json").read_text())) >= {
        "teacher_10", "naive_1", "snapflow_1"}
    report = json.loads((out / "closed_loop.json").read_text())
    assert set(report["methods"]) == {"teacher_10", "naive_1", "snapflow_1"}
    for method in report["methods"].values():
        wins = round(method["success_rate"] * method["episodes"])
        assert method["reached_a"] + method["reached_b"] == wins
        assert 0 <= method["failed_between"] <= method["episodes"]
        (episode,) = method["episodes_"]
        assert episode["chunks"] >= 1  # the policy node drove the simulated arm
        assert episode["time_s"] > 0
    assert (out / "closed_loop.png").stat().st_size > 1000
    assert "SnapFlow 1-NFE" in run.stdout


def test_demo_refuses_to_overwrite_a_previous_run(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("x")
    run = _demo("--out", str(tmp_path / "demo"))
    assert run.returncode != 0 and "--overwrite" in run.stderr
    assert (tmp_path / "demo" / "mine.txt").exists()


@pytest.fixture
def restore_threads():
    """The demo applies its thread policy to this process: undo it afterwards."""
    import os

    import torch

    threads, env = torch.get_num_threads(), dict(os.environ)
    yield
    torch.set_num_threads(threads)
    os.environ.clear()
    os.environ.update(env)


@pytest.mark.parametrize(("flag", "requested"), [([], 0), (["--cpu-threads", "3"], 3)])
def test_cpu_threads_reach_training_distill_and_the_policy_node(
        tmp_path, monkeypatch, restore_threads, flag, requested):
    """Every step is stubbed: only what the demo passes on is checked."""
    import torch

    from snapflow_ros.apps import closed_loop, demo, sim_demos, teacher
    from snapflow_ros.cpu_threads import resolve_cpu_threads
    from snapflow_ros.data import bag_to_lerobot
    from snapflow_ros.distill import trainer

    seen: dict = {"node": []}
    monkeypatch.setattr(sim_demos, "record_demos", lambda *a, **k: [])
    monkeypatch.setattr(bag_to_lerobot, "convert", lambda cfg: {})
    monkeypatch.setattr(teacher, "train_teacher",
                        lambda *a, **k: seen.update(teacher=k["cpu_threads"]))
    monkeypatch.setattr(trainer, "distill", lambda cfg: seen.update(distill=cfg.cpu_threads))

    def episodes(path, seeds, **kw):
        seen["node"].append(closed_loop.node_params(kw["topic_map"], kw["policy_params"],
                                                    kw["cpu_threads"])["cpu_threads"])
        return [{"seed": s, "success": True, "reached": 0, "time_s": 1.0, "wall_s": 1.0,
                 "chunks": 1, "model_ms_p50": 1.0} for s in seeds]

    monkeypatch.setattr(closed_loop, "run_episodes", episodes)
    assert demo.main(["--quick", "--out", str(tmp_path / "demo"), *flag]) == 0
    resolved = resolve_cpu_threads(requested, reserved=1)
    assert seen == {"teacher": requested, "distill": requested, "node": [requested] * 3}
    assert torch.get_num_threads() == resolved  # the demo's own process
    report = json.loads((tmp_path / "demo" / "closed_loop.json").read_text())
    assert report["cpu_threads"] == {"requested": requested, "resolved": resolved}
