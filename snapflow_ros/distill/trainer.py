"""The SnapFlow distillation loop over a LeRobot dataset (single process or HF accelerate).

Written against the policy's SnapFlow methods (``DistillablePolicy``), never a model's
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
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from snapflow_ros.core import SnapFlowLossConfig, SnapFlowLossOutput
from snapflow_ros.cpu_threads import apply_cpu_threads
from snapflow_ros.distill import data as D
from snapflow_ros.distill import run_dir as R
from snapflow_ros.distill import state as S
from snapflow_ros.distill.config import DistillConfig, DistillError
from snapflow_ros.distill.evaluate import autocast_for
from snapflow_ros.policies import load_policy, save_policy
from snapflow_ros.policies.device import resolve_device, resolve_dtype

log = logging.getLogger(__name__)
#: Cores ``cpu_threads`` = 0 (auto) leaves free: the data loader / main thread.
TRAINER_RESERVED = 1


class DistillablePolicy(Protocol):
    """What the trainer and the eval use of a policy adapter (``SnapFlowSmolVLA`` has it)."""

    config: Any  # the lerobot PreTrainedConfig: features, chunk_size, action_delta_indices
    teacher: dict[str, Any]  # provenance, saved in the sidecar
    device: torch.device

    def freeze_for_snapflow(self) -> list[nn.Parameter]: ...
    def snapflow_loss(self, batch: dict[str, Any], config: SnapFlowLossConfig | None = None, *,
                      generator: torch.Generator | None = None) -> SnapFlowLossOutput: ...
    def set_sampling(self, num_steps: int, sampler: str = "snap") -> None: ...
    def noise_like(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor: ...
    def predict_action_chunk(self, batch: dict[str, Any], **kwargs: Any) -> Tensor: ...


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


def distill(config: DistillConfig) -> DistillResult:
    """Run (or resume) a distillation; see the module docstring and ``run_dir.py``."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    config.require_io()
    config = R.absolute_paths(config)
    run_dir = Path(str(config.output_dir))
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
    dtype = resolve_dtype(config.dtype, device)
    resume_from = R.check_run_dir(run_dir, config)
    accel.wait_for_everyone()  # every process has checked output_dir before anyone writes it

    # Inputs first: a bad teacher or dataset fails before anything is written.
    teacher = load_policy(str(config.teacher), device=device)
    if teacher.preprocessor is None:
        raise DistillError(
            f"teacher '{config.teacher}' has no saved preprocessor (policy_preprocessor.json): "
            f"its normalisation stats are unknown. Save the teacher with its processors (as "
            f"lerobot-train does) and try again"
        )
    dataset = D.open_dataset(config.dataset_root, config.dataset_repo_id, teacher.policy.config,
                             video_backend=config.video_backend)
    D.check_features(teacher.policy.config, dataset.meta.features,
                     D.rename_map_of(teacher.preprocessor))
    train_eps, held_out = D.split_episodes(dataset.meta.total_episodes, config.eval_episodes)
    sampler = D.EpochBatchSampler(D.frames_of(dataset, train_eps), config.batch_size,
                                  seed=config.seed, rank=rank, world=world)
    train_data, workers = dataset, config.num_workers
    if config.cache_dataset:  # decoded once; worker processes would only copy the cache
        train_data = D.InMemoryDataset(dataset, D.frames_of(dataset, train_eps),
                                       max_bytes=config.cache_limit_gb * 1e9, progress=main)
        workers = 0
    loaded = teacher
    if resume_from is not None:  # the checkpoint's weights; the teacher is reloaded for eval
        loaded = load_policy(resume_from / S.POLICY_DIR, device=device)
        del teacher
    policy = loaded.policy
    recipe = config.load_recipe()
    loss = config.loss_config()
    policy.set_sampling(recipe.num_steps, recipe.sampler)
    params = policy.freeze_for_snapflow()
    opt = torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.adam_betas),
                            eps=config.adam_eps, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
        S.lr_factor, steps=config.steps, warmup_steps=config.warmup_steps,
        final_ratio=config.final_lr_ratio))
    ema = S.EMA(params, config.ema_decay) if config.ema_decay else None
    gen = torch.Generator()
    step, epoch, position = 0, 0, 0
    if resume_from is None:
        S.seed_everything(config.seed)
        gen.manual_seed(config.seed + 7919 * (rank + 1))
    else:
        st = S.load_state(resume_from)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if ema is not None:
            ema.load_state_dict(st["ema"])
        if len(st["rng"]) != world:
            log.warning("resuming %d-process state on %d processes: RNG streams differ",
                        len(st["rng"]), world)
        S.restore_rng(st["rng"][min(rank, len(st["rng"]) - 1)], gen)
        step, epoch, position = st["step"], st["epoch"], st["position"]
        log.info("resuming %s at step %d", resume_from, step)
    if main:
        R.start_run_dir(run_dir, config, resume_step=step if resume_from else None)
        R.append_log(run_dir, {"event": "resume" if resume_from else "start", "step": step,
                               "processes": world, "device": device, "cpu_threads": threads})
    accel.wait_for_everyone()

    provenance = {"distill": {
        "recipe": loss.to_dict(), "teacher": config.teacher,
        "dataset": config.dataset_root or config.dataset_repo_id, "train_episodes": train_eps,
        "held_out_episodes": held_out, "lr": config.lr, "batch_size": config.batch_size,
        "grad_accum_steps": config.grad_accum_steps, "processes": world,
        "ema_decay": config.ema_decay, "seed": config.seed, "steps": config.steps}}

    def checkpoint(at: int) -> None:
        rng = gather_object([S.capture_rng(gen)]) if world > 1 else [S.capture_rng(gen)]
        if main:
            from snapflow_ros.atomic import atomic_directory

            extra = {"distill": {**provenance["distill"], "step": at}}
            with atomic_directory(S.checkpoint_dir(run_dir, at)) as tmp:
                save_policy(policy, tmp / S.POLICY_DIR, preprocessor=loaded.preprocessor,
                            postprocessor=loaded.postprocessor, extra=extra)
                torch.save({"format": S.FORMAT, "step": at, "epoch": epoch,
                            "position": position, "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(),
                            "ema": ema.state_dict() if ema else None, "rng": rng,
                            "config": dataclasses.asdict(config)}, tmp / S.STATE_FILE)
            S.prune_checkpoints(run_dir, config.keep_checkpoints)
            R.append_log(run_dir, {"event": "checkpoint", "step": at})
        accel.wait_for_everyone()

    model: nn.Module = LossModule(policy, loss)
    if world > 1:
        model = accel.prepare_model(model)
    loader = D.make_loader(train_data, sampler, workers)
    stream = D.batches(loader, sampler, epoch, position, config.seed)
    autocast = autocast_for(device, dtype)
    saved_at = step if resume_from else -1
    stop_at = min(config.steps, config.stop_after or config.steps)
    start_step, t0 = step, time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, desc="SnapFlow distill", disable=not main,
               file=sys.stderr, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 10.0)
    policy.train()
    with S.StopRequest() as stop:
        while step < stop_at:
            lr = opt.param_groups[0]["lr"]
            outs = []
            for micro in range(config.grad_accum_steps):
                raw, epoch, position = next(stream)
                batch = loaded.preprocessor(raw)
                last = micro == config.grad_accum_steps - 1
                with contextlib.nullcontext() if last or world == 1 else accel.no_sync(model):
                    with autocast:
                        out = model(batch, gen)
                    (out.loss / config.grad_accum_steps).backward()
                outs.append(out)
            norm = torch.nn.utils.clip_grad_norm_(
                params, config.grad_clip_norm if config.grad_clip_norm > 0 else float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if ema is not None:
                ema.update()
            step += 1
            record = _record(step, outs, lr, float(norm), (step - start_step)
                             / max(time.perf_counter() - t0, 1e-9))
            bar.update(1)
            bar.set_postfix({k: "-" if record[k] is None else f"{record[k]:.3g}"
                             for k in ("loss", "fm", "cons", "lr")}, refresh=False)
            if main and (step % config.log_every == 0 or step == stop_at):
                R.append_log(run_dir, record)
            stopping = _agree(accel, stop.requested, device) if world > 1 else stop.requested
            if step % config.save_every == 0 or step == stop_at or stopping:
                checkpoint(step)
                saved_at = step
            if stopping:
                break
    bar.close()
    policy.eval()
    if step < config.steps:
        if main:
            R.append_log(run_dir, {"event": "stopped", "step": step})
        log.info("stopped at step %d of %d; continue with --resume", step, config.steps)
        return DistillResult(run_dir, step, False, None, None, main)
    if saved_at != step:
        checkpoint(step)
    return _finish(config, run_dir, loaded, ema, provenance, dataset, held_out, autocast, main)


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


def _finish(config: DistillConfig, run_dir: Path, loaded: Any, ema: S.EMA | None,
            provenance: dict, dataset: Any, held_out: list[int], autocast: Any,
            main: bool) -> DistillResult:
    """Save ``student/`` (EMA weights when on) and run the held-out evaluation (main only)."""
    student_dir = run_dir / R.STUDENT_DIR
    if not main:
        return DistillResult(run_dir, config.steps, True, student_dir, None, main)
    extra = {"distill": {**provenance["distill"], "step": config.steps, "ema": ema is not None}}
    with ema.applied() if ema else contextlib.nullcontext():
        save_policy(loaded.policy, student_dir, preprocessor=loaded.preprocessor,
                    postprocessor=loaded.postprocessor, extra=extra, overwrite=True)
    R.append_log(run_dir, {"event": "student", "step": config.steps, "path": str(student_dir)})
    log.info("student (1-NFE SnapFlow policy): %s", student_dir)
    results = None
    if held_out:
        from snapflow_ros.distill.evaluate import evaluate, write_eval

        device = str(loaded.policy.device)
        teacher = load_policy(str(config.teacher), device=device)
        student = load_policy(student_dir, device=device)
        results, example = evaluate(
            teacher, student, dataset, D.frames_of(dataset, held_out),
            max_samples=config.eval_max_samples, batch_size=config.eval_batch_size,
            seed=config.eval_seed, autocast=autocast)
        write_eval(run_dir, results, example, {
            "teacher": config.teacher, "student": str(student_dir),
            "dataset": config.dataset_root or config.dataset_repo_id, "episodes": held_out,
            "seed": config.eval_seed, "max_samples": config.eval_max_samples,
            "space": "mse/cosine/p95_abs_err: normalised actions; *_raw: dataset units"})
    return DistillResult(run_dir, config.steps, True, student_dir, results)
