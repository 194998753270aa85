"""Topic-map features as stamped streams read from one bag (the converter's first pass).

Stamps are header stamps (``header.stamp``). Messages without a header (``std_msgs`` String,
Bool, Float64MultiArray) or with a zero stamp (e.g. a JointTrajectory meaning "start now") get
their bag receive time moved onto the header clock: ``receive − offset``, ``offset`` = the median
``receive − header`` of the bag's stamped messages (``align.receive_offset``), so sim-time
stamps and wall-clock receive times still line up. Images are only checked here (headers and
buffer lengths, ``message_checks``); their pixels are decoded in the second pass, for the
frames that use them. A message whose content cannot be used is kept and marked bad.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snapflow_ros.conversions.image import ImageConversionError
from snapflow_ros.conversions.stamps import stamp_to_ns
from snapflow_ros.data.align import receive_offset
from snapflow_ros.data.bag_reader import BagError, BagFile
from snapflow_ros.data.message_checks import JointRow, image_header, joint_decoder
from snapflow_ros.topic_map import ACTION_KEY, ROS_TYPES, STATE_KEY, TopicMap

TASK_KEY = "task"
EPISODE_KEY = "episode"
IMAGE_TYPES = (ROS_TYPES["Image"], ROS_TYPES["CompressedImage"])
MARKER_TYPES = (ROS_TYPES["String"], "std_msgs/msg/Bool")
START_WORDS, STOP_WORDS = ("start", "begin"), ("stop", "end")
KEPT_FAULTS = 5


class ConversionError(ValueError):
    """A conversion that cannot produce a dataset; names the bag, topic and fix."""


@dataclass(frozen=True)
class StreamSpec:
    """One feature to read: its key, resolved topic, kind and accepted message types."""

    key: str
    topic: str
    kind: str  # "image" | "vector" | "text" | "marker"
    accepted: tuple[str, ...]
    what: str
    joints: tuple[str, ...] = ()


@dataclass
class Stream:
    """A feature's messages sorted by stamp: (N,) ``stamps``, ``receive`` and ``arrival`` (the
    message's position among its topic's messages in bag order), the decoded ``values`` ((N, D)
    float64 for vectors, NaN where absent; a list of str for text; (N,) bool for markers; None
    for images) and which messages (vectors: which joints of them) are ``present``/``bad``."""

    spec: StreamSpec
    msgtype: str
    stamps: np.ndarray
    receive: np.ndarray
    arrival: np.ndarray
    values: Any = None
    present: np.ndarray | None = None
    bad: np.ndarray | None = None
    size: tuple[int, int] | None = None
    """Images: the (height, width) of the camera's messages (the most common one)."""
    from_receive: int = 0
    skipped: int = 0
    faults: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bad_messages(self) -> int:
        if self.bad is None:
            return 0
        return int(self.bad.any(axis=1).sum() if self.bad.ndim == 2 else self.bad.sum())

    def mark_bad(self, index: int, fault: str) -> None:
        """Mark message ``index`` (sorted order) bad: ``fault`` says why."""
        if self.bad is not None:
            self.bad[index] = True
        self.add_fault(int(self.stamps[index]), fault)

    def add_fault(self, stamp: int, fault: str) -> None:
        if len(self.faults) < KEPT_FAULTS:
            self.faults.append(f"message stamped {stamp / 1e9:.3f} s: {fault}")


def resolve_topic(topic: str, namespace: str = "/") -> str:
    """Map-relative topic → absolute bag topic (``joint_states`` + ``/robot1`` →
    ``/robot1/joint_states``); absolute topics are kept."""
    if topic.startswith("/"):
        return topic
    ns = namespace.strip("/")
    return f"/{ns}/{topic}" if ns else f"/{topic}"


def stream_specs(tm: TopicMap, namespace: str = "/", episode_topic: str = "") -> list[StreamSpec]:
    """The streams a conversion reads: cameras, state, action, optional task and markers."""
    specs = [StreamSpec(cam.key, resolve_topic(cam.topic, namespace), "image", IMAGE_TYPES,
                        f"camera '{cam.name}'") for cam in tm.cameras]
    specs.append(StreamSpec(STATE_KEY, resolve_topic(tm.joint_states.topic, namespace), "vector",
                            (ROS_TYPES["JointState"],), "joint_states", tm.joint_states.joints))
    specs.append(StreamSpec(ACTION_KEY, resolve_topic(tm.action.topic, namespace), "vector",
                            (ROS_TYPES[tm.action.type],), f"action ({tm.action.type})",
                            tm.action.joints))
    if tm.task.source == "topic":
        specs.append(StreamSpec(TASK_KEY, resolve_topic(tm.task.topic, namespace), "text",
                                (ROS_TYPES["String"],), "task"))
    if episode_topic:
        specs.append(StreamSpec(EPISODE_KEY, resolve_topic(episode_topic, namespace), "marker",
                                MARKER_TYPES, "episode markers"))
    return specs


def _marker(m: Any) -> bool | None:
    if isinstance(m.data, (bool, np.bool_)):
        return bool(m.data)
    word = str(m.data).strip().lower()
    return True if word in START_WORDS else False if word in STOP_WORDS else None


def _decoders(specs: list[StreamSpec], types: dict[str, str]) -> dict[str, Callable[[Any], Any]]:
    out: dict[str, Callable[[Any], Any]] = {}
    for s in specs:
        if s.kind == "vector":
            out[s.key] = joint_decoder(s.joints, types[s.key])
        elif s.kind == "text":
            out[s.key] = lambda m: str(m.data)
        elif s.kind == "marker":
            out[s.key] = _marker
        else:
            out[s.key] = image_header
    return out


