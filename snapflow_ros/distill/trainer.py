"""The SnapFlow distillation loop over a LeRobot dataset (single process or HF accelerate).

Written against the policy interface (``policies.SnapFlowPolicy``), never a model's
internals, so every adapter ``policies.load_policy`` returns (SmolVLA now, pi0/pi0.5 later)
distils with the same code. Per optimizer step and process::

    raw batch ─► teacher's preprocessor (normalise, tokenise, to device)
              ─► policy.snapflow_loss: prefix encoded once, 1 grad pass + K no-grad passes
              ─► backward (× grad_accum_steps) ─► all-reduce (DDP) ─► clip ─► AdamW ─► LR ─► EMA

Multi-GPU: ``accelerate launch -m snapflow_ros distill ...`` wraps the loss module in DDP and
shards batches by rank; a plain ``python -m`` run needs no accelerate config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from snapflow_ros.core import SnapFlowLossConfig, SnapFlowLossOutput
from snapflow_ros.cpu_threads import apply_cpu_threads
from snapflow_ros.distill import data
from snapflow_ros.distill import run_dir as runs
from snapflow_ros.distill import state as training_state
from snapflow_ros.distill.config import DistillConfig, DistillError
from snapflow_ros.distill.evaluate import autocast_for
from snapflow_ros.policies import load_policy, save_policy
from snapflow_ros.policies.device import resolve_device, resolve_dtype

log = logging.getLogger(__name__)
#: Cores ``cpu_threads`` = 0 (auto) leaves free: the data loader / main thread.
TRAINER_RESERVED = 1


class LossModule(nn.Module):
    """``forward(batch, generator)`` = the policy's SnapFlow loss; what DDP wraps."""

    def __init__(self, policy: nn.Module, loss: SnapFlowLossConfig) -> None:
        super().__init__()
        self.policy, self.loss = policy, loss

    def forward(self, batch: dict[str, Any], generator: torch.Generator) -> SnapFlowLossOutput:
        return self.policy.snapflow_loss(batch, self.loss, generator=generator)


@dataclass
class DistillResult:
    run_dir: Path
    step: int
    finished: bool  # False when stopped early (stop_after or a signal): resume it
    student: Path | None
    eval: dict[str, dict[str, float]] | None
    main: bool = True  # False on the other processes of a multi-process run


@dataclass
class _Processes:
    """The processes of a run (one without accelerate launch) and where each computes."""

    accel: Any
    world: int
    rank: int
    main: bool
    device: str
    dtype: torch.dtype
    threads: int


@dataclass
class _Inputs:
    """The loaded policy (the teacher, or a checkpoint's weights) and the dataset split."""

    loaded: Any  # LoadedPolicy: policy + its processors
    dataset: Any
    train_episodes: list[int]
    held_out: list[int]
    sampler: Any  # EpochBatchSampler over this process's shard
    train_data: Any  # the dataset, or its in-memory cache
    workers: int


@dataclass
class _Optimisation:
    """What a step changes and a checkpoint saves: weights via ``params``, optimiser, LR
    schedule, EMA, the loss's generator and the data position."""

    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    sched: Any
    ema: training_state.EMA | None
    gen: torch.Generator
    step: int = 0
    epoch: int = 0
    position: int = 0


def distill(config: DistillConfig) -> DistillResult:
    """Run (or resume) a distillation; see the module docstring and ``run_dir.py``."""
    config.require_io()
    config = runs.absolute_paths(config)
    run_dir = Path(str(config.output_dir))
    procs = _start_processes(config)
    resume_from = runs.check_run_dir(run_dir, config)
    procs.accel.wait_for_everyone()  # every process has checked output_dir before anyone writes
    inputs = _load_inputs(config, procs, resume_from)  # a bad teacher or dataset fails here
    state = _make_optimisation(config, inputs.loaded.policy)
    _seed_or_restore(config, procs, state, resume_from)
    if procs.main:
        runs.start_run_dir(run_dir, config, resume_step=state.step if resume_from else None)
        runs.append_log(run_dir, {"event": "resume" if resume_from else "start",
                               "step": state.step, "processes": procs.world,
                               "device": procs.device, "cpu_threads": procs.threads})
    procs.accel.wait_for_everyone()
    provenance = _provenance(config, procs, inputs)
    saved_at = _train(config, procs, inputs, state, run_dir, provenance,
                      resumed=resume_from is not None)
    if state.step < config.steps:
        if procs.main:
            runs.append_log(run_dir, {"event": "stopped", "step": state.step})
        log.info("stopped at step %d of %d; continue with --resume", state.step, config.steps)
        return DistillResult(run_dir, state.step, False, None, None, procs.main)
    if saved_at != state.step:
        _checkpoint(config, procs, inputs, state, run_dir, provenance)
    return _finish(config, run_dir, inputs.loaded, state.ema, provenance, inputs.dataset,
                   inputs.held_out, autocast_for(procs.device, procs.dtype), procs.main)


