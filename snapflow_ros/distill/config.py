"""Configs of ``distill`` and ``eval``: dataclasses parsed by draccus (``config_cli.py``).

Values come, in increasing priority, from the field defaults (the paper's recipe), a YAML file
(``--config_path``; ``config/snapflow.yaml`` is the recipe as such a file) and flags::

    python -m snapflow_ros distill --config_path config/distill.yaml --teacher DIR \
        --dataset_root DIR --output_dir OUT --steps 2000 --loss.consistency_weight 1

The SnapFlow loss is the ``loss:`` section (``core.SnapFlowLossConfig``), the student's default
sampling the ``sampling:`` section. Field comments are ``--help``. Ranges are checked in
``__post_init__``; an error names the field, the value and the limit. Older spellings still
load (old flags, old YAML files, old run directories' ``distill_config.yaml``):
``RENAMED_FIELDS`` and ``--recipe FILE`` (a file with ``loss:``/``sampling:`` sections).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import draccus
import yaml

from snapflow_ros import config_cli
from snapflow_ros.core import SnapFlowLossConfig

log = logging.getLogger(__name__)

#: The file a run writes into its output directory (what ``--resume`` reads back).
RUN_CONFIG = "distill_config.yaml"

#: Fields that may change when a run is resumed (the rest must match, or training would not
#: continue the same run).
RESUMABLE_CHANGES = frozenset({
    "steps", "save_every", "keep_checkpoints", "log_every", "eval_episodes", "eval_max_samples",
    "eval_batch_size", "eval_seed", "num_workers", "video_backend", "cpu_threads", "device",
    "dtype", "resume", "overwrite", "stop_after", "cache_dataset", "cache_limit_gb", "export",
})
DTYPES = ("auto", "float32", "bfloat16")
VIDEO_BACKENDS = ("auto", "pyav", "torchcodec")
SAMPLERS = ("snap", "euler")
#: Renamed DistillConfig fields: old name -> new (dotted) name. Old run dirs' distill_config.yaml,
#: old YAML files and old flags still load. ``torch_threads: null`` meant torch's default (now
#: 0 = auto); ``velocity_clamp: 0`` meant off (now null).
RENAMED_FIELDS = {"torch_threads": "cpu_threads", "alpha": "loss.alpha",
                  "consistency_weight": "loss.consistency_weight",
                  "target_steps": "loss.target_steps", "velocity_clamp": "loss.velocity_clamp"}
RECIPE_SECTIONS = ("loss", "sampling")


class DistillError(ValueError):
    """Bad input to ``distill``/``eval``; the message names the problem and the fix."""


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


@dataclass
class SamplingConfig:
    """How the distilled student samples by default (saved in its checkpoint)."""

    num_steps: int = 1  # default step count of the student (1: one network pass, 1-NFE)
    # snap: jumps t_i -> t_(i+1) with target time s = t_(i+1); euler: the teacher's loop (s = t)
    sampler: str = "snap"

    def __post_init__(self) -> None:
        _check(self.num_steps >= 1, "sampling.num_steps", self.num_steps, ">= 1")
        _check(self.sampler in SAMPLERS, "sampling.sampler", self.sampler, f"one of {SAMPLERS}")


@dataclass
class DistillConfig:
    """SnapFlow self-distillation of a flow-matching policy on a LeRobot v3.0 dataset."""

    # -- inputs and output
    teacher: str | None = None  # LeRobot policy dir, SnapFlow checkpoint or hub id (online)
    dataset_root: str | None = None  # local root of the LeRobot v3.0 dataset
    dataset_repo_id: str | None = None  # dataset repo id (downloads when online and no root)
    output_dir: str | None = None  # run directory: checkpoints, student/, log.jsonl, eval.json
    resume: bool = False  # continue the run in output_dir from its last checkpoint
    overwrite: bool = False  # replace a previous run in output_dir
    # -- optimisation (paper: lr 2.5e-5, 500 warm-up steps, 30k steps, batch 4)
    steps: int = 30_000  # optimizer steps
    batch_size: int = 4  # samples per micro-batch per process
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    lr: float = 2.5e-5  # peak learning rate
    warmup_steps: int = 500  # linear warm-up steps from lr/warmup_steps to lr
    final_lr_ratio: float = 0.01  # cosine decay ends at lr * final_lr_ratio
    weight_decay: float = 1e-10  # AdamW weight decay (lerobot's SmolVLA preset)
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW betas
    adam_eps: float = 1e-8  # AdamW epsilon
    grad_clip_norm: float = 1.0  # clip the gradient norm to this (0: off)
    ema_decay: float | None = None  # EMA of the trained weights for the student (null: off)
    # -- SnapFlow: the loss (alpha, lambda, K, clamp) and the student's default sampling
    loss: SnapFlowLossConfig = field(default_factory=SnapFlowLossConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # -- run
    seed: int = 0  # seed of weights-independent randomness (data order, noise, routing)
    device: str = "auto"  # auto (cuda when visible, else cpu), cpu, cuda, cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, else float32), float32, bfloat16
    save_every: int = 1000  # checkpoint every N steps (and at the end)
    keep_checkpoints: int = 0  # keep the newest N checkpoints (0: all)
    log_every: int = 10  # write a log.jsonl line every N steps
    stop_after: int | None = None  # end this session after step N with a checkpoint (resumable)
    num_workers: int = 2  # DataLoader worker processes
    # decode the training frames once and keep them in memory (small datasets, where decoding
    # dominates a step)
    cache_dataset: bool = False
    cache_limit_gb: float = 8.0  # refuse cache_dataset above this estimated size
    video_backend: str = "auto"  # video decoding: auto (torchcodec if it loads, else pyav)
    # CPU threads of torch/OpenMP: 0 = auto (cores in the affinity mask minus 1 for the data
    # loader/main thread, at least 1), N = exactly N
    cpu_threads: int = 0
    # -- held-out evaluation
    eval_episodes: int = 1  # hold out the last N episodes for the final eval (0: no eval)
    eval_max_samples: int = 256  # held-out frames evaluated (evenly spaced)
    eval_batch_size: int = 16  # eval batch size
    eval_seed: int = 1234  # seed of the eval noise (the same noise for every method)
    # -- export
    # also write student_lerobot/: the student as a plain 1-step LeRobot policy (export)
    export: bool = False

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "steps", self.steps, ">= 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _check(self.grad_accum_steps >= 1, "grad_accum_steps", self.grad_accum_steps, ">= 1")
        _check(self.lr > 0, "lr", self.lr, "> 0")
        _check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, ">= 0")
        _check(0 <= self.final_lr_ratio <= 1, "final_lr_ratio", self.final_lr_ratio, "in [0, 1]")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        _check(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
               "adam_betas", self.adam_betas, "two numbers in [0, 1)")
        _check(self.grad_clip_norm >= 0, "grad_clip_norm", self.grad_clip_norm, ">= 0")
        _check(self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay", self.ema_decay,
               "in (0, 1) or null")
        _check(self.save_every >= 1, "save_every", self.save_every, ">= 1")
        _check(self.keep_checkpoints >= 0, "keep_checkpoints", self.keep_checkpoints, ">= 0")
        _check(self.log_every >= 1, "log_every", self.log_every, ">= 1")
        _check(self.stop_after is None or self.stop_after >= 1, "stop_after", self.stop_after,
               ">= 1 or null")
        _check(self.num_workers >= 0, "num_workers", self.num_workers, ">= 0")
        _check(self.cache_limit_gb > 0, "cache_limit_gb", self.cache_limit_gb, "> 0")
        _check(self.video_backend in VIDEO_BACKENDS, "video_backend", self.video_backend,
               f"one of {VIDEO_BACKENDS}")
        _check(self.dtype in DTYPES, "dtype", self.dtype, f"one of {DTYPES}")
        _check(self.cpu_threads >= 0, "cpu_threads", self.cpu_threads, ">= 0 (0 = auto)")
        _check(self.eval_episodes >= 0, "eval_episodes", self.eval_episodes, ">= 0")
        _check(self.eval_max_samples >= 1, "eval_max_samples", self.eval_max_samples, ">= 1")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, ">= 1")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: pick one")

    def require_io(self) -> None:
        """Raise a DistillError unless teacher, a dataset and output_dir are given."""
        missing = [f"--{n}" for n in ("teacher", "output_dir") if not getattr(self, n)]
        if not (self.dataset_root or self.dataset_repo_id):
            missing.append("--dataset_root (or --dataset_repo_id)")
        if missing:
            raise DistillError(f"missing required option(s): {', '.join(missing)}")


@dataclass
class EvalConfig:
    """Offline held-out evaluation: 10-step teacher, naive 1-step, SnapFlow 1- and 2-step."""

    run_dir: str | None = None  # a distill output dir: student, teacher, dataset, split from it
    student: str | None = None  # SnapFlow checkpoint (default: <run_dir>/student)
    teacher: str | None = None  # teacher policy (default: the run's)
    dataset_root: str | None = None  # dataset root (default: the run's)
    dataset_repo_id: str | None = None  # dataset repo id (default: the run's)
    episodes: list[int] | None = None  # episode indices to evaluate (default: run's held-out)
    output_dir: str | None = None  # where eval.json/eval.png go (default: run_dir)
    teacher_steps: int = 10  # Euler steps of the reference teacher
    max_samples: int = 256  # frames evaluated (evenly spaced over the episodes)
    batch_size: int = 16  # eval batch size
    seed: int = 1234  # seed of the eval noise (the same noise for every method)
    device: str = "auto"  # auto (cuda when visible, else cpu), cpu, cuda, cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA), float32, bfloat16
    num_workers: int = 0  # DataLoader worker processes
    video_backend: str = "auto"  # video decoding: auto, pyav, torchcodec
    cpu_threads: int = 0  # CPU threads of torch/OpenMP: 0 = auto (cores - 1), N = exactly N

    def __post_init__(self) -> None:
        _check(self.cpu_threads >= 0, "cpu_threads", self.cpu_threads, ">= 0 (0 = auto)")
        _check(self.teacher_steps >= 1, "teacher_steps", self.teacher_steps, ">= 1")
        _check(self.max_samples >= 1, "max_samples", self.max_samples, ">= 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _check(self.dtype in DTYPES, "dtype", self.dtype, f"one of {DTYPES}")
        _check(self.num_workers >= 0, "num_workers", self.num_workers, ">= 0")
        _check(self.video_backend in VIDEO_BACKENDS, "video_backend", self.video_backend,
               f"one of {VIDEO_BACKENDS}")


C = TypeVar("C", DistillConfig, EvalConfig)


def _renamed_value(old: str, value: Any) -> Any:
    """An old field's value under its new name (``RENAMED_FIELDS``)."""
    log.warning("'%s' is now '%s'; reading it as such", old, RENAMED_FIELDS[old])
    empty = value is None or str(value).lower() in ("null", "none", "~", "")
    if old == "torch_threads":
        return 0 if empty else value  # null meant torch's default: now 0 = auto
    if old == "velocity_clamp":
        return None if empty or float(value) == 0 else value  # 0 meant off: now null
    return None if empty else value


