"""The one CUDA-only seam of the inference engine: capture and replay a step as a CUDA graph.

Everything CUDA-specific the engine (``policies/engine.py``) needs lives here, so that CPU tests
cover the rest:

* ``HostConstants``: lerobot builds small constant tensors from Python lists inside the forward
  pass (``torch.tensor(att_masks, device=...)`` in ``embed_prefix``/``embed_suffix``, the
  normaliser's ``eps``). On CUDA that is a copy from pageable host memory, which a CUDA graph
  capture refuses. With static shapes these tensors are the same on every call, so the mode
  records them during the warm-up and hands the recorded device tensors back during the
  capture (checking that the values still match). It is plain torch and runs on CPU too.
* ``StepGraph``: warm-up on a side stream, capture, replay, with a capture counter (tests check
  that nothing re-captures). Constructing one without CUDA raises a ValueError that says what
  to use instead.
* ``pinned``: page-locked host buffers (plain CPU tensors without CUDA).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

log = logging.getLogger(__name__)

NO_CUDA_GRAPH = ("engine 'graph' needs a CUDA device (CUDA graphs); on {device} use "
                 "engine 'compile' or 'eager' (or 'auto', which picks one that works)")


def _target_device(kwargs: dict[str, Any]) -> torch.device | None:
    device = kwargs.get("device")
    return None if device is None else torch.device(device)


class HostConstants(TorchFunctionMode):
    """Record ``torch.tensor(data, device=D)`` results once, replay them afterwards.

    ``record`` mode (warm-up): every ``torch.tensor`` call that names a ``device`` of the
    target's type runs normally; its result and a CPU copy are kept in call order.
    ``replay`` mode (capture): the call is evaluated on the CPU only, compared with the recorded
    value, and the recorded device tensor is returned: no host→device copy happens. A call
    sequence that differs from the recording raises a RuntimeError naming the call.
    """

    def __init__(self, device: str | torch.device) -> None:
        super().__init__()
        self.device_type = torch.device(device).type
        self.mode = "record"
        self.recorded: list[tuple[Tensor, Tensor]] = []  # (cpu value, device tensor)
        self._next = 0

    def replay(self) -> HostConstants:
        """Switch to replay mode (from the first recorded constant)."""
        self.mode, self._next = "replay", 0
        return self

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        device = _target_device(kwargs) if func is torch.tensor else None
        if device is None or device.type != self.device_type:
            return func(*args, **kwargs)
        if self.mode == "record":
            out = func(*args, **kwargs)
            self.recorded.append((out.detach().cpu().clone(), out))
            return out
        value = func(*args, **{**kwargs, "device": "cpu"})
        if self._next >= len(self.recorded):
            raise RuntimeError(
                f"the step built more host constants than during its warm-up ({self._next + 1} "
                f"> {len(self.recorded)}); its shapes or control flow are not static")
        cpu, out = self.recorded[self._next]
        self._next += 1
        if cpu.shape != value.shape or cpu.dtype != value.dtype or not torch.equal(cpu, value):
            raise RuntimeError(
                f"host constant {self._next} of the step changed since the warm-up "
                f"({tuple(cpu.shape)} → {tuple(value.shape)}); its inputs are not static")
        return out


def pinned(shape: tuple[int, ...], dtype: torch.dtype, device: str | torch.device) -> Tensor:
    """A zeroed host buffer; page-locked when ``device`` is CUDA (async host→device copies)."""
    buffer = torch.zeros(shape, dtype=dtype)
    return buffer.pin_memory() if torch.device(device).type == "cuda" else buffer


class StepGraph:
    """``step()`` (reads and writes static tensors only) captured once as a CUDA graph.

    ``capture`` runs ``warmup`` untimed calls on a side stream (lazy init, cuBLAS workspaces),
    then records one call. ``replay`` launches the recorded kernels on the current stream: no
    Python, no allocation, no host sync. ``captures`` counts captures (one per instance).
    """

    def __init__(self, device: str | torch.device) -> None:
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError(NO_CUDA_GRAPH.format(device=device))
        self.device = device
        self.graph: Any = None
        self.captures = 0
        self.replays = 0

    def capture(self, step: Callable[[], None], warmup: int = 2) -> None:
        """Warm ``step`` up, check it, capture it (with ``HostConstants`` across all three).

        The check runs one more step with ``torch.cuda.set_sync_debug_mode("error")``: a step
        that syncs the host raises a RuntimeError there, before a capture that would fail
        half-way and leave the stream and the allocator in a capture state. The current
        stream is restored whatever happens.
        """
        constants = HostConstants(self.device)
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        try:
            with torch.cuda.stream(side):
                with constants:  # the first call records the host constants
                    step()
                for _ in range(max(0, warmup - 1)):
                    step()
                mode = torch.cuda.get_sync_debug_mode()
                torch.cuda.set_sync_debug_mode("error")
                try:
                    with constants.replay():
                        step()
                finally:
                    torch.cuda.set_sync_debug_mode(mode)
            current.wait_stream(side)
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with constants.replay(), torch.cuda.graph(graph):
                step()
            torch.cuda.synchronize(self.device)
        finally:
            torch.cuda.set_stream(current)
        self._constants = constants  # the recorded device tensors must outlive the graph
        self.graph = graph
        self.captures += 1
        log.info("captured a CUDA graph of the step (%d host constants folded)",
                 len(constants.recorded))

    def replay(self) -> None:
        if self.graph is None:
            raise RuntimeError("StepGraph.replay before capture: call capture(step) first")
        self.graph.replay()
        self.replays += 1
