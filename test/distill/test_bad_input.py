"""Bad input to ``distill`` fails fast with one message naming the problem and the fix, exit
status 2, and loses nothing already written."""

import json

import pytest

from snapflow_ros.distill.cli import main_distill
from snapflow_ros.distill.config import RUN_CONFIG

ACTION_DIM = 4  # the tiny teacher's (test/distill/conftest.py)


def _files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def wrist_only_dataset(tmp_path_factory, make_dataset):
    """A dataset whose camera is 'wrist' (the teacher reads 'front') and has no state."""
    features = {
        "observation.images.wrist": {"dtype": "image", "shape": (24, 32, 3),
                                     "names": ["height", "width", "channels"]},
        "action": {"dtype": "float32", "shape": (ACTION_DIM,),
                   "names": [f"j{i}" for i in range(ACTION_DIM)]},
    }
    return make_dataset(tmp_path_factory.mktemp("wrist") / "ds", features=features)


@pytest.fixture(scope="module")
def two_episode_dataset(tmp_path_factory, make_dataset):
    return make_dataset(tmp_path_factory.mktemp("two") / "ds", episodes=2)


def test_missing_features_are_listed_with_what_the_dataset_has(
        tmp_path, distill_args, wrist_only_dataset, capsys):
    out = tmp_path / "run"
    assert main_distill(distill_args(out, "--steps", "2", dataset=wrist_only_dataset)) == 2
    err = capsys.readouterr().err
    assert "lacks feature(s) the teacher needs" in err
    assert "'observation.images.front'" in err and "'observation.state'" in err
    assert "The dataset has: ['action', 'observation.images.wrist']" in err
    assert not out.exists()  # nothing written


def test_a_teacher_that_is_not_flow_matching_is_refused(
        tmp_path, distill_args, act_policy_dir, capsys):
    out = tmp_path / "run"
    assert main_distill(distill_args(out, "--steps", "2", teacher=act_policy_dir)) == 2
    err = capsys.readouterr().err
    assert "'act' policy, which is not a flow-matching policy" in err and "smolvla" in err
    assert not out.exists()


def test_too_few_episodes_for_the_held_out_split(
        tmp_path, distill_args, two_episode_dataset, capsys):
    out = tmp_path / "run"
    args = distill_args(out, "--steps", "2", "--eval_episodes", "2", dataset=two_episode_dataset)
    assert main_distill(args) == 2
    err = capsys.readouterr().err
    assert "has 2 episode(s); eval_episodes=2" in err and "--eval_episodes 1" in err
    assert not out.exists()


def test_an_output_dir_holding_a_run_is_refused_without_resume_or_overwrite(
        tmp_path, distill_args, wrist_only_dataset, capsys):
    out = tmp_path / "run"
    args = distill_args(out, "--steps", "2", "--save_every", "1", "--eval_episodes", "0")
    assert main_distill(args) == 0
    before = _files(out)
    assert main_distill(args) == 2
    err = capsys.readouterr().err
    assert "already holds a distill run" in err and "--resume" in err and "--overwrite" in err
    assert _files(out) == before

    # --overwrite with a bad dataset: the error comes before anything is deleted.
    bad = distill_args(out, "--steps", "2", "--overwrite", dataset=wrist_only_dataset)
    assert main_distill(bad) == 2
    assert _files(out) == before

    # --overwrite with good input replaces the run.
    assert main_distill([*args, "--steps", "1", "--overwrite"]) == 0
    assert json.loads((out / "log.jsonl").read_text().splitlines()[0])["event"] == "start"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000001"]
    assert "steps: 1" in (out / RUN_CONFIG).read_text()


def test_an_output_dir_with_other_files_is_refused_and_kept(tmp_path, distill_args, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main_distill(distill_args(out, "--steps", "2")) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(("flags", "message"), [
    (["--steps", "0"], "steps must be >= 1, got 0"),
    (["--alpha", "1.5"], "alpha must be in [0, 1], got 1.5"),
    (["--resume", "--overwrite"], "resume and overwrite exclude each other"),
    (["--dtype", "fp8"], "dtype must be one of"),
])
def test_bad_values_name_the_field_and_the_rule(tmp_path, distill_args, capsys, flags, message):
    assert main_distill(distill_args(tmp_path / "run", *flags)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_required_options_are_named(capsys):
    assert main_distill(["--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "--teacher" in err and "--output_dir" in err and "--dataset_root" in err


def test_resume_without_a_run_is_refused(tmp_path, distill_args, capsys):
    assert main_distill(distill_args(tmp_path / "none", "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err
