"""Fuzz ``policy_node`` as its own process: malformed inputs, lifecycle and parameter chaos.

    bash scripts/run.sh python scripts/fuzz_node.py [--messages 10000] [--seconds 600]
        [--seed 0] [--out report.json] [--no-control] [--workdir DIR]

Starts ``python -m snapflow_ros policy_node`` in a namespace of its own (built-in
``smolvla-tiny`` on the CPU; a copy of config/topic_map.yaml with 64x64 cameras, ``front`` an
Image and ``wrist`` a CompressedImage; limits ±0.5 on the 6 joints, ``max_step_delta`` 0.05,
30 Hz, ``/diagnostics`` every 0.2 s, remapped into the namespace; its stdout and stderr go to
files), and plays the robot:

* **valid observations** at 30 Hz (both cameras and joint states stamped now, the joint states
  reporting where the simulated arm is; the arm jumps to each command it receives on
  ``joint_commands``), now and then in unusual but valid forms (bgr8, mono8, padded rows, other
  sizes, JPEG, grey/RGBA PNG, reordered or extra joints);
* **malformed messages**, ``--messages`` on every input (front, wrist, joint_states, task), in
  ``--burst``-sized bursts mixed into the valid stream at ``--rate`` per input and second:
  unknown encodings, step/data mismatches, zero and huge declared sizes, truncated data, random
  bytes as JPEG/PNG, a 16000x16000 PNG decompression bomb, hidden zlib bombs, NaN/inf/1e30
  joints, missing/duplicated/unknown joints, name/position length mismatches, stamps in the
  future, past, zero, negative or with ``nanosec`` = 2**32-1, 1 MB messages over the size caps,
  truncated and random CDR, other message types' bytes, 1 MB / empty / unicode tasks (every
  kind is listed in the report with its count);
* unless ``--no-control``, during bursts: random **lifecycle transitions** (deactivate,
  activate, now and then an invalid id) and **parameter sets** (``set_parameters`` and
  ``set_parameters_atomically``; valid: limits, step, dry_run toggles, schedule and sync
  tunables, task; invalid: NaN/inf/inverted limits, wrong lengths and types, negative or
  out-of-range values, read-only and unknown names). After each burst the defaults are restored
  (atomically) and the node re-activated.

After each burst (and restore) the **recovery time** is how long until a chunk computed from
post-burst input (header stamp >= the burst's end) arrives on ``action_chunk``.

Checks, on everything the node published:

* **crashes**: the node's exit during the run (exit code), its exit code on SIGINT at the end,
  "Traceback" in its stdout/stderr, descendants left running after it exited;
* **the safety invariant** on every command received on ``joint_commands`` (stamped with the
  node's tick time): finite, inside the joint limits in force, and within ``max_step_delta``
  (+1e-9) of the previous command the robot received. That reference is used strictly when the
  previous command came from the previous control period (< 1.5 periods earlier, no dry-run
  command and no lifecycle or parameter call in between); otherwise (start, activation, end of
  dry run, a hold, or a tick the node skipped because it ran late — the two look alike from
  outside) the command must be within the step of the previous command *or* of a position the
  arm reported in a valid joint state the node could have used (stamp within ``max_obs_age_s``
  before the tick). "Limits in force" are every set of parameters that may have been active
  around the tick (a parameter call's effect lies between its request and its response);
* **chunks** on ``action_chunk``: finite, inside the limits, consecutive points within the step,
  the first within the step of a recent command or arm report; dry-run commands and chunks (on
  ``policy_node/debug/*``) must be finite and inside the limits;
* **parameter validation**: an invalid set that was accepted is a bug (``invalid_accepted``);
* **recovery** p50/p99/max over bursts, and stalls (no fresh chunk within
  ``--recovery-timeout``); **/diagnostics** gaps; **RSS** of the node and its child processes
  (the model worker) after warm-up and at the end, and the peak;
* totals: messages sent per input and kind, chunks and commands received.

Prints the JSON report (also written to ``--out``) and a short summary; exits 0 when nothing
failed, 1 otherwise. The default run sends 4 x 10,000 malformed messages in about 2 minutes
(2 CPU cores; the fuzzer itself uses ~5 s of CPU). ``--dump`` keeps everything received.
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this source tree first

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import yaml  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters, SetParametersAtomically  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

NS = 1_000_000_000
MS = 1_000_000
JOINTS = tuple(f"joint{i}" for i in range(1, 7))
LIMIT, STEP, RATE_HZ = 0.5, 0.05, 30.0
DT_NS = int(NS / RATE_HZ)
SIDE = 64  # the tiny policy's image size
TOL = 1e-9  # runtime/safety.py's STEP_TOLERANCE
INPUTS = ("front", "wrist", "joint_states", "task")
VALID_TASK = "reach the target"
DIAG_NAME = "snapflow_ros: policy_node"
TICK_SLACK_NS = 100 * MS  # a tick reads the limits at most this long after its stamp


# -- the parameters in force ------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """The parameters the checks depend on (None: no limit on that side)."""

    lower: tuple[float, ...] | None = (-LIMIT,) * 6
    upper: tuple[float, ...] | None = (LIMIT,) * 6
    step: float = STEP
    max_age_s: float = 0.2
    future_tol_s: float = 0.3
    dry_run: bool = False

    def inside(self, x: np.ndarray) -> bool:
        lo = self.lower is None or bool(np.all(x >= np.asarray(self.lower)))
        return lo and (self.upper is None or bool(np.all(x <= np.asarray(self.upper))))


DEFAULTS = Limits()
TRACKED = {"joint_lower_limits": "lower", "joint_upper_limits": "upper",
           "max_step_delta": "step", "max_obs_age_s": "max_age_s",
           "future_tolerance_s": "future_tol_s", "dry_run": "dry_run"}


def apply(state: Limits, name: str, value: Any) -> Limits:
    """``state`` after a successful set of ``name`` (a ``("typed", type, value)`` is unwrapped)."""
    if isinstance(value, tuple) and value and value[0] == "typed":
        value = value[2]
    if name not in TRACKED:
        return state
    if name in ("joint_lower_limits", "joint_upper_limits"):
        value = tuple(float(v) for v in value) or None
    return replace(state, **{TRACKED[name]: value})


# -- serialized messages ----------------------------------------------------------------------

BAD_STAMPS = {
    "future_1h": lambda now: divmod(now + 3600 * NS, NS),
    "future_1s": lambda now: divmod(now + NS, NS),
    "past_10s": lambda now: divmod(now - 10 * NS, NS),
    "zero": lambda now: (0, 0),
    "nanosec_2e32m1": lambda now: (now // NS, 2**32 - 1),
    "negative_sec": lambda now: (-1, 0),
    "sec_int32_max": lambda now: (2**31 - 1, 0),
}


def restamp(raw: bytes, sec: int, nanosec: int) -> bytes:
    """CDR bytes with header.stamp replaced (after the 4-byte encapsulation header)."""
    if len(raw) < 12:
        return raw
    return raw[:4] + struct.pack("<iI", sec, nanosec) + raw[12:]


@dataclass
class Template:
    raw: bytes
    arm_slots: tuple[int, tuple[tuple[int, int], ...]] | None = None  # (offset, (slot, joint))


@dataclass
class Case:
    """One kind of message: templates, how to stamp them, and how often to send them."""

    kind: str
    templates: list[Template]
    stamp: str = "now"  # "now" | "keep" | "future_0.25s" | a BAD_STAMPS key
    weight: float = 1.0
    big_endian: bool = False  # flip the encapsulation to CDR_BE after stamping

    def render(self, rng: random.Random, now_ns: int, arm: tuple[float, ...]
               ) -> tuple[bytes, bool]:
        """(bytes, whether they report the arm truthfully with a usable stamp)."""
        t = self.templates[rng.randrange(len(self.templates))]
        raw = t.raw
        if self.stamp == "now":
            raw = restamp(raw, *divmod(now_ns, NS))
        elif self.stamp == "future_0.25s":
            raw = restamp(raw, *divmod(now_ns + NS // 4, NS))
        elif self.stamp != "keep":
            raw = restamp(raw, *BAD_STAMPS[self.stamp](now_ns))
        if t.arm_slots is not None:
            buf = bytearray(raw)
            offset, slots = t.arm_slots
            for slot, joint in slots:
                struct.pack_into("<d", buf, offset + 8 * slot, arm[joint])
            raw = bytes(buf)
        if self.big_endian and len(raw) >= 2:
            raw = b"\x00\x00" + raw[2:]
        return raw, t.arm_slots is not None and self.stamp == "now"


def ser(msg: Any) -> bytes:
    return bytes(serialize_message(msg))


def image_raw(h: int, w: int, encoding: str, step: int, data: bytes, bigendian: int = 0) -> bytes:
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=step)
    msg.data = data
    return ser(msg)


def compressed_raw(data: bytes, fmt: str = "png") -> bytes:
    msg = CompressedImage(format=fmt)
    msg.data = data
    return ser(msg)


SENTINEL = 1.2345678912345678e-300


def joint_template(names: list[str], values: list[float | None], velocity: tuple = (),
                   effort: tuple = ()) -> Template:
    """A serialized JointState; ``None`` values are patched with the arm position at send time
    (the name says which joint)."""
    pos = [SENTINEL * (i + 1) if v is None else float(v) for i, v in enumerate(values)]
    raw = ser(JointState(name=list(names), position=pos, velocity=list(velocity),
                         effort=list(effort)))
    slots = tuple((i, JOINTS.index(names[i])) for i, v in enumerate(values) if v is None)
    if not slots:
        return Template(raw)
    offset = raw.find(struct.pack(f"<{len(pos)}d", *pos))
    assert offset > 0, "position array not found in the serialized JointState"
    return Template(raw, (offset, slots))


def extra_joints_template(rng: random.Random, n: int) -> Template:
    """A valid JointState: the 6 joints (patched with the arm) among ``n`` random extra names
    (43,000: ~1 MB, just under the node's 1 MiB cap)."""
    names = [f"x{rng.randrange(10**9):09d}" for _ in range(n)]
    for j in JOINTS:
        names.insert(rng.randrange(len(names) + 1), j)
    return joint_template(names, [None if name in JOINTS else 0.0 for name in names])


def png_bytes(rgb: np.ndarray, mode: str | None = None, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im = PILImage.fromarray(rgb)
    if mode:
        im = im.convert(mode)
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def jpeg_bytes(rgb: np.ndarray, **kw: Any) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bomb(side: int = 16000) -> bytes:
    """A valid ~31 kB PNG declaring side x side 1-bit pixels (decoding: seconds, 32 MB+)."""
    row = bytes(1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def zeros_deflated(megabytes: int) -> bytes:
    z, block = zlib.compressobj(9), bytes(1 << 20)
    return b"".join(z.compress(block) for _ in range(megabytes)) + z.flush()


def png_hidden_bomb(megabytes: int = 64) -> bytes:
    """A 64x64 RGB PNG header whose IDAT inflates to ``megabytes`` MB (the decoder must stop)."""
    ihdr = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zeros_deflated(megabytes)) + png_chunk(b"IEND", b""))


def png_text_bomb(valid_png: bytes, megabytes: int = 64) -> bytes:
    """A valid PNG with a zTXt chunk inflating to ``megabytes`` MB before its IDAT."""
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + zeros_deflated(megabytes))
    return valid_png[:33] + ztxt + valid_png[33:]


