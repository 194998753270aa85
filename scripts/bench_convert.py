"""Conversion speed of ``bag_to_lerobot`` as a multiple of real time (prints numbers).

Writes synthetic mcap bags like a real demonstration (two 320x240 rgb8 cameras at 30 Hz,
resized to the packaged map's 224x224; 6-joint JointState at 100 Hz; JointState commands at
30 Hz; images: a gradient scene with a moving object and ±3 sensor noise). Then it converts
them with the CLI, one process per run: the same ``--seconds`` of data as one bag (serial) and
split into ``--split`` bags (serial and ``--jobs``), with and without video. Per run: wall time
and real-time factor of the whole command, the time spent in ``convert()`` (the CLI logs it;
it includes importing lerobot/torch, ~3 s, but not Python's start), CPU time of the converter
and its workers, peak RSS summed over the process tree (sampled every 0.1 s), and for
``--jobs`` the converting / merging split. The converter alone (reading, aligning, decoding;
no lerobot) is timed in this process.

    bash scripts/run.sh python scripts/bench_convert.py --seconds 30
    bash scripts/run.sh python scripts/bench_convert.py --seconds 30 --runs video:1:2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an install

from snapflow_ros.data import bag_messages as bm
from snapflow_ros.data.bag_reader import BagFile
from snapflow_ros.data.bag_to_lerobot import ConvertConfig, sync_options
from snapflow_ros.data.frames import iter_frames
from snapflow_ros.data.streams import read_streams, stream_specs
from snapflow_ros.data.sync import plan_bag
from snapflow_ros.topic_map import ACTION_KEY, STATE_KEY, load_topic_map

NS, MS = 10**9, 10**6
ROOT = Path(__file__).resolve().parents[1]


def scene_frame(i: int, cam: int, height: int = 240, width: int = 320) -> np.ndarray:
    """Frame i of a camera: gradient background, a moving square, ±3 noise (never repeated,
    as a real camera's: lerobot's parquet de-duplicates repeated images within an episode)."""
    rng = np.random.default_rng([i, cam])
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 224 // width, yy * 224 // height, (xx + yy + 40 * cam) // 3],
                   -1).astype(np.int16) + rng.integers(-3, 4, (height, width, 3), np.int16)
    x = 20 + (i * 5) % (width - 60)
    img[100:140, x:x + 40] = (200, 40, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_demo_bag(path: Path, seconds: float, start_s: float = 0.0) -> Path:
    """One bag of ``seconds`` starting ``start_s`` into the demonstration."""
    tm = load_topic_map()
    t0 = 1_700_000_000 * NS + round(start_s * NS)
    first = round(start_s * 30)
    msgs = []
    for i in range(round(seconds * 30)):
        t = t0 + round(i * NS / 30) + (i % 3 - 1) * MS  # ±1 ms jitter
        for c, cam in enumerate(tm.cameras):
            msgs.append((f"/{cam.topic}", t + 2 * MS, bm.image(scene_frame(first + i, c), t)))
        msgs.append((f"/{tm.action.topic}", t + 2 * MS,
                     bm.joint_state(tm.action_names, np.sin(i / 30 + np.arange(6)), t - MS)))
    for k in range(round(seconds * 100)):
        t = t0 + k * 10 * MS - 5 * MS
        msgs.append((f"/{tm.joint_states.topic}", t + MS,
                     bm.joint_state(tm.state_names, np.cos(k / 100 + np.arange(6)), t)))
    return bm.write_bag(path, msgs, storage="mcap")


def read_only(bag: Path) -> tuple[float, float, int]:
    """The converter without lerobot: both passes, images decoded and resized."""
    tm = load_topic_map()
    cfg = ConvertConfig(bags=[bag], output=bag.parent / "unused", topic_map=tm)
    wall, cpu = time.perf_counter(), time.process_time()
    opts = sync_options(cfg)
    keys = [c.key for c in tm.cameras] + [STATE_KEY, ACTION_KEY]
    with BagFile(bag) as bf:
        streams = read_streams(bf, stream_specs(tm))
        plan = plan_bag(streams, opts, keys, "task")
        n = sum(1 for _ in iter_frames(bf, plan, streams, tm, "task"))
    return time.perf_counter() - wall, time.process_time() - cpu, n


def _tree_rss(pid: int) -> int:
    """Resident memory (bytes) of ``pid`` and all its descendants."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in stat.read_text().splitlines()
                          if ":\t" in line)
        except OSError:
            continue
        p = int(stat.parent.name)
        parents[p] = int(fields.get("PPid", "0"))
        rss[p] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    tree, total = {pid}, 0
    for _ in range(4):  # converter → workers → (their children)
        tree |= {p for p, pp in parents.items() if pp in tree}
    for p in tree:
        total += rss.get(p, 0)
    return total


