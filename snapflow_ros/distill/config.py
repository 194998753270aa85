"""Configs of ``distill`` and ``eval``: dataclasses with ``help`` metadata, parsed by draccus.

Values come, in increasing priority, from the field defaults (the paper's recipe; the loss
weights from ``config/snapflow.yaml``), a YAML file (``--config_path``) and command-line flags::

    python -m snapflow_ros distill --config_path config/distill.yaml --teacher DIR \
        --dataset_root DIR --output_dir OUT --steps 2000

Ranges are checked in ``__post_init__``; an error names the field, the value and the limit.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import draccus
import yaml

from snapflow_ros.core import SnapFlowLossConfig
from snapflow_ros.recipe import Recipe, load_recipe

log = logging.getLogger(__name__)

#: The file a run writes into its output directory (what ``--resume`` reads back).
RUN_CONFIG = "distill_config.yaml"

#: Fields that may change when a run is resumed (the rest must match, or training would not
#: continue the same run).
RESUMABLE_CHANGES = frozenset({
    "steps", "save_every", "keep_checkpoints", "log_every", "eval_episodes", "eval_max_samples",
    "eval_batch_size", "eval_seed", "num_workers", "video_backend", "cpu_threads", "device",
    "dtype", "resume", "overwrite", "stop_after", "cache_dataset", "cache_limit_gb",
})
DEVICES_HELP = "auto (cuda when visible, else cpu), cpu, cuda, cuda:N"
DTYPES = ("auto", "float32", "bfloat16")
VIDEO_BACKENDS = ("auto", "pyav", "torchcodec")
#: Renamed DistillConfig fields: old name -> new name. Old run dirs' distill_config.yaml, old
#: YAML files and old flags still load (``torch_threads: null`` meant torch's default; it
#: becomes 0 = auto).
RENAMED_FIELDS = {"torch_threads": "cpu_threads"}
CPU_THREADS_HELP = ("CPU threads of torch/OpenMP: 0 = auto (cores in the affinity mask minus 1 "
                    "for the data loader/main thread, at least 1), N = exactly N")


class DistillError(ValueError):
    """Bad input to ``distill``/``eval``; the message names the problem and the fix."""


def _help(text: str, default: Any = None, **kw: Any) -> Any:
    factory = kw.pop("default_factory", None)
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


@dataclass
class DistillConfig:
    """SnapFlow self-distillation of a flow-matching policy on a LeRobot v3.0 dataset."""

    # -- inputs and output
    teacher: str | None = _help("LeRobot policy dir, SnapFlow checkpoint or hub id (online)")
    dataset_root: str | None = _help("local root of the LeRobot v3.0 dataset")
    dataset_repo_id: str | None = _help("dataset repo id (downloads when online and no root)")
    output_dir: str | None = _help("run directory: checkpoints, student/, log.jsonl, eval.json")
    resume: bool = _help("continue the run in output_dir from its last checkpoint", False)
    overwrite: bool = _help("replace a previous run in output_dir", False)
    # -- optimisation (paper: lr 2.5e-5, 500 warm-up steps, 30k steps, batch 4)
    steps: int = _help("optimizer steps", 30_000)
    batch_size: int = _help("samples per micro-batch per process", 4)
    grad_accum_steps: int = _help("micro-batches per optimizer step", 1)
    lr: float = _help("peak learning rate", 2.5e-5)
    warmup_steps: int = _help("linear warm-up steps from lr/warmup_steps to lr", 500)
    final_lr_ratio: float = _help("cosine decay ends at lr * final_lr_ratio", 0.01)
    weight_decay: float = _help("AdamW weight decay (lerobot's SmolVLA preset)", 1e-10)
    adam_betas: list[float] = _help("AdamW betas", default_factory=lambda: [0.9, 0.95])
    adam_eps: float = _help("AdamW epsilon", 1e-8)
    grad_clip_norm: float = _help("clip the gradient norm to this (0: off)", 1.0)
    ema_decay: float | None = _help("EMA of the trained weights for the student (off: null)")
    # -- SnapFlow loss (null: from the recipe, config/snapflow.yaml)
    recipe: str | None = _help("SnapFlow recipe YAML (default: the packaged snapflow.yaml)")
    alpha: float | None = _help("probability that a sample goes to the FM branch (0.5)")
    consistency_weight: float | None = _help("lambda, weight of the consistency loss (0.1)")
    target_steps: int | None = _help("K: Euler steps of the model's own field in the target (2)")
    velocity_clamp: float | None = _help("clamp target velocities to +-value (0: off)")
    # -- run
    seed: int = _help("seed of weights-independent randomness (data order, noise, routing)", 0)
    device: str = _help(DEVICES_HELP, "auto")
    dtype: str = _help("auto (bf16 autocast on CUDA, else float32), float32, bfloat16", "auto")
    save_every: int = _help("checkpoint every N steps (and at the end)", 1000)
    keep_checkpoints: int = _help("keep the newest N checkpoints (0: all)", 0)
    log_every: int = _help("write a log.jsonl line every N steps", 10)
    stop_after: int | None = _help("end this session after step N with a checkpoint (resumable)")
    num_workers: int = _help("DataLoader worker processes", 2)
    cache_dataset: bool = _help("decode the training frames once and keep them in memory "
                                "(small datasets, where decoding dominates a step)", False)
    cache_limit_gb: float = _help("refuse cache_dataset above this estimated size", 8.0)
    video_backend: str = _help("video decoding: auto (torchcodec if it loads, else pyav)", "auto")
    cpu_threads: int = _help(CPU_THREADS_HELP, 0)
    # -- held-out evaluation
    eval_episodes: int = _help("hold out the last N episodes for the final eval (0: no eval)", 1)
    eval_max_samples: int = _help("held-out frames evaluated (evenly spaced)", 256)
    eval_batch_size: int = _help("eval batch size", 16)
    eval_seed: int = _help("seed of the eval noise (the same noise for every method)", 1234)

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
        _check(self.velocity_clamp is None or self.velocity_clamp >= 0, "velocity_clamp",
               self.velocity_clamp, ">= 0 (0: off) or null")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: pick one")
        self.loss_config()  # α, λ, K range checks (SnapFlowLossConfig's own)

    def load_recipe(self) -> Recipe:
        """The recipe file (``recipe`` or the packaged ``config/snapflow.yaml``)."""
        return load_recipe(self.recipe)

    def loss_config(self) -> SnapFlowLossConfig:
        """The SnapFlow loss: the recipe's values, overridden by the fields that are set."""
        base = self.load_recipe().loss
        clamp = base.velocity_clamp if self.velocity_clamp is None else self.velocity_clamp
        return SnapFlowLossConfig(
            alpha=base.alpha if self.alpha is None else self.alpha,
            consistency_weight=(base.consistency_weight if self.consistency_weight is None
                                else self.consistency_weight),
            target_steps=base.target_steps if self.target_steps is None else self.target_steps,
            velocity_clamp=clamp or None,
        )

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

    run_dir: str | None = _help("a distill output dir: student, teacher, dataset, split from it")
    student: str | None = _help("SnapFlow checkpoint (default: <run_dir>/student)")
    teacher: str | None = _help("teacher policy (default: the run's)")
    dataset_root: str | None = _help("dataset root (default: the run's)")
    dataset_repo_id: str | None = _help("dataset repo id (default: the run's)")
    episodes: list[int] | None = _help("episode indices to evaluate (default: the run's held-out)")
    output_dir: str | None = _help("where eval.json/eval.png go (default: run_dir)")
    teacher_steps: int = _help("Euler steps of the reference teacher", 10)
    max_samples: int = _help("frames evaluated (evenly spaced over the episodes)", 256)
    batch_size: int = _help("eval batch size", 16)
    seed: int = _help("seed of the eval noise (the same noise for every method)", 1234)
    device: str = _help(DEVICES_HELP, "auto")
    dtype: str = _help("auto (bf16 autocast on CUDA), float32, bfloat16", "auto")
    num_workers: int = _help("DataLoader worker processes", 0)
    video_backend: str = _help("video decoding: auto, pyav, torchcodec", "auto")
    cpu_threads: int = _help(CPU_THREADS_HELP, 0)

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


