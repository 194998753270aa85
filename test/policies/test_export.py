"""``export``: a SnapFlow student as a plain 1-step LeRobot policy (φ(1, 0) folded into a bias).

The exported directory, sampled by lerobot's own code with 1 step, equals the student's 1-NFE
chunk (float rounding) for every model type; it and a saved checkpoint load in a process that
imports only lerobot, after being copied elsewhere with the VLM folder they were built from
gone."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from snapflow_ros.policies import load_policy, make_builtin, save_policy
from snapflow_ros.policies.export import ExportError, export_lerobot, lerobot_loading
from snapflow_ros.policies.tiny import random_observation

MODELS = ["smolvla-tiny", "pi0-tiny", "pi05-tiny"]


def _student(name, directory, seed=0):
    """A SnapFlow checkpoint of ``name`` whose φ is far from zero (a trained one is not zero)."""
    teacher = make_builtin(name, seed=seed)
    policy = teacher.policy
    with torch.no_grad():
        for p in policy.phi.parameters():
            p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed + 7))
    policy.set_sampling(1, "snap")
    save_policy(policy, directory, preprocessor=teacher.preprocessor,
                postprocessor=teacher.postprocessor)
    return load_policy(directory)


@pytest.mark.parametrize("name", MODELS)
def test_the_exported_policy_samples_the_students_one_step_chunk(tmp_path, name):
    student = _student(name, tmp_path / "student")
    out = export_lerobot(student, tmp_path / "exported")
    exported = load_policy(out)  # a plain lerobot directory: lerobot's own sampler below
    assert not exported.is_snapflow and exported.policy.default_num_steps == 1
    assert (out / "README.md").read_text().startswith("# SnapFlow 1-NFE")
    worst = 0.0
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        obs = random_observation(student.policy.config, generator=g)
        noise = student.policy.noise_like(1, g)
        ref = student.policy.predict_action_chunk(student.preprocessor(dict(obs)), noise=noise,
                                                  num_steps=1)
        got = exported.policy.policy.predict_action_chunk(exported.preprocessor(dict(obs)),
                                                          noise=noise)
        unfolded = student.policy.predict_action_chunk(student.preprocessor(dict(obs)),
                                                       noise=noise, num_steps=1,
                                                       sampler="euler")
        assert (ref - unfolded).abs().max() > 1e-3  # φ matters: the fold is not a no-op
        worst = max(worst, float((got - ref).abs().max()))
    assert worst < 1e-5, worst


def test_export_refuses_a_plain_teacher_and_a_non_empty_directory(tmp_path):
    teacher = make_builtin("smolvla-tiny")
    save_policy(teacher.policy, tmp_path / "plain")
    (tmp_path / "plain" / "snapflow.json").unlink()  # now a plain lerobot directory
    with pytest.raises(ExportError, match="no SnapFlow φ"):
        export_lerobot(load_policy(tmp_path / "plain"), tmp_path / "out")
    student = _student("smolvla-tiny", tmp_path / "student")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        export_lerobot(student, tmp_path / "busy")
    assert (tmp_path / "busy" / "x").read_text() == "keep"


def test_export_refuses_a_time_layer_the_fold_would_not_be_exact_for(tmp_path):
    student = _student("smolvla-tiny", tmp_path / "student")
    student.policy.policy.model.action_time_mlp_in.bias = None  # nothing to fold into
    with pytest.raises(ExportError, match="not a linear layer with a bias"):
        export_lerobot(student, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_export_cli_writes_the_directory_and_says_what_it_is(tmp_path):
    _student("pi05-tiny", tmp_path / "student")
    cmd = [sys.executable, "-m", "snapflow_ros", "export", str(tmp_path / "student"),
           str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exported pi05 1-NFE student" in proc.stdout
    note = json.loads((tmp_path / "out" / "snapflow_export.json").read_text())
    assert note["policy_type"] == "pi05" and note["time_layer_bias_folded"]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "not empty" in again.stderr  # one line, no traceback
    assert "Traceback" not in again.stderr


def test_the_async_inference_server_accepts_every_exported_type():
    from lerobot.async_inference.constants import SUPPORTED_POLICIES

    for name in MODELS:
        assert make_builtin(name).policy.policy_type in SUPPORTED_POLICIES


_BUILD = """
import sys, torch
sys.path.insert(0, {test_dir!r})
from test_export import _student
from snapflow_ros.policies.export import export_lerobot
from snapflow_ros.policies.tiny import random_observation
student = _student("smolvla-tiny", {saved!r})
export_lerobot(student, {exported!r})
g = torch.Generator().manual_seed(3)
obs = random_observation(student.policy.config, generator=g)
noise = student.policy.noise_like(1, g)
ref = student.policy.predict_action_chunk(student.preprocessor(dict(obs)), noise=noise,
                                          num_steps=1)