def with_sof_size(jpeg: bytes, h: int, w: int) -> bytes:
    pos = jpeg.find(b"\xff\xc0")
    return jpeg[:pos + 5] + struct.pack(">HH", h, w) + jpeg[pos + 9:]


def with_ihdr_size(png: bytes, h: int, w: int) -> bytes:
    return png[:16] + struct.pack(">II", w, h) + png[24:]


class QuietStderr:
    """Silence file descriptor 2 (C libraries print deserialization failures there)."""

    def __enter__(self) -> None:
        sys.stderr.flush()
        self._saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)


def cdr_length(raw: bytes, msg_type: Any) -> int:
    """The shortest prefix of ``raw`` that still deserializes: serialize_message pads its
    output (rmw_fastrtps: up to 8 bytes), so a cut within the padding is no truncation."""
    n = len(raw)
    with QuietStderr():
        while n > 0:
            try:
                deserialize_message(raw[:n - 1], msg_type)
            except Exception:  # any failure: raw[:n] is the shortest
                return n
            n -= 1
    return n


def common_cases(rng: random.Random, valid: list[bytes], other_types: list[bytes],
                 msg_type: Any, stamped: bool = True) -> list[Case]:
    """Transport-level garbage and bad stamps, for any input."""
    cuts = [v[:rng.randrange(cdr_length(v, msg_type))] for v in valid * 8]
    cases = [
        Case("cdr_truncated", [Template(c) for c in cuts], stamp="now" if stamped else "keep"),
        Case("cdr_random_body", [Template(b"\x00\x01\x00\x00" + bytes(8) + rng.randbytes(
            rng.randrange(0, 4096))) for _ in range(32)], stamp="now" if stamped else "keep"),
        Case("garbage_bytes", [Template(rng.randbytes(rng.randrange(0, 64)))
                               for _ in range(32)], stamp="keep"),
        Case("other_message_type", [Template(r) for r in other_types],
             stamp="now" if stamped else "keep"),
    ]
    if stamped:
        cases.append(Case("cdr_big_endian_flag", [Template(v) for v in valid], big_endian=True))
        cases += [Case(f"stamp_{name}", [Template(v) for v in valid], stamp=name)
                  for name in BAD_STAMPS]
    return cases


@dataclass
class Corpus:
    """Valid and malformed messages for every input, serialized once."""

    malformed: dict[str, list[Case]]
    valid: dict[str, list[Case]]  # the first case is the plain one, the rest are variants
    task_valid: bytes = b""

    def pick(self, rng: random.Random, name: str) -> Case:
        cases = self.malformed[name]
        return rng.choices(cases, weights=[c.weight for c in cases])[0]


