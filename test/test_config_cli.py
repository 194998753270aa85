"""``config_cli``: one draccus parser for every tool, with the spellings users type."""

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from snapflow_ros._tools import TOOLS
from snapflow_ros.config_cli import ConfigError, field_kinds, normalise_argv, parse


@dataclass
class Section:
    """A nested section."""

    alpha: float = 0.5  # a probability

    def __post_init__(self):
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")


@dataclass
class Tool:
    """A tool's whole interface."""

    bags: list[Path] = field(default_factory=list)  # positional words land here
    output: Path | None = None  # where to write
    max_age_for: dict[str, float] = field(default_factory=dict)  # NAME=S, repeatable
    num_steps: list[int] = field(default_factory=lambda: [10, 1])  # several values
    video: bool = True  # --no-video turns it off
    overwrite: bool = False  # bare flag: true
    task: str = ""  # kept verbatim
    teacher: str | None = None  # null: none
    jobs: int = 1  # -j
    loss: Section = field(default_factory=Section)


KW = {"prog": "tool", "positional": "bags", "short": {"-o": "--output", "-j": "--jobs"}}


def test_unix_spellings_become_one_config():
    cfg = parse(Tool, ["b1", "b 2", "-o", "out", "--max-age-for", "wrist=0.1",
                       "--max-age-for", "state=0.05", "--no-video", "--overwrite", "b3",
                       "--task", "yes", "--num-steps", "5", "2", "-j", "2",
                       "--loss.alpha", "0.3"], **KW)
    assert cfg == Tool(bags=[Path("b1"), Path("b 2"), Path("b3")], output=Path("out"),
                       max_age_for={"wrist": 0.1, "state": 0.05}, num_steps=[5, 2],
                       video=False, overwrite=True, task="yes", jobs=2,
                       loss=Section(alpha=0.3))
    # underscores, =, explicit bools, null and YAML values work the same
    cfg = parse(Tool, ["--max_age_for={wrist: 0.2}", "--overwrite", "false", "--teacher",
                       "null", "--task=pick: the cube", "--num_steps", "[3]"], **KW)
    assert (cfg.max_age_for, cfg.overwrite, cfg.teacher, cfg.task, cfg.num_steps) == (
        {"wrist": 0.2}, False, None, "pick: the cube", [3])


def test_a_config_file_is_overridden_by_flags(tmp_path):
    path = tmp_path / "tool.yaml"
    path.write_text("jobs: 4\ntask: from the file\nloss:\n  alpha: 0.25\n")
    cfg = parse(Tool, ["--config_path", str(path), "--jobs", "3"], **KW)
    assert (cfg.jobs, cfg.task, cfg.loss.alpha) == (3, "from the file", 0.25)
    assert parse(Tool, [], config_path=path, **KW).jobs == 4


@pytest.mark.parametrize(("argv", "message"), [
    (["--jobs", "x"], "`jobs`: Couldn't parse 'x' into an int"),
    (["--loss.alpha", "2"], "alpha must be in [0, 1], got 2.0"),
    (["--nope", "1"], "unrecognized arguments: --nope"),
    (["--task"], "--task needs a value"),
    (["--max-age-for", "wrist"], "expected NAME=VALUE, got 'wrist'"),
    (["-x"], "unknown option '-x'"),
    (["--config_path", "/nonexistent.yaml"], "config file '/nonexistent.yaml' does not exist"),
])
def test_bad_lines_raise_one_named_error(argv, message):
    with pytest.raises(ConfigError) as err:
        parse(Tool, argv, **KW)
    assert message in str(err.value)


def test_words_need_a_positional_field():
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        parse(Tool, ["stray"], prog="tool")
    assert normalise_argv(Tool, ["a"], positional="bags") == ["--bags", '["a"]']


def test_field_kinds_follow_the_types_of_nested_sections():
    kinds = field_kinds(Tool)
    assert kinds["loss.alpha"] == "value" and kinds["video"] == "bool"
    assert (kinds["bags"], kinds["max_age_for"], kinds["task"]) == ("list", "dict", "text")


@pytest.mark.parametrize("tool", ["bench", "demo", "demo_synthetic", "sim_demos",
                                  "bag_to_lerobot", "distill", "eval", "export"])
def test_every_batch_tool_prints_its_options_with_defaults(tool):
    assert tool in TOOLS
    out = subprocess.run([sys.executable, "-m", "snapflow_ros", tool, "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--config_path" in out.stdout and "(default:" in out.stdout
    assert "dashes or underscores" in out.stdout  # the spellings note


def test_no_argparse_in_the_package():
    """Every tool parses through config_cli (the ROS nodes: ROS parameters, nodes/params.py);
    the only mentions left are config_cli's comments on draccus' own argparse."""
    root = Path(__file__).resolve().parents[1] / "snapflow_ros"
    users = [p.relative_to(root) for p in root.rglob("*.py")
             if "argparse" in p.read_text() and p.name != "config_cli.py"]
    assert not users
    text = (root / "config_cli.py").read_text()
    assert "import argparse" not in text
