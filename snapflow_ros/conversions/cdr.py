"""Read a message's ``header.stamp`` from its serialized (CDR) bytes without deserializing.

The policy node subscribes to cameras and joint states *raw* (``raw=True``): a callback then
costs O(1) — read the stamp, keep the bytes — whatever the image size, and only the messages an
inference uses are deserialized. Every message type the node takes raw starts with a
``std_msgs/Header`` whose first field is ``builtin_interfaces/Time`` (int32 ``sec``, uint32
``nanosec``): after the 4-byte encapsulation header, at body offsets 0 and 4.
"""

from __future__ import annotations

import struct

from snapflow_ros.conversions.stamps import NS

_LE = struct.Struct("<iI")
_BE = struct.Struct(">iI")


def header_stamp_ns(raw: bytes | bytearray | memoryview) -> int:
    """``header.stamp`` in ns of a serialized message that starts with a Header.

    Raises ValueError for a buffer too short to hold a header or an invalid stamp (``nanosec``
    >= 1e9, negative time).
    """
    if len(raw) < 12:
        raise ValueError(f"serialized message of {len(raw)} bytes is too short for a header")
    little = raw[1] & 1  # encapsulation: 0x0000 CDR_BE, 0x0001 CDR_LE, 0x0003 PL_CDR_LE ...
    sec, nanosec = (_LE if little else _BE).unpack_from(raw, 4)
    if nanosec >= NS:
        raise ValueError(f"invalid stamp: nanosec={nanosec} is not below 1e9")
    if sec < 0:
        raise ValueError(f"invalid stamp: sec={sec} is negative")
    return sec * NS + nanosec
