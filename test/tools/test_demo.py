"""``python -m snapflow_ros demo`` (the README's main job) at miniature scale (``--quick``):
sim demonstrations → bags → dataset → teacher → SnapFlow → closed loop through the ROS nodes."""

import json
import subprocess
import sys

from snapflow_ros.policies import load_policy


def _demo(*args):
    return subprocess.run([sys.executable, "-m", "snapflow_ros", "demo", "--quick", *args],
                          capture_output=True, text=True, timeout=900)


def test_quick_demo_runs_the_whole_pipeline_closed_loop(tmp_path):
    out = tmp_path / "demo"
    run = _demo("--out", str(out))
    assert run.returncode == 0, run.stderr[-4000:]
    assert len(list((out / "bags").glob("episode_*"))) == 3  # recorded expert episodes
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