def format_help(cls: type, prog: str) -> str:
    """``--help`` text from the fields' ``help`` metadata (draccus shows docstrings only)."""
    lines = [f"usage: {prog} [--config_path YAML] [--FIELD VALUE ...]", "",
             (cls.__doc__ or "").strip(), "",
             "Every option is a field; set it as --FIELD VALUE, --FIELD=VALUE or in the YAML "
             "file (bool flags alone mean true).", "", "options:"]
    lines.append(f"  {'--config_path':<22} YAML file with any of the fields below")
    for f in dataclasses.fields(cls):
        factory = f.default_factory
        default = factory() if factory is not dataclasses.MISSING else f.default
        text = f.metadata.get("help", "")
        value = "null" if default is None else default
        shown = "" if "default" in text else f" (default: {value})"
        lines.append(f"  --{f.name:<20} {text}{shown}")
    return "\n".join(lines)


def _expand_bool_flags(cls: type, argv: list[str]) -> list[str]:
    """``--resume`` alone → ``--resume=true`` (draccus wants a value for bools)."""
    bools = {f"--{f.name}" for f in dataclasses.fields(cls) if f.type in (bool, "bool")}
    out = []
    for i, arg in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        bare = arg in bools and (nxt is None or nxt.startswith("--"))
        out.append(f"{arg}=true" if bare else arg)
    return out


