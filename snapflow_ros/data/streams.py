"""Topic-map features as stamped streams read from one bag (the converter's first pass).

Stamps are header stamps (``header.stamp``). Messages without a header (``std_msgs`` String,
Bool, Float64MultiArray) or with a zero stamp (e.g. a JointTrajectory meaning "start now") get
their bag receive time moved onto the header clock: ``receive − offset``, ``offset`` = the median
``receive − header`` of the bag's stamped messages (``align.receive_offset``), so sim-time
stamps and wall-clock receive times still line up. Images are only stamped here; their pixels
are decoded in the second pass, for the frames that use them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snapflow_ros.conversions.image import ENCODINGS, ImageConversionError
from snapflow_ros.conversions.joints import JointConversionError, JointOrder
from snapflow_ros.conversions.stamps import stamp_to_ns
from snapflow_ros.data.align import receive_offset
from snapflow_ros.data.bag_reader import BagFile
from snapflow_ros.topic_map import ACTION_KEY, ROS_TYPES, STATE_KEY, TopicMap

TASK_KEY = "task"
EPISODE_KEY = "episode"
IMAGE_TYPES = (ROS_TYPES["Image"], ROS_TYPES["CompressedImage"])
MARKER_TYPES = (ROS_TYPES["String"], "std_msgs/msg/Bool")
START_WORDS, STOP_WORDS = ("start", "begin"), ("stop", "end")


class ConversionError(ValueError):
    """A message whose content cannot be converted; names the bag, topic, stamp and fix."""


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
    message's position among its topic's messages in bag order) and the decoded ``values``
    ((N, D) float64 for vectors, a list of str for text, (N,) bool for markers, None for
    images)."""

    spec: StreamSpec
    msgtype: str
    stamps: np.ndarray
    receive: np.ndarray
    arrival: np.ndarray
    values: Any = None
    from_receive: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


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


def _vector_decoder(spec: StreamSpec, msgtype: str) -> Callable[[Any], np.ndarray | None]:
    order = JointOrder(spec.joints)
    if msgtype == ROS_TYPES["JointState"]:
        return lambda m: order(m.name, m.position)
    if msgtype == ROS_TYPES["JointTrajectory"]:
        return lambda m: order(m.joint_names, m.points[0].positions) if len(m.points) else None
    n = len(spec.joints)

    def multiarray(m: Any) -> np.ndarray:
        data = np.asarray(m.data, dtype=np.float64)
        if data.shape != (n,):
            raise JointConversionError(
                f"Float64MultiArray holds {data.size} values, the topic map's action has {n} "
                f"joints {list(spec.joints)} (fix action.joints or the publisher)")
        return data

    return multiarray


def _marker(m: Any) -> bool | None:
    if isinstance(m.data, (bool, np.bool_)):
        return bool(m.data)
    word = str(m.data).strip().lower()
    return True if word in START_WORDS else False if word in STOP_WORDS else None


def _check_encoding(m: Any) -> bool:
    if str(m.encoding).lower() not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {m.encoding!r}; supported: {', '.join(ENCODINGS)} "
            f"(publish 8-bit colour or mono images, or convert them upstream)")
    return True


def read_streams(bag: BagFile, specs: list[StreamSpec],
                 progress: Callable[[int], None] | None = None) -> dict[str, Stream]:
    """First pass over ``bag``: stamps (and values, except images) of every spec's topic."""
    types = {s.key: bag.require_topic(s.topic, s.accepted, s.what) for s in specs}
    by_topic: dict[str, list[StreamSpec]] = defaultdict(list)
    for s in specs:
        by_topic[s.topic].append(s)
    decoders: dict[str, Callable[[Any], Any]] = {}
    for s in specs:
        if s.kind == "vector":
            decoders[s.key] = _vector_decoder(s, types[s.key])
        elif s.kind == "text":
            decoders[s.key] = lambda m: str(m.data)
        elif s.kind == "marker":
            decoders[s.key] = _marker
        elif types[s.key] == ROS_TYPES["Image"]:
            decoders[s.key] = _check_encoding  # fail before writing anything; pixels: pass 2
    header: dict[str, list[int]] = defaultdict(list)
    receive: dict[str, list[int]] = defaultdict(list)
    values: dict[str, list[Any]] = defaultdict(list)
    for topic, _msgtype, recv_ns, msg in bag.messages(by_topic):
        stamp = stamp_to_ns(msg.header.stamp) if hasattr(msg, "header") else 0
        for s in by_topic[topic]:
            header[s.key].append(stamp)
            receive[s.key].append(recv_ns)
            if s.key in decoders:
                try:
                    values[s.key].append(decoders[s.key](msg))
                except (JointConversionError, ImageConversionError, ValueError) as err:
                    raise ConversionError(
                        f"bag '{bag.path}', topic '{topic}' ({s.what}), message received at "
                        f"{recv_ns} ns: {err}") from err
        if progress is not None:
            progress(1)
    hdr_all = np.concatenate([np.asarray(header[s.key], np.int64) for s in specs] or [[]])
    rcv_all = np.concatenate([np.asarray(receive[s.key], np.int64) for s in specs] or [[]])
    offset = receive_offset(hdr_all, rcv_all)
    return {s.key: _build(s, types[s.key], header[s.key], receive[s.key], values.get(s.key),
                          offset) for s in specs}


def _build(spec: StreamSpec, msgtype: str, header: list[int], receive: list[int],
           values: list[Any] | None, offset: int) -> Stream:
    hdr = np.asarray(header, dtype=np.int64)
    rcv = np.asarray(receive, dtype=np.int64)
    arrival = np.arange(hdr.size, dtype=np.int64)
    no_header = hdr <= 0
    stamps = np.where(no_header, rcv - offset, hdr)
    keep = np.ones(hdr.size, dtype=bool)
    if spec.kind == "image":
        values = None  # only checked, never kept
    if values is not None:
        keep = np.array([v is not None for v in values], dtype=bool)
    order = np.argsort(stamps[keep], kind="stable")
    idx = np.flatnonzero(keep)[order]
    stream = Stream(spec=spec, msgtype=msgtype, stamps=stamps[idx], receive=rcv[idx],
                    arrival=arrival[idx], from_receive=int(no_header.sum()),
                    skipped=int((~keep).sum()))
    if values is not None:
        kept = [values[i] for i in idx.tolist()]
        if spec.kind == "vector":
            width = len(spec.joints)
            stream.values = np.asarray(kept, np.float64).reshape(len(kept), width)
        elif spec.kind == "marker":
            stream.values = np.asarray(kept, dtype=bool)
        else:
            stream.values = kept
    if stream.skipped:
        stream.notes.append(f"{stream.skipped} message(s) without usable values skipped "
                            f"(empty JointTrajectory / unknown marker word)")
    if stream.from_receive:
        stream.notes.append(f"{stream.from_receive} stamp(s) from bag receive time "
                            f"(no header or zero stamp), shifted by {offset / 1e6:.3f} ms")
    return stream
