"""The converter's hidden build folder: nothing appears at ``--output`` until it is complete.

A conversion builds in ``.<output name>.<random>/`` beside the output, with an owner file
(``OWNER``: the output path, host, boot id, pid and the process's start time). ``commit``
moves the finished dataset into place; an old dataset being replaced is first parked in the
build folder (``previous/``) and removed only once the new one is in place. Any error or
signal removes the folder (restoring a parked dataset). After a SIGKILL the folder stays; the
next conversion to the same output removes it, but only when its owner file proves that the
process which made it is gone (same host, and that pid is not alive with that start time
since that boot); other hidden folders are left alone and named in a warning.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

OWNER = "OWNER.json"
TOOL = "snapflow_ros bag_to_lerobot"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the command name


def _identity() -> dict[str, object]:
    pid = os.getpid()
    return {"tool": TOOL, "host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid,
            "start_ticks": _start_ticks(pid)}


def _owner_gone(owner: dict[str, object], output: Path) -> bool:
    """True when ``owner`` (a build folder's OWNER.json) proves its process has ended."""
    if owner.get("tool") != TOOL or owner.get("output") != str(output):
        return False
    if owner.get("host") != socket.gethostname() or not owner.get("boot_id"):
        return False
    if owner["boot_id"] != _boot_id():
        return True  # the machine rebooted since: that process is gone
    pid, ticks = owner.get("pid"), owner.get("start_ticks")
    return isinstance(pid, int) and ticks is not None and _start_ticks(pid) != ticks


def clean_stale(output: Path) -> list[Path]:
    """Remove hidden build folders of ``output`` left by conversions proven dead (restoring a
    dataset one of them had parked); returns the hidden folders it had to leave alone."""
    output = output.absolute()
    left = []
    if not output.parent.is_dir():
        return left
    for folder in sorted(output.parent.glob(f".{output.name}.*")):
        if not folder.is_dir():
            continue
        try:
            owner = json.loads((folder / OWNER).read_text())
        except (OSError, ValueError):
            owner = {}
        if not isinstance(owner, dict) or not _owner_gone(owner, output):
            left.append(folder)
            continue
        parked = folder / "previous"
        if parked.is_dir() and not output.exists():
            parked.rename(output)
            log.warning("restored %s, which an interrupted --overwrite had parked in %s",
                        output, folder)
        shutil.rmtree(folder)
        log.info("removed %s, left by an interrupted conversion (pid %s)", folder,
                 owner.get("pid"))
    if left:
        log.warning("left alone %d hidden folder(s) beside the output that no finished "
                    "process provably owns: %s (remove them if no conversion is running)",
                    len(left), ", ".join(p.name for p in left))
    return left


class BuildDir:
    """A hidden build folder for ``output`` (context manager; see the module docstring).

    ``dataset`` is where the new dataset is built; ``parts`` holds per-bag datasets of a
    parallel conversion.
    """

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output).absolute()
        self.path: Path | None = None

    def __enter__(self) -> BuildDir:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(self.output)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.",
                                          dir=self.output.parent))
        (self.path / OWNER).write_text(json.dumps({**_identity(),
                                                   "output": str(self.output)}) + "\n")
        return self

    @property
    def dataset(self) -> Path:
        return self._folder() / "dataset"

    @property
    def parts(self) -> Path:
        return self._folder() / "parts"

    def _folder(self) -> Path:
        if self.path is None:
            raise RuntimeError("BuildDir is not open (use it in a `with` block)")
        return self.path

    def commit(self) -> None:
        """Move the built dataset to the output (replacing an old one, parked meanwhile)."""
        parked = self._folder() / "previous"
        if self.output.exists():
            self.output.rename(parked)
        self.dataset.rename(self.output)
        shutil.rmtree(self._folder())
        self.path = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.path is None:
            return
        parked = self.path / "previous"
        if parked.is_dir() and not self.output.exists():
            parked.rename(self.output)
        shutil.rmtree(self.path, ignore_errors=True)
        self.path = None