def option_value(argv: list[str], name: str) -> str | None:
    """The value of ``--name V`` / ``--name=V`` in ``argv`` (last one wins), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def _renamed(old: str, value: Any) -> Any:
    """The value of renamed field ``old`` under its new name (an old null: 0 = auto)."""
    log.warning("'%s' is now '%s' (0 = auto); reading it as such", old, RENAMED_FIELDS[old])
    return 0 if value is None or str(value).lower() in ("null", "none", "~", "") else value


def _rename_flags(argv: list[str]) -> list[str]:
    """``--torch_threads N`` (``RENAMED_FIELDS``) → ``--cpu_threads N``."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        new = RENAMED_FIELDS.get(name[2:]) if name.startswith("--") else None
        if new is None:
            out.append(arg)
            continue
        if not eq:
            value = next(args, None)
        out += [f"--{new}"] if value is None else [f"--{new}", str(_renamed(name[2:], value))]
    return out


def _renamed_keys(data: Any) -> dict[str, Any] | None:
    """A config file's mapping with renamed keys, or None when it uses no old name."""
    if not isinstance(data, dict) or not RENAMED_FIELDS.keys() & data.keys():
        return None
    data = dict(data)
    for old, new in RENAMED_FIELDS.items():
        if old in data:
            value = _renamed(old, data.pop(old))
            data.setdefault(new, value)  # the new key wins where a file has both
    return data


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``--name V`` / ``--name=V``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == f"--{name}":
            skip = True
        elif not arg.startswith(f"--{name}="):
            out.append(arg)
    return out


def parse_config(cls: type[C], argv: list[str], config_path: str | Path | None = None) -> C:
    """Build ``cls`` from an optional YAML file and flags; bad values raise ``DistillError``.

    Renamed ``DistillConfig`` fields (``RENAMED_FIELDS``) are read under their old names too,
    in flags and in YAML files (a run directory's saved config included).
    """
    argv = _expand_bool_flags(cls, argv)
    if config_path is not None and option_value(argv, "config_path") is None:
        argv = ["--config_path", str(config_path), *argv]
    path = option_value(argv, "config_path")
    if path is not None and not Path(path).is_file():
        raise DistillError(f"config file '{path}' does not exist")
    data = None
    if cls is DistillConfig:
        argv = _rename_flags(argv)
        if path is not None:
            try:
                data = _renamed_keys(yaml.safe_load(Path(path).read_text()))
            except yaml.YAMLError:
                data = None  # draccus reports it
    try:
        if data is None:
            return draccus.parse(cls, args=argv)
        with tempfile.TemporaryDirectory(prefix="snapflow_config_") as tmp:
            renamed = Path(tmp) / Path(path).name
            renamed.write_text(yaml.safe_dump(data, sort_keys=False))
            return draccus.parse(cls, config_path=renamed,
                                 args=_without_option(argv, "config_path"))
    except draccus.utils.ParsingError as err:
        cause = err.__cause__ or err
        raise DistillError(f"invalid configuration: {cause}") from err


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


def wants_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def print_help(cls: type, prog: str) -> None:
    print(format_help(cls, prog))  # noqa: T201
    sys.stdout.flush()