def build_corpus(rng: random.Random) -> Corpus:
    nprng = np.random.default_rng(rng.randrange(2**32))

    def rgb(h: int = SIDE, w: int = SIDE) -> np.ndarray:
        return nprng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    def wrong(n: int = 6) -> list[float]:  # plausible values that are not the arm's
        return [rng.uniform(-LIMIT, LIMIT) for _ in range(n)]

    row = SIDE * 3
    front_valid = [image_raw(SIDE, SIDE, "rgb8", row, rgb().tobytes()) for _ in range(8)]
    pngs = [png_bytes(rgb()) for _ in range(8)]
    wrist_valid = [compressed_raw(p) for p in pngs]
    js_plain = joint_template(list(JOINTS), [None] * 6)
    data = rgb().tobytes()

    # -- valid observations (plain first, then unusual but valid variants) -------------------
    grey = nprng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    padded = b"".join(data[r * row:(r + 1) * row] + bytes(16) for r in range(SIDE))
    valid = {
        "front": [Case("rgb8", [Template(v) for v in front_valid]),
                  Case("bgr8", [Template(image_raw(SIDE, SIDE, "bgr8", row, data))]),
                  Case("mono8", [Template(image_raw(SIDE, SIDE, "mono8", SIDE, grey.tobytes()))]),
                  Case("rgb8_padded_rows", [Template(image_raw(SIDE, SIDE, "rgb8", row + 16,
                                                               padded))]),
                  Case("rgba8", [Template(image_raw(SIDE, SIDE, "rgba8", SIDE * 4, bytes(
                      nprng.integers(0, 256, SIDE * SIDE * 4, dtype=np.uint8))))]),
                  Case("rgb8_128x96", [Template(image_raw(96, 128, "rgb8", 384,
                                                          rgb(96, 128).tobytes()))]),
                  Case("rgb8_32x32", [Template(image_raw(32, 32, "rgb8", 96,
                                                         rgb(32, 32).tobytes()))])],
        "wrist": [Case("png", [Template(v) for v in wrist_valid]),
                  Case("jpeg", [Template(compressed_raw(jpeg_bytes(rgb()), "jpeg"))]),
                  Case("png_grey", [Template(compressed_raw(png_bytes(rgb(), "L")))]),
                  Case("png_rgba", [Template(compressed_raw(png_bytes(rgb(), "RGBA")))]),
                  Case("png_palette", [Template(compressed_raw(png_bytes(rgb(), "P")))]),
                  Case("jpeg_96x80", [Template(compressed_raw(jpeg_bytes(rgb(80, 96)),
                                                              "bgr8; jpeg compressed bgr8"))])],
        "joint_states": [Case("plain", [js_plain]),
                         Case("reordered", [joint_template(n, [None] * 6) for n in (
                             list(reversed(JOINTS)), [*JOINTS[3:], *JOINTS[:3]])]),
                         Case("extra_gripper", [joint_template([*JOINTS, "gripper"],
                                                               [*[None] * 6, 0.01])])],
    }

    # -- malformed ------------------------------------------------------------------------
    encodings = ["yuv422", "32FC1", "16UC1", "bayer_rggb8", "", "ргб8", "rgb8 ", "x" * 5000,
                 "8UC4", "jpeg"]
    front = [
        Case("unknown_encoding", [Template(image_raw(SIDE, SIDE, e, row, data))
                                  for e in encodings]),
        Case("step_too_small", [Template(image_raw(SIDE, SIDE, "rgb8", row - 1,
                                                   data[:(row - 1) * SIDE]))]),
        Case("step_data_mismatch", [
            Template(image_raw(SIDE, SIDE, "rgb8", row + 8, data)),
            Template(image_raw(SIDE, SIDE, "mono8", SIDE, data)),
            Template(image_raw(SIDE, SIDE, "rgba8", SIDE * 4, data)),
            Template(image_raw(SIDE, SIDE, "rgb8", 2**32 - 1, data))]),
        Case("data_truncated", [Template(image_raw(SIDE, SIDE, "rgb8", row, data[:n]))
                                for n in (0, 1, 6000, len(data) - 1)]),
        Case("data_too_long", [Template(image_raw(SIDE, SIDE, "rgb8", row, data + b"\0")),
                               Template(image_raw(SIDE, SIDE, "rgb8", row, data * 2))]),
        Case("zero_size", [Template(image_raw(0, SIDE, "rgb8", row, b"")),
                           Template(image_raw(SIDE, 0, "rgb8", 0, b"")),
                           Template(image_raw(0, 0, "rgb8", 0, b"")),
                           Template(image_raw(SIDE, SIDE, "rgb8", 0, b""))]),
        Case("huge_declared_size", [
            Template(image_raw(2**32 - 1, 2**32 - 1, "rgb8", 2**32 - 1, data)),
            Template(image_raw(1, 2**32 - 1, "rgb8", 2**32 - 1, data)),
            Template(image_raw(100_000, 100_000, "mono8", 100_000, data)),
            Template(image_raw(641, 640, "rgb8", 1920, data))]),
        Case("over_max_pixels_full_data", [Template(image_raw(641, 640, "mono8", 640,
                                                              bytes(641 * 640)))], weight=0.1),
        Case("over_byte_cap_2MB", [Template(image_raw(1000, 700, "rgb8", 2100,
                                                      bytes(2_100_000)))], weight=0.05),
        Case("near_future_stamp_0.25s", [Template(v) for v in front_valid],
             stamp="future_0.25s"),
        *common_cases(rng, front_valid, [wrist_valid[0], js_plain.raw], Image),
    ]

    jpeg = jpeg_bytes(rgb())
    formats = ["jpeg", "png", "", "compressedDepth png", "формат", "f" * 3000]
    wrist = [
        Case("random_bytes", [Template(compressed_raw(rng.randbytes(rng.randrange(0, 20000)),
                                                      rng.choice(formats))) for _ in range(32)]),
        Case("png_signature_then_random", [Template(compressed_raw(
            b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randrange(0, 5000)))) for _ in range(16)]),
        Case("jpeg_soi_then_random", [Template(compressed_raw(
            b"\xff\xd8\xff" + rng.randbytes(rng.randrange(0, 5000)), "jpeg"))
            for _ in range(16)]),
        Case("png_truncated", [Template(compressed_raw(p[:rng.randrange(8, len(p))]))
                               for p in pngs * 2]),
        Case("jpeg_truncated", [Template(compressed_raw(jpeg[:rng.randrange(4, len(jpeg))],
                                                        "jpeg")) for _ in range(16)]),
        Case("png_corrupted", [Template(compressed_raw(bytes(
            b ^ (0xFF if rng.random() < 0.01 and i > 40 else 0) for i, b in enumerate(p))))
            for p in pngs]),
        Case("jpeg_corrupted", [Template(compressed_raw(bytes(
            b ^ (0x55 if rng.random() < 0.02 and i > 700 else 0) for i, b in enumerate(jpeg)),
            "jpeg")) for _ in range(8)]),
        Case("png_bomb_16000x16000", [Template(compressed_raw(png_bomb()))]),
        Case("png_hidden_idat_bomb", [Template(compressed_raw(png_hidden_bomb()))], weight=0.3),
        Case("png_ztxt_bomb", [Template(compressed_raw(png_text_bomb(pngs[0])))], weight=0.3),
        Case("png_header_size", [Template(compressed_raw(with_ihdr_size(pngs[0], h, w)))
                                 for h, w in ((0, 0), (2**31 - 1, 2**31 - 1), (1, 2**31 - 1),
                                              (SIDE, SIDE * 2))]),
        Case("jpeg_sof_size", [Template(compressed_raw(with_sof_size(jpeg, h, w), "jpeg"))
                               for h, w in ((65535, 65535), (0, 0), (1, 65535), (SIDE, 200))]),
        Case("odd_format_string", [Template(compressed_raw(pngs[0], f)) for f in formats]),
        Case("over_byte_cap_2MB", [Template(compressed_raw(rng.randbytes(2_100_000), "jpeg"))],
             weight=0.05),
        *common_cases(rng, wrist_valid, [front_valid[0], js_plain.raw], CompressedImage),
    ]

    big = 60_000  # joints: ~1.2 MB, over the node's 1 MiB joint-state cap
    nan, inf = float("nan"), float("inf")

    def one_bad(v: float) -> list[Template]:
        out = []
        for _ in range(6):
            values = wrong()
            values[rng.randrange(6)] = v
            out.append(joint_template(list(JOINTS), values))
        out.append(joint_template(list(JOINTS), [v] * 6))
        return out

    dropped = list(JOINTS)
    joints = [
        Case("nan", one_bad(nan)),
        Case("inf", one_bad(inf) + one_bad(-inf)),
        Case("huge_1e30", one_bad(1e30) + one_bad(-1e30) + one_bad(1e300)),
        Case("implausible_1e5", one_bad(1e5)),
        Case("missing_joint", [joint_template([j for j in JOINTS if j != d], wrong(5))
                               for d in dropped]),
        Case("empty", [Template(ser(JointState()))]),
        Case("unknown_names", [joint_template(n, wrong()) for n in (
            list("abcdef"), [f"сустав{i}" for i in range(6)], [""] * 6,
            [j.upper() for j in JOINTS])]),
        Case("duplicated_names", [joint_template([*JOINTS, "joint3"], wrong(7)),
                                  joint_template(["joint1", "joint1", *JOINTS[2:]], wrong()),
                                  joint_template([*JOINTS, *JOINTS], wrong(12))]),
        Case("names_positions_mismatch", [
            Template(ser(JointState(name=list(JOINTS), position=wrong(5)))),
            Template(ser(JointState(name=list(JOINTS), position=wrong(7)))),
            Template(ser(JointState(name=[], position=wrong(6)))),
            Template(ser(JointState(name=list(JOINTS), position=[])))]),
        Case("odd_velocity_effort_valid", [joint_template(list(JOINTS), [None] * 6,
                                                          velocity=(nan, 1.0, 2.0),
                                                          effort=(inf,) * 9)]),
        Case("over_byte_cap_1.2MB", [Template(ser(JointState(
            name=[f"j{i:05d}" for i in range(big)], position=[0.0] * big)))], weight=0.05),
        Case("many_extra_joints_1MB_valid", [extra_joints_template(rng, 43_000)
                                             for _ in range(40)],
             weight=0.2),
        # truncations of a message with wrong positions: a cut that still parsed would show
        *common_cases(rng, [joint_template(list(JOINTS), wrong()).raw for _ in range(4)],
                      [front_valid[0], wrist_valid[0]], JointState),
    ]
    # bad stamps carry wrong (but plausible) positions: using them would show as a violation
    for case in joints:
        if case.kind.startswith("stamp_") or case.kind == "cdr_big_endian_flag":
            case.templates = [joint_template(list(JOINTS), wrong()) for _ in range(8)]

    def task(text: str) -> Template:
        return Template(ser(String(data=text)))

    def raw_string(payload: bytes) -> Template:
        return Template(b"\x00\x01\x00\x00" + struct.pack("<I", len(payload) + 1) + payload
                        + b"\x00")

    tasks = [
        Case("1MB_ascii", [task("x" * 1_000_000)], stamp="keep", weight=0.02),
        Case("1MB_unicode", [task("é" * 500_000)], stamp="keep", weight=0.01),
        Case("over_max_task_chars", [task("y" * 2001)], stamp="keep"),
        Case("at_max_task_chars", [task("z" * 2000), task("é" * 2000)], stamp="keep"),
        Case("empty", [task("")], stamp="keep"),
        Case("unicode", [task(t) for t in (
            "把红色方块放进盒子 🤖", "\u202eRTL override", "zero\u200bwidth\u200bspaces",
            "e\u0301" * 300, "𝕳𝖊𝖑𝖑𝖔 " * 50, "\ufeffBOM", "🤖" * 500)], stamp="keep"),
        Case("control_characters", [task("\x01\x02\x1b[31mred\x07\x7f"), task(" \n\t\r " * 20)],
             stamp="keep"),
        Case("invalid_utf8", [raw_string(b"\xff\xfe\xfd"), raw_string(b"ok\xc3"),
                              raw_string(b"\xed\xa0\x80")], stamp="keep"),
        Case("length_past_end", [Template(b"\x00\x01\x00\x00\xff\xff\xff\x7fabc"),
                                 Template(b"\x00\x01\x00\x00\x10\x00\x00\x00ab")], stamp="keep"),
        *common_cases(rng, [task(VALID_TASK).raw], [js_plain.raw, front_valid[0]], String,
                      stamped=False),
    ]
    return Corpus({"front": front, "wrist": wrist, "joint_states": joints, "task": tasks},
                  valid, task_valid=task(VALID_TASK).raw)