def run_cli(bags: list[Path], out: Path, video: bool, jobs: int) -> dict[str, float]:
    """One conversion in its own process: wall, CPU (with workers), peak tree RSS."""
    cmd = [sys.executable, "-m", "snapflow_ros", "bag_to_lerobot", *map(str, bags),
           "--output", str(out), "--no-progress", "--jobs", str(jobs),
           "--video" if video else "--no-video"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    out_split = re.search(r"converted in ([\d.]+) s by \d+ processes, merged in ([\d.]+) s",
                          err)
    took = re.search(r"conversion took ([\d.]+) s", err)
    result = {"wall_s": round(wall, 2), "peak_rss_mb": round(peak / 2**20)}
    if took:  # the rest is Python's start, the CLI's own imports and exit
        result["convert_s"] = float(took.group(1))
    if out_split:
        result["parts_s"], result["merge_s"] = map(float, out_split.groups())
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of demonstration")
    p.add_argument("--split", type=int, default=2, help="bags the data is split into")
    p.add_argument("--runs", nargs="+", default=["video:1:1", "video:2:1", "video:2:2",
                                                 "image:1:1", "image:2:1", "image:2:2"],
                   help="KIND:BAGS:JOBS with KIND video|image, BAGS 1 or the split count")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        one = [write_demo_bag(tmp / "one" / "bag", args.seconds)]
        part = args.seconds / args.split
        split = [write_demo_bag(tmp / "split" / f"bag{i}", part, i * part)
                 for i in range(args.split)]
        results: dict[str, object] = {
            "seconds": args.seconds, "bag_mb": round(sum(
                f.stat().st_size for f in one[0].iterdir()) / 2**20, 1)}
        wall, cpu, n = read_only(one[0])
        results["read_align_decode"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                        "frames": n, "x_realtime": round(args.seconds / wall)}
        for run in args.runs:
            kind, nbags, jobs = run.split(":")
            bags = one if nbags == "1" else split
            before = os.times()
            r = run_cli(bags, tmp / "ds", kind == "video", int(jobs))
            after = os.times()
            r["cpu_s"] = round(after.children_user + after.children_system
                               - before.children_user - before.children_system, 2)
            r["x_realtime"] = round(args.seconds / r["wall_s"], 2)
            r["x_realtime_convert"] = round(args.seconds / r["convert_s"], 2)
            r["dataset_mb"] = round(sum(f.stat().st_size for f in (tmp / "ds").rglob("*")
                                        if f.is_file()) / 2**20, 1)
            results[f"{kind} {len(bags)} bag(s) --jobs {jobs}"] = r
            shutil.rmtree(tmp / "ds")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results))  # noqa: T201
        return 0
    lines = [f"{args.seconds:g} s of demonstration: 2 cameras 320x240 rgb8 @30 Hz -> 224x224, "
             f"joints @100 Hz, commands @30 Hz; {results['bag_mb']} MB mcap as one bag"]
    for key, r in results.items():
        if isinstance(r, dict):
            extra = (f" | parts {r['parts_s']:.1f} s + merge {r['merge_s']:.1f} s"
                     if "parts_s" in r else "")
            rss = f" | peak RSS {r['peak_rss_mb']} MB" if "peak_rss_mb" in r else ""
            inner = (f" ({r['convert_s']:.2f} s in convert(), {r['x_realtime_convert']:.1f}x)"
                     if "convert_s" in r else "")
            lines.append(f"{key:<28} {r['wall_s']:>6.2f} s wall {r['x_realtime']:>5.1f}x real "
                         f"time{inner} | {r['cpu_s']:>6.2f} s CPU{rss}{extra}")
    print("\n".join(lines))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
