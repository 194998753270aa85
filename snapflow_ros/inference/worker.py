"""The inference process behind ``inference.process_runner.ProcessRunner``.

``python -m snapflow_ros.inference.worker CONN_FD SHM_FD SPEC_JSON`` (started by
``ProcessRunner``, not by users): loads the policy with ``PolicyRunner.load``, warms it up, says
``("ready", info)`` (or ``("error", text)``) and then answers one request at a time, reading the
images from the shared-memory slots. Thread counts come from the environment the node set
(``cpu_threads``) and are applied before torch does any work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from snapflow_ros.process_exit import exit_now

log = logging.getLogger("snapflow_ros.inference_worker")


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the node process dies (no orphaned model)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _load(spec: dict[str, Any]) -> Any:
    from snapflow_ros.cpu_threads import apply_cpu_threads

    if spec.get("cpus"):
        os.sched_setaffinity(0, spec["cpus"])  # before torch starts its thread pool
    apply_cpu_threads(spec["threads"])
    import torch

    apply_cpu_threads(spec["threads"])  # torch is imported now: set its pools
    from snapflow_ros.policies.runner import PolicyRunner

    runner = PolicyRunner.load(spec["policy_path"], device=spec["device"], dtype=spec["dtype"],
                               num_steps=spec["num_steps"], seed=spec["seed"],
                               engine=spec.get("engine", "auto"))
    shapes = {name: tuple(shape) for name, shape in spec["image_shapes"].items()}
    runner.warmup(spec["warmup_iters"], shapes)  # prepares the engine: compile, capture
    log.debug("loaded with %d torch threads", torch.get_num_threads())
    return runner


def _info(runner: Any) -> dict[str, Any]:
    return {"camera_names": runner.camera_names, "state_dim": runner.state_dim,
            "action_dim": runner.action_dim, "chunk_size": runner.chunk_size,
            "n_action_steps": runner.n_action_steps,
            "default_num_steps": int(runner.policy.default_num_steps),
            "engine": runner.engine_name,
            "device": str(runner.device), "dtype": str(runner.dtype), "pid": os.getpid()}


def serve(conn: Connection, buffer: mmap.mmap, spec: dict[str, Any]) -> None:
    """Load, report, then answer requests until "stop" or the node's end closes."""
    from snapflow_ros.inference.process_runner import image_views
    from snapflow_ros.timing import StageTimer

    try:
        runner = _load(spec)
    except Exception as err:  # reported to the node, which logs it in one line
        conn.send(("error", f"could not load policy {spec['policy_path']!r}: {err}"))
        return
    conn.send(("ready", _info(runner)))
    shapes = {name: tuple(shape) for name, shape in spec["image_shapes"].items()}
    views = image_views(buffer, shapes)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the node is gone
        if message[0] == "stop":
            return
        _, task, state, num_steps = message
        try:
            if num_steps != runner.num_steps:
                runner.set_num_steps(num_steps)
            timer = StageTimer(sync=runner._sync)
            actions = runner.predict_chunk(views, state, task, timer)
            reply: tuple = ("ok", actions, dict(timer.durations))
        except Exception as err:  # one bad request must not end the worker
            reply = ("error", f"{type(err).__name__}: {err}")
        try:
            conn.send(reply)
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the node decides
    _die_with_parent()
    logging.basicConfig(level=logging.WARNING, format="[inference worker] %(message)s")
    conn_fd, shm_fd, spec = int(argv[0]), int(argv[1]), json.loads(argv[2])
    conn = Connection(conn_fd)
    buffer = mmap.mmap(shm_fd, 0)
    os.close(shm_fd)
    serve(conn, buffer, spec)
    return 0


if __name__ == "__main__":
    code = main()
    exit_now(code)  # nothing left to save, and the node's stop waits for this exit
    sys.exit(code)
