"""Inference engines: one action chunk from numpy inputs, eager or on the static fast path.

Every engine answers ``predict(images, state, task, noise=None, timer=None)``: images by camera
name as (H, W, 3) uint8 RGB, the state (S,) in policy order, the task string; it returns the
unnormalised chunk (chunk_size, A) as float64 numpy. ``PolicyRunner`` (the node), ``bench`` and
the closed loop choose one by name (``ENGINES``):

* ``eager``: the reference path (what every tool ran before the engine): lerobot's
  preprocessor on the host → the adapter's ``sample`` → lerobot's postprocessor. Any shapes.
* ``static``: ``StaticEngine`` with eager kernels: batch 1, preallocated input buffers (images
  as uint8 in page-locked host memory, copied asynchronously), language padded to the
  tokenizer's max length, images converted/resized/normalised on the device, the sampler and
  the unnormalisation on the device, the chunk written into a preallocated output. One host
  sync per chunk: the copy of the result.
* ``compile``: ``static`` with ``torch.compile`` (inductor, ``dynamic=False``) of the prefix
  encoder (``encode_prefix``) and of the expert pass (``velocity``). Compiled in ``prepare``.
* ``graph`` (CUDA only): ``static`` captured as one CUDA graph: prefix + every expert pass +
  unnormalisation replay as one launch (``cuda_graph.StepGraph``). Captured in ``prepare``.
* ``auto``: ``graph`` on CUDA (falling back to ``static`` with a warning if the capture fails);
  on CPU ``eager``: ``compile`` is faster per chunk on the tiny model, but every process then
  compiles for tens of seconds at configure and needs a C++ compiler (README, "Inference
  engines"); ask for it by name.

``prepare`` (warm-up, compilation, capture) runs at configure time, never on a control tick. A
new image size later prepares again, and a new step count captures its graph on its first chunk
(both logged; ``prepare_steps`` captures step counts ahead). Parity: every static engine
matches ``eager`` on the same noise (test/policies/test_inference_engine.py states the tolerances).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from snapflow_ros.core import euler_sample, snap_sample
from snapflow_ros.policies.base import LANG_MASK, LANG_TOKENS, OBS_STATE, SnapFlowPolicy
from snapflow_ros.policies.checkpoint import LoadedPolicy
from snapflow_ros.policies.cuda_graph import NO_CUDA_GRAPH, StepGraph, pinned
from snapflow_ros.timing import StageTimer

log = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = ("auto", "eager", "static", "compile", "graph")
#: what ``auto`` picks on a CPU (see the module docstring)
CPU_AUTO = "eager"
IMAGE_PREFIX = "observation.images."


def resolve_engine(name: str, device: str | torch.device) -> str:
    """``auto`` → ``graph`` on CUDA, ``CPU_AUTO`` elsewhere; other names are checked."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    cuda = torch.device(device).type == "cuda"
    if name == "graph" and not cuda:
        raise ValueError(NO_CUDA_GRAPH.format(device=device))
    if name == "auto":
        return "graph" if cuda else CPU_AUTO
    return name


def _noise(policy: SnapFlowPolicy, noise: Tensor | None) -> Tensor:
    return policy.noise_like(1) if noise is None else noise.to(policy.device)


class EagerEngine:
    """The reference path (see the module docstring): dynamic shapes, lerobot's processors."""

    name = "eager"

    def __init__(self, loaded: LoadedPolicy, policy: SnapFlowPolicy, num_steps: int,
                 sampler: str | None = None) -> None:
        self.loaded, self.policy, self.sampler = loaded, policy, sampler
        self.num_steps = int(num_steps)

    def prepare(self, image_shapes: dict[str, tuple[int, int]], warmup: int = 2,
                task: str = "warm up") -> None:
        """Run ``warmup`` chunks on blank inputs (first calls, allocator, lazy init)."""
        blank_run(self, image_shapes, warmup, task)

    def set_num_steps(self, num_steps: int) -> None:
        self.num_steps = int(num_steps)

    def prepare_steps(self, counts: list[int]) -> None:
        """Nothing to prepare per step count."""

    def predict(self, images: dict[str, np.ndarray], state: np.ndarray, task: str,
                noise: Tensor | None = None, timer: StageTimer | None = None) -> np.ndarray:
        timer = timer or StageTimer()
        with timer.stage("preprocess"):
            obs: dict[str, Any] = {
                IMAGE_PREFIX + name: torch.from_numpy(np.ascontiguousarray(image))
                .permute(2, 0, 1).float().div_(255.0)
                for name, image in images.items()
            }
            obs[OBS_STATE] = torch.as_tensor(np.asarray(state, dtype=np.float32))
            obs["task"] = task
            batch = self.loaded.preprocessor(obs)
            noise = _noise(self.policy, noise)
        actions = self.policy.predict_action_chunk(batch, noise=noise, num_steps=self.num_steps,
                                                   sampler=self.sampler, timer=timer)
        with timer.stage("postprocess"):
            out = self.loaded.postprocessor(actions)
            return out[0].detach().to("cpu", torch.float64).numpy()


