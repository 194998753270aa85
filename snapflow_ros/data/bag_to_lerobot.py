"""``bag_to_lerobot``: rosbag2 directories (sqlite3 or mcap) → a LeRobot v3.0 dataset.

    python -m snapflow_ros bag_to_lerobot BAG [BAG ...] --output ROOT [--topic-map map.yaml]

Features come from the topic map (cameras → ``observation.images.<name>``, JointState by joint
name → ``observation.state``, the action topic → ``action``). Frames are driven by a reference
camera resampled at the map's fps; every other feature is the latest message at or before the
frame's stamp and at most ``--max-age`` older (``align``/``sync`` give the exact rules). Each bag
is an episode, or each start/stop interval of ``--episode-topic``; a frame that cannot be filled
ends the episode there (``sync``). The dataset and its sync report appear all at once or not at
all; ``--append`` adds episodes to an existing dataset the same way (its sync report then covers
the old bags and the new).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from snapflow_ros.data.bag_reader import BagError, BagFile, find_bags
from snapflow_ros.data.frames import iter_frames
from snapflow_ros.data.lerobot_writer import VIDEO_CODECS, DatasetExistsError, LeRobotWriter
from snapflow_ros.data.streams import ConversionError, read_streams, stream_specs
from snapflow_ros.data.sync import SyncOptions, plan_bag
from snapflow_ros.data.sync_report import (
    JSON_NAME,
    TEXT_NAME,
    bag_entry,
    build_report,
    format_summary,
)
from snapflow_ros.topic_map import ACTION_KEY, STATE_KEY, TopicMap, TopicMapError, load_topic_map

log = logging.getLogger(__name__)
ALIASES = {"state": STATE_KEY, "action": ACTION_KEY}


@dataclass
class ConvertConfig:
    """One conversion (the CLI flags; see ``--help``)."""

    bags: list[Path]
    output: Path
    topic_map: TopicMap
    repo_id: str = ""
    namespace: str = "/"
    reference: str = ""
    max_age: float = 0.0
    max_age_for: dict[str, float] = field(default_factory=dict)
    episode_topic: str = ""
    task: str = ""
    video: bool = True
    vcodec: str = "libsvtav1"
    streaming_encoding: bool = False
    min_episode_frames: int = 1
    overwrite: bool = False
    append: bool = False
    image_writer_threads: int = 2
    progress: bool = True


def sync_options(cfg: ConvertConfig) -> SyncOptions:
    """Check the timing flags against the map; raise ValueError naming the bad one."""
    tm = cfg.topic_map
    if abs(tm.fps - round(tm.fps)) > 1e-9:
        raise ValueError(f"LeRobot datasets need an integer fps; the topic map has {tm.fps}")
    reference = cfg.reference or tm.cameras[0].name
    if reference not in tm.camera_names:
        raise ValueError(f"--reference {reference!r} is not a camera of the topic map "
                         f"(cameras: {tm.camera_names})")
    ages = {}
    for name, age in cfg.max_age_for.items():
        key = ALIASES.get(name) or (tm.camera(name).key if name in tm.camera_names else "")
        if not key:
            raise ValueError(f"--max-age-for {name}: unknown feature; use a camera name "
                             f"{tm.camera_names}, 'state' or 'action'")
        ages[key] = float(age)
    default = cfg.max_age if cfg.max_age > 0 else 2.0 / tm.fps
    if any(a <= 0 for a in ages.values()) or cfg.min_episode_frames < 1:
        raise ValueError("freshness windows must be > 0 s and --min-episode-frames >= 1")
    return SyncOptions(fps=float(round(tm.fps)), reference=tm.camera(reference).key,
                       max_age=ages, default_age=default, min_frames=cfg.min_episode_frames)


def bag_task(cfg: ConvertConfig, custom: dict[str, str], bag: Path) -> str | None:
    """The bag's task: metadata ``custom_data.task`` (per_bag), ``--task``, the map's text."""
    source = cfg.topic_map.task.source
    text = (custom.get("task", "") if source == "per_bag" else "") or cfg.task \
        or cfg.topic_map.task.text
    if not text and source != "topic":
        raise ConversionError(
            f"no task for bag '{bag}': set task.text in the topic map, pass --task, or (task "
            f"source per_bag) record the bag with custom_data task=<text>")
    return text or None


def convert(cfg: ConvertConfig) -> dict[str, Any]:
    """Convert ``cfg.bags`` into a dataset at ``cfg.output``; returns the sync report."""
    opts = sync_options(cfg)
    tm = cfg.topic_map
    bags = find_bags(cfg.bags)
    specs = stream_specs(tm, cfg.namespace, cfg.episode_topic)
    keys = [cam.key for cam in tm.cameras] + [STATE_KEY, ACTION_KEY]
    entries: list[dict[str, Any]] = []
    writer = LeRobotWriter(
        cfg.output, repo_id=cfg.repo_id or f"local/{cfg.output.name}", fps=int(opts.fps),
        features=tm.lerobot_features(video=cfg.video), robot_type=tm.robot_type,
        video=cfg.video, vcodec=cfg.vcodec, image_writer_threads=cfg.image_writer_threads,
        overwrite=cfg.overwrite, append=cfg.append, streaming=cfg.streaming_encoding)
    with writer:
        earlier = _earlier_bags(cfg.output) if writer.appended_to else []
        for path in bags:
            with BagFile(path) as bag:
                task = bag_task(cfg, bag.custom_data, path)
                total = bag.message_count({s.topic for s in specs if s.topic in bag.topics})
                with tqdm(total=total, desc=path.name, unit="msg", disable=not cfg.progress,
                          file=sys.stderr, leave=False) as bar:
                    streams = read_streams(bag, specs, progress=bar.update)
                    plan = plan_bag(streams, opts, keys, task)
                    bar.reset(total=max(plan.kept, 1))
                    bar.unit = "frame"
                    for frame, last in iter_frames(bag, plan, streams, tm, task):
                        writer.add_frame(frame)
                        if last:
                            writer.save_episode()
                        bar.update(1)
                entries.append(bag_entry(path, bag.storage_id, task, plan))
                log.info("%s: %d frames in %d episode(s), dropped %s", path.name, plan.kept,
                         len(plan.episodes), dict(plan.drop_counts) or "none")
        settings = {"namespace": cfg.namespace, "episode_topic": cfg.episode_topic,
                    "video": cfg.video, "vcodec": cfg.vcodec if cfg.video else None,
                    "streaming_encoding": cfg.video and cfg.streaming_encoding,
                    "min_episode_frames": cfg.min_episode_frames, "topic_map": tm.to_dict()}
        new = build_report(cfg.output, opts, entries, settings)["totals"]
        if new["frames_written"] == 0:
            raise ConversionError(
                "no frame could be filled in any bag (dropped: "
                f"{new['dropped'] or 'nothing: the reference topic is empty'}); "
                "check the topics' stamps and rates, or widen --max-age / --max-age-for")
        report = build_report(cfg.output, opts, earlier + entries, settings)
        writer.extra_files = {JSON_NAME: json.dumps(_clean(report), indent=2) + "\n",
                              TEXT_NAME: format_summary(report)}
    return report


def _earlier_bags(root: Path) -> list[dict[str, Any]]:
    """The bag entries of the sync report of the dataset being appended to (none without)."""
    try:
        return list(json.loads((root / JSON_NAME).read_text())["bags"])
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s has no readable %s; the new report covers the appended bags only",
                    root, JSON_NAME)
        return []


def _clean(obj: Any) -> Any:
    """NaN/inf → None, so the JSON is strict."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _key_value(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bag_to_lerobot", description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog="A sync report (sync_report.json / .txt) is written at the dataset root.")
    p.add_argument("bags", nargs="+", type=Path,
                   help="rosbag2 directories, or folders of them (one recorder output root)")
    p.add_argument("--output", "-o", type=Path, required=True, help="dataset root to create")
    p.add_argument("--topic-map", default="", help="topic map YAML (default: the packaged one)")
    p.add_argument("--repo-id", default="", help="LeRobot repo_id (default: local/<output name>)")
    p.add_argument("--namespace", default="/",
                   help="namespace of the map's relative topics (default: /)")
    p.add_argument("--reference", default="", help="camera that drives frames (default: first)")
    p.add_argument("--max-age", type=float, default=0.0,
                   help="freshness window in s for every feature (default: 2/fps)")
    p.add_argument("--max-age-for", type=_key_value, action="append", default=[],
                   metavar="NAME=S", help="per-feature window: a camera name, state or action")
    p.add_argument("--episode-topic", default="",
                   help="std_msgs/String (start/stop) or Bool (true/false) markers that split "
                        "bags into episodes (default: one episode per bag)")
    p.add_argument("--task", default="", help="task text (overrides the map's fixed text)")
    p.add_argument("--video", action=argparse.BooleanOptionalAction, default=True,
                   help="store cameras as video (mp4); --no-video stores PNG images")
    p.add_argument("--vcodec", choices=VIDEO_CODECS, default="libsvtav1",
                   help="video codec (default: libsvtav1, lerobot's)")
    p.add_argument("--streaming-encoding", action=argparse.BooleanOptionalAction, default=False,
                   help="encode video in threads while reading instead of lerobot's PNGs + "
                        "encoding per episode (default: off; faster on short episodes with "
                        "idle cores, more CPU on long ones)")
    p.add_argument("--min-episode-frames", type=int, default=1,
                   help="drop gap-free pieces shorter than this (default: 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset at --output (only once the new one is done)")
    p.add_argument("--append", action="store_true",
                   help="add these bags' episodes to the dataset at --output (same topic map "
                        "and --video; the old dataset stays as it was if anything fails)")
    p.add_argument("--image-writer-threads", type=int, default=2,
                   help="threads writing frame images while bags are read (default: 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, force=True, format="%(levelname)s %(message)s")
    for noisy in ("datasets", "huggingface_hub", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = ConvertConfig(
            bags=args.bags, output=args.output, topic_map=load_topic_map(args.topic_map or None),
            repo_id=args.repo_id, namespace=args.namespace, reference=args.reference,
            max_age=args.max_age, max_age_for=dict(args.max_age_for),
            episode_topic=args.episode_topic, task=args.task, video=args.video,
            vcodec=args.vcodec, streaming_encoding=args.streaming_encoding,
            min_episode_frames=args.min_episode_frames,
            overwrite=args.overwrite, append=args.append,
            image_writer_threads=args.image_writer_threads,
            progress=not args.no_progress)
        report = convert(cfg)
    except (BagError, ConversionError, DatasetExistsError, TopicMapError, ValueError) as err:
        log.error("%s", err)
        return 1
    print(format_summary(report), end="")  # noqa: T201 (the CLI's final output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
