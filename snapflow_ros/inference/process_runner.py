"""The policy in a process of its own, fed through shared memory (numpy + stdlib only).

Why: in one Python process, the ROS executor's per-message Python work and the model's many
small torch calls take turns on the GIL, and the model loses (tiny policy: 39 ms alone, 0.1-2.2 s
p50 inside the node). Here the node process never imports torch::

    node process                                    inference process (own GIL)
      inference thread: decode → images ─► shared memory (one slot per camera, H×W×3 uint8)
                        ("predict", task, state, num_steps) ─► pipe ─► PolicyRunner.predict_chunk
                        ◄─ ("ok", actions (H, A), stage durations) ◄─┘

``ProcessRunner`` has the interface the node uses from ``PolicyRunner`` (``predict_chunk``,
``set_num_steps``, ``check_interface``, camera/state/action sizes). One request is in flight at a
time. The worker ignores SIGINT (the node decides when it ends), exits when the node's end of the
pipe closes, and is killed with the node (``PR_SET_PDEATHSIG`` on Linux). A worker that dies
raises ``WorkerError`` on the next call; the node reports it and holds.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from snapflow_ros.cpu_threads import resolve_cpu_threads, thread_env
from snapflow_ros.topic_map import check_policy_interface

WORKER_MODULE = "snapflow_ros.inference.worker"


class WorkerError(RuntimeError):
    """The inference process failed to start, died, or the request was cancelled."""


def slot_layout(image_shapes: dict[str, tuple[int, int]]) -> tuple[dict[str, int], int]:
    """Byte offset of each camera's (H, W, 3) uint8 slot (64-byte aligned) and the total size."""
    offsets, total = {}, 0
    for name, (height, width) in image_shapes.items():
        offsets[name] = total
        total += -(-height * width * 3 // 64) * 64
    return offsets, max(total, 64)


def _shared_memory(size: int) -> int:
    """An anonymous shared-memory file descriptor of ``size`` bytes (inheritable)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("snapflow_obs", 0)
    else:  # not Linux: an unlinked temporary file (page cache backed)
        handle, path = tempfile.mkstemp(prefix="snapflow_obs_")
        os.unlink(path)
        fd = handle
    os.ftruncate(fd, size)
    return fd


def image_views(buffer: mmap.mmap, image_shapes: dict[str, tuple[int, int]]
                ) -> dict[str, np.ndarray]:
    """Numpy views of the camera slots in ``buffer``."""
    offsets, _ = slot_layout(image_shapes)
    return {name: np.ndarray((h, w, 3), np.uint8, buffer=buffer, offset=offsets[name])
            for name, (h, w) in image_shapes.items()}


class ProcessRunner:
    """A ``PolicyRunner`` in a child process (see module docstring).

    Args:
        policy_path: built-in name, checkpoint directory or hub id (as ``PolicyRunner.load``).
        image_shapes: camera name → (H, W) of the images the node will pass (the topic map's).
        device, dtype, engine, num_steps, seed, warmup_iters: as the node parameters.
        cpu_threads: torch/OpenMP threads of the worker (0 = auto, see ``cpu_threads``).
        cpus: CPU ids the worker may run on (empty: any; the node's ``inference_cpus``).
        should_stop: polled while waiting; True cancels the wait with ``WorkerError``.
        startup_timeout_s: how long loading + warm-up may take.
    """

    def __init__(self, policy_path: str, image_shapes: dict[str, tuple[int, int]], *,
                 device: str = "auto", dtype: str = "auto", engine: str = "auto",
                 num_steps: int = 0, seed: int = -1,
                 warmup_iters: int = 2, cpu_threads: int = 0, cpus: tuple[int, ...] = (),
                 should_stop: Callable[[], bool] = lambda: False,
                 startup_timeout_s: float = 900.0) -> None:
        self.image_shapes = dict(image_shapes)
        self._should_stop = should_stop
        self._lock = threading.Lock()
        self.threads = resolve_cpu_threads(cpu_threads, reserved=1)
        _, size = slot_layout(self.image_shapes)
        shm_fd = _shared_memory(size)
        parent, child = socket.socketpair()
        spec = {"policy_path": policy_path, "device": device, "dtype": dtype, "engine": engine,
                "num_steps": int(num_steps), "seed": int(seed), "warmup_iters": int(warmup_iters),
                "threads": self.threads, "image_shapes": self.image_shapes,
                "cpus": [int(c) for c in cpus]}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, str(child.fileno()), str(shm_fd),
                 json.dumps(spec)],
                pass_fds=(child.fileno(), shm_fd), env={**os.environ, **thread_env(self.threads)})
        finally:
            child.close()
        self._conn = Connection(parent.detach())
        self._mmap = mmap.mmap(shm_fd, size)
        os.close(shm_fd)
        self._views = image_views(self._mmap, self.image_shapes)
        try:
            reply = self._receive(startup_timeout_s, "loading the policy")
        except BaseException:
            self.close()
            raise
        if reply[0] != "ready":
            self.close()
            raise WorkerError(reply[1])
        self.info: dict[str, Any] = reply[1]
        self.set_num_steps(num_steps)

    # -- what the policy expects (as PolicyRunner) ----------------------------------------

    @property
    def camera_names(self) -> list[str]:
        return list(self.info["camera_names"])

    @property
    def state_dim(self) -> int:
        return int(self.info["state_dim"])

    @property
    def engine_name(self) -> str:
        """The worker's inference engine (``auto`` resolved)."""
        return str(self.info.get("engine", ""))

    @property
    def action_dim(self) -> int:
        return int(self.info["action_dim"])

    @property
    def chunk_size(self) -> int:
        return int(self.info["chunk_size"])

    @property
    def n_action_steps(self) -> int:
        return int(self.info["n_action_steps"])

    def set_num_steps(self, num_steps: int) -> None:
        """Expert passes per chunk (0 = the checkpoint's default); sent with each request."""
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        self.num_steps = int(num_steps) or int(self.info["default_num_steps"])

    def check_interface(self, cameras: list[str], state_joints: list[str],
                        action_joints: list[str]) -> None:
        check_policy_interface(self.camera_names, self.state_dim, self.action_dim, cameras,
                               state_joints, action_joints)

    # -- inference -----------------------------------------------------------------------

    def predict_chunk(self, images: dict[str, np.ndarray], state: np.ndarray, task: str,
                      timer: Any = None) -> np.ndarray:
        """images: name → (H, W, 3) uint8 RGB at ``image_shapes``; state (S,) → (H, A) float64.

        ``timer`` (a StageTimer) receives the worker's stage durations.
        """
        with self._lock:
            for name, view in self._views.items():
                image = images[name]
                if image.shape != view.shape:
                    raise ValueError(f"camera {name}: image {image.shape}, expected {view.shape}")
                np.copyto(view, image)
            self._send(("predict", str(task), np.asarray(state, dtype=np.float64),
                        self.num_steps))
            reply = self._receive(None, "computing a chunk")
        if reply[0] != "ok":
            raise WorkerError(f"the policy failed: {reply[1]}")
        _, actions, durations = reply
        if timer is not None:
            for stage, values in durations.items():
                timer.durations[stage].extend(values)
        return actions

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except OSError as err:
            raise WorkerError(f"the inference process is gone ({self._exit_text()})") from err

    def _receive(self, timeout_s: float | None, doing: str) -> tuple:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                if self._conn.poll(0.05):
                    return self._conn.recv()
            except (EOFError, OSError) as err:
                raise WorkerError(f"the inference process died while {doing} "
                                  f"({self._exit_text()})") from err
            if self._proc.poll() is not None and not self._conn.poll(0):
                raise WorkerError(f"the inference process died while {doing} "
                                  f"({self._exit_text()})")
            if self._should_stop():
                raise WorkerError(f"cancelled while {doing}")
            if deadline is not None and time.monotonic() > deadline:
                raise WorkerError(f"the inference process took over {timeout_s:g} s {doing}")

    def _exit_text(self) -> str:
        try:
            code = self._proc.wait(timeout=1.0)  # its end of the pipe closed: it is exiting
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "still running"
        return f"exit code {code}" if code >= 0 else f"killed by signal {-code}"

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def busy(self) -> bool:
        """A request is in flight (``predict_chunk`` waits for its chunk)."""
        return self._lock.locked()

    @property
    def exit_code(self) -> int | None:
        """The worker's exit code (negative: killed by that signal); None while it runs."""
        return self._proc.poll()

    def close(self, timeout_s: float = 0.1) -> None:
        """Stop the worker (politely, then SIGKILL after ``timeout_s``; at once while it computes
        a chunk, which it would finish first); idempotent."""
        if self.busy:  # its caller gets WorkerError
            self._proc.kill()
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("stop",))
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._conn.close()
        self._views = {}
        with contextlib.suppress(BufferError):
            self._mmap.close()
