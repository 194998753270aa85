"""``bag_to_lerobot``: rosbag2 directories (sqlite3 or mcap) → a LeRobot v3.0 dataset.

    python -m snapflow_ros bag_to_lerobot BAG [BAG ...] --output ROOT [--topic-map map.yaml]
    python -m snapflow_ros bag_to_lerobot --config_path convert.yaml     (any option in YAML)

Features come from the topic map (cameras → ``observation.images.<name>``, JointState by joint
name → ``observation.state``, the action topic → ``action``). Frames are driven by a reference
camera resampled at the map's fps; every other feature is the latest message at or before the
frame's stamp within its freshness window (joints: per joint, from any message on the topic),
measured from each topic's rate unless ``--max-age``/``--max-age-for`` set it (``align``/``sync``
give the exact rules). Each bag is an episode, or each start/stop interval of
``--episode-topic``; a frame that cannot be filled, or whose message cannot be used (NaN joint,
broken image), ends the episode there (``sync``). ``--jobs N`` converts bags in N processes and
merges the parts. The dataset and its sync report appear all at once or not at all, also on
Ctrl-C, SIGTERM or SIGKILL (``build_dir``); ``--append`` adds episodes to an existing dataset
the same way (its sync report then covers the old bags and the new).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapflow_ros import config_cli
from snapflow_ros.data.bag_reader import BagError, find_bags
from snapflow_ros.data.build_dir import BuildDir
from snapflow_ros.data.convert_bag import convert_bag
from snapflow_ros.data.lerobot_writer import (
    VIDEO_CODECS,
    VIDEO_ENCODERS,
    DatasetCheckError,
    DatasetExistsError,
    check_appendable,
    check_output,
    check_stats,
)
from snapflow_ros.data.parallel import convert_parts, features_of, merge_parts, writer_for
from snapflow_ros.data.streams import ConversionError
from snapflow_ros.data.sync import SyncOptions
from snapflow_ros.data.sync_report import JSON_NAME, TEXT_NAME, build_report, format_summary
from snapflow_ros.topic_map import ACTION_KEY, STATE_KEY, TopicMap, TopicMapError, load_topic_map

log = logging.getLogger(__name__)
ALIASES = {"state": STATE_KEY, "action": ACTION_KEY}
SVTAV1_MIN_WIDTH = 32  # narrower frames make SVT-AV1 3.0 divide by zero (SIGFPE)


@dataclass
class ConvertConfig:
    """rosbag2 (sqlite3/mcap) → LeRobot v3.0 dataset, stamp-synced; a sync report
    (sync_report.json / .txt) is written at the dataset root."""

    # rosbag2 directories, or folders of them (one recorder output root); positional words
    bags: list[Path] = field(default_factory=list)
    output: Path | None = None  # dataset root to create (-o)
    # topic map YAML (empty: the packaged one); the Python API also takes a loaded TopicMap
    topic_map: Any = ""
    repo_id: str = ""  # LeRobot repo_id (empty: local/<output name>)
    namespace: str = "/"  # namespace of the map's relative topics
    reference: str = ""  # camera that drives frames (empty: the map's first)
    # freshness window in s for every feature (0: measured per topic, 1.5 x its median
    # interval, at least 2/fps)
    max_age: float = 0.0
    # per-feature windows NAME=S (a camera name, state or action); repeat the option
    max_age_for: dict[str, float] = field(default_factory=dict)
    # std_msgs/String (start/stop) or Bool (true/false) markers that split bags into episodes
    # (empty: one episode per bag)
    episode_topic: str = ""
    task: str = ""  # task text (overrides the map's fixed text)
    video: bool = True  # store cameras as video (mp4); --no-video stores PNG images
    vcodec: str = "libsvtav1"  # video codec: libsvtav1 (lerobot's), h264, hevc
    # direct: encode frames while reading, no PNGs, statistics on lerobot's sample of frames;
    # lerobot: lerobot's PNGs + encoding
    video_encoder: str = "direct"
    # drop gap-free pieces shorter than this (2 with h264/hevc video, whose 1-frame episodes
    # lerobot cannot append)
    min_episode_frames: int = 1
    overwrite: bool = False  # replace an existing dataset at --output (once the new one is done)
    # add these bags' episodes to the dataset at --output (same topic map and --video; the old
    # dataset stays as it was if anything fails)
    append: bool = False
    jobs: int = 1  # convert bags in N processes and merge the parts (-j)
    image_writer_threads: int = 2  # threads writing PNG frames (--no-video, video_encoder lerobot)
    progress: bool = True  # progress bars (--no-progress: none)

    def __post_init__(self) -> None:
        self.bags = [Path(b) for b in self.bags]
        if self.vcodec not in VIDEO_CODECS:
            raise ValueError(f"vcodec must be one of {VIDEO_CODECS}, got {self.vcodec!r}")
        if self.video_encoder not in VIDEO_ENCODERS:
            raise ValueError(f"video_encoder must be one of {VIDEO_ENCODERS}, got "
                             f"{self.video_encoder!r}")
        if self.jobs < 1 or self.image_writer_threads < 0:
            raise ValueError("jobs must be >= 1 and image_writer_threads >= 0")

    def with_topic_map(self) -> ConvertConfig:
        """This config with ``topic_map`` loaded (a path, or empty for the packaged map)."""
        if isinstance(self.topic_map, TopicMap):
            return self
        return dataclasses.replace(self, topic_map=load_topic_map(str(self.topic_map) or None))


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
    if any(a <= 0 for a in ages.values()) or cfg.max_age < 0 or cfg.min_episode_frames < 1:
        raise ValueError("freshness windows must be > 0 s and --min-episode-frames >= 1")
    if cfg.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {cfg.jobs}")
    narrow = [c.name for c in tm.cameras if c.width < SVTAV1_MIN_WIDTH]
    if cfg.video and cfg.vcodec == "libsvtav1" and narrow:
        raise ValueError(f"libsvtav1 (SVT-AV1 3.0) crashes on frames narrower than "
                         f"{SVTAV1_MIN_WIDTH} pixels (cameras {narrow}); use --vcodec h264 or "
                         f"a larger camera width in the topic map")
    min_frames = cfg.min_episode_frames
    if cfg.video and cfg.vcodec in ("h264", "hevc") and min_frames < 2:
        min_frames = 2  # lerobot 0.4.4 fails to append a 1-frame h264/hevc episode's video
    return SyncOptions(fps=float(round(tm.fps)), reference=tm.camera(reference).key,
                       max_age=ages, default_age=cfg.max_age if cfg.max_age > 0 else None,
                       min_frames=min_frames)


def convert(cfg: ConvertConfig) -> dict[str, Any]:
    """Convert ``cfg.bags`` into a dataset at ``cfg.output``; returns the sync report."""
    cfg = cfg.with_topic_map()
    if not cfg.bags or cfg.output is None:
        raise ValueError("give the bags to convert and --output (the dataset root)")
    opts = sync_options(cfg)
    bags = find_bags(cfg.bags)
    fps = int(opts.fps)
    existing = check_output(cfg.output, cfg.overwrite, cfg.append)
    if existing:
        check_appendable(cfg.output, fps, features_of(cfg))
    old = cfg.output if existing else None
    settings = {"namespace": cfg.namespace, "episode_topic": cfg.episode_topic,
                "video": cfg.video, "vcodec": cfg.vcodec if cfg.video else None,
                "video_encoder": cfg.video_encoder if cfg.video else None, "jobs": cfg.jobs,
                "min_episode_frames": opts.min_frames, "topic_map": cfg.topic_map.to_dict()}
    with BuildDir(cfg.output) as build:
        earlier = _earlier_bags(cfg.output) if existing else []
        if cfg.jobs > 1 and len(bags) > 1:
            start = time.perf_counter()
            per_part = convert_parts(cfg, opts, bags, build.parts)
            entries = [e for part in per_part for e in part]
            report = _report(cfg, opts, earlier, entries, settings)
            middle = time.perf_counter()
            merge_parts(cfg, build.parts, per_part, build.dataset, old)
            check_stats(build.dataset)
            _write_reports(build.dataset, report)
            log.info("%d bags converted in %.2f s by %d processes, merged in %.2f s",
                     len(bags), middle - start, len(per_part), time.perf_counter() - middle)
        else:
            with writer_for(cfg, build.dataset, fps, append_from=old) as writer:
                entries = [convert_bag(path, cfg, opts, writer, cfg.progress) for path in bags]
                report = _report(cfg, opts, earlier, entries, settings)
                writer.extra_files = _report_files(report)
        build.commit()
    return report


def _report(cfg: ConvertConfig, opts: SyncOptions, earlier: list[dict[str, Any]],
            entries: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """The report over all bags; raises ConversionError when the new bags gave no frame."""
    new = build_report(cfg.output, opts, entries, settings)["totals"]
    if new["frames_written"] == 0:
        notes = "; ".join(n for e in entries for n in e["notes"])
        raise ConversionError(
            "no frame could be filled in any bag (dropped: "
            f"{new['dropped'] or 'nothing: the reference topic is empty'})"
            + (f"; {notes}" if notes else "")
            + "; check the topics' stamps and rates, or widen --max-age / --max-age-for")
    return build_report(cfg.output, opts, earlier + entries, settings)


def _report_files(report: dict[str, Any]) -> dict[str, str]:
    return {JSON_NAME: json.dumps(_clean(report), indent=2) + "\n",
            TEXT_NAME: format_summary(report)}


def _write_reports(root: Path, report: dict[str, Any]) -> None:
    for name, text in _report_files(report).items():
        (root / name).write_text(text)


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


def os_error_line(err: OSError) -> str:
    """One line for an OSError: what failed, on which path, and what to do."""
    where = f" '{err.filename}'" if err.filename else ""
    hint = {errno.EACCES: "choose an --output in a folder you can write to",
            errno.EPERM: "choose an --output in a folder you can write to",
            errno.EROFS: "the file system is read-only: choose another --output",
            errno.ENOSPC: "the disk is full: free space or choose another --output",
            errno.EDQUOT: "the disk quota is exceeded: free space or choose another --output",
            }.get(err.errno or 0, "nothing was written at --output")
    return f"{err.strerror or err}{where}; {hint}"


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM/SIGHUP, raised in the main thread so every cleanup runs (a subclass:
    CPython 3.11 turns a plain KeyboardInterrupt that crossed a nested eval into an exit by
    SIGINT even when it was handled)."""


INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP raise ``Interrupted`` in the main thread while inside.

    A signal whose exception lands where Python ignores exceptions (importlib's module-lock
    weakref callback during an import, a ``__del__``: "Exception ignored in ...") would be
    spent and the conversion would go on to the end (seen in a test run: exit 0 after
    SIGTERM); ``sys.unraisablehook`` catches it and delivers the signal again, from a helper
    thread, so the new ``Interrupted`` is raised in the main thread's own code.
    """
    previous_hook = sys.unraisablehook

    def redeliver(args: Any) -> None:
        name = str(args.exc_value)
        if isinstance(args.exc_value, Interrupted) and name in signal.Signals.__members__:
            threading.Timer(0.005, os.kill, (os.getpid(), signal.Signals[name])).start()
            return
        previous_hook(args)

    previous = {s: signal.signal(s, _interrupt) for s in INTERRUPTS}
    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for s, handler in previous.items():
            signal.signal(s, handler)


USAGE = ("usage: bag_to_lerobot BAG [BAG ...] -o ROOT [--topic-map map.yaml] [-j N] "
         "[--max-age-for NAME=S ...] [--no-video] [--OPTION VALUE ...]")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    streaming = "--streaming-encoding" in argv  # an old flag: its behaviour is the default
    argv = [a for a in argv if a != "--streaming-encoding"]
    args = config_cli.from_command_line(
        ConvertConfig, argv, prog="bag_to_lerobot", usage=USAGE, positional="bags",
        short={"-o": "--output", "-j": "--jobs"})
    logging.basicConfig(level=logging.INFO, force=True, format="%(levelname)s %(message)s")
    for noisy in ("datasets", "huggingface_hub", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if streaming:
        log.info("--streaming-encoding is the default now (--video-encoder direct); ignored")
    if not args.bags or args.output is None:
        print(f"bag_to_lerobot: error: give the bags to convert and --output ROOT\n{USAGE}",  # noqa: T201
              file=sys.stderr)
        return 2
    try:
        with interrupts_raise():
            cfg = args.with_topic_map()
            start = time.perf_counter()
            report = convert(cfg)
            log.info("conversion took %.2f s", time.perf_counter() - start)
    except (BagError, ConversionError, DatasetExistsError, DatasetCheckError, TopicMapError,
            ValueError) as err:
        log.error("%s", err)
        return 1
    except OSError as err:
        log.error("%s", os_error_line(err))
        return 1
    except KeyboardInterrupt as err:
        name = str(err) or "SIGINT"
        log.error("interrupted (%s): nothing was written at %s%s", name, args.output,
                  " (the dataset there is as it was)" if args.overwrite or args.append else "")
        return 128 + int(getattr(signal, name, signal.SIGINT))
    print(format_summary(report), end="")  # noqa: T201 (the CLI's final output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