# -- the node process -------------------------------------------------------------------------


def write_topic_map(workdir: Path) -> Path:
    data = yaml.safe_load((ROOT / "config" / "topic_map.yaml").read_text())
    for cam in data["cameras"].values():
        cam.update(height=SIDE, width=SIDE, type="Image")
    data["cameras"]["wrist"]["type"] = "CompressedImage"
    data["joint_states"]["joints"] = list(JOINTS)
    data["action"].update(joints=list(JOINTS), type="JointState")
    data["fps"] = int(RATE_HZ)
    path = workdir / "topic_map.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_node(ns: str, topic_map: Path, workdir: Path, n_action_steps: int
               ) -> subprocess.Popen:
    lower, upper = (f"[{','.join([str(v)] * 6)}]" for v in (-LIMIT, LIMIT))
    params = {"policy_path": "smolvla-tiny", "device": "cpu", "topic_map": str(topic_map),
              "joint_lower_limits": lower, "joint_upper_limits": upper,
              "max_step_delta": STEP, "control_rate_hz": RATE_HZ,
              "diagnostics_period_s": 0.2, "n_action_steps": n_action_steps}
    args = [sys.executable, "-m", "snapflow_ros", "policy_node", "--ros-args",
            "-r", f"__ns:={ns}", "-r", f"/diagnostics:={ns}/diagnostics"]
    for key, value in params.items():
        args += ["-p", f"{key}:={value}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    out = open(workdir / "node_stdout.log", "wb")  # noqa: SIM115
    err = open(workdir / "node_stderr.log", "wb")  # noqa: SIM115
    return subprocess.Popen(args, stdout=out, stderr=err, env=env)


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in out:
                    out.append(k)
                    todo.append(k)
    return out


def proc_info(pid: int) -> dict[str, Any] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines()
                if line.startswith("VmRSS:")), 0)
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {"rss_mb": rss / 1024, "cpu_s": cpu, "cmd": cmd[:160], "started": int(fields[19])}


def tree_sample(pid: int) -> dict[int, dict[str, Any]]:
    return {p: info for p in [pid, *descendants(pid)] if (info := proc_info(p)) is not None}


# -- the robot: publishers, listeners, logs ---------------------------------------------------


@dataclass
class Logs:
    commands: list = field(default_factory=list)  # (stamp, recv, names, positions)
    debug_commands: list = field(default_factory=list)
    chunks: list = field(default_factory=list)  # (stamp, recv, names, points)
    debug_chunks: list = field(default_factory=list)
    arm_reports: list = field(default_factory=list)  # (stamp, arm) of truthful joint states
    diag_times: list = field(default_factory=list)
    diag_messages: Counter = field(default_factory=Counter)
    diag_last: dict = field(default_factory=dict)


class Robot:
    """The fuzzer's ROS node: plays the arm and cameras, listens to everything the node says."""

    def __init__(self, ctx: Any, ns: str) -> None:
        self.node = node = rclpy.create_node("fuzz_robot", namespace=ns, context=ctx)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs = {
            "front": node.create_publisher(Image, "camera/front/image_raw",
                                           qos_profile_sensor_data),
            "wrist": node.create_publisher(CompressedImage, "camera/wrist/image_raw",
                                           qos_profile_sensor_data),
            "joint_states": node.create_publisher(JointState, "joint_states", 10),
            "task": node.create_publisher(String, "task", latched),
        }
        self.logs = Logs()
        self.arm: tuple[float, ...] = (0.0,) * 6
        self.lock = threading.Lock()
        sub = node.create_subscription
        sub(JointState, "joint_commands", self._on_command, 1000)
        sub(JointState, "policy_node/debug/command",
            lambda m: self.logs.debug_commands.append(self._command(m)), 1000)
        sub(JointTrajectory, "action_chunk", lambda m: self.logs.chunks.append(self._chunk(m)),
            200)
        sub(JointTrajectory, "policy_node/debug/action_chunk",
            lambda m: self.logs.debug_chunks.append(self._chunk(m)), 200)
        sub(DiagnosticArray, "diagnostics", self._on_diag, 100)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    @staticmethod
    def _command(msg: JointState) -> tuple:
        stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        return stamp, time.time_ns(), tuple(msg.name), tuple(msg.position)

    @staticmethod
    def _chunk(msg: JointTrajectory) -> tuple:
        stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        return (stamp, time.time_ns(), tuple(msg.joint_names),
                tuple(tuple(p.positions) for p in msg.points))

    def _on_command(self, msg: JointState) -> None:
        entry = self._command(msg)
        self.logs.commands.append(entry)
        names, pos = entry[2], entry[3]
        if set(JOINTS) <= set(names) and len(names) == len(pos):
            target = tuple(pos[names.index(j)] for j in JOINTS)
            if all(math.isfinite(v) for v in target):
                with self.lock:
                    self.arm = target  # the arm follows (a perfect position controller)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name != DIAG_NAME:
                continue
            self.logs.diag_times.append(time.monotonic())
            values = {kv.key: kv.value for kv in status.values}
            self.logs.diag_last = {"level": int.from_bytes(status.level, "little")
                                   if isinstance(status.level, bytes) else int(status.level),
                                   "message": status.message, **values}
            if status.message not in ("active", "inactive"):
                self.logs.diag_messages[status.message[:160]] += 1

    def publish(self, name: str, raw: bytes) -> None:
        self.pubs[name].publish(raw)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


# -- lifecycle and parameter chaos --------------------------------------------------------------


def param_msg(name: str, value: Any) -> ParameterMsg:
    v = ParameterValue()
    if isinstance(value, tuple) and value and value[0] == "typed":  # ("typed", type, value)
        _, kind, value = value
    elif isinstance(value, bool):
        kind = ParameterType.PARAMETER_BOOL
    elif isinstance(value, int):
        kind = ParameterType.PARAMETER_INTEGER
    elif isinstance(value, float):
        kind = ParameterType.PARAMETER_DOUBLE
    elif isinstance(value, str):
        kind = ParameterType.PARAMETER_STRING
    elif isinstance(value, list) and all(isinstance(x, str) for x in value) and value:
        kind = ParameterType.PARAMETER_STRING_ARRAY
    else:
        kind = ParameterType.PARAMETER_DOUBLE_ARRAY
    v.type = kind
    slot = {ParameterType.PARAMETER_BOOL: "bool_value",
            ParameterType.PARAMETER_INTEGER: "integer_value",
            ParameterType.PARAMETER_DOUBLE: "double_value",
            ParameterType.PARAMETER_STRING: "string_value",
            ParameterType.PARAMETER_DOUBLE_ARRAY: "double_array_value",
            ParameterType.PARAMETER_INTEGER_ARRAY: "integer_array_value",
            ParameterType.PARAMETER_STRING_ARRAY: "string_array_value"}[kind]
    setattr(v, slot, value)
    return ParameterMsg(name=name, value=v)


def valid_param(rng: random.Random) -> tuple[str, Any]:
    r = rng.random
    choices = [
        lambda: ("dry_run", r() < 0.5),
        lambda: ("joint_lower_limits", [-rng.uniform(0.05, 0.55) for _ in range(6)]),
        lambda: ("joint_upper_limits", [rng.uniform(0.05, 0.55) for _ in range(6)]),
        lambda: (rng.choice(["joint_lower_limits", "joint_upper_limits"]),
                 ("typed", ParameterType.PARAMETER_DOUBLE_ARRAY, [])),  # no limit on that side
        lambda: ("max_step_delta", rng.choice([0.01, 0.02, 0.05, 0.1, 0.0])),
        lambda: ("n_action_steps", rng.choice([0, 1, 3, 10, 20, 50, 1000])),
        lambda: ("replan_lead_steps", rng.randrange(0, 8)),
        lambda: ("blend_steps", rng.randrange(0, 6)),
        lambda: ("num_steps", rng.choice([0, 1, 2, 10])),
        lambda: ("max_obs_age_s", rng.choice([0.1, 0.2, 0.3, 0.5])),
        lambda: ("max_obs_skew_s", rng.choice([0.05, 0.1, 0.3])),
        lambda: ("future_tolerance_s", rng.choice([0.0, 0.1, 0.3, 0.5])),
        lambda: ("max_abs_state", rng.choice([10.0, 1e4, 1e6])),
        lambda: ("task", rng.choice(["pick up the red cube", "reach the target", "🤖 reach"])),
    ]
    return rng.choice(choices)()