def _recipe_sections(path: str | Path) -> dict[str, Any]:
    """The ``loss:``/``sampling:`` sections of a recipe file (``--recipe``, old run dirs)."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"SnapFlow recipe '{path}' does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise DistillError(f"SnapFlow recipe '{path}' is not a mapping")
    if data.get("phi"):
        log.warning("'%s': the phi section is ignored (phi is always the paper's: zero-init, "
                    "the time embedding's width, input s)", path)
    return {k: data[k] for k in RECIPE_SECTIONS if data.get(k)}


def _nest(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for parent in parents:
        data = data.setdefault(parent, {})
    data.setdefault(leaf, value)  # the new spelling wins where a file has both


def _upgrade_mapping(data: Any) -> dict[str, Any] | None:
    """A DistillConfig YAML mapping in today's layout, or None when it already is."""
    if not isinstance(data, dict) or not (set(RENAMED_FIELDS) | {"recipe"}) & data.keys():
        return None
    data = dict(data)
    recipe = data.pop("recipe", None)
    for old, new in RENAMED_FIELDS.items():
        if old in data:
            value = _renamed_value(old, data.pop(old))
            if value is not None or old == "torch_threads":
                _nest(data, new, value)
    if recipe:
        for section, values in _recipe_sections(recipe).items():
            for key, value in values.items():
                _nest(data, f"{section}.{key}", value)
    return data


