"""``distill`` and ``eval`` executables (``python -m snapflow_ros distill|eval``, console scripts,
``ros2 run snapflow_ros distill|eval``; multi-GPU: ``accelerate launch -m snapflow_ros distill``).

    python -m snapflow_ros distill --teacher DIR --dataset_root DIR --output_dir OUT \
        [--config_path config/distill.yaml] [--steps 2000] [--resume | --overwrite]
    python -m snapflow_ros eval --run_dir OUT
    python -m snapflow_ros distill --help          (every option, with its default)

Bad input exits with status 2 and one message naming the problem and the fix.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from snapflow_ros.config_cli import option_value, print_help, wants_help
from snapflow_ros.distill.config import (
    RUN_CONFIG,
    DistillConfig,
    DistillError,
    EvalConfig,
    parse_config,
)

log = logging.getLogger("snapflow_ros.distill")


def _setup_logging(name: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(levelname)s %(message)s",
                        stream=sys.stderr, force=True)


def distill_config_from_argv(argv: list[str]) -> DistillConfig:
    """Flags (and ``--config_path``); with ``--resume`` the run's saved config is the base."""
    resume = "--resume" in argv or (option_value(argv, "resume") or "").lower() in ("true", "yes")
    out = option_value(argv, "output_dir")
    base = None
    if resume and out and option_value(argv, "config_path") is None:
        saved = Path(out) / RUN_CONFIG
        base = saved if saved.is_file() else None
    return parse_config(DistillConfig, argv, config_path=base)


def main_distill(argv: list[str] | None = None) -> int:
    """Entry point of ``distill``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        print_help(DistillConfig, "snapflow_ros distill")
        return 0
    _setup_logging("distill")
    from snapflow_ros.policies import CheckpointError

    try:
        config = distill_config_from_argv(argv)
        from snapflow_ros.distill.trainer import distill

        result = distill(config)
    except (DistillError, CheckpointError, FileExistsError) as err:
        log.error("%s", err)
        return 2
    if not result.main:
        return 0
    if not result.finished:
        print(f"stopped at step {result.step}; continue with --resume "  # noqa: T201
              f"--output_dir {result.run_dir}")
        return 0
    print(f"student: {result.student}")  # noqa: T201
    if result.eval:
        from snapflow_ros.distill.evaluate import format_table

        table = format_table(result.eval)
        print(f"held-out eval ({result.run_dir / 'eval.json'}):{table}")  # noqa: T201
    return 0


def run_eval(config: EvalConfig) -> dict[str, dict[str, float]]:
    """Evaluate a student against its teacher on held-out episodes; write eval.json/png."""
    from snapflow_ros.cpu_threads import apply_cpu_threads
    from snapflow_ros.distill import data
    from snapflow_ros.distill.evaluate import autocast_for, evaluate, write_eval
    from snapflow_ros.distill.run_dir import STUDENT_DIR, saved_config
    from snapflow_ros.policies import load_policy
    from snapflow_ros.policies.device import resolve_device, resolve_dtype

    threads = apply_cpu_threads(config.cpu_threads, reserved=1)  # 1: the data loader
    log.info("CPU threads: %d (cpu_threads=%d)", threads, config.cpu_threads)
    run = Path(config.run_dir) if config.run_dir else None
    saved = saved_config(run) if run else None
    student_path = config.student or (str(run / STUDENT_DIR) if run else None)
    if student_path is None:
        raise DistillError("pass --run_dir (a distill output dir) or --student DIR")
    try:
        device = resolve_device(config.device)
    except ValueError as err:
        raise DistillError(str(err)) from err
    student = load_policy(student_path, device=device)
    teacher_path = config.teacher or (saved.teacher if saved else None) or (
        student.policy.teacher or {}).get("source")
    if not teacher_path:
        raise DistillError("the student records no teacher; pass --teacher DIR")
    root = config.dataset_root or (saved.dataset_root if saved else None)
    repo = config.dataset_repo_id or (saved.dataset_repo_id if saved else None)
    if not (root or repo):
        raise DistillError("pass --dataset_root (or --run_dir of the distill run)")
    teacher = load_policy(teacher_path, device=device)
    dataset = data.open_dataset(root, repo, student.policy.config,
                             video_backend=config.video_backend)
    data.check_features(student.policy.config, dataset.meta.features,
                     data.rename_map_of(student.preprocessor))
    episodes = config.episodes
    if episodes is None:
        if saved is None or saved.eval_episodes == 0:
            raise DistillError("pass --episodes [i,j,...] (the run held out no episodes)")
        episodes = data.split_episodes(dataset.meta.total_episodes, saved.eval_episodes)[1]
    unknown = sorted(set(episodes) - {e for e, _, _ in data.episode_ranges(dataset)})
    if unknown:
        raise DistillError(f"episodes {unknown} are not in the dataset "
                           f"({dataset.meta.total_episodes} episodes)")
    results, example = evaluate(
        teacher, student, dataset, data.frames_of(dataset, episodes),
        teacher_steps=config.teacher_steps, max_samples=config.max_samples,
        batch_size=config.batch_size, seed=config.seed, num_workers=config.num_workers,
        autocast=autocast_for(device, resolve_dtype(config.dtype, device)))
    out = Path(config.output_dir) if config.output_dir else (run or Path(student_path).parent)
    write_eval(out, results, example, {
        "teacher": str(teacher_path), "student": str(student_path), "dataset": root or repo,
        "episodes": list(episodes), "seed": config.seed, "max_samples": config.max_samples,
        "space": "mse/cosine/p95_abs_err: normalised actions; *_raw: dataset units"})
    return results


def main_eval(argv: list[str] | None = None) -> int:
    """Entry point of ``eval``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        print_help(EvalConfig, "snapflow_ros eval")
        return 0
    _setup_logging("eval")
    from snapflow_ros.distill.evaluate import format_table
    from snapflow_ros.policies import CheckpointError

    try:
        results = run_eval(parse_config(EvalConfig, argv))
    except (DistillError, CheckpointError) as err:
        log.error("%s", err)
        return 2
    print(f"held-out eval:{format_table(results)}")  # noqa: T201
    return 0
