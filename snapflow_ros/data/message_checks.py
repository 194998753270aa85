"""Per-message checks of the converter's first pass: joint values by name, image headers.

A message that cannot be used as it is (a NaN joint position, names and positions of different
lengths, an image buffer whose length disagrees with ``step × height``, a header that cannot be
read, an image over ``MAX_PIXELS``) is a *fault of that message*: it is kept in its stream,
marked bad, and a frame that would use it is dropped (``bad:<feature>``). Nothing here raises
for one message's content; only an unsupported Image encoding (a whole-camera setting) does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from snapflow_ros.conversions.image import (
    ENCODINGS,
    ImageConversionError,
    declared_size,
    to_rgb,
)
from snapflow_ros.topic_map import ROS_TYPES

MAX_PIXELS = 64_000_000
"""Largest image (height × width) decoded: larger ones are faults, refused before decoding."""


@dataclass
class JointRow:
    """One message's contribution to a joint feature, in the topic map's joint order."""

    values: np.ndarray
    """(D,) float64, NaN where the joint is absent or bad."""
    present: np.ndarray
    """(D,) bool: the message carries this joint (a value, good or bad)."""
    bad: np.ndarray
    """(D,) bool: the message carries this joint but its value cannot be used."""
    fault: str = ""


def _row(joints: Sequence[str], names: Sequence[str], values: Any) -> JointRow | None:
    d = len(joints)
    row = JointRow(np.full(d, np.nan), np.zeros(d, bool), np.zeros(d, bool))
    names = [str(n) for n in names]
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if not names or values.size == 0:
        return None  # e.g. an effort-only JointState: no positions to take
    where: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        where.setdefault(name, []).append(i)
    faults = []
    for j, joint in enumerate(joints):
        idx = where.get(joint)
        if not idx:
            continue
        row.present[j] = True
        if values.size != len(names):
            row.bad[j] = True
        elif len(idx) > 1:
            row.bad[j] = True
            faults.append(f"joint '{joint}' appears {len(idx)} times (ambiguous)")
        elif not np.isfinite(values[idx[0]]):
            row.bad[j] = True
            faults.append(f"joint '{joint}' is {values[idx[0]]}")
        else:
            row.values[j] = values[idx[0]]
    if values.size != len(names) and row.present.any():
        faults.insert(0, f"{len(names)} joint names but {values.size} positions")
    row.fault = "; ".join(faults)
    return row


def joint_decoder(joints: Sequence[str], msgtype: str) -> Callable[[Any], JointRow | None]:
    """A function: message → its ``JointRow`` (None: the message carries no positions).

    JointState and JointTrajectory (first point) are matched by joint name, so a message may
    carry a subset of the joints (split arm/gripper drivers) or extra ones; Float64MultiArray
    must hold exactly one value per joint, in the map's order.
    """
    joints = tuple(joints)
    if msgtype == ROS_TYPES["JointState"]:
        return lambda m: _row(joints, m.name, m.position)
    if msgtype == ROS_TYPES["JointTrajectory"]:
        return lambda m: _row(joints, m.joint_names, m.points[0].positions) if len(m.points) \
            else None

    def multiarray(m: Any) -> JointRow:
        data = np.asarray(m.data, dtype=np.float64).reshape(-1)
        if data.size != len(joints):
            d = len(joints)
            return JointRow(np.full(d, np.nan), np.ones(d, bool), np.ones(d, bool),
                            f"Float64MultiArray holds {data.size} values, the topic map has {d} "
                            f"joints {list(joints)}")
        return _row(joints, joints, data)  # type: ignore[return-value]

    return multiarray


def check_encoding(msg: Any) -> None:
    """Raise ImageConversionError for an Image encoding the converter cannot read."""
    if str(msg.encoding).lower() not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)} "
            f"(publish 8-bit colour or mono images, or convert them upstream)")


def image_header(msg: Any) -> tuple[tuple[int, int] | None, str]:
    """``((height, width), "")`` for an image message whose header is usable, else
    ``(None, fault)``; reads headers and buffer lengths only, never pixels."""
    if hasattr(msg, "format"):
        size = declared_size(msg)
        if size is None:
            return None, _error_of(msg)  # fails on the header, before any pixel
    else:
        check_encoding(msg)
        size = int(msg.height), int(msg.width)
        channels = ENCODINGS[str(msg.encoding).lower()][0]
        step, length = int(msg.step), len(memoryview(msg.data).cast("B"))
        if size[0] < 1 or size[1] < 1 or step < size[1] * channels or length != step * size[0]:
            return None, _error_of(msg)  # image.py's exact wording; cheap on these messages
    if size[0] * size[1] > MAX_PIXELS:
        return None, f"declares {size[0]}x{size[1]} pixels, over the converter's {MAX_PIXELS}"
    return size, ""


def _error_of(msg: Any) -> str:
    try:
        to_rgb(msg, max_pixels=MAX_PIXELS)
    except ImageConversionError as err:
        return str(err)
    return "inconsistent image header"


def decode_image(msg: Any, size: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """``(rgb, "")`` with the (H, W, 3) uint8 pixels, or ``(None, fault)`` when the message
    cannot be decoded or decodes to another size than ``size`` (its camera's)."""
    try:
        rgb = to_rgb(msg, max_pixels=MAX_PIXELS)
    except ImageConversionError as err:
        return None, str(err)
    if rgb.shape[:2] != tuple(size):
        return None, (f"decoded to {rgb.shape[0]}x{rgb.shape[1]}, the camera's images are "
                      f"{size[0]}x{size[1]}")
    return rgb, ""
