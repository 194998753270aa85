"""Training state for exact resume: LR schedule, EMA, RNG capture, checkpoint files.

A checkpoint is ``<run>/checkpoints/step_NNNNNNN/`` written all or nothing::

    policy/              a loadable SnapFlow policy directory (``policies.save_policy``): the
                         trained (non-EMA) weights, default 1 step, recipe provenance
    training_state.pt    step, data position (epoch, batch), optimizer, scheduler, EMA weights,
                         every process's RNG states (torch, CUDA, numpy, python, loss generator)

Resuming loads ``policy/`` and ``training_state.pt`` of the newest checkpoint; with the same
seed the run then continues bit for bit as if it had never stopped (CPU; CUDA kernels may
add their own non-determinism). ``StopRequest`` turns SIGINT/SIGTERM (preemption) into a
checkpoint at the end of the current step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from snapflow_ros.distill.config import DistillError

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
POLICY_DIR = "policy"
CHECKPOINTS = "checkpoints"
FORMAT = "snapflow_ros.distill_state/1"


def lr_factor(step: int, *, steps: int, warmup_steps: int, final_ratio: float) -> float:
    """LR multiplier for optimizer step ``step`` (0-based): linear warm-up, then cosine.

    Warm-up: (step + 1)/warmup_steps. Then cosine from 1 to ``final_ratio`` at ``steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_step(params: Sequence[nn.Parameter], opt: torch.optim.Optimizer, sched: Any,
                   clip_norm: float, ema: EMA | None = None) -> float:
    """One update from the accumulated gradients: clip (``clip_norm`` ≤ 0: measure only), step,
    clear the gradients, advance the LR schedule and the EMA. Returns the pre-clip grad norm.

    The one step both the distillation and the demo's teacher training take.
    """
    norm = torch.nn.utils.clip_grad_norm_(params, clip_norm if clip_norm > 0 else float("inf"))
    opt.step()
    opt.zero_grad(set_to_none=True)
    sched.step()
    if ema is not None:
        ema.update()
    return float(norm)


class EMA:
    """Exponential moving average of parameters: θ̄ ← d·θ̄ + (1 − d)·θ, in float32."""

    def __init__(self, params: Sequence[nn.Parameter], decay: float) -> None:
        self.params, self.decay = list(params), decay
        self.shadow = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        for avg, p in zip(self.shadow, self.params, strict=True):
            avg.lerp_(p.detach().float(), 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the parameters."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, avg in zip(self.params, self.shadow, strict=True):
                p.copy_(avg.to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, old in zip(self.params, saved, strict=True):
                    p.copy_(old)

    def state_dict(self) -> list[torch.Tensor]:
        return [t.cpu() for t in self.shadow]

    def load_state_dict(self, tensors: Sequence[torch.Tensor]) -> None:
        if len(tensors) != len(self.shadow):
            raise ValueError(f"EMA state has {len(tensors)} tensors, expected {len(self.shadow)}")
        self.shadow = [t.to(avg.device, torch.float32) for t, avg in zip(tensors, self.shadow,
                                                                          strict=True)]


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """This process's RNG states: global torch/CUDA/numpy/python and the loss generator."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generator": generator.get_state(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of ``capture_rng``."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["generator"])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step_{step:07d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (half-written ones never have the name)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and p.name.startswith("step_") and (p / STATE_FILE).is_file()
             and (p / POLICY_DIR).is_dir()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_")))


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep = 0: keep all)."""
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def load_state(path: Path) -> dict[str, Any]:
    """``training_state.pt`` of a checkpoint directory, checked."""
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DistillError(f"'{path / STATE_FILE}' is not a {FORMAT} training state; "
                           f"resume from another checkpoint or start with --overwrite")
    return state


class StopRequest:
    """SIGINT/SIGTERM → finish the current step, checkpoint, exit (a second SIGINT aborts)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop requested: checkpointing after this step (Ctrl-C again aborts)")

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