def _upgrade_flags(argv: list[str]) -> list[str]:
    """Old flags in today's spelling: ``--alpha V`` → ``--loss.alpha V``, ``--recipe FILE`` →
    its sections as flags (placed first: later flags override them)."""
    out: list[str] = []
    first: list[str] = []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        old = name[2:].replace("-", "_") if name.startswith("--") else ""
        if old != "recipe" and old not in RENAMED_FIELDS:
            out.append(arg)
            continue
        if not eq:
            value = next(args, None)
        if old == "recipe":
            if value is None:
                raise DistillError("--recipe needs a file")
            for section, values in _recipe_sections(value).items():
                for key, item in values.items():
                    first += [f"--{section}.{key}", "null" if item is None else str(item)]
            continue
        new = _renamed_value(old, value)
        out += [f"--{RENAMED_FIELDS[old]}", "null" if new is None else str(new)]
    return first + out


def parse_config(cls: type[C], argv: list[str], config_path: str | Path | None = None) -> C:
    """Build ``cls`` from an optional YAML file and flags; bad values raise ``DistillError``.

    Older spellings of ``DistillConfig`` (``RENAMED_FIELDS``, ``--recipe``) are read too, in
    flags and in YAML files (a run directory's saved config included).
    """
    argv = list(argv)
    path = config_cli.option_value(argv, "config_path") or config_path
    if path is not None and not Path(path).is_file():
        raise DistillError(f"config file '{path}' does not exist")
    try:
        if cls is not DistillConfig:
            return config_cli.parse(cls, argv, prog=f"snapflow_ros {cls.__name__}",
                                    config_path=config_path)
        argv = _upgrade_flags(argv)
        data = None
        if path is not None:
            try:
                data = _upgrade_mapping(yaml.safe_load(Path(path).read_text()))
            except yaml.YAMLError:
                data = None  # draccus reports it
        if data is None:
            return config_cli.parse(cls, argv, prog="snapflow_ros distill",
                                    config_path=config_path)
        with tempfile.TemporaryDirectory(prefix="snapflow_config_") as tmp:
            upgraded = Path(tmp) / Path(path).name
            upgraded.write_text(yaml.safe_dump(data, sort_keys=False))
            return config_cli.parse(cls, config_cli.without_option(argv, "config_path"),
                                    prog="snapflow_ros distill", config_path=upgraded)
    except config_cli.ConfigError as err:
        raise DistillError(str(err)) from err


def dump_config(config: DistillConfig | EvalConfig) -> str:
    """The config as YAML (every field), as ``--config_path`` reads it back."""
    stream = io.StringIO()
    draccus.dump(config, stream)
    return stream.getvalue()


def resume_conflicts(saved: DistillConfig, now: DistillConfig) -> list[str]:
    """Fields that differ between a run's saved config and the resumed one, and may not."""
    return [
        f"{f.name}: run has {getattr(saved, f.name)!r}, now {getattr(now, f.name)!r}"
        for f in dataclasses.fields(DistillConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(now, f.name)
    ]