def read_streams(bag: BagFile, specs: list[StreamSpec],
                 progress: Callable[[int], None] | None = None) -> dict[str, Stream]:
    """First pass over ``bag``: stamps and values (images: headers) of every spec's topic."""
    types = {s.key: bag.require_topic(s.topic, s.accepted, s.what) for s in specs}
    by_topic: dict[str, list[StreamSpec]] = defaultdict(list)
    for s in specs:
        by_topic[s.topic].append(s)
    decoders = _decoders(specs, types)
    header: dict[str, list[int]] = defaultdict(list)
    receive: dict[str, list[int]] = defaultdict(list)
    values: dict[str, list[Any]] = defaultdict(list)
    for topic, _msgtype, recv_ns, msg in bag.messages(by_topic):
        stamp = stamp_to_ns(msg.header.stamp) if hasattr(msg, "header") else 0
        for s in by_topic[topic]:
            header[s.key].append(stamp)
            receive[s.key].append(recv_ns)
            try:
                values[s.key].append(decoders[s.key](msg))
            except ImageConversionError as err:  # a whole-camera setting, not one message
                raise ConversionError(
                    f"bag '{bag.path}', topic '{topic}' ({s.what}), message received at "
                    f"{recv_ns} ns: {err}") from err
        if progress is not None:
            progress(1)
    _check_counts(bag, specs, header)
    hdr_all = np.concatenate([np.asarray(header[s.key], np.int64) for s in specs] or [[]])
    rcv_all = np.concatenate([np.asarray(receive[s.key], np.int64) for s in specs] or [[]])
    offset = receive_offset(hdr_all, rcv_all)
    return {s.key: _build(s, types[s.key], header[s.key], receive[s.key], values[s.key],
                          offset) for s in specs}


def _check_counts(bag: BagFile, specs: list[StreamSpec], header: dict[str, list[int]]) -> None:
    """Name a metadata.yaml that lists messages the storage does not return for a topic."""
    for s in specs:
        listed = bag.listed_count(s.topic)
        if listed and not header[s.key]:
            raise BagError(bag.count_mismatch(s.topic, listed, 0))
        if listed > len(header[s.key]):
            bag.notes.append(bag.count_mismatch(s.topic, listed, len(header[s.key])))


def _build(spec: StreamSpec, msgtype: str, header: list[int], receive: list[int],
           values: list[Any], offset: int) -> Stream:
    hdr = np.asarray(header, dtype=np.int64)
    rcv = np.asarray(receive, dtype=np.int64)
    arrival = np.arange(hdr.size, dtype=np.int64)
    no_header = hdr <= 0
    stamps = np.where(no_header, rcv - offset, hdr)
    keep = np.array([v is not None for v in values], dtype=bool) if spec.kind != "image" \
        else np.ones(hdr.size, dtype=bool)
    idx = np.flatnonzero(keep)[np.argsort(stamps[keep], kind="stable")]
    stream = Stream(spec=spec, msgtype=msgtype, stamps=stamps[idx], receive=rcv[idx],
                    arrival=arrival[idx], from_receive=int(no_header.sum()),
                    skipped=int((~keep).sum()))
    kept = [values[i] for i in idx.tolist()]
    if spec.kind == "vector":
        _vector_values(stream, kept)
    elif spec.kind == "image":
        _image_checks(stream, kept)
    elif spec.kind == "marker":
        stream.values = np.asarray(kept, dtype=bool)
    else:
        stream.values = kept
    if stream.skipped:
        what = "without positions" if spec.kind == "vector" else "without a usable value"
        stream.notes.append(f"{stream.skipped} message(s) {what} ignored (e.g. effort-only "
                            f"JointState, empty JointTrajectory, unknown marker word)")
    if stream.from_receive:
        stream.notes.append(f"{stream.from_receive} stamp(s) from bag receive time "
                            f"(no header or zero stamp), shifted by {offset / 1e6:.3f} ms")
    return stream


def _vector_values(stream: Stream, rows: list[JointRow]) -> None:
    d = len(stream.spec.joints)
    stream.values = np.asarray([r.values for r in rows], np.float64).reshape(len(rows), d)
    stream.present = np.asarray([r.present for r in rows], bool).reshape(len(rows), d)
    stream.bad = np.asarray([r.bad for r in rows], bool).reshape(len(rows), d)
    for i, r in enumerate(rows):
        if r.fault:
            stream.add_fault(int(stream.stamps[i]), r.fault)
    never = [j for k, j in enumerate(stream.spec.joints) if not stream.present[:, k].any()]
    if never and rows:
        stream.notes.append(f"joint(s) {never} never appear on {stream.spec.topic} (fix the "
                            f"topic map's joint list or the publisher)")


def _image_checks(stream: Stream, headers: list[tuple[tuple[int, int] | None, str]]) -> None:
    stream.bad = np.zeros(len(headers), dtype=bool)
    sizes = Counter(size for size, _ in headers if size is not None)
    stream.size = sizes.most_common(1)[0][0] if sizes else None
    for i, (size, fault) in enumerate(headers):
        if size is None:
            stream.mark_bad(i, fault)
        elif size != stream.size:
            stream.mark_bad(i, f"declares {size[0]}x{size[1]}, the camera's other images are "
                               f"{stream.size[0]}x{stream.size[1]}")