def _start_processes(config: DistillConfig) -> _Processes:
    """accelerate (a no-op for one process), the device of this process, its CPU threads."""
    from accelerate import Accelerator

    threads = apply_cpu_threads(config.cpu_threads, reserved=TRAINER_RESERVED)
    try:
        device = resolve_device(config.device)
    except ValueError as err:
        raise DistillError(str(err)) from err
    accel = Accelerator(cpu=torch.device(device).type == "cpu")
    world, rank, main = accel.num_processes, accel.process_index, accel.is_main_process
    if world > 1:  # one device per process (CPU processes share "cpu")
        device = "cpu" if accel.device.type == "cpu" else str(accel.device)
        if not config.cpu_threads and device == "cpu":  # auto: the processes share the cores
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            threads = apply_cpu_threads(max(1, threads // max(local, 1)))
    if main:
        log.info("CPU threads: %d (cpu_threads=%d%s)", threads, config.cpu_threads,
                 ", auto" if not config.cpu_threads else "")
    return _Processes(accel, world, rank, main, device, resolve_dtype(config.dtype, device),
                      threads)


def _load_inputs(config: DistillConfig, procs: _Processes, resume_from: Path | None) -> _Inputs:
    """Teacher (checked for its processors), dataset (checked against it), episode split and
    this process's batches; on resume, the checkpoint's weights replace the teacher's."""
    teacher = load_policy(str(config.teacher), device=procs.device)
    if teacher.preprocessor is None:
        raise DistillError(
            f"teacher '{config.teacher}' has no saved preprocessor (policy_preprocessor.json): "
            f"its normalisation stats are unknown. Save the teacher with its processors (as "
            f"lerobot-train does) and try again"
        )
    dataset = data.open_dataset(config.dataset_root, config.dataset_repo_id,
                                teacher.policy.config, video_backend=config.video_backend)
    data.check_features(teacher.policy.config, dataset.meta.features,
                        data.rename_map_of(teacher.preprocessor))
    train_eps, held_out = data.split_episodes(dataset.meta.total_episodes, config.eval_episodes)
    sampler = data.EpochBatchSampler(data.frames_of(dataset, train_eps), config.batch_size,
                                     seed=config.seed, rank=procs.rank, world=procs.world)
    train_data, workers = dataset, config.num_workers
    if config.cache_dataset:  # decoded once; worker processes would only copy the cache
        train_data = data.InMemoryDataset(dataset, data.frames_of(dataset, train_eps),
                                       max_bytes=config.cache_limit_gb * 1e9, progress=procs.main)
        workers = 0
    loaded = teacher
    if resume_from is not None:  # the checkpoint's weights; the teacher is reloaded for eval
        loaded = load_policy(resume_from / training_state.POLICY_DIR, device=procs.device)
        del teacher
    return _Inputs(loaded, dataset, train_eps, held_out, sampler, train_data, workers)


def _make_optimisation(config: DistillConfig, policy: Any) -> _Optimisation:
    """Sampling default, trainable parameters, AdamW, warm-up + cosine LR, optional EMA."""
    policy.set_sampling(config.sampling.num_steps, config.sampling.sampler)
    params = policy.freeze_for_snapflow()
    opt = torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.adam_betas),
                            eps=config.adam_eps, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
        training_state.lr_factor, steps=config.steps, warmup_steps=config.warmup_steps,
        final_ratio=config.final_lr_ratio))
    ema = training_state.EMA(params, config.ema_decay) if config.ema_decay else None
    return _Optimisation(params, opt, sched, ema, torch.Generator())


