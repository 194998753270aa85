"""``--jobs N``: convert bags in parallel processes, then merge the parts in bag order.

The bags are cut into ``N`` runs of consecutive bags of about equal size; each worker converts
one run into its own LeRobot dataset (a *part*) under the build folder, so the merge handles N
parts, not one per bag. The parts (after an existing dataset, with ``--append``) are merged
with lerobot's ``aggregate_datasets``: videos are concatenated without re-encoding, data and
episode tables re-indexed, statistics aggregated (``index``/``episode_index`` statistics then
re-based, ``reindex_stats``). The result equals a serial conversion: the same frames and
episodes in bag order, the same statistics up to float rounding (both aggregate per-episode
statistics with lerobot's ``aggregate_stats``).

Workers are started with ``spawn`` from the main thread, ignore SIGINT (the parent decides),
and get SIGKILL when the converter dies (``PR_SET_PDEATHSIG``), so none outlives it, even after
a SIGKILL of the converter.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from snapflow_ros.data.convert_bag import convert_bag
from snapflow_ros.data.lerobot_writer import DatasetExistsError, LeRobotWriter
from snapflow_ros.data.streams import ConversionError
from snapflow_ros.data.sync import SyncOptions

if TYPE_CHECKING:
    from snapflow_ros.data.bag_to_lerobot import ConvertConfig

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def _init_worker(parent: int, level: int) -> None:
    """Die with the parent; leave Ctrl-C to the parent; log like it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    logging.basicConfig(level=level, force=True, format="%(levelname)s %(message)s")
    for noisy in ("datasets", "huggingface_hub", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def features_of(cfg: ConvertConfig) -> dict[str, Any]:
    return cfg.topic_map.lerobot_features(video=cfg.video)


def writer_for(cfg: ConvertConfig, root: Path, fps: int, **kw: Any) -> LeRobotWriter:
    """The dataset writer of a conversion (serial, or one part of a parallel one)."""
    return LeRobotWriter(
        root, repo_id=cfg.repo_id or f"local/{cfg.output.name}", fps=fps,
        features=features_of(cfg), robot_type=cfg.topic_map.robot_type, video=cfg.video,
        vcodec=cfg.vcodec, video_encoder=cfg.video_encoder,
        image_writer_threads=cfg.image_writer_threads, **kw)


def _convert_part(cfg: ConvertConfig, opts: SyncOptions, bags: list[Path],
                  root: Path) -> list[dict[str, Any]]:
    """In a worker: ``bags`` → one dataset at ``root`` (empty if no frame); their entries."""
    with writer_for(cfg, root, int(opts.fps), allow_empty=True) as writer:
        return [convert_bag(bag, cfg, opts, writer) for bag in bags]


def _size(bag: Path) -> int:
    return sum(f.stat().st_size for f in bag.iterdir() if f.is_file()) or 1


def split_bags(bags: list[Path], n: int) -> list[list[Path]]:
    """``bags`` cut into ``n`` runs of consecutive bags with about equal bytes each (the work
    is about proportional to them); order kept, none empty."""
    n = max(1, min(n, len(bags)))
    sizes = [_size(b) for b in bags]
    total, cuts, acc = sum(sizes), [], 0
    for i, size in enumerate(sizes[:-1]):
        acc += size
        left = len(bags) - i - 1  # bags after this one
        want = n - 1 - len(cuts)  # cuts still to place
        if want and (acc >= total * (len(cuts) + 1) / n or left == want):
            cuts.append(i + 1)
    edges = [0, *cuts, len(bags)]
    return [bags[a:b] for a, b in itertools.pairwise(edges)]


def _stop(pool: ProcessPoolExecutor, before: set[int]) -> None:
    """Cancel what has not started and kill the workers (they hold nothing worth keeping)."""
    pool.shutdown(wait=False, cancel_futures=True)
    workers = [p for p in multiprocessing.active_children() if p.pid not in before]
    for p in workers:
        p.kill()
    for p in workers:
        p.join(timeout=10)


def _result(future: Future[list[dict[str, Any]]], bag: Path) -> list[dict[str, Any]]:
    try:
        return future.result()
    except BrokenProcessPool as err:
        raise ConversionError(
            f"a conversion process died while converting bags (e.g. '{bag}'): killed for "
            f"memory, or a crash in a native library; convert with --jobs 1 to see which bag "
            f"and why") from err


def convert_parts(cfg: ConvertConfig, opts: SyncOptions, bags: list[Path],
                  parts: Path) -> list[list[dict[str, Any]]]:
    """Convert ``bags`` into ``parts/<i>``, one per run of bags (``split_bags``), with
    ``cfg.jobs`` processes; each part's entries, in bag order. The first failure stops every
    worker and is raised."""
    parts.mkdir(parents=True)
    runs = split_bags(bags, cfg.jobs)
    before = {p.pid for p in multiprocessing.active_children()}
    pool = ProcessPoolExecutor(
        max_workers=len(runs), mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker, initargs=(os.getpid(), logging.getLogger().level))
    try:
        futures: list[Future[list[dict[str, Any]]]] = [
            pool.submit(_convert_part, cfg, opts, run, parts / f"{i:05d}")
            for i, run in enumerate(runs)]
        pending = set(futures)
        import lerobot.datasets.aggregate  # noqa: F401 (for the merge, while workers run)

        with tqdm(total=len(bags), desc="bags", unit="bag", disable=not cfg.progress,
                  file=sys.stderr, leave=False) as bar:
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
                for f in done:
                    run = runs[futures.index(f)]
                    _result(f, run[0])  # raises the worker's error
                    bar.update(len(run))
        entries = [f.result() for f in futures]
    except BaseException:
        _stop(pool, before)
        raise
    pool.shutdown(wait=True)
    return entries


def merge_parts(cfg: ConvertConfig, parts: Path, entries: list[list[dict[str, Any]]],
                target: Path, existing: Path | None) -> None:
    """Merge the parts with frames (after ``existing``) into a new dataset at ``target``."""
    roots = [parts / f"{i:05d}" for i, part in enumerate(entries)
             if any(e["frames_written"] for e in part)]
    sources = ([existing] if existing is not None else []) + roots
    if len(sources) == 1 and existing is None:
        sources[0].rename(target)
        return
    from lerobot.datasets.aggregate import aggregate_datasets

    repo_id = cfg.repo_id or f"local/{cfg.output.name}"
    try:
        aggregate_datasets([repo_id] * len(sources), repo_id, roots=sources, aggr_root=target)
    except ValueError as err:
        if existing is None:
            raise
        raise DatasetExistsError(
            f"cannot append to '{existing}' in parallel: lerobot refuses to merge it with the "
            f"new episodes ({str(err)[:200]}); append with --jobs 1") from err
    reindex_stats(target)


def reindex_stats(root: Path) -> None:
    """Make the ``index``/``episode_index`` statistics those of the merged dataset.

    ``aggregate_datasets`` re-indexes the rows but keeps each part's statistics of its own
    (part-local) indices. Per episode they only shift (all but ``std`` and ``count``): by the
    episode's first row / its episode index; the dataset's are then aggregated as lerobot
    does (``aggregate_stats``), so they equal a serial conversion's up to float rounding.
    """
    import numpy as np
    import pandas as pd
    from lerobot.datasets.compute_stats import aggregate_stats
    from lerobot.datasets.utils import load_stats, write_stats

    per_episode: list[dict[str, dict[str, np.ndarray]]] = []
    for path in sorted((root / "meta" / "episodes").rglob("*.parquet")):
        df = pd.read_parquet(path)
        for key, first in (("index", "dataset_from_index"), ("episode_index", "episode_index")):
            cols = [c for c in df.columns if c.startswith(f"stats/{key}/")]
            shift = df[first].to_numpy() - np.array([v[0] for v in df[f"stats/{key}/min"]])
            for col in cols:
                if col.rsplit("/", 1)[1] not in ("std", "count"):
                    df[col] = [np.asarray(v) + d for v, d in zip(df[col], shift, strict=True)]
        df.to_parquet(path)
        per_episode += [{key: {c.rsplit("/", 1)[1]: np.asarray(row[c]) for c in df.columns
                               if c.startswith(f"stats/{key}/")}
                         for key in ("index", "episode_index")} for _, row in df.iterrows()]
    stats = load_stats(root)
    stats.update(aggregate_stats(per_episode))
    write_stats(stats, root)
