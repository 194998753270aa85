"""builtin_interfaces/Time ↔ integer nanoseconds (works for rclpy and rosbags messages)."""

from __future__ import annotations

from typing import Any

NS = 1_000_000_000


def stamp_to_ns(stamp: Any) -> int:
    """``sec``/``nanosec`` → nanoseconds since the epoch (or since sim start)."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def fill_stamp(stamp: Any, ns: int) -> Any:
    """Write nanoseconds into a Time message's ``sec``/``nanosec``; returns it."""
    stamp.sec, stamp.nanosec = divmod(int(ns), NS)
    return stamp
