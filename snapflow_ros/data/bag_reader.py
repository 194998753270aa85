"""Open rosbag2 directories (sqlite3 or mcap) with ``rosbags``; no ROS install needed.

``BagFile`` wraps ``rosbags.highlevel.AnyReader`` (default typestore: ROS 2 kilted, used when
a bag carries no message definitions) and turns every reader failure (missing metadata,
truncated or corrupt storage, undecodable messages) into a ``BagError`` that names the bag,
the cause and a fix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

STORAGE_SUFFIXES = (".mcap", ".db3")
REPAIR_HINT = (
    "the bag may be truncated or corrupt (e.g. its recorder was killed before closing it); "
    "re-record it, or repair it with `ros2 bag reindex` (sqlite3) / `mcap recover` (mcap)"
)


class BagError(RuntimeError):
    """A bag that cannot be read or does not hold what the topic map needs."""


def typestore() -> Any:
    """The ROS 2 kilted typestore (its type hashes match the kilted wheels')."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def is_bag(path: Path) -> bool:
    """A rosbag2 directory: a folder with a ``metadata.yaml``."""
    return path.is_dir() and (path / "metadata.yaml").is_file()


def _storage_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES) \
        if path.is_dir() else []


def _no_metadata(path: Path) -> BagError:
    """The error for a folder without metadata.yaml: a bag to reindex, or not a bag at all."""
    files = _storage_files(path)
    if files:
        return BagError(
            f"bag '{path}' has storage files ({', '.join(f.name for f in files)}) but no "
            f"metadata.yaml (its recorder was killed before writing it?); regenerate it with "
            f"`ros2 bag reindex {path}`, then convert again")
    return BagError(f"'{path}' is not a rosbag2 directory (no metadata.yaml) and holds none; "
                    f"pass bag directories (the folders `ros2 bag record` or `record` write)")


def find_bags(paths: Iterable[str | Path]) -> list[Path]:
    """Expand the arguments into bag directories, in order.

    Each path is a bag directory, or a folder whose (non-hidden) sub-folders are bags (e.g. a
    recorder's output root; taken in name order). Raises ``BagError`` for anything else.
    """
    bags: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if is_bag(path):
            bags.append(path)
            continue
        if not path.exists():
            raise BagError(f"bag '{path}' does not exist")
        subs = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_dir()) \
            if path.is_dir() else []
        broken = [p for p in subs if not is_bag(p) and _storage_files(p)]
        if broken:  # a recording whose metadata.yaml is missing: never skip it silently
            raise _no_metadata(broken[0])
        inner = [p for p in subs if is_bag(p)]
        if not inner:
            raise _no_metadata(path)
        bags.extend(inner)
    dup = sorted({str(b) for b in bags if bags.count(b) > 1})
    if dup:
        raise BagError(f"bags given twice: {dup}")
    return bags


