"""Record serialized messages into one rosbag2 directory per episode (no rclpy here).

``BagRecorder`` takes CDR bytes as they came off the wire (an rclpy subscription with
``raw=True``; bytes from ``rclpy.serialization.serialize_message`` carry padding that rosbags
rejects) and writes them with ``rosbags``' Writer (kilted typestore: message definitions and
type hashes go into the bag). Layout under ``root``::

    root/episode_000000/{metadata.yaml, episode_000000.mcap}   # finished episodes
    root/.partial/episode_000001/...                          # the one being recorded

An episode is written under ``.partial/`` and moved into place when it stops, so a crash never
leaves a half bag where the converter looks (``bag_to_lerobot root/`` takes every finished one).
The task text goes into metadata.yaml's ``custom_data`` (key ``task``), which the converter uses
when the topic map's task source is ``per_bag``.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snapflow_ros.conversions.cdr import header_stamp_ns
from snapflow_ros.data.bag_reader import typestore

log = logging.getLogger(__name__)

STORAGES = ("mcap", "sqlite3")
PARTIAL = ".partial"
_EPISODE = re.compile(r"^episode_(\d+)$")


class RecorderError(RuntimeError):
    """A recorder call that is not possible now (e.g. stop with no episode running)."""


class BagRecorder:
    """Writes ``(topic, bytes, stamp)`` into the current episode's bag; thread-safe.

    Args:
        root: output folder (created); episodes are numbered after the ones already there.
        topics: ``(topic, msgtype)`` pairs, msgtype as ``sensor_msgs/msg/Image``.
        storage: ``mcap`` (default) or ``sqlite3``.
    """

    def __init__(self, root: str | Path, topics: Sequence[tuple[str, str]],
                 storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage {storage!r} is not one of {STORAGES}")
        if not topics:
            raise ValueError("BagRecorder needs at least one topic")
        self.store = typestore()
        unknown = sorted({t for _, t in topics if t not in self.store.types})
        if unknown:
            raise ValueError(f"message types {unknown} are not in the kilted typestore")
        self.root = Path(root)
        self.topics = dict(topics)
        self.storage = storage
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._writer: Any = None
        self._conns: dict[str, Any] = {}
        self._name = ""
        self.counts: dict[str, int] = {}

    @property
    def recording(self) -> bool:
        return self._writer is not None

    @property
    def current(self) -> str:
        """Name of the episode being recorded ('' when idle)."""
        return self._name

    def _next_name(self) -> str:
        used = [int(m.group(1)) for base in (self.root, self.root / PARTIAL) if base.is_dir()
                for p in base.iterdir() if (m := _EPISODE.match(p.name))]
        return f"episode_{max(used, default=-1) + 1:06d}"

    def start_episode(self, task: str = "", custom_data: dict[str, str] | None = None) -> str:
        """Open a new episode bag; returns its name. Raises RecorderError if one is running."""
        from rosbags.rosbag2 import StoragePlugin, Writer

        with self._lock:
            if self._writer is not None:
                raise RecorderError(f"episode {self._name} is already recording; stop it first")
            name = self._next_name()
            path = self.root / PARTIAL / name
            path.parent.mkdir(parents=True, exist_ok=True)
            plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
            writer = Writer(path, version=9, storage_plugin=plugin)
            for key, value in {**(custom_data or {}), **({"task": task} if task else {})}.items():
                writer.set_custom_data(str(key), str(value))
            writer.open()
            self._conns = {topic: writer.add_connection(topic, msgtype, typestore=self.store)
                           for topic, msgtype in self.topics.items()}
            self._writer, self._name = writer, name
            self.counts = dict.fromkeys(self.topics, 0)
        log.info("recording %s", path)
        return name

    def write(self, topic: str, data: bytes | memoryview, stamp_ns: int | None = None) -> bool:
        """Append one serialized message, timestamped ``stamp_ns`` (None: its header stamp,
        for messages that start with a std_msgs/Header); False (ignored) when no episode is
        recording."""
        if stamp_ns is None:
            stamp_ns = header_stamp_ns(data)
        with self._lock:
            if self._writer is None:
                return False
            conn = self._conns.get(topic)
            if conn is None:
                raise RecorderError(f"topic {topic!r} is not recorded (topics: "
                                    f"{sorted(self.topics)})")
            self._writer.write(conn, int(stamp_ns), data)
            self.counts[topic] += 1
            return True

    def serialize(self, msg: Any, msgtype: str) -> bytes:
        """CDR bytes of a rosbags message object (e.g. a status String written at the end)."""
        return bytes(self.store.serialize_cdr(msg, msgtype))

    def stop_episode(self, custom_data: dict[str, str] | None = None) -> Path:
        """Close the current episode (adding ``custom_data`` to its metadata.yaml) and move it
        into place; returns its directory."""
        with self._lock:
            if self._writer is None:
                raise RecorderError("no episode is recording")
            writer, name = self._writer, self._name
            self._writer, self._name, self._conns = None, "", {}
            for key, value in (custom_data or {}).items():
                writer.set_custom_data(str(key), str(value))
            writer.close()
            final = self.root / name
            (self.root / PARTIAL / name).rename(final)
            partial = self.root / PARTIAL
            if partial.is_dir() and not any(partial.iterdir()):
                partial.rmdir()
        log.info("saved %s (%s)", final, ", ".join(f"{t}: {n}" for t, n in self.counts.items()))
        return final

    def discard_episode(self) -> str:
        """Drop the current episode without keeping anything; returns its name."""
        with self._lock:
            if self._writer is None:
                raise RecorderError("no episode is recording")
            writer, name = self._writer, self._name
            self._writer, self._name, self._conns = None, "", {}
            try:
                writer.close()
            finally:
                shutil.rmtree(self.root / PARTIAL / name, ignore_errors=True)
                partial = self.root / PARTIAL
                if partial.is_dir() and not any(partial.iterdir()):
                    partial.rmdir()
        return name

    def close(self) -> Path | None:
        """Stop a running episode (kept); returns its directory, or None when idle."""
        return self.stop_episode() if self.recording else None
