"""``distill`` on a tiny pi0.5 through the real CLI: the same trainer and eval as SmolVLA, behind
the one policy interface (the teacher is a tiny pi0.5 saved with the dataset's stats)."""

import json
import subprocess
import sys

from conftest import ACTION_DIM, CHUNK, STATE_DIM

from snapflow_ros.policies import load_policy, save_policy, wrap


def test_distill_a_tiny_pi05_writes_a_student_and_eval_json(tmp_path, tiny_dataset,
                                                             distill_args):
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    from snapflow_ros.policies.tiny_pi import make_pi

    stats = LeRobotDatasetMetadata("local/tiny_distill", root=tiny_dataset).stats
    policy, pre, post = make_pi("pi05", cameras=("front",), state_dim=STATE_DIM,
                                action_dim=ACTION_DIM, chunk_size=CHUNK, n_action_steps=CHUNK,
                                stats=stats)
    teacher = wrap(policy, default_num_steps=10, sampler="euler",
                   teacher={"source": "pi05-tiny", "num_steps": 10, "shape": "tiny"})
    save_policy(teacher, tmp_path / "teacher", preprocessor=pre, postprocessor=post)
    out = tmp_path / "run"
    args = distill_args(out, "--steps", "3", "--save_every", "3", "--batch_size", "2",
                        teacher=tmp_path / "teacher")
    proc = subprocess.run([sys.executable, "-m", "snapflow_ros", "distill", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    student = load_policy(out / "student")
    assert student.is_snapflow and student.policy.policy_type == "pi05"
    assert student.policy.default_num_steps == 1
    results = json.loads((out / "eval.json").read_text())
    methods = results.get("methods", results)
    assert {"teacher_10", "naive_1", "snapflow_1"} <= set(methods)