def _seed_or_restore(config: DistillConfig, procs: _Processes, state: _Optimisation,
                     resume_from: Path | None) -> None:
    """A fresh run seeds every RNG; a resumed one restores them and the rest of ``state``."""
    if resume_from is None:
        training_state.seed_everything(config.seed)
        state.gen.manual_seed(config.seed + 7919 * (procs.rank + 1))
        return
    saved = training_state.load_state(resume_from)
    state.opt.load_state_dict(saved["optimizer"])
    state.sched.load_state_dict(saved["scheduler"])
    if state.ema is not None:
        state.ema.load_state_dict(saved["ema"])
    if len(saved["rng"]) != procs.world:
        log.warning("resuming %d-process state on %d processes: RNG streams differ",
                    len(saved["rng"]), procs.world)
    training_state.restore_rng(saved["rng"][min(procs.rank, len(saved["rng"]) - 1)], state.gen)
    state.step, state.epoch, state.position = saved["step"], saved["epoch"], saved["position"]
    log.info("resuming %s at step %d", resume_from, state.step)


def _provenance(config: DistillConfig, procs: _Processes, inputs: _Inputs) -> dict[str, Any]:
    """What the student's sidecar records about how it was made."""
    return {"distill": {
        "recipe": config.loss.to_dict(), "teacher": config.teacher,
        "dataset": config.dataset_root or config.dataset_repo_id,
        "train_episodes": inputs.train_episodes, "held_out_episodes": inputs.held_out,
        "lr": config.lr, "batch_size": config.batch_size,
        "grad_accum_steps": config.grad_accum_steps, "processes": procs.world,
        "ema_decay": config.ema_decay, "seed": config.seed, "steps": config.steps}}


def _checkpoint(config: DistillConfig, procs: _Processes, inputs: _Inputs, state: _Optimisation,
                run_dir: Path, provenance: dict[str, Any]) -> None:
    """Write ``checkpoints/step_N/`` all or nothing (main process; every process's RNG)."""
    from accelerate.utils import gather_object

    from snapflow_ros.atomic import atomic_directory

    rng = [training_state.capture_rng(state.gen)]
    if procs.world > 1:
        rng = gather_object(rng)
    if procs.main:
        extra = {"distill": {**provenance["distill"], "step": state.step}}
        with atomic_directory(training_state.checkpoint_dir(run_dir, state.step)) as tmp:
            save_policy(inputs.loaded.policy, tmp / training_state.POLICY_DIR,
                        preprocessor=inputs.loaded.preprocessor,
                        postprocessor=inputs.loaded.postprocessor, extra=extra)
            torch.save({"format": training_state.FORMAT, "step": state.step, "epoch": state.epoch,
                        "position": state.position, "optimizer": state.opt.state_dict(),
                        "scheduler": state.sched.state_dict(),
                        "ema": state.ema.state_dict() if state.ema else None, "rng": rng,
                        "config": dataclasses.asdict(config)}, tmp / training_state.STATE_FILE)
        training_state.prune_checkpoints(run_dir, config.keep_checkpoints)
        runs.append_log(run_dir, {"event": "checkpoint", "step": state.step})
    procs.accel.wait_for_everyone()


def _train(config: DistillConfig, procs: _Processes, inputs: _Inputs, state: _Optimisation,
           run_dir: Path, provenance: dict[str, Any], *, resumed: bool) -> int:
    """Optimizer steps until ``steps``, ``stop_after`` or a signal; checkpoints on the way.
    Returns the step of the last checkpoint (-1: none in this run)."""
    policy = inputs.loaded.policy
    model: nn.Module = LossModule(policy, config.loss)
    if procs.world > 1:
        model = procs.accel.prepare_model(model)
    loader = data.make_loader(inputs.train_data, inputs.sampler, inputs.workers)
    stream = data.batches(loader, inputs.sampler, state.epoch, state.position, config.seed)
    autocast = autocast_for(procs.device, procs.dtype)
    saved_at = state.step if resumed else -1
    stop_at = min(config.steps, config.stop_after or config.steps)
    start_step, t0 = state.step, time.perf_counter()
    bar = tqdm(total=config.steps, initial=state.step, desc="SnapFlow distill",
               disable=not procs.main, file=sys.stderr, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 10.0)
    policy.train()
    with training_state.StopRequest() as stop:
        while state.step < stop_at:
            lr = state.opt.param_groups[0]["lr"]
            outs = _accumulate_gradients(config, procs, model, stream, inputs, state, autocast)
            norm = training_state.optimizer_step(state.params, state.opt, state.sched,
                                                 config.grad_clip_norm, state.ema)
            state.step += 1
            record = _record(state.step, outs, lr, norm, (state.step - start_step)
                             / max(time.perf_counter() - t0, 1e-9))
            bar.update(1)
            bar.set_postfix({k: "-" if record[k] is None else f"{record[k]:.3g}"
                             for k in ("loss", "fm", "cons", "lr")}, refresh=False)
            if procs.main and (state.step % config.log_every == 0 or state.step == stop_at):
                runs.append_log(run_dir, record)
            stopping = (_agree(procs.accel, stop.requested, procs.device) if procs.world > 1
                        else stop.requested)
            if state.step % config.save_every == 0 or state.step == stop_at or stopping:
                _checkpoint(config, procs, inputs, state, run_dir, provenance)
                saved_at = state.step
            if stopping:
                break
    bar.close()
    policy.eval()
    return saved_at


