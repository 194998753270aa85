"""Build ROS 2 messages with ``rosbags`` (kilted typestore) and write them to a rosbag2
directory: for tests, benchmarks and demos that need bags without a ROS graph.

Images are (H, W, 3) uint8 RGB arrays; stamps are int64 nanoseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from snapflow_ros.data.bag_reader import typestore

STORAGES = ("mcap", "sqlite3")
_TS: Any = None


def ts() -> Any:
    """The shared kilted typestore."""
    global _TS
    if _TS is None:
        _TS = typestore()
    return _TS


def _header(stamp_ns: int, frame_id: str = "") -> Any:
    t = ts().types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    stamp = t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image(rgb: np.ndarray, stamp_ns: int, encoding: str = "rgb8") -> Any:
    """sensor_msgs/Image from RGB: ``rgb8``, ``bgr8``, ``mono8`` (the red channel) or any other
    encoding name with the RGB bytes (to test rejection)."""
    if encoding == "bgr8":
        pixels = rgb[..., ::-1]
    elif encoding == "mono8":
        pixels = rgb[..., :1]
    else:
        pixels = rgb
    pixels = np.ascontiguousarray(pixels)
    h, w, c = pixels.shape
    return ts().types["sensor_msgs/msg/Image"](
        header=_header(stamp_ns), height=h, width=w, encoding=encoding, is_bigendian=0,
        step=w * c, data=pixels.reshape(-1))


def compressed_image(rgb: np.ndarray, stamp_ns: int, fmt: str = "png") -> Any:
    """sensor_msgs/CompressedImage (``png`` lossless or ``jpeg``) from RGB."""
    import cv2

    ok, buf = cv2.imencode(f".{fmt}", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"OpenCV could not encode {fmt}")
    return ts().types["sensor_msgs/msg/CompressedImage"](
        header=_header(stamp_ns), format=fmt, data=buf.reshape(-1))


def joint_state(names: Sequence[str], position: Sequence[float], stamp_ns: int) -> Any:
    """sensor_msgs/JointState with positions only."""
    return ts().types["sensor_msgs/msg/JointState"](
        header=_header(stamp_ns), name=list(names),
        position=np.asarray(position, dtype=np.float64), velocity=np.zeros(0),
        effort=np.zeros(0))


def joint_trajectory(names: Sequence[str], position: Sequence[float], stamp_ns: int) -> Any:
    """trajectory_msgs/JointTrajectory with one point (positions only)."""
    t = ts().types
    point = t["trajectory_msgs/msg/JointTrajectoryPoint"](
        positions=np.asarray(position, dtype=np.float64), velocities=np.zeros(0),
        accelerations=np.zeros(0), effort=np.zeros(0),
        time_from_start=t["builtin_interfaces/msg/Duration"](sec=0, nanosec=0))
    return t["trajectory_msgs/msg/JointTrajectory"](header=_header(stamp_ns),
                                                    joint_names=list(names), points=[point])


def multi_array(values: Sequence[float]) -> Any:
    """std_msgs/Float64MultiArray (no header: stamped by receive time)."""
    t = ts().types
    layout = t["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return t["std_msgs/msg/Float64MultiArray"](layout=layout,
                                               data=np.asarray(values, dtype=np.float64))


def string(text: str) -> Any:
    return ts().types["std_msgs/msg/String"](data=text)


def boolean(value: bool) -> Any:
    return ts().types["std_msgs/msg/Bool"](data=bool(value))


def write_bag(path: str | Path, messages: Iterable[tuple[str, int, Any]],
              storage: str = "mcap", custom_data: dict[str, str] | None = None) -> Path:
    """Write ``(topic, receive_ns, message)`` tuples (any order) to a new rosbag2 directory."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    if storage not in STORAGES:
        raise ValueError(f"storage {storage!r} is not one of {STORAGES}")
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    path = Path(path)
    store = ts()
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        for key, value in (custom_data or {}).items():
            writer.set_custom_data(key, value)
        conns: dict[str, Any] = {}
        for topic, receive_ns, msg in sorted(messages, key=lambda m: m[1]):
            msgtype = msg.__msgtype__
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], int(receive_ns), store.serialize_cdr(msg, msgtype))
    return path
