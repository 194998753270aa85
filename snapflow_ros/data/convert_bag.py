"""One bag → episodes in a ``LeRobotWriter``: read streams, plan, write frames, report entry.

Shared by the serial conversion and the workers of ``--jobs``. An image found undecodable while
writing (``frames.BadImageError``) is marked bad, the episode being written is discarded and the
bag is re-planned: the episodes already written are unchanged (their frames never used that
image) and writing resumes at the first one that is not.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from snapflow_ros.data.bag_reader import BagFile
from snapflow_ros.data.frames import BadImageError, iter_frames
from snapflow_ros.data.lerobot_writer import LeRobotWriter
from snapflow_ros.data.streams import ConversionError, Stream, read_streams, stream_specs
from snapflow_ros.data.sync import BagPlan, SyncOptions, plan_bag
from snapflow_ros.data.sync_report import bag_entry, bag_warnings
from snapflow_ros.topic_map import ACTION_KEY, STATE_KEY

if TYPE_CHECKING:
    from snapflow_ros.data.bag_to_lerobot import ConvertConfig

log = logging.getLogger(__name__)


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


@dataclass
class _Run:
    """The state of one bag's writing: its streams, current plan and episodes written."""

    streams: dict[str, Stream]
    plan: BagPlan
    written: int = 0


def _replan(run: _Run, fault: BadImageError, opts: SyncOptions, keys: list[str],
            task: str | None) -> None:
    stream = run.streams[fault.key]
    index = int(np.flatnonzero(stream.arrival == fault.arrival)[0])
    stream.mark_bad(index, fault.fault)
    log.warning("%s: %s; dropping the frames that use it", stream.spec.topic, fault.fault)
    before = run.plan.episodes[:run.written]
    run.plan = plan_bag(run.streams, opts, keys, task)
    if run.plan.episodes[:run.written] != before:  # iter_frames' order guarantees this
        raise RuntimeError("internal error: re-planning changed episodes already written")


def convert_bag(path: Path, cfg: ConvertConfig, opts: SyncOptions, writer: LeRobotWriter,
                progress: bool = False) -> dict[str, Any]:
    """Write ``path``'s episodes to ``writer``; returns its sync-report entry."""
    tm = cfg.topic_map
    keys = [cam.key for cam in tm.cameras] + [STATE_KEY, ACTION_KEY]
    specs = stream_specs(tm, cfg.namespace, cfg.episode_topic)
    with BagFile(path) as bag:
        task = bag_task(cfg, bag.custom_data, path)
        total = bag.message_count({s.topic for s in specs if s.topic in bag.topics})
        with tqdm(total=total, desc=path.name, unit="msg", disable=not progress,
                  file=sys.stderr, leave=False) as bar:
            streams = read_streams(bag, specs, progress=bar.update)
            run = _Run(streams, plan_bag(streams, opts, keys, task))
            bar.reset(total=max(run.plan.kept, 1))
            bar.unit = "frame"
            while True:
                try:
                    _write(bag, run, cfg, writer, task, bar)
                    break
                except BadImageError as fault:
                    writer.discard_episode()
                    _replan(run, fault, opts, keys, task)
                    bar.reset(total=max(run.plan.kept, 1))
                    bar.update(sum(b - a for a, b in run.plan.episodes[:run.written]))
        entry = bag_entry(path, bag.storage_id, task, run.plan, opts, bag.notes)
    plan = run.plan
    log.info("%s: %d frames in %d episode(s), dropped %s", path.name, plan.kept,
             len(plan.episodes), dict(plan.drop_counts) or "none")
    for line in bag_warnings(entry, opts):
        log.warning("%s", line)
    return entry


def _write(bag: BagFile, run: _Run, cfg: ConvertConfig, writer: LeRobotWriter,
           task: str | None, bar: Any) -> None:
    for e, frame, last in iter_frames(bag, run.plan, run.streams, cfg.topic_map, task,
                                      first_episode=run.written):
        if not writer.buffered:
            a, b = run.plan.episodes[e]
            writer.begin_episode(b - a)
        writer.add_frame(frame)
        bar.update(1)
        if last:
            writer.save_episode()
            run.written = e + 1
