"""The policy node as a child process, one way for every app (closed loop, node benchmark).

``policy_node_command`` builds the command line from a parameter dict; ``NodeProcess`` starts
it with its output in a log file (never a pipe: a full pipe would block the node) and stops it
the way ``ros2 launch`` does (SIGINT, then a kill after ``timeout_s``), so that the node's own
shutdown (nodes/shutdown.py) ends its inference process too.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def ros_value(value: Any) -> str:
    """A parameter value as ``-p name:=value`` takes it (bools lower-case, lists in [])."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(ros_value(v) for v in value) + "]"
    return str(value)


def policy_node_command(namespace: str, params: Mapping[str, Any],
                        remaps: Sequence[str] = ()) -> list[str]:
    """``python -m snapflow_ros policy_node --ros-args -r __ns:=NS [-r A:=B ...] -p k:=v ...``."""
    cmd = [sys.executable, "-m", "snapflow_ros", "policy_node", "--ros-args",
           "-r", f"__ns:={namespace}"]
    for remap in remaps:
        cmd += ["-r", remap]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={ros_value(value)}"]
    return cmd


class NodeProcess:
    """A started node process; ``stop`` (or leaving the ``with`` block) ends it."""

    def __init__(self, cmd: Sequence[str], log_path: Path | None = None) -> None:
        self.log_path = log_path
        log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            if log_path:
                log.close()  # the child holds its own descriptor

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the node's log ('' without one), for error messages."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGINT (the node's clean shutdown), then SIGKILL after ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
