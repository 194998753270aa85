"""The run directory of ``distill``: what it holds, when it may be reused, its jsonl log.

::

    <output_dir>/
      distill_config.yaml      the resolved config (``--resume`` reads it back)
      log.jsonl                one JSON object per logged step (and resume/stop events)
      checkpoints/step_NNNNNNN/{policy/, training_state.pt}
      student/                 the final SnapFlow policy (EMA weights when ema_decay is set)
      eval.json, eval.png      held-out evaluation (eval_meta.json: what was evaluated)

A directory that holds anything is refused unless ``--resume`` (continue its run) or
``--overwrite`` (replace it; deleted only after every input has been checked).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from snapflow_ros.atomic import write_text_atomic
from snapflow_ros.distill.config import (
    RUN_CONFIG,
    DistillConfig,
    DistillError,
    dump_config,
    parse_config,
    resume_conflicts,
)
from snapflow_ros.distill.state import list_checkpoints

LOG_FILE = "log.jsonl"
STUDENT_DIR = "student"
EXPORT_DIR = "student_lerobot"  # --export: the student as a plain 1-step LeRobot policy


def absolute_paths(config: DistillConfig) -> DistillConfig:
    """``config`` with local paths made absolute, so a run resumes from any working dir."""

    def local(value: str | None) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        return str(path.resolve()) if path.exists() else value

    return dataclasses.replace(
        config,
        teacher=local(config.teacher),
        dataset_root=(str(Path(config.dataset_root).expanduser().resolve())
                      if config.dataset_root else None),
        output_dir=str(Path(str(config.output_dir)).expanduser().resolve()),
    )


def saved_config(run_dir: Path) -> DistillConfig:
    """The config a run was started with (``distill_config.yaml``)."""
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        raise DistillError(f"'{run_dir}' holds no {RUN_CONFIG}: it is not a distill run")
    return parse_config(DistillConfig, [], config_path=path)


def check_run_dir(run_dir: Path, config: DistillConfig) -> Path | None:
    """Validate ``--resume``/``--overwrite`` against ``run_dir``; nothing is written.

    Returns the checkpoint to resume from (None for a fresh run).
    """
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if run_dir.exists() and not run_dir.is_dir():
        raise DistillError(f"output_dir '{run_dir}' is a file; pass a directory")
    if config.resume:
        if not occupied:
            raise DistillError(f"nothing to resume: '{run_dir}' holds no run; drop --resume")
        conflicts = resume_conflicts(absolute_paths(saved_config(run_dir)), config)
        if conflicts:
            raise DistillError(
                "--resume continues the same run, but these settings differ from it: "
                + "; ".join(conflicts)
                + ". Keep them, or start a new run (--overwrite or another --output_dir)"
            )
        found = list_checkpoints(run_dir)
        if not found:
            raise DistillError(
                f"'{run_dir}' has no complete checkpoint to resume from yet; start it again "
                f"with --overwrite"
            )
        return found[-1]
    if occupied and not config.overwrite:
        what = "a distill run" if (run_dir / RUN_CONFIG).is_file() else "files"
        raise DistillError(
            f"output_dir '{run_dir}' already holds {what}; pass --resume to continue the run, "
            f"--overwrite to replace it, or another --output_dir"
        )
    return None


def start_run_dir(run_dir: Path, config: DistillConfig, *, resume_step: int | None) -> None:
    """Create (or, with ``--overwrite``, empty) ``run_dir``; write the config; trim the log.

    On resume, log lines past the checkpoint's step are dropped: the resumed run writes them
    again (with the same values).
    """
    if config.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stored = dataclasses.replace(config, resume=False, overwrite=False, stop_after=None)
    write_text_atomic(run_dir / RUN_CONFIG, dump_config(stored))
    log = run_dir / LOG_FILE
    if resume_step is not None and log.is_file():
        kept = [line for line in log.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step]
        write_text_atomic(log, "".join(f"{line}\n" for line in kept))


def append_log(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``log.jsonl``."""
    with open(run_dir / LOG_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
