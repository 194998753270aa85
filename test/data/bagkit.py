"""Synthetic bags with known content for the converter tests, and a brute-force sync oracle
(a plain module with a unique name, imported by the tests in this folder).

Every message encodes its own index: a camera image is filled with a per-index colour, joint
positions are ``index + joint/10``; so a dataset row tells which message filled it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snapflow_ros.data import bag_messages as bm

T0 = 1_700_000_000 * 10**9  # a wall-clock-like epoch, ns
MS = 1_000_000
H, W = 12, 16
JOINTS = ["a", "b", "c"]


def colour(cam: int, i: int) -> np.ndarray:
    """The distinct RGB image of message i of camera cam (0 front, 1 wrist)."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = (17 * i + 3) % 251
    img[..., 1] = (5 * i + 60 * cam + 7) % 241
    img[..., 2] = 200 - cam * 100
    img[: H // 2, : W // 2, 2] = 40  # some structure, so nothing is a flat plane
    return img


def joints(i: int, offset: float = 0.0) -> np.ndarray:
    return np.arange(len(JOINTS)) / 10 + i + offset


@dataclass
class Scenario:
    """Messages to write plus the stamps the oracle needs (all ns)."""

    front: list[int] = field(default_factory=list)
    wrist: list[int] = field(default_factory=list)
    state: list[int] = field(default_factory=list)
    action: list[int] = field(default_factory=list)
    messages: list[tuple[str, int, object]] = field(default_factory=list)
    ids: dict[str, list[int]] = field(default_factory=dict)
    """Per stream, the index each message encodes (messages left out keep their gap)."""

    def add(self, name: str, stamp: int, ident: int) -> None:
        getattr(self, name).append(stamp)
        self.ids.setdefault(name, []).append(ident)

    def write(self, path: Path, storage: str = "mcap", **kw) -> Path:
        return bm.write_bag(path, self.messages, storage=storage, **kw)


def make_scenario(slots: int = 30, *, seed: int = 0, drop_front: tuple[int, ...] = (),
                  state_gap: tuple[int, int] | None = None, front_encodings=("rgb8",),
                  wrist_formats=("png",), ns: str = "", state_names=None,
                  action_lag_ms: int = 1) -> Scenario:
    """Front camera at 10 Hz (±8 ms jitter), wrist at 5 Hz (slower than the reference), joint
    states at 50 Hz (±2 ms), actions at 10 Hz, each stamped ``action_lag_ms`` *after* the
    front image of the same index. Receive times are stamps + 3 ms."""
    rng = np.random.default_rng(seed)
    sc = Scenario()
    front = [T0 + i * 100 * MS + int(rng.integers(-8, 9)) * MS for i in range(slots)]
    for i, t in enumerate(front):
        if i in drop_front:
            continue
        sc.add("front", t, i)
        enc = front_encodings[i % len(front_encodings)]
        sc.messages.append((f"{ns}/cam/front", t + 3 * MS, bm.image(colour(0, i), t, enc)))
    for k in range(slots // 2 + 1):
        t = T0 + 30 * MS + k * 200 * MS
        sc.add("wrist", t, k)
        fmt = wrist_formats[k % len(wrist_formats)]
        sc.messages.append((f"{ns}/cam/wrist", t + 3 * MS,
                            bm.compressed_image(colour(1, k), t, fmt)))
    names = state_names or JOINTS[::-1]  # by name: the message order differs from the map's
    for k in range(slots * 5 + 5):
        t = T0 - 40 * MS + k * 20 * MS + int(rng.integers(-2, 3)) * MS
        if state_gap and state_gap[0] <= t - T0 < state_gap[1]:
            continue
        sc.add("state", t, k)
        pos = [joints(k)[JOINTS.index(n)] if n in JOINTS else -1.0 for n in names]
        sc.messages.append((f"{ns}/joint_states", t + 3 * MS, bm.joint_state(names, pos, t)))
    for i in range(slots):
        t = front[i] + action_lag_ms * MS
        sc.add("action", t, i)
        sc.messages.append((f"{ns}/cmd", t + 3 * MS, bm.joint_state(JOINTS, joints(i, 0.5), t)))
    return sc


def oracle(sc: Scenario, fps: float = 10, max_age: float = 0.2,
           ages: dict[str, float] | None = None) -> list[dict]:
    """Brute force, loop by loop, the documented rules: slot k takes the front message nearest
    to ``t0 + k/fps`` (t0: first stamp + mean phase of the first 31) among those whose nearest
    slot is k (the frame's time: its stamp), else the latest one at or before the slot if
    fresh (the frame's time: the slot's); each feature is the latest message at or before the
    frame's time, if fresh.
    Rows hold the message ids (``Scenario.ids``) and the frame stamp."""
    ages = {"front": max_age, "wrist": max_age, "state": max_age, "action": max_age,
            **(ages or {})}
    period = 1e9 / fps
    front = sc.front  # written in stamp order
    angles = [2 * np.pi * ((t - front[0]) % period) / period for t in front[:31]]
    x, y = np.mean(np.cos(angles)), np.mean(np.sin(angles))
    phase = np.arctan2(y, x) if np.hypot(x, y) >= 0.3 else 0.0
    t0 = front[0] + round(phase / (2 * np.pi) * period)
    n_slots = int(np.floor((front[-1] - t0) / period + 0.5)) + 1
    rows = []
    for k in range(n_slots):
        slot = t0 + round(k * period)
        mine = [i for i, t in enumerate(front)
                if min(max(int(np.floor((t - t0) / period + 0.5)), 0), n_slots - 1) == k]
        ref = min(mine, key=lambda i: abs(front[i] - slot)) if mine else None
        tau = None if ref is None else front[ref]
        if ref is None:  # reuse an older image; the frame's time stays the slot's
            older = [i for i, t in enumerate(front)
                     if t <= slot and slot - t <= ages["front"] * 1e9]
            ref = max(older) if older else None
            tau = slot
        row = {"slot": k, "front": None if ref is None else sc.ids["front"][ref],
               "reason": None if ref is not None else "no_reference"}
        if ref is not None:
            row["stamp"] = tau
            for name in ("wrist", "state", "action"):
                stamps = getattr(sc, name)
                before = [i for i, t in enumerate(stamps) if t <= tau]
                if not before:
                    row["reason"] = row["reason"] or f"missing:{name}"
                elif tau - stamps[max(before)] > ages[name] * 1e9:
                    row["reason"] = row["reason"] or f"stale:{name}"
                row[name] = sc.ids[name][max(before)] if before else None
        rows.append(row)
    return rows


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def replace(sc: Scenario, topic: str, stamp: int, new) -> None:
    """Swap the message of ``topic`` stamped ``stamp`` for ``new`` (same receive time)."""
    for n, (t, recv, msg) in enumerate(sc.messages):
        if t == topic and stamp_of(msg) == stamp:
            sc.messages[n] = (t, recv, new)
            return
    raise KeyError(f"no {topic} message stamped {stamp}")


def raw_image(data: np.ndarray, height: int, width: int, step: int, stamp_ns: int,
              encoding: str = "rgb8"):
    """sensor_msgs/Image with exactly these fields (to build inconsistent ones)."""
    return bm.ts().types["sensor_msgs/msg/Image"](
        header=bm._header(stamp_ns), height=height, width=width, encoding=encoding,
        is_bigendian=0, step=step, data=np.ascontiguousarray(data, np.uint8).reshape(-1))


def truncated_png(rgb: np.ndarray, stamp_ns: int):
    """A CompressedImage whose PNG header is fine but whose pixel data is cut off."""
    msg = bm.compressed_image(rgb, stamp_ns, "png")
    return bm.ts().types["sensor_msgs/msg/CompressedImage"](
        header=msg.header, format="png", data=msg.data[: len(msg.data) // 2].copy())


def load(root: Path, **kw):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(f"local/{root.name}", root=root, video_backend="pyav", **kw)


def rgb_of(item, key: str) -> np.ndarray:
    return (item[key].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def nearest(img: np.ndarray, cam: int, candidates) -> int:
    """The message index whose image is closest to a (lossy) decoded frame."""
    errors = {k: np.abs(img.astype(int) - colour(cam, k)).mean() for k in candidates}
    return min(errors, key=errors.get)


def kept_runs(rows: list[dict]) -> list[list[dict]]:
    """Runs of kept oracle rows → gap-free episodes."""
    out, cur = [], []
    for row in rows:
        if row["reason"] is None:
            cur.append(row)
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])
