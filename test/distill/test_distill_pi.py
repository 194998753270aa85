"""``distill`` on a tiny pi0.5 through the real CLI: the same trainer and eval as SmolVLA, behind
the one policy interface. The teacher is what ``demo --policy-type pi05`` trains: a plain lerobot
pi0.5 directory (``apps/teacher.py``), which must load in its tiny shape, offline, and so must
the student distilled from it and its ``--export``."""

import json
import subprocess
import sys

from conftest import CHUNK

from snapflow_ros.policies import load_policy


def test_distill_a_tiny_pi05_writes_a_student_and_eval_json(tmp_path, tiny_dataset,
                                                             distill_args):
    from snapflow_ros.apps.teacher import train_teacher

    teacher_dir = train_teacher(tiny_dataset, tmp_path / "teacher", steps=2, batch_size=2,
                                chunk_size=CHUNK, n_action_steps=CHUNK, progress=False,
                                policy_type="pi05")
    assert not (teacher_dir / "snapflow.json").exists()  # a plain lerobot directory
    teacher = load_policy(teacher_dir)
    assert not teacher.is_snapflow and teacher.policy.policy_type == "pi05"
    out = tmp_path / "run"
    args = distill_args(out, "--steps", "3", "--save_every", "3", "--batch_size", "2",
                        "--export", teacher=teacher_dir)
    proc = subprocess.run([sys.executable, "-m", "snapflow_ros", "distill", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    student = load_policy(out / "student")
    assert student.is_snapflow and student.policy.policy_type == "pi05"
    assert student.policy.default_num_steps == 1
    card = (out / "student" / "README.md").read_text()  # the model card: what, provenance
    assert card.startswith("# SnapFlow 1-NFE pi05 (SnapFlow checkpoint)") and "| distill:" in card
    n_teacher = sum(p.numel() for p in teacher.policy.policy.parameters())
    n_student = sum(p.numel() for p in student.policy.policy.parameters())
    assert n_student == n_teacher  # the same (tiny) modules, no architecture change
    results = json.loads((out / "eval.json").read_text())
    methods = results.get("methods", results)
    assert {"teacher_10", "naive_1", "snapflow_1"} <= set(methods)
    exported = load_policy(out / "student_lerobot")  # --export: a plain 1-step lerobot policy
    assert not exported.is_snapflow and exported.policy.default_num_steps == 1
    assert "| snapflow_1 | 1 |" in (out / "student_lerobot" / "README.md").read_text()