def _accumulate_gradients(config: DistillConfig, procs: _Processes, model: nn.Module,
                          stream: Any, inputs: _Inputs, state: _Optimisation,
                          autocast: Any) -> list[SnapFlowLossOutput]:
    """``grad_accum_steps`` micro-batches of backward (DDP all-reduces on the last only)."""
    outs = []
    for micro in range(config.grad_accum_steps):
        raw, state.epoch, state.position = next(stream)
        batch = inputs.loaded.preprocessor(raw)
        last = micro == config.grad_accum_steps - 1
        sync = contextlib.nullcontext() if last or procs.world == 1 else procs.accel.no_sync(model)
        with sync:
            with autocast:
                out = model(batch, state.gen)
            (out.loss / config.grad_accum_steps).backward()
        outs.append(out)
    return outs


def _agree(accel: Any, flag: bool, device: str) -> bool:
    """True on every process when any process was asked to stop."""
    return bool(accel.reduce(torch.tensor([float(flag)], device=device), "sum").item() > 0)


def _record(step: int, outs: list[SnapFlowLossOutput], lr: float, norm: float,
            rate: float) -> dict[str, Any]:
    def mean(values: list[Tensor]) -> float | None:  # None (JSON null): no such rows
        v = torch.stack([x.detach().float().cpu() for x in values])
        return float(v.nanmean()) if (~v.isnan()).any() else None

    return {"step": step, "loss": mean([o.loss for o in outs]),
            "fm": mean([o.fm_loss for o in outs]),
            "cons": mean([o.consistency_loss for o in outs]),
            "lr": lr, "grad_norm": norm if math.isfinite(norm) else None, "steps_per_s": rate,
            "time": time.time()}


def _finish(config: DistillConfig, run_dir: Path, loaded: Any, ema: training_state.EMA | None,
            provenance: dict, dataset: Any, held_out: list[int], autocast: Any,
            main: bool) -> DistillResult:
    """Save ``student/`` (EMA weights when on) and run the held-out evaluation (main only)."""
    student_dir = run_dir / runs.STUDENT_DIR
    if not main:
        return DistillResult(run_dir, config.steps, True, student_dir, None, main)
    extra = {"distill": {**provenance["distill"], "step": config.steps, "ema": ema is not None}}
    with ema.applied() if ema else contextlib.nullcontext():
        save_policy(loaded.policy, student_dir, preprocessor=loaded.preprocessor,
                    postprocessor=loaded.postprocessor, extra=extra, overwrite=True)
    runs.append_log(run_dir, {"event": "student", "step": config.steps, "path": str(student_dir)})
    log.info("student (1-NFE SnapFlow policy): %s", student_dir)
    results, student = None, None
    if held_out:
        from snapflow_ros.distill.evaluate import evaluate, write_eval

        device = str(loaded.policy.device)
        teacher = load_policy(str(config.teacher), device=device)
        student = load_policy(student_dir, device=device)
        results, example = evaluate(
            teacher, student, dataset, data.frames_of(dataset, held_out),
            max_samples=config.eval_max_samples, batch_size=config.eval_batch_size,
            seed=config.eval_seed, autocast=autocast)
        write_eval(run_dir, results, example, {
            "teacher": config.teacher, "student": str(student_dir),
            "dataset": config.dataset_root or config.dataset_repo_id, "episodes": held_out,
            "seed": config.eval_seed, "max_samples": config.eval_max_samples,
            "space": "mse/cosine/p95_abs_err: normalised actions; *_raw: dataset units"})
    from snapflow_ros.policies.export import export_lerobot, model_card

    (student_dir / "README.md").write_text(model_card(
        loaded.policy, student_dir, results, distill=extra["distill"], exported=False))
    if config.export:
        exported = export_lerobot(student or load_policy(student_dir), run_dir / runs.EXPORT_DIR,
                                  eval_results=results, overwrite=True)
        runs.append_log(run_dir, {"event": "export", "path": str(exported)})
        log.info("student as a plain 1-step LeRobot policy: %s", exported)
    return DistillResult(run_dir, config.steps, True, student_dir, results)
