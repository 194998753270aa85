"""Conversion speed of ``bag_to_lerobot`` as a multiple of real time (prints numbers).

Writes a synthetic mcap bag like a real demonstration (two 224x224 rgb8 cameras at 30 Hz,
6-joint JointState at 100 Hz, JointState commands at 30 Hz; images: a gradient scene with a
moving object and ±3 sensor noise), then converts it with the packaged topic map in each mode
and reports wall time and real-time factor, CPU time (this process and its encoder processes;
less sensitive to other load on the machine) and the split between reading/aligning/decoding
(the converter) and lerobot's writer (PNG/video encoding, parquet, statistics).

    bash scripts/run.sh python scripts/bench_convert.py --seconds 30
    bash scripts/run.sh python scripts/bench_convert.py --modes image video:h264:streaming --json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an install

from snapflow_ros.data import bag_messages as bm
from snapflow_ros.data.bag_reader import BagFile
from snapflow_ros.data.bag_to_lerobot import ConvertConfig, convert, sync_options
from snapflow_ros.data.frames import iter_frames
from snapflow_ros.data.streams import read_streams, stream_specs
from snapflow_ros.data.sync import plan_bag
from snapflow_ros.topic_map import ACTION_KEY, STATE_KEY, load_topic_map

NS, MS = 10**9, 10**6


def scene_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """n distinct 224x224 frames: gradient background, a moving square, ±3 noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224]
    base = np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.int16)
    out = []
    for i in range(n):
        img = base + rng.integers(-3, 4, base.shape, dtype=np.int16)
        x = 20 + (i * 5) % 160
        img[90:130, x:x + 40] = (200, 40, 40)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def write_demo_bag(path: Path, seconds: float) -> Path:
    tm = load_topic_map()
    frames = scene_frames(60)
    t0 = 1_700_000_000 * NS
    msgs = []
    for i in range(int(seconds * 30)):
        t = t0 + round(i * NS / 30) + (i % 3 - 1) * MS  # ±1 ms jitter
        for c, cam in enumerate(tm.cameras):
            msgs.append((f"/{cam.topic}", t + 2 * MS, bm.image(frames[(i + 7 * c) % 60], t)))
        msgs.append((f"/{tm.action.topic}", t + 2 * MS,
                     bm.joint_state(tm.action_names, np.sin(i / 30 + np.arange(6)), t - MS)))
    for k in range(int(seconds * 100)):
        t = t0 + k * 10 * MS - 5 * MS
        msgs.append((f"/{tm.joint_states.topic}", t + MS,
                     bm.joint_state(tm.state_names, np.cos(k / 100 + np.arange(6)), t)))
    return bm.write_bag(path, msgs, storage="mcap")


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (encoder processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def read_only(bag: Path, cfg: ConvertConfig) -> tuple[float, int]:
    """The converter without lerobot: both passes, images decoded and resized."""
    start = time.perf_counter()
    opts = sync_options(cfg)
    tm = cfg.topic_map
    keys = [c.key for c in tm.cameras] + [STATE_KEY, ACTION_KEY]
    with BagFile(bag) as bf:
        streams = read_streams(bf, stream_specs(tm))
        plan = plan_bag(streams, opts, keys, "task")
        n = sum(1 for _ in iter_frames(bf, plan, streams, tm, "task"))
    return time.perf_counter() - start, n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="length of the synthetic bag")
    p.add_argument("--modes", nargs="+",
                   default=["video:libsvtav1", "video:libsvtav1:streaming", "video:h264", "image"],
                   help="image, video:<codec>[:streaming] (with --streaming-encoding)")
    p.add_argument("--image-writer-threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        t = time.perf_counter()
        bag = write_demo_bag(tmp / "bag", args.seconds)
        size_mb = sum(f.stat().st_size for f in bag.iterdir()) / 2**20
        results = {"bag_seconds": args.seconds, "bag_mb": round(size_mb, 1),
                   "bag_write_s": round(time.perf_counter() - t, 2)}
        cfg = ConvertConfig(bags=[bag], output=tmp / "ds", topic_map=load_topic_map(),
                            progress=False, image_writer_threads=args.image_writer_threads)
        t, cpu = time.perf_counter(), cpu_seconds()
        _, n = read_only(bag, cfg)
        wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
        results["read_align_decode"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                        "x_realtime_per_core": round(args.seconds / cpu, 1),
                                        "frames": n, "x_realtime": round(args.seconds / wall, 1)}
        for mode in args.modes:
            kind, codec, streaming = (mode.split(":") + ["", ""])[:3]
            cfg.video, cfg.vcodec = kind == "video", codec or "libsvtav1"
            cfg.streaming_encoding = streaming == "streaming"
            cfg.overwrite = True
            t, cpu = time.perf_counter(), cpu_seconds()
            report = convert(cfg)
            wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
            results[mode] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                             "x_realtime_per_core": round(args.seconds / cpu, 1),
                             "frames": report["totals"]["frames_written"],
                             "x_realtime": round(args.seconds / wall, 1),
                             "dataset_mb": round(sum(f.stat().st_size for f in
                                                     (tmp / "ds").rglob("*") if f.is_file())
                                                 / 2**20, 1)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results))  # noqa: T201
        return 0
    lines = [f"bag: {args.seconds:g} s, 2 cameras 224x224 rgb8 @30 Hz + joints @100 Hz + "
             f"commands @30 Hz, {results['bag_mb']} MB mcap"]
    for key, r in results.items():
        if isinstance(r, dict):
            size = f"  {r['dataset_mb']} MB" if "dataset_mb" in r else ""
            lines.append(f"{key:<22} {r['wall_s']:>7.2f} s wall {r['x_realtime']:>5.1f}x real time"
                         f" | {r['cpu_s']:>6.2f} s CPU {r['x_realtime_per_core']:>5.1f}x per core"
                         f" | {r['frames']} frames{size}")
    print("\n".join(lines))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