def blank_inputs(image_shapes: dict[str, tuple[int, int]],
                 state_dim: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Black (H, W, 3) uint8 images by camera and a zero state (S,)."""
    return ({n: np.zeros((h, w, 3), np.uint8) for n, (h, w) in image_shapes.items()},
            np.zeros(state_dim))


def blank_run(engine: Any, image_shapes: dict[str, tuple[int, int]], iterations: int,
              task: str) -> None:
    """``iterations`` chunks on black images and a zero state."""
    images, state = blank_inputs(image_shapes, engine.policy.state_dim)
    for _ in range(iterations):
        engine.predict(images, state, task)


def _host_preprocessor(loaded: LoadedPolicy) -> Any:
    """lerobot's preprocessor for state + task only, on the host, language padded to the
    tokenizer's max length (static shape). Steps are copied: the eager path keeps its own."""
    from lerobot.processor import (
        DataProcessorPipeline,
        DeviceProcessorStep,
        NormalizerProcessorStep,
        TokenizerProcessorStep,
    )

    pre = loaded.preprocessor
    steps = []
    for step in pre.steps:
        if isinstance(step, DeviceProcessorStep):
            continue
        step = copy.copy(step)
        if isinstance(step, TokenizerProcessorStep):
            step.padding = "max_length"
        if isinstance(step, NormalizerProcessorStep):
            step.to(device="cpu")
        steps.append(step)
    return DataProcessorPipeline(steps=steps, to_transition=pre.to_transition,
                                 to_output=pre.to_output, name="snapflow_host_preprocessor")


def _device_postprocessor(loaded: LoadedPolicy,
                          device: torch.device) -> Callable[[Tensor], Tensor]:
    """lerobot's postprocessor without its device move, on ``device`` tensors (no host copy)."""
    from lerobot.processor import DeviceProcessorStep, TransitionKey, create_transition

    steps = [copy.copy(s) for s in loaded.postprocessor.steps
             if not isinstance(s, DeviceProcessorStep)]
    for step in steps:
        if hasattr(step, "to"):
            step.to(device=device)

    def run(actions: Tensor) -> Tensor:
        transition = create_transition(action=actions)
        for step in steps:
            transition = step(transition)
        return transition[TransitionKey.ACTION]

    return run


def _check_static_inputs(loaded: LoadedPolicy) -> None:
    """The static engine converts images on the device itself: they must not be normalised."""
    from lerobot.configs.types import FeatureType, NormalizationMode

    mode = loaded.policy.config.normalization_mapping.get(FeatureType.VISUAL.value)
    if mode not in (None, NormalizationMode.IDENTITY):
        raise ValueError(f"the static engine feeds images as they are, but this policy "
                         f"normalises them ({mode}); use engine 'eager'")


class StaticEngine:
    """Batch 1, static shapes, device-side pre/post; eager, compiled or a CUDA graph.

    Buffers (all preallocated in ``prepare``): per camera a (1, H, W, 3) uint8 host buffer
    (page-locked on CUDA) and its device twin; state (1, S) float32; language tokens and mask
    (1, L) with L = the tokenizer's max length; noise (1, chunk_size, noise_dim) float32; the
    chunk (1, chunk_size, A) float32 on the device and on the host.
    """

    def __init__(self, loaded: LoadedPolicy, policy: SnapFlowPolicy, *, mode: str,
                 num_steps: int, sampler: str | None = None) -> None:
        if mode not in ("static", "compile", "graph"):
            raise ValueError(f"StaticEngine mode must be static, compile or graph, got {mode!r}")
        _check_static_inputs(loaded)
        self.name, self.loaded, self.policy = mode, loaded, policy
        self.device = policy.device
        if mode == "graph" and self.device.type != "cuda":
            raise ValueError(NO_CUDA_GRAPH.format(device=self.device))
        self.sampler = sampler or policy.sampler
        self.num_steps = int(num_steps)
        self._pre = _host_preprocessor(loaded)
        self._post = _device_postprocessor(loaded, self.device)
        self._encode: Callable[..., Any] = policy.encode_prefix
        self._velocity: Callable[..., Tensor] = policy.velocity
        if mode == "compile":
            import torch._inductor.config as inductor_config

            # One kernel at a time, in this process: parallel compile starts a pool of
            # workers (threads for C++ kernels; a sidecar process pool for Triton ones, which
            # stays up until exit and can hang in containers: pytorch#121197) beside the
            # robot's drivers. Compiling happens once, at configure time.
            inductor_config.compile_threads = 1
            self._encode = torch.compile(policy.encode_prefix, dynamic=False)
            self._velocity = torch.compile(policy.velocity, dynamic=False)
        self._graphs: dict[int, StepGraph] = {}
        self._shapes: dict[str, tuple[int, int]] = {}
        self.prepares = 0

    # -- buffers and preparation -----------------------------------------------------------

    def _allocate(self, image_shapes: dict[str, tuple[int, int]], task: str) -> None:
        dev, policy = self.device, self.policy
        self._shapes = {n: (int(h), int(w)) for n, (h, w) in image_shapes.items()}
        self._images_host = {n: pinned((1, h, w, 3), torch.uint8, dev)
                             for n, (h, w) in self._shapes.items()}
        self._images = {n: torch.zeros((1, h, w, 3), dtype=torch.uint8, device=dev)
                        for n, (h, w) in self._shapes.items()}
        example = self._host_batch(np.zeros(policy.state_dim, np.float32), task)
        self._inputs_host = {k: pinned(tuple(v.shape), v.dtype, dev) for k, v in example.items()}
        self._inputs = {k: torch.zeros_like(v, device=dev) for k, v in example.items()}
        shape = (1, policy.chunk_size, policy.noise_dim)
        self._noise_host = pinned(shape, torch.float32, dev)
        self._noise = torch.zeros(shape, dtype=torch.float32, device=dev)
        self._out = torch.zeros((1, policy.chunk_size, policy.action_dim), device=dev)
        self._out_host = pinned(tuple(self._out.shape), torch.float32, dev)
        self._graphs.clear()

    def prepare(self, image_shapes: dict[str, tuple[int, int]], warmup: int = 2,
                task: str = "warm up") -> None:
        """Allocate the buffers for these (H, W) camera sizes, capture (graph: it warms up
        first), then ``warmup`` chunks (compiles; a graph replays)."""
        self._allocate(image_shapes, task)
        self.prepares += 1
        if self.name == "graph":
            images, state = blank_inputs(image_shapes, self.policy.state_dim)
            self._load_inputs(images, state, task, None)
            self._capture(self.num_steps, warmup)
        blank_run(self, image_shapes, max(1, warmup), task)

    def _capture(self, num_steps: int, warmup: int = 2) -> None:
        graph = StepGraph(self.device)
        graph.capture(lambda: self._step(num_steps), warmup=warmup)
        self._graphs[num_steps] = graph

    def set_num_steps(self, num_steps: int) -> None:
        """Expert passes per chunk. A graph engine captures a new count's graph on its next
        chunk, in the thread that runs the chunks (one slow chunk, logged); ``prepare_steps``
        captures ahead."""
        self.num_steps = int(num_steps)

    def prepare_steps(self, counts: list[int]) -> None:
        """Capture the graphs of these step counts now (graph engines; else nothing to do)."""
        for count in counts:
            if self.name == "graph" and self._shapes and count not in self._graphs:
                self._capture(count)

    @property
    def captures(self) -> int:
        """CUDA graph captures so far (tests: nothing re-captures in steady state)."""
        return sum(g.captures for g in self._graphs.values())

    # -- one chunk -------------------------------------------------------------------------

    def _host_batch(self, state: np.ndarray, task: str) -> dict[str, Tensor]:
        state_t = torch.as_tensor(np.asarray(state, dtype=np.float32))
        batch = self._pre({OBS_STATE: state_t, "task": task})
        return {k: batch[k] for k in (OBS_STATE, LANG_TOKENS, LANG_MASK)}

    def _load_inputs(self, images: dict[str, np.ndarray], state: np.ndarray, task: str,
                     noise: Tensor | None) -> None:
        """Host work and asynchronous host→device copies into the static buffers."""
        if {n: tuple(im.shape[:2]) for n, im in images.items()} != self._shapes:
            got = {n: tuple(im.shape[:2]) for n, im in images.items()}
            log.warning("camera sizes %s differ from the prepared %s: preparing again "
                        "(one slow chunk)", got, self._shapes)
            self.prepare(got)
        for name, image in images.items():
            self._images_host[name][0].numpy()[...] = image
            self._images[name].copy_(self._images_host[name], non_blocking=True)
        for key, value in self._host_batch(state, task).items():
            if value.shape != self._inputs[key].shape:
                raise RuntimeError(f"{key} has shape {tuple(value.shape)}, the engine was "
                                   f"prepared for {tuple(self._inputs[key].shape)}")
            self._inputs_host[key].copy_(value)
            self._inputs[key].copy_(self._inputs_host[key], non_blocking=True)
        if noise is None:
            self._noise.normal_()
        else:
            self._noise_host.copy_(noise)
            self._noise.copy_(self._noise_host, non_blocking=True)

    @torch.no_grad()
    def _step(self, num_steps: int, timer: StageTimer | None = None) -> None:
        """Static buffers in, ``self._out`` written: images → prefix → sampler → unnormalise."""
        stage = timer.stage if timer else (lambda name: contextlib.nullcontext())
        with stage("prefix"), self.policy.sync_free():
            batch: dict[str, Any] = {
                IMAGE_PREFIX + n: im.permute(0, 3, 1, 2).float().div(255.0)
                for n, im in self._images.items()}
            batch.update(self._inputs)
            prefix = self._encode(batch)

        def field(x: Tensor, t: Tensor, s: Tensor) -> Tensor:
            with stage("expert"):
                return self._velocity(prefix, x, t, s)

        sample = euler_sample if self.sampler == "euler" else snap_sample
        x = sample(field, self._noise, num_steps)
        with stage("unnormalise"):
            self._out.copy_(self._post(x[:, :, : self.policy.action_dim].float()))

    def predict(self, images: dict[str, np.ndarray], state: np.ndarray, task: str,
                noise: Tensor | None = None, timer: StageTimer | None = None) -> np.ndarray:
        """One chunk (chunk_size, A) float64; see the class docstring for what is static."""
        if not self._shapes:
            raise RuntimeError(f"engine '{self.name}' used before prepare(image_shapes)")
        timer = timer or StageTimer()
        with timer.stage("preprocess"):
            self._load_inputs(images, state, task, noise)
        if self.name == "graph" and self.num_steps not in self._graphs:
            log.warning("capturing a CUDA graph for num_steps=%d on this chunk (prepare_steps "
                        "captures ahead)", self.num_steps)
            self.prepare_steps([self.num_steps])
        graph = self._graphs.get(self.num_steps)
        if graph is not None:
            with timer.stage("step"):
                graph.replay()
        else:
            self._step(self.num_steps, timer)
        with timer.stage("postprocess"):
            self._out_host.copy_(self._out, non_blocking=True)
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
            return self._out_host[0].to(torch.float64).numpy()


def make_engine(name: str, loaded: LoadedPolicy, policy: SnapFlowPolicy, *, num_steps: int,
                sampler: str | None = None) -> EagerEngine | StaticEngine:
    """The engine called ``name`` (``ENGINES``; ``auto`` resolved for the policy's device).

    Call ``prepare(image_shapes)`` before the first chunk (``StaticEngine`` requires it).
    """
    resolved = resolve_engine(name, policy.device)
    if resolved == "eager":
        return EagerEngine(loaded, policy, num_steps, sampler)
    if name == "auto":
        return _AutoGraph(loaded, policy, mode=resolved, num_steps=num_steps, sampler=sampler)
    return StaticEngine(loaded, policy, mode=resolved, num_steps=num_steps, sampler=sampler)


class _AutoGraph(StaticEngine):
    """``auto`` on CUDA: a graph engine that falls back to ``static`` if the capture fails."""

    def _capture(self, num_steps: int, warmup: int = 2) -> None:
        try:
            super()._capture(num_steps, warmup)
        except RuntimeError as err:
            log.warning("CUDA graph capture failed (%s); engine auto runs 'static' (eager "
                        "kernels) instead", err)
            self.name = "static"
