"""A LeRobot v3.0 dataset written all or nothing (lerobot's ``LeRobotDataset`` writer).

``LeRobotWriter`` builds the dataset in a hidden temporary directory beside ``root``
(``snapflow_ros.atomic``) and moves it into place only after ``finalize()`` (which lerobot
requires: it writes the parquet footers) and any extra files (the sync report) are written. A
failure or Ctrl-C removes the temporary directory, so ``root`` is either absent, the previous
dataset (``overwrite``), or a complete new one. ``append`` copies the existing dataset into
the temporary directory first, adds the new episodes there and swaps it in the same way, so a
failed append leaves the old dataset untouched (it costs one copy of the dataset on disk).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from snapflow_ros.atomic import atomic_directory
from snapflow_ros.sched_guard import keep_scheduling_policy

log = logging.getLogger(__name__)

VIDEO_CODECS = ("libsvtav1", "h264", "hevc")
ENCODER_STALL_S = 120.0
PRIVATE_ENCODER_STATE = ("_frame_queues", "_threads", "_dropped_frames")  # lerobot 0.4.4


class DatasetExistsError(FileExistsError):
    """The output root exists and may not be replaced."""


def check_output(root: Path, overwrite: bool, append: bool = False) -> bool:
    """Refuse an existing non-empty ``root`` unless ``overwrite`` or ``append``; never delete or
    extend a directory that is not a LeRobot dataset (no ``meta/info.json``). Returns True when
    there is a dataset to append to."""
    if overwrite and append:
        raise ValueError("--overwrite and --append exclude each other: pick one")
    if not root.exists():
        return False
    if not root.is_dir():
        raise DatasetExistsError(f"output '{root}' exists and is not a directory")
    if not any(root.iterdir()):
        return False
    if not (overwrite or append):
        raise DatasetExistsError(
            f"output '{root}' already exists; pass --overwrite to replace it (the old dataset "
            f"stays in place until the new one is complete), --append to add these bags' "
            f"episodes to it, or choose another --output")
    if not (root / "meta" / "info.json").is_file():
        what = "delete" if overwrite else "append to"
        raise DatasetExistsError(
            f"output '{root}' is not empty and is not a LeRobot dataset (no meta/info.json); "
            f"refusing to {what} it: choose another --output")
    return append


def _feature_signature(feature: dict[str, Any]) -> tuple[Any, ...]:
    return feature["dtype"], tuple(feature["shape"]), feature.get("names")


def check_appendable(root: Path, fps: int, features: dict[str, Any]) -> None:
    """Raise DatasetExistsError naming every difference between the dataset at ``root`` and
    what this conversion would write (fps, feature keys, dtypes incl. video vs image, shapes,
    joint names)."""
    info = json.loads((root / "meta" / "info.json").read_text())
    from lerobot.datasets.utils import DEFAULT_FEATURES

    old = {k: v for k, v in info["features"].items() if k not in DEFAULT_FEATURES}
    problems = []
    if int(info["fps"]) != int(fps):
        problems.append(f"fps {info['fps']} there, {fps} here")
    for key in sorted(set(old) | set(features)):
        if key not in old:
            problems.append(f"{key} is new here")
        elif key not in features:
            problems.append(f"{key} is only there")
        elif _feature_signature(old[key]) != _feature_signature(features[key]):
            problems.append(f"{key}: {_feature_signature(old[key])} there, "
                            f"{_feature_signature(features[key])} here")
    if problems:
        raise DatasetExistsError(
            f"cannot append to '{root}': it differs from what this conversion writes ("
            + "; ".join(problems) + "); convert with the topic map and --video setting it was "
            "made with, or write a new dataset")


def _remove_empty_dirs(top: Path) -> None:
    """Remove ``top`` and its sub-folders if they hold no files (lerobot's emptied frame dirs)."""
    if not top.is_dir() or any(p.is_file() for p in top.rglob("*")):
        return
    for sub in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        sub.rmdir()
    top.rmdir()


class LeRobotWriter:
    """A context manager around lerobot's ``create``/``add_frame``/``save_episode``/``finalize``.

    Frames are dicts of feature key → value (images (H, W, 3) uint8, vectors float32) plus
    ``"task"``. ``extra_files`` (name → text) are written beside ``meta/`` at the dataset root.

    With ``streaming`` (video only), lerobot encodes frames in background threads as they are
    added instead of writing PNGs and encoding at ``save_episode`` (faster on short episodes
    when cores are idle; its per-frame statistics cost more CPU on long ones). Its encoder drops
    frames when its queue stays full (it was made for live recording), so
    ``add_frame`` waits for room in the queue (lerobot 0.4.4's private ``_frame_queues``) and
    ``save_episode`` fails if any frame was dropped anyway.
    """

    def __init__(self, root: str | Path, *, repo_id: str, fps: int, features: dict[str, Any],
                 robot_type: str, video: bool, vcodec: str = "libsvtav1",
                 image_writer_threads: int = 2, overwrite: bool = False,
                 append: bool = False, streaming: bool = False) -> None:
        if vcodec not in VIDEO_CODECS:
            raise ValueError(f"vcodec {vcodec!r} is not one of {VIDEO_CODECS}")
        self.root = Path(root)
        self.repo_id, self.fps, self.features = repo_id, int(fps), features
        self.robot_type, self.video, self.vcodec = robot_type, video, vcodec
        self.image_writer_threads, self.overwrite = image_writer_threads, overwrite
        self.append = append
        self.appended_to = 0  # episodes already in the dataset appended to
        self.streaming = streaming and video
        self.episodes = 0
        self.frames = 0
        self.extra_files: dict[str, str] = {}
        self._atomic: Any = None
        self._dataset: Any = None

    def __enter__(self) -> LeRobotWriter:
        existing = check_output(self.root, self.overwrite, self.append)
        if existing:
            check_appendable(self.root, self.fps, self.features)
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self._atomic = atomic_directory(self.root)
        tmp = self._atomic.__enter__()
        try:
            tmp.rmdir()  # lerobot creates the root itself and refuses an existing one
            if existing:
                shutil.copytree(self.root, tmp)
                self._dataset = LeRobotDataset(
                    self.repo_id, root=tmp, vcodec=self.vcodec, video_backend="pyav",
                    streaming_encoding=self.streaming)
                self.appended_to = int(self._dataset.meta.total_episodes)
                if self.image_writer_threads > 0:
                    self._dataset.start_image_writer(num_threads=self.image_writer_threads)
            else:
                self._dataset = LeRobotDataset.create(
                    repo_id=self.repo_id, fps=self.fps, features=self.features, root=tmp,
                    robot_type=self.robot_type, use_videos=self.video, vcodec=self.vcodec,
                    image_writer_threads=self.image_writer_threads, video_backend="pyav",
                    streaming_encoding=self.streaming)
            encoder = self._encoder()
            if self.streaming and not all(hasattr(encoder, a) for a in PRIVATE_ENCODER_STATE):
                raise RuntimeError("this lerobot version's streaming video encoder is unknown; "
                                   "convert without --streaming-encoding")
        except BaseException as err:
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        return self

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            raise RuntimeError("LeRobotWriter is not open (use it in a `with` block)")
        return self._dataset

    def _encoder(self) -> Any:
        return getattr(self._dataset, "_streaming_encoder", None)

    def add_frame(self, frame: dict[str, Any]) -> None:
        encoder = self._encoder()
        if encoder is not None:  # back-pressure instead of lerobot's frame dropping
            threads = getattr(encoder, "_threads", {})
            for key, q in getattr(encoder, "_frame_queues", {}).items():
                deadline = time.monotonic() + ENCODER_STALL_S
                while q.maxsize and q.qsize() >= q.maxsize - 1 and threads[key].is_alive():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"lerobot's video encoder for {key} made no progress "
                                           f"in {ENCODER_STALL_S:.0f} s")
                    time.sleep(0.002)
        self.dataset.add_frame(frame)  # raises if an encoder thread died

    def save_episode(self) -> None:
        size = int(self.dataset.episode_buffer["size"])
        if size == 0:
            raise RuntimeError("save_episode() with no frames added")
        dropped = {k: n for k, n in getattr(self._encoder(), "_dropped_frames", {}).items() if n}
        if dropped:
            raise RuntimeError(f"lerobot's video encoder dropped frames {dropped}; convert "
                               f"without --streaming-encoding")
        with keep_scheduling_policy():  # libsvtav1 makes the encoding thread real-time
            self.dataset.save_episode()
        self.episodes += 1
        self.frames += size

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with keep_scheduling_policy():  # finalize() may encode the last batch of episodes
            self._close(exc_type, exc, tb)

    def _close(self, exc_type: type[BaseException] | None, exc: BaseException | None,
               tb: TracebackType | None) -> None:
        dataset, self._dataset = self._dataset, None
        try:
            if exc is None:
                if self.episodes == 0:
                    raise RuntimeError("no episode was written; refusing to leave an empty "
                                       "dataset")
                dataset.finalize()
                dataset.stop_image_writer()
                _remove_empty_dirs(Path(dataset.root) / "images")
                for name, text in self.extra_files.items():
                    (Path(dataset.root) / name).write_text(text)
            else:
                # flush lerobot's buffers now: its destructors would otherwise write them into
                # the directory after it is removed
                for close in (dataset.stop_image_writer, dataset.finalize):
                    try:
                        close()
                    except Exception:  # the first error matters, not the cleanup's
                        log.debug("closing the failed dataset: %s failed", close, exc_info=True)
        except BaseException as err:
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)