INVERTING = (("joint_lower_limits", [0.9] * 6), ("joint_upper_limits", [-0.9] * 6))


def invalid_param(rng: random.Random) -> tuple[str, Any]:
    """An invalid value whatever the other parameters are (see INVERTING for the others)."""
    nan, inf = float("nan"), float("inf")
    lim = rng.choice(["joint_lower_limits", "joint_upper_limits"])
    choices = [
        (lim, [nan] * 6), (lim, [0.1, nan, 0.1, 0.1, 0.1, 0.1]), (lim, [inf] * 6),
        (lim, [-inf] * 6), (lim, [0.1] * 5), (lim, [0.1] * 7),
        (lim, ("typed", ParameterType.PARAMETER_INTEGER_ARRAY, [1] * 6)),
        (lim, "half"), ("max_step_delta", -0.05), ("max_step_delta", nan),
        ("max_step_delta", inf), ("max_step_delta", "fast"), ("max_step_delta", 1),
        ("max_obs_age_s", -1.0), ("max_obs_age_s", 0.0), ("max_obs_age_s", 1000.0),
        ("max_obs_skew_s", nan), ("future_tolerance_s", -0.1), ("num_steps", -1),
        ("num_steps", 101), ("n_action_steps", -5), ("replan_lead_steps", 5000),
        ("blend_steps", -1), ("max_abs_state", 0.0), ("max_abs_state", inf),
        ("dry_run", "yes"), ("dry_run", 1), ("task", "t" * 5000), ("task", 42),
        ("policy_path", "elsewhere"), ("device", "cuda"), ("control_rate_hz", 1000.0),
        ("topic_map", "/etc/passwd"), ("max_image_scale", 1.0), ("no_such_parameter", 1.0),
        ("autostart", False), ("use_sim_time", "maybe"),
    ]
    return rng.choice(choices)


@dataclass
class Op:
    label: str
    sent: int
    params: list[tuple[str, Any, bool]] = field(default_factory=list)  # name, value, valid
    atomic: bool = False
    transition: int | None = None
    future: Any = None