torch.save({{"obs": obs, "noise": noise, "ref": ref}}, {reference!r})
"""

_LEROBOT_ONLY = """
import sys, torch
{loading}
ref = torch.load({reference!r})
got = policy.predict_action_chunk(pre(dict(ref["obs"])), noise=ref["noise"])
assert not any(m.startswith("snapflow_ros") for m in sys.modules), "snapflow_ros imported"
print("max_abs_diff", float((got - ref["ref"]).abs().max()))
"""


def test_exported_and_saved_directories_load_in_plain_lerobot_anywhere(tmp_path):
    """Built with a VLM folder in a private cache; that cache is deleted and both directories
    are moved before a process that imports only lerobot loads them (the README's lines)."""
    from pathlib import Path

    cache, saved, exported = tmp_path / "cache", tmp_path / "saved", tmp_path / "exported"
    reference = tmp_path / "reference.pt"
    script = _BUILD.format(test_dir=str(Path(__file__).parent), saved=str(saved),
                           exported=str(exported), reference=str(reference))
    env = {**__import__("os").environ, "SNAPFLOW_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(cache)  # the VLM folder the model was built from is gone
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for directory in (saved, exported):
        shutil.move(str(directory), str(moved / directory.name))
    for name, expect_exact in (("exported", True), ("saved", False)):
        loading = lerobot_loading("smolvla", str(moved / name)).strip().strip("`")
        loading = loading.removeprefix("python\n")
        code = _LEROBOT_ONLY.format(loading=loading, reference=str(reference))
        run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                             capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, f"{name}:\n{run.stderr[-3000:]}"
        diff = float(run.stdout.split("max_abs_diff")[1])
        if expect_exact:  # plain lerobot's own 1-step sampler = the student's 1-NFE chunk
            assert diff < 1e-5, diff
        else:  # the saved checkpoint's base weights: lerobot runs them as the 10-step teacher
            assert diff > 1e-3, diff


def test_lerobot_eval_runs_an_exported_student_on_pusht(tmp_path):
    """LeRobot's own evaluation tool, as a user runs it, on a simulated env from PyPI (PushT):
    a tiny SnapFlow student in PushT's shapes, exported, evaluated for 2 short episodes. The
    policy is untrained for PushT: this checks the plumbing, not the success rate."""
    from pathlib import Path

    from snapflow_ros.policies import wrap
    from snapflow_ros.policies.tiny import make_smolvla

    policy, pre, post = make_smolvla("tiny", cameras=["front"], state_dim=2, action_dim=2,
                                     chunk_size=10, n_action_steps=10, image_hw=(96, 96),
                                     max_state_dim=2, max_action_dim=2)
    student = wrap(policy, default_num_steps=1, sampler="snap")
    save_policy(student, tmp_path / "student", preprocessor=pre, postprocessor=post)
    exported = export_lerobot(load_policy(tmp_path / "student"), tmp_path / "exported")
    lerobot_eval = Path(sys.executable).with_name("lerobot-eval")
    cmd = [str(lerobot_eval), f"--policy.path={exported}", "--policy.device=cpu",
           "--env.type=pusht", "--env.episode_length=20", "--eval.n_episodes=2",
           "--eval.batch_size=1", f"--output_dir={tmp_path / 'eval'}",
           '--rename_map={"observation.image": "observation.images.front"}']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 2