class BagFile:
    """One open rosbag2 directory (context manager)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not is_bag(self.path):
            raise _no_metadata(self.path)
        self._reader: Any = None
        self.notes: list[str] = []

    def __enter__(self) -> BagFile:
        from rosbags.highlevel import AnyReader

        try:
            self._reader = AnyReader([self.path], default_typestore=typestore())
            self._reader.open()
        except Exception as err:  # rosbags raises many types for broken files
            self._reader = None
            raise BagError(f"cannot open bag '{self.path}': {err}; {REPAIR_HINT}") from err
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # closing a broken file must not hide the first error
                log.debug("closing %s failed", self.path, exc_info=True)
            self._reader = None

    @property
    def reader(self) -> Any:
        if self._reader is None:
            raise RuntimeError(f"bag '{self.path}' is not open (use it in a `with` block)")
        return self._reader

    @property
    def topics(self) -> dict[str, str]:
        """Topic name → message type (e.g. ``sensor_msgs/msg/Image``), sorted by name."""
        return {name: str(info.msgtype) for name, info in sorted(self.reader.topics.items())}

    def message_count(self, topics: Iterable[str]) -> int:
        wanted = set(topics)
        return sum(int(info.msgcount) for name, info in self.reader.topics.items()
                   if name in wanted)

    def listed_count(self, topic: str) -> int:
        """The number of messages metadata.yaml lists for ``topic`` (0 if not listed)."""
        info = self.reader.topics.get(topic)
        return int(info.msgcount) if info is not None else 0

    def count_mismatch(self, topic: str, listed: int, read: int) -> str:
        """Why the storage returned ``read`` of the ``listed`` messages of ``topic``, and the
        fix: rosbags only returns messages whose storage connection equals metadata.yaml's
        entry (type, type hash, serialization format, offered QoS profiles)."""
        meta = [c for c in self.reader.connections if c.topic == topic]
        dirs = [getattr(r, "storage", r) for r in getattr(self.reader, "readers", [])]
        stored = [c for d in dirs for st in getattr(d, "storages", []) for c in st.connections
                  if c.topic == topic]
        differs = sorted({what for m in meta for c in stored for what, a, b in (
            ("type", m.msgtype, c.msgtype),
            ("offered_qos_profiles", getattr(m.ext, "offered_qos_profiles", None),
             getattr(c.ext, "offered_qos_profiles", None)),
            ("serialization_format", getattr(m.ext, "serialization_format", None),
             getattr(c.ext, "serialization_format", None)),
            ("type_description_hash", m.digest if c.digest else "", c.digest if m.digest else ""),
        ) if a != b})
        cause = (f"its {' and '.join(differs)} in metadata.yaml differ from the storage file's"
                 if differs else "the storage files hold fewer messages than metadata.yaml says")
        return (f"bag '{self.path}': metadata.yaml lists {listed} messages on '{topic}' but the "
                f"storage returned {read}: {cause} (a hand-joined or edited metadata.yaml?); "
                f"regenerate it with `ros2 bag reindex {self.path}`")

    @property
    def custom_data(self) -> dict[str, str]:
        """``custom_data`` of metadata.yaml (``ros2 bag record --custom-data k=v``)."""
        out: dict[str, str] = {}
        for sub in getattr(self.reader, "readers", []):
            storage = getattr(sub, "storage", sub)
            meta = getattr(storage, "metadata", None)
            out.update(getattr(meta, "custom", None) or {})
        return {str(k): str(v) for k, v in out.items()}

    @property
    def storage_id(self) -> str:
        for f in _storage_files(self.path):
            return "mcap" if f.suffix == ".mcap" else "sqlite3"
        return "unknown"

    def require_topic(self, topic: str, accepted: Sequence[str], what: str) -> str:
        """The type of ``topic`` if it is in the bag with one of the ``accepted`` types."""
        topics = self.topics
        if topic not in topics:
            listing = "\n  ".join(f"{t} ({ty})" for t, ty in topics.items()) or "(none)"
            raise BagError(
                f"bag '{self.path}' has no topic '{topic}' ({what}). Fix the topic map or "
                f"--namespace; the bag has:\n  {listing}"
            )
        msgtype = topics[topic]
        if msgtype not in accepted:
            raise BagError(
                f"bag '{self.path}': topic '{topic}' ({what}) is {msgtype}, expected "
                f"{' or '.join(accepted)} (fix the type in the topic map)"
            )
        return msgtype

    def messages(self, topics: Iterable[str]) -> Iterator[tuple[str, str, int, Any]]:
        """``(topic, msgtype, receive_ns, message)`` for the given topics, in bag order."""
        wanted = set(topics)
        reader = self.reader
        conns = [c for c in reader.connections if c.topic in wanted]
        if not conns:
            return
        stream = reader.messages(connections=conns)
        while True:
            try:
                conn, receive_ns, raw = next(stream)
                msg = reader.deserialize(raw, conn.msgtype)
            except StopIteration:
                return
            except Exception as err:
                raise BagError(f"reading bag '{self.path}' failed: {err}; {REPAIR_HINT}") \
                    from err
            yield conn.topic, conn.msgtype, int(receive_ns), msg