class Control:
    """Lifecycle transitions and parameter sets, one request at a time; keeps the timeline of
    the parameters in force: (request sent, response received, state)."""

    def __init__(self, robot: Robot, rng: random.Random, n_action_steps: int) -> None:
        node = robot.node
        self.rng, self.n_action_steps = rng, n_action_steps
        self.change = node.create_client(ChangeState, "policy_node/change_state")
        self.get_state = node.create_client(GetState, "policy_node/get_state")
        self.set = node.create_client(SetParameters, "policy_node/set_parameters")
        self.set_atomic = node.create_client(SetParametersAtomically,
                                             "policy_node/set_parameters_atomically")
        self.timeline: list[tuple[int, int, Limits]] = [(-1, -1, DEFAULTS)]
        self.events: list[tuple[int, int, str]] = []  # (sent, answered, what) of effective calls
        self.pending: Op | None = None
        self.stats: Counter = Counter()
        self.invalid_accepted: list[dict] = []
        self.valid_refused: Counter = Counter()
        self.next_op = 0.0

    def ready(self) -> bool:
        return all(c.service_is_ready() for c in (self.change, self.get_state, self.set,
                                                  self.set_atomic))

    @property
    def state(self) -> Limits:
        return self.timeline[-1][2]

    def poll(self, fuzzing: bool) -> None:
        """Finish a pending call; with ``fuzzing``, start the next random one when due."""
        op = self.pending
        if op is not None and op.future.done():
            self._finish(op, time.time_ns())
            self.pending = None
            self.next_op = time.monotonic() + self.rng.uniform(0.02, 0.4)
        if fuzzing and self.pending is None and time.monotonic() >= self.next_op:
            self._start_random()

    def _start_random(self) -> None:
        rng = self.rng
        x = rng.random()
        if x < 0.3:
            tid = (Transition.TRANSITION_DEACTIVATE if rng.random() < 0.55
                   else Transition.TRANSITION_ACTIVATE)
            if rng.random() < 0.03:
                tid = rng.choice([99, 255, Transition.TRANSITION_CONFIGURE])  # invalid here
            self.send_transition(tid)
            return
        state = self.state
        if rng.random() < 0.08 and state.lower is not None and state.upper is not None:
            # a lower limit above the upper one (or the reverse): invalid only while the other
            # side is limited, so sent alone
            name, value = rng.choice(INVERTING)
            self.send_params([(name, value, False)], atomic=rng.random() < 0.5)
            return
        n = rng.choice([1, 1, 1, 2, 3])
        params: list[tuple[str, Any, bool]] = []
        for _ in range(n):
            valid = rng.random() < 0.6
            name, value = valid_param(rng) if valid else invalid_param(rng)
            if name not in {p[0] for p in params}:  # a repeated name: the last value wins
                params.append((name, value, valid))
        self.send_params(params, atomic=rng.random() < 0.4)

    def send_transition(self, tid: int) -> Op:
        op = Op(f"transition_{tid}", time.time_ns(), transition=tid)
        op.future = self.change.call_async(ChangeState.Request(transition=Transition(id=tid)))
        self.pending = op
        self.stats[f"transition_{tid}_sent"] += 1
        return op

    def send_params(self, params: list[tuple[str, Any, bool]], atomic: bool) -> Op:
        msgs = [param_msg(n, v) for n, v, _ in params]
        op = Op("set_atomic" if atomic else "set", time.time_ns(), params, atomic)
        if atomic:
            op.future = self.set_atomic.call_async(SetParametersAtomically.Request(
                parameters=msgs))
        else:
            op.future = self.set.call_async(SetParameters.Request(parameters=msgs))
        self.pending = op
        self.stats[f"{op.label}_sent"] += 1
        return op

    def _finish(self, op: Op, answered: int) -> None:
        result = op.future.result()
        if op.transition is not None:
            ok = bool(result.success)
            self.stats[f"transition_{op.transition}_{'ok' if ok else 'refused'}"] += 1
            if ok:
                self.events.append((op.sent, answered, op.label))
            return
        outcomes = ([result.result] * len(op.params) if op.atomic
                    else list(result.results))
        state, changed = self.state, False
        for (name, value, valid), outcome in zip(op.params, outcomes, strict=False):
            ok = bool(outcome.successful)
            self.stats[f"param_{'valid' if valid else 'invalid'}_{'ok' if ok else 'refused'}"] += 1
            if ok and not valid:
                self.invalid_accepted.append({
                    "call": op.label, "name": name, "value": repr(value)[:80],
                    "whole_call": [(n, repr(v)[:60]) for n, v, _ in op.params]})
            if not ok and valid and (not op.atomic or all(v for _, _, v in op.params)):
                self.valid_refused[f"{name}: {outcome.reason[:100]}"] += 1
            if ok:
                new = apply(state, name, value)
                if op.atomic:
                    state = new
                else:  # set_parameters applies each parameter on its own, in order
                    self.timeline.append((op.sent, answered, new))
                    state = new
                changed = True
        if op.atomic and changed:
            self.timeline.append((op.sent, answered, state))
        if changed:
            self.events.append((op.sent, answered, op.label))

    def wait(self, timeout_s: float = 10.0) -> bool:
        end = time.monotonic() + timeout_s
        while self.pending is not None and time.monotonic() < end:
            self.poll(False)
            time.sleep(0.005)
        if self.pending is not None:  # unanswered: it may or may not have applied
            self.stats["unanswered"] += 1
            op, self.pending = self.pending, None
            for name, value, _ in op.params:
                self.timeline.append((op.sent, 2**62, apply(self.state, name, value)))
            return False
        return True

    def call(self, client: Any, request: Any, timeout_s: float = 10.0) -> Any:
        future = client.call_async(request)
        end = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < end:
            time.sleep(0.005)
        return future.result() if future.done() else None

    def restore(self) -> dict[str, Any]:
        """Defaults (atomically) and active; returns what it did."""
        self.wait()
        sent = time.time_ns()
        defaults = [param_msg(n, v) for n, v in (
            ("joint_lower_limits", [-LIMIT] * 6), ("joint_upper_limits", [LIMIT] * 6),
            ("max_step_delta", STEP), ("dry_run", False),
            ("n_action_steps", self.n_action_steps), ("replan_lead_steps", 2),
            ("blend_steps", 0), ("num_steps", 0), ("max_obs_age_s", 0.2),
            ("max_obs_skew_s", 0.1), ("future_tolerance_s", 0.3), ("max_abs_state", 1e4))]
        result = self.call(self.set_atomic, SetParametersAtomically.Request(
            parameters=defaults))
        answered = time.time_ns()
        ok = result is not None and result.result.successful
        if ok:
            self.timeline.append((sent, answered, DEFAULTS))
            self.events.append((sent, answered, "restore"))
        else:
            self.stats["restore_failed"] += 1
        state = self.call(self.get_state, GetState.Request())
        activated = False
        if state is not None and state.current_state.label != "active":
            t0 = time.time_ns()
            r = self.call(self.change, ChangeState.Request(
                transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
            activated = r is not None and r.success
            if activated:
                self.events.append((t0, time.time_ns(), "restore_activate"))
            else:
                self.stats["restore_activate_failed"] += 1
        return {"defaults": ok, "activated": activated,
                "state": None if state is None else state.current_state.label}


# -- the checks -----------------------------------------------------------------------------------


class Checker:
    """The safety invariant on commands and chunks, from the logs (see the module docstring)."""

    def __init__(self, logs: Logs, control: Control | None) -> None:
        self.logs = logs
        timeline = control.timeline if control else [(-1, -1, DEFAULTS)]
        self.tl_sent = [s for s, _, _ in timeline]
        self.tl_answered = [r for _, r, _ in timeline]
        self.tl_states = [st for _, _, st in timeline]
        events = sorted(control.events) if control else []
        self.ev_sent = [s for s, _, _ in events]
        self.ev_answered = [r for _, r, _ in events]
        arm = sorted(logs.arm_reports)
        self.arm_stamps = [s for s, _ in arm]
        self.arm_pos = np.array([p for _, p in arm], dtype=np.float64).reshape(-1, 6)
        self.debug_stamps = sorted(c[0] for c in logs.debug_commands)

    def states(self, a: int, b: int) -> list[Limits]:
        """Every parameter state that may have been in force at some time in [a, b]."""
        # state k is certainly in force (or replaced) once its call was answered
        lo = max((k for k in range(len(self.tl_answered)) if self.tl_answered[k] <= a),
                 default=0)
        hi = max(lo, bisect.bisect_right(self.tl_sent, b) - 1)
        return self.tl_states[lo:hi + 1]

    def event_between(self, a: int, b: int) -> bool:
        i = bisect.bisect_right(self.ev_sent, b) - 1
        return any(self.ev_answered[k] >= a for k in range(max(0, i - 3), i + 1))

    def arm_near(self, a: int, b: int) -> np.ndarray:
        i, j = bisect.bisect_left(self.arm_stamps, a), bisect.bisect_right(self.arm_stamps, b)
        return self.arm_pos[i:j]

    @staticmethod
    def within(x: np.ndarray, refs: np.ndarray, step: float) -> bool:
        if step <= 0:
            return True
        if refs.size == 0:
            return False
        return bool(np.any(np.max(np.abs(refs - x), axis=1) <= step + TOL))

    def commands(self) -> dict[str, Any]:
        bad: Counter = Counter()
        examples: list[dict] = []
        strict = lenient = 0
        prev: tuple | None = None
        for stamp, _recv, names, pos in sorted(self.logs.commands):
            x = np.asarray(pos, dtype=np.float64)
            kind = None
            if tuple(names) != JOINTS or x.shape != (6,):
                kind = "names_or_length"
            elif not np.all(np.isfinite(x)):
                kind = "nonfinite"
            else:
                states = self.states(stamp - MS, stamp + TICK_SLACK_NS)
                inside = [s for s in states if s.inside(x)]
                if not inside:
                    kind = "outside_limits"
                else:
                    p = None if prev is None else np.asarray(prev[1], dtype=np.float64)
                    consecutive = (prev is not None and stamp - prev[0] < 1.5 * DT_NS
                                   and not self._debug_between(prev[0], stamp)
                                   and not self.event_between(prev[0] - MS,
                                                              stamp + TICK_SLACK_NS))
                    if consecutive:
                        strict += 1
                        if not any(self.within(x, p[None], s.step) for s in inside):
                            kind = "step_from_previous_command"
                    else:
                        lenient += 1
                        ok = False
                        for s in inside:
                            refs = self.arm_near(stamp - int(s.max_age_s * NS) - MS,
                                                 stamp + int(s.future_tol_s * NS) + MS)
                            if p is not None:
                                refs = np.vstack([refs, p[None]])
                            ok = ok or self.within(x, refs, s.step)
                        if not ok:
                            kind = "step_from_measured_or_previous"
            if kind:
                bad[kind] += 1
                if len(examples) < 10:
                    examples.append({"kind": kind, "stamp_ns": stamp, "command": list(pos),
                                     "previous": None if prev is None else list(prev[1]),
                                     "previous_stamp_ns": None if prev is None else prev[0]})
            prev = (stamp, pos)
        return {"checked": len(self.logs.commands), "strict_checks": strict,
                "measured_checks": lenient, "violations": sum(bad.values()),
                "by_kind": dict(bad), "examples": examples}

    def _debug_between(self, a: int, b: int) -> bool:
        i = bisect.bisect_right(self.debug_stamps, a)
        return i < len(self.debug_stamps) and self.debug_stamps[i] < b

    def chunks(self, entries: list, robot: bool) -> dict[str, Any]:
        bad: Counter = Counter()
        examples: list[dict] = []
        cmd_log = sorted([*self.logs.commands, *self.logs.debug_commands])
        cmd_stamps = [c[0] for c in cmd_log]
        for stamp, recv, names, points in entries:
            pts = np.asarray(points, dtype=np.float64)
            kind = None
            if tuple(names) != JOINTS or pts.ndim != 2 or pts.shape[1:] != (6,) or not len(pts):
                kind = "names_or_shape"
            elif not np.all(np.isfinite(pts)):
                kind = "nonfinite"
            else:
                # computed after its observation arrived; a tolerated future stamp (fuzzed
                # "near future") is not when that was: then take the last 0.3 s before receipt
                since = stamp - MS if stamp <= recv else recv - 300 * MS
                states = self.states(since, recv)
                inside = [s for s in states if all(s.inside(p) for p in pts)]
                if not inside:
                    kind = "outside_limits"
                elif robot:
                    i = bisect.bisect_left(cmd_stamps, stamp - NS)
                    j = bisect.bisect_right(cmd_stamps, recv)
                    cmds = np.array([c[3] for c in cmd_log[i:j] if len(c[3]) == 6],
                                    dtype=np.float64).reshape(-1, 6)
                    ok_steps = ok_first = False
                    for s in inside:
                        steps = s.step <= 0 or bool(np.all(np.abs(np.diff(pts, axis=0))
                                                           <= s.step + TOL))
                        refs = np.vstack([cmds, self.arm_near(stamp - NS, recv)])
                        first = self.within(pts[0], refs, s.step)
                        ok_steps, ok_first = ok_steps or steps, ok_first or (steps and first)
                    if not ok_steps:
                        kind = "step_between_points"
                    elif not ok_first:
                        kind = "first_point_step"
            if kind:
                bad[kind] += 1
                if len(examples) < 5:
                    examples.append({"kind": kind, "stamp_ns": stamp, "received_ns": recv,
                                     "points": [list(p) for p in points[:3]]})
        return {"checked": len(entries), "violations": sum(bad.values()),
                "by_kind": dict(bad), "examples": examples}

    def debug_commands(self) -> dict[str, Any]:
        bad: Counter = Counter()
        for stamp, _, names, pos in self.logs.debug_commands:
            x = np.asarray(pos, dtype=np.float64)
            if tuple(names) != JOINTS or x.shape != (6,) or not np.all(np.isfinite(x)):
                bad["nonfinite_or_shape"] += 1
            elif not any(s.inside(x) for s in self.states(stamp - MS, stamp + TICK_SLACK_NS)):
                bad["outside_limits"] += 1
        return {"checked": len(self.logs.debug_commands), "violations": sum(bad.values()),
                "by_kind": dict(bad)}


# -- the run --------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


class Fuzzer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.sent_malformed: dict[str, Counter] = {n: Counter() for n in INPUTS}
        self.sent_valid: dict[str, Counter] = {n: Counter() for n in INPUTS}
        self.recovery: list[float] = []
        self.recovery_timeouts = 0
        self.restores: list[dict] = []
        self.operator_resets = 0
        self.crashed: dict[str, Any] | None = None
        self.capped = False
        self.rss_samples: list[tuple[float, float]] = []
        self.known_pids: dict[int, int] = {}  # pid -> start time (clock ticks after boot)

    # one control period of traffic
    def frame(self, quotas: dict[str, int] | None) -> None:
        rng, robot, now = self.rng, self.robot, time.time_ns()
        with robot.lock:
            arm = robot.arm
        items = []
        for name in ("front", "wrist", "joint_states"):
            cases = self.corpus.valid[name]
            case = cases[0] if rng.random() < 0.85 else rng.choice(cases[1:])
            items.append((name, case, True))
        for name, k in (quotas or {}).items():
            items += [(name, self.corpus.pick(rng, name), False) for _ in range(k)]
        rng.shuffle(items)
        if quotas and rng.random() < 0.5:  # valid last: chunks (and commands) keep flowing
            items.sort(key=lambda item: item[2])
        for name, case, valid in items:
            raw, truthful = case.render(rng, now, arm)
            robot.publish(name, raw)
            (self.sent_valid if valid else self.sent_malformed)[name][case.kind] += 1
            if truthful and name == "joint_states":
                robot.logs.arm_reports.append((now, arm))

    def alive(self) -> bool:
        code = self.proc.poll()
        if code is not None and self.crashed is None:
            self.crashed = {"exit_code": code, "at_s": round(time.monotonic() - self.t0, 3)}
        return code is None

    def run_frames(self, seconds: float | None, until: Any = None,
                   quotas: Any = None) -> bool:
        """Publish frames at 30 Hz until ``until()`` (True) or ``seconds`` pass (False)."""
        period = 1.0 / RATE_HZ
        end = None if seconds is None else time.monotonic() + seconds
        next_t = time.monotonic()
        while self.alive():
            q = quotas() if quotas else None
            if q is False:
                return True
            self.frame(q)
            if self.control is not None:
                self.control.poll(fuzzing=quotas is not None and not self.args.no_control)
            if until is not None and until():
                return True
            now = time.monotonic()
            if end is not None and now >= end:
                return False
            if now - self.last_rss >= 1.0:
                self.sample_rss()
            next_t = max(next_t + period, now)
            time.sleep(max(0.0, next_t - time.monotonic()))
        return False

    def sample_rss(self) -> dict[int, dict]:
        self.last_rss = time.monotonic()
        sample = tree_sample(self.proc.pid)
        self.known_pids.update({pid: info["started"] for pid, info in sample.items()})
        self.rss_samples.append((round(self.last_rss - self.t0, 2),
                                 round(sum(i["rss_mb"] for i in sample.values()), 1)))
        return sample

    def wait_fresh_chunk(self, since_ns: int, timeout_s: float) -> float | None:
        """Seconds until a chunk from input stamped >= since_ns arrives on action_chunk."""
        logs, start = self.robot.logs, time.monotonic()
        seen = len(logs.chunks)

        def fresh() -> bool:
            nonlocal seen
            for c in logs.chunks[seen:]:
                if c[0] >= since_ns:
                    return True
            seen = len(logs.chunks)
            return False

        if self.run_frames(timeout_s, until=fresh):
            return time.monotonic() - start
        return None

    def restore(self) -> None:
        """After a burst: a valid task, the defaults, active; the operator steers an arm that
        unlimited commands took far outside the limits back in."""
        self.robot.publish("task", self.corpus.task_valid)
        self.sent_valid["task"]["restore"] += 1
        if self.control is not None:
            self.restores.append(self.control.restore())
        with self.robot.lock:
            arm = self.robot.arm
            if any(abs(v) > LIMIT + 0.5 * STEP for v in arm):
                self.robot.arm = tuple(float(np.clip(v, -LIMIT, LIMIT)) for v in arm)
                self.operator_resets += 1

    def run(self) -> dict[str, Any]:
        args = self.args
        self.t0 = self.last_rss = time.monotonic()
        cpu0 = os.times()
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fuzz_node_"))
        workdir.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        self.corpus = build_corpus(self.rng)
        corpus_s = time.monotonic() - t
        topic_map = write_topic_map(workdir)
        ns = f"/fuzz{args.seed % 1000:03d}_{os.getpid()}"
        self.proc = start_node(ns, topic_map, workdir, args.n_action_steps)
        ctx = rclpy.Context()
        ctx.init(args=[])  # no signal handlers: Ctrl-C stops the run, the node is stopped below
        self.robot = Robot(ctx, ns)
        self.control = Control(self.robot, random.Random(args.seed + 1), args.n_action_steps)
        phases: dict[str, float] = {"corpus_s": round(corpus_s, 2)}
        report: dict[str, Any] = {}
        try:
            self._fuzz(phases)
        finally:
            report["node"] = self._stop_node(workdir)
            self.robot.close()
            ctx.try_shutdown()
        cpu1 = os.times()
        report.update(self._report(workdir, ns, phases, cpu1.user + cpu1.system
                                   - cpu0.user - cpu0.system))
        return report

    def _fuzz(self, phases: dict[str, float]) -> None:
        args, robot = self.args, self.robot
        start = time.monotonic()
        subs_ready = lambda: (all(p.get_subscription_count() > 0  # noqa: E731
                                  for p in robot.pubs.values()) and self.control.ready())
        while not subs_ready():
            if not self.alive() or time.monotonic() - start > args.startup_timeout:
                phases["startup_failed"] = True
                return
            time.sleep(0.05)
        robot.publish("task", self.corpus.task_valid)
        if self.wait_fresh_chunk(0, 60.0) is None:
            phases["no_first_chunk"] = True
            return
        phases["startup_s"] = round(time.monotonic() - start, 2)
        self.run_frames(2.0)
        self.rss_start = self.sample_rss()
        self.chunks_before = len(robot.logs.chunks)

        n, per_burst = args.messages, args.burst
        bursts = max(3, math.ceil(n / per_burst))
        fuzz_start = time.monotonic()
        carry = dict.fromkeys(INPUTS, 0.0)
        for b in range(bursts):
            if time.monotonic() - fuzz_start >= args.seconds or not self.alive():
                self.capped = self.alive()
                break
            left = dict.fromkeys(INPUTS, (n * (b + 1)) // bursts - (n * b) // bursts)
            per_frame = args.rate / RATE_HZ

            def quotas(left: dict[str, int] = left, per_frame: float = per_frame
                       ) -> dict[str, int] | bool:
                if not any(left.values()):
                    return False
                if time.monotonic() - fuzz_start >= args.seconds:
                    self.capped = True
                    return False
                q = {}
                for name in INPUTS:
                    carry[name] += per_frame
                    k = min(left[name], int(carry[name]))
                    carry[name] -= k
                    left[name] -= k
                    q[name] = k
                return q

            self.run_frames(None, quotas=quotas)
            if not self.alive():
                break
            self.restore()
            since = time.time_ns()
            took = self.wait_fresh_chunk(since, args.recovery_timeout)
            if took is None:
                self.recovery_timeouts += 1
            else:
                self.recovery.append(took)
        phases["fuzz_s"] = round(time.monotonic() - fuzz_start, 2)
        if self.alive():
            self.restore()
            self.chunks_after = len(robot.logs.chunks)
            self.final_recovery = self.wait_fresh_chunk(time.time_ns(), args.recovery_timeout)
            self.run_frames(1.0)
            self.chunks_after = len(robot.logs.chunks) - self.chunks_after
            self.rss_end = self.sample_rss()

    def _stop_node(self, workdir: Path) -> dict[str, Any]:
        proc = self.proc
        self.known_pids.update({pid: info["started"] for pid in descendants(proc.pid)
                                if (info := proc_info(pid)) is not None})
        info: dict[str, Any] = {"pid": proc.pid, "exited_during_run": self.crashed}
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                info["shutdown_rc"] = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                info["shutdown_hung"] = True
                proc.kill()
                info["shutdown_rc"] = proc.wait()
        else:
            info["shutdown_rc"] = proc.returncode
        time.sleep(0.5)
        leftover = []
        end = time.monotonic() + 5.0
        for pid, started in sorted(self.known_pids.items()):
            if pid == proc.pid:
                continue
            same = lambda p=pid, s=started: (  # noqa: E731 - still the node's descendant
                (i := proc_info(p)) is not None and i["started"] == s)
            while same() and time.monotonic() < end:
                time.sleep(0.1)
            if same():
                leftover.append({"pid": pid, "cmd": proc_info(pid)["cmd"]})
                os.kill(pid, signal.SIGKILL)  # a process the node left behind
        info["descendants_left_running"] = leftover
        text = b""
        for name in ("node_stderr.log", "node_stdout.log"):
            text += (workdir / name).read_bytes()
        decoded = text.decode(errors="replace")
        info["tracebacks"] = decoded.count("Traceback (most recent call last)")
        info["error_lines"] = sum("[ERROR]" in ln for ln in decoded.splitlines())
        info["fatal_signs"] = sum(decoded.count(s) for s in (
            "Segmentation fault", "core dumped", "Fatal Python error", "Aborted"))
        info["stderr_path"] = str(workdir / "node_stderr.log")
        info["stderr_bytes"] = len((workdir / "node_stderr.log").read_bytes())
        return info

    def _report(self, workdir: Path, ns: str, phases: dict, fuzzer_cpu_s: float
                ) -> dict[str, Any]:
        args, logs = self.args, self.robot.logs
        checker = Checker(logs, self.control)
        commands = checker.commands()
        chunks = checker.chunks(logs.chunks, robot=True)
        debug = {"commands": checker.debug_commands(),
                 "chunks": checker.chunks(logs.debug_chunks, robot=False)}
        rss: dict[str, Any] = {}
        start, end = getattr(self, "rss_start", None), getattr(self, "rss_end", None)
        if start:
            total_start = sum(i["rss_mb"] for i in start.values())
            rss["start_mb"] = round(total_start, 1)
            rss["per_process_start_mb"] = {str(p): round(i["rss_mb"], 1) for p, i in start.items()}
        if end:
            rss["end_mb"] = round(sum(i["rss_mb"] for i in end.values()), 1)
            rss["per_process_end_mb"] = {str(p): round(i["rss_mb"], 1) for p, i in end.items()}
            rss["node_cpu_s"] = round(sum(i["cpu_s"] for i in end.values()), 1)
        if start and end:
            rss["growth_mb"] = round(rss["end_mb"] - rss["start_mb"], 1)
        if self.rss_samples:
            rss["peak_mb"] = max(v for _, v in self.rss_samples)
        gaps = np.diff(logs.diag_times) if len(logs.diag_times) > 1 else np.array([0.0])
        sent = {name: {"malformed": sum(self.sent_malformed[name].values()),
                       "valid": sum(self.sent_valid[name].values()),
                       "malformed_by_kind": dict(sorted(self.sent_malformed[name].items())),
                       "valid_by_kind": dict(sorted(self.sent_valid[name].items()))}
                for name in INPUTS}
        control = None
        if self.control is not None and not args.no_control:
            c = self.control
            control = {"calls": dict(sorted(c.stats.items())),
                       "invalid_accepted": len(c.invalid_accepted),
                       "invalid_accepted_examples": c.invalid_accepted[:10],
                       "valid_refused": dict(c.valid_refused.most_common(10)),
                       "parameter_states": len(c.timeline),
                       "restores_failed": sum(not r["defaults"] for r in self.restores)}
        recovery = {"bursts": len(self.recovery) + self.recovery_timeouts,
                    "p50_s": percentile(self.recovery, 50), "p99_s": percentile(self.recovery, 99),
                    "max_s": round(max(self.recovery), 3) if self.recovery else None,
                    "stalls": self.recovery_timeouts,
                    "final_s": None if getattr(self, "final_recovery", None) is None
                    else round(self.final_recovery, 3),
                    "chunks_after_bursts": getattr(self, "chunks_after", 0)}
        return {
            "config": {"messages_per_input": args.messages, "burst": args.burst,
                       "rate_per_input_hz": args.rate, "seconds_cap": args.seconds,
                       "seed": args.seed, "control_fuzz": not args.no_control,
                       "n_action_steps": args.n_action_steps, "namespace": ns,
                       "workdir": str(workdir), "capped_by_seconds": self.capped},
            "phases": {**phases, "total_s": round(time.monotonic() - self.t0, 2),
                       "fuzzer_cpu_s": round(fuzzer_cpu_s, 1)},
            "sent": sent,
            "received": {"chunks": len(logs.chunks), "commands": len(logs.commands),
                         "debug_chunks": len(logs.debug_chunks),
                         "debug_commands": len(logs.debug_commands),
                         "diagnostics": len(logs.diag_times),
                         "chunks_during_fuzz": len(logs.chunks) - getattr(
                             self, "chunks_before", 0)},
            "violations": commands,
            "chunk_violations": chunks,
            "debug_violations": debug,
            "recovery": recovery,
            "rss": rss,
            "control": control,
            "operator_resets": self.operator_resets,
            "diagnostics": {"max_gap_s": round(float(gaps.max()), 3),
                            "last": logs.diag_last,
                            "non_ok_messages": dict(logs.diag_messages.most_common(25))},
        }


def summarize(report: dict[str, Any]) -> tuple[list[str], bool]:
    node, v, c = report["node"], report["violations"], report["chunk_violations"]
    rec, rss, ctl = report["recovery"], report["rss"], report["control"]
    failures = []
    if node.get("exited_during_run"):
        failures.append(f"node exited during the run: {node['exited_during_run']}")
    if node.get("shutdown_rc") not in (0, None) and not node.get("exited_during_run"):
        failures.append(f"node exit code {node['shutdown_rc']} on SIGINT")
    if node.get("shutdown_hung"):
        failures.append("node did not stop within 20 s of SIGINT")
    if node["tracebacks"] or node["fatal_signs"]:
        failures.append(f"{node['tracebacks']} tracebacks, {node['fatal_signs']} fatal signs in "
                        f"the node's output")
    if node["descendants_left_running"]:
        failures.append(f"processes left running: {node['descendants_left_running']}")
    if v["violations"] or c["violations"]:
        failures.append(f"{v['violations']} command and {c['violations']} chunk violations")
    dbg = report["debug_violations"]
    if dbg["commands"]["violations"] or dbg["chunks"]["violations"]:
        failures.append("dry-run command/chunk violations")
    if rec["stalls"] or rec["final_s"] is None:
        failures.append(f"{rec['stalls']} recovery stalls (final recovery: {rec['final_s']})")
    if ctl and ctl["invalid_accepted"]:
        failures.append(f"{ctl['invalid_accepted']} invalid parameter sets accepted")
    if report["phases"].get("startup_failed") or report["phases"].get("no_first_chunk"):
        failures.append("the node never became ready")
    sent = report["sent"]
    lines = [
        "fuzz_node: " + ("OK" if not failures else "FAILED"),
        "  sent malformed: " + ", ".join(f"{k} {s['malformed']}" for k, s in sent.items())
        + "; valid: " + ", ".join(f"{k} {s['valid']}" for k, s in sent.items() if k != "task"),
        f"  received: {report['received']['chunks']} chunks, {report['received']['commands']} "
        f"commands ({v['strict_checks']} strict, {v['measured_checks']} from-measured checks), "
        f"{report['received']['debug_commands']} dry-run commands",
        f"  violations: commands {v['violations']}, chunks {c['violations']}; tracebacks "
        f"{node['tracebacks']}; exit {node.get('shutdown_rc')}",
        f"  recovery over {rec['bursts']} bursts: p50 {rec['p50_s']} s, p99 {rec['p99_s']} s, "
        f"max {rec['max_s']} s, stalls {rec['stalls']}",
        f"  RSS node+children: {rss.get('start_mb')} -> {rss.get('end_mb')} MB "
        f"(growth {rss.get('growth_mb')}, peak {rss.get('peak_mb')})",
    ]
    if ctl:
        lines.append(f"  control: {ctl['calls']}; invalid accepted {ctl['invalid_accepted']}")
    lines.append(f"  time: {report['phases']}")
    lines += [f"  FAIL: {f}" for f in failures]
    for example in (v["examples"] + c["examples"])[:2]:
        lines.append(f"  violation: {json.dumps(example)[:400]}")
    return lines, not failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=10_000, help="malformed messages per input")
    p.add_argument("--seconds", type=float, default=600.0,
                   help="stop starting bursts after this long (startup excluded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the JSON report here too")
    p.add_argument("--rate", type=float, default=120.0,
                   help="malformed messages per input and second during bursts")
    p.add_argument("--burst", type=int, default=250, help="malformed messages per input and burst")
    p.add_argument("--no-control", action="store_true",
                   help="no lifecycle transitions or parameter sets during bursts")
    p.add_argument("--recovery-timeout", type=float, default=10.0,
                   help="seconds to wait for a fresh chunk after a burst (longer: a stall)")
    p.add_argument("--n-action-steps", type=int, default=10,
                   help="the node's n_action_steps (small: frequent chunks, more decoding)")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--workdir", type=Path, help="topic map and node logs (default: a temp dir)")
    p.add_argument("--dump", type=Path, help="write everything received and the parameter "
                                             "timeline here (JSON), to study a violation")
    args = p.parse_args()
    if args.messages < 1 or args.rate <= 0 or args.burst < 1:
        p.error("--messages, --rate and --burst must be positive")
    fuzzer = Fuzzer(args)
    report = fuzzer.run()
    if args.dump:
        logs, control = fuzzer.robot.logs, fuzzer.control
        args.dump.write_text(json.dumps({
            "commands": logs.commands, "debug_commands": logs.debug_commands,
            "chunks": logs.chunks, "debug_chunks": logs.debug_chunks,
            "arm_reports": logs.arm_reports,
            "timeline": [(s, r, vars(st)) for s, r, st in control.timeline],
            "events": control.events}, default=str))
    lines, ok = summarize(report)
    report["ok"] = ok
    text = json.dumps(report, indent=1, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)  # noqa: T201
    print("\n".join(lines), file=sys.stderr)  # noqa: T201
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
