"""A LeRobot v3.0 dataset written with lerobot's ``LeRobotDataset`` writer, checked at the end.

``LeRobotWriter`` creates the dataset at a path that must not exist yet (the converter points it
into its hidden build folder, ``build_dir``, and moves the result into place) or, with
``append_from``, copies an existing dataset there and adds episodes to the copy. Video frames
go to ``DirectVideoEncoder`` (no PNGs, statistics on lerobot's sample of frames) unless
``video_encoder="lerobot"`` (lerobot's PNGs and per-episode encoding, in this process: no
encoder processes that could outlive it). Closing refuses a dataset whose statistics hold a
non-finite number.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

from snapflow_ros.data.direct_video import DirectVideoEncoder
from snapflow_ros.sched_guard import keep_scheduling_policy

log = logging.getLogger(__name__)

VIDEO_CODECS = ("libsvtav1", "h264", "hevc")
VIDEO_ENCODERS = ("direct", "lerobot")


class DatasetExistsError(FileExistsError):
    """The output root exists and may not be replaced."""


class DatasetCheckError(RuntimeError):
    """A finished dataset that fails the final check (never moved into place)."""


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


def check_stats(root: Path) -> None:
    """Raise DatasetCheckError if ``meta/stats.json`` holds a non-finite number."""
    stats = json.loads((root / "meta" / "stats.json").read_text())
    bad = []
    for key, feature in stats.items():
        for name, value in feature.items():
            flat = value if isinstance(value, list) else [value]
            while flat and isinstance(flat[0], list):
                flat = [x for sub in flat for x in sub]
            if any(not math.isfinite(float(x)) for x in flat):
                bad.append(f"{key}.{name}")
    if bad:
        raise DatasetCheckError(
            f"refusing to finish the dataset: meta/stats.json has non-finite values in "
            f"{', '.join(bad[:6])}; this is a converter bug (a bad value got through): "
            f"please report it with the sync report")


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
    ``"task"``; call ``begin_episode(length)`` before an episode's first frame. ``extra_files``
    (name → text) are written beside ``meta/`` at the dataset root. Closing without any episode
    raises unless ``allow_empty`` (a parallel conversion's part for a bag without frames).
    """

    def __init__(self, root: str | Path, *, repo_id: str, fps: int, features: dict[str, Any],
                 robot_type: str, video: bool, vcodec: str = "libsvtav1",
                 video_encoder: str = "direct", image_writer_threads: int = 2,
                 append_from: Path | None = None, allow_empty: bool = False) -> None:
        if vcodec not in VIDEO_CODECS:
            raise ValueError(f"vcodec {vcodec!r} is not one of {VIDEO_CODECS}")
        if video_encoder not in VIDEO_ENCODERS:
            raise ValueError(f"video encoder {video_encoder!r} is not one of {VIDEO_ENCODERS}")
        self.root = Path(root)
        self.repo_id, self.fps, self.features = repo_id, int(fps), features
        self.robot_type, self.video, self.vcodec = robot_type, video, vcodec
        self.video_encoder = video_encoder if video else ""
        self.image_writer_threads = image_writer_threads
        self.append_from = append_from
        self.allow_empty = allow_empty
        self.appended_to = 0  # episodes already in the dataset appended to
        self.episodes = 0
        self.frames = 0
        self.extra_files: dict[str, str] = {}
        self._dataset: Any = None
        self._direct: DirectVideoEncoder | None = None

    def __enter__(self) -> LeRobotWriter:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        threads = self.image_writer_threads if self.video_encoder != "direct" else 0
        if self.append_from is not None:
            shutil.copytree(self.append_from, self.root)
            self._dataset = LeRobotDataset(self.repo_id, root=self.root, vcodec=self.vcodec,
                                           video_backend="pyav")
            self.appended_to = int(self._dataset.meta.total_episodes)
            if threads > 0:
                self._dataset.start_image_writer(num_threads=threads)
        else:
            self._dataset = LeRobotDataset.create(
                repo_id=self.repo_id, fps=self.fps, features=self.features, root=self.root,
                robot_type=self.robot_type, use_videos=self.video, vcodec=self.vcodec,
                image_writer_threads=threads, video_backend="pyav")
        if self.video_encoder == "direct":
            self._attach_direct_encoder()
        return self

    def _attach_direct_encoder(self) -> None:
        ds = self._dataset
        if getattr(ds, "_streaming_encoder", "absent") is not None:  # not lerobot 0.4.4's
            log.warning("this lerobot version's dataset writer is unknown to the direct video "
                        "encoder; using lerobot's own (PNG frames, slower)")
            self.video_encoder = "lerobot"
            if self.image_writer_threads > 0:
                ds.start_image_writer(num_threads=self.image_writer_threads)
            return
        self._direct = DirectVideoEncoder(self.fps, self.vcodec)
        ds._streaming_encoder = self._direct  # lerobot 0.4.4's streaming-encoder slot

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            raise RuntimeError("LeRobotWriter is not open (use it in a `with` block)")
        return self._dataset

    @property
    def buffered(self) -> int:
        """Frames added to the episode being written."""
        buffer = self.dataset.episode_buffer
        return int(buffer["size"]) if buffer else 0

    def begin_episode(self, length: int) -> None:
        """Announce the next episode's number of frames (the direct encoder samples by it)."""
        if self.buffered:
            raise RuntimeError("begin_episode() while an episode is being written")
        if self._direct is not None:
            self._direct.expect(length)

    def add_frame(self, frame: dict[str, Any]) -> None:
        self.dataset.add_frame(frame)  # raises if an encoder thread died

    def save_episode(self) -> None:
        size = self.buffered
        if size == 0:
            raise RuntimeError("save_episode() with no frames added")
        with keep_scheduling_policy():  # libsvtav1 makes the encoding thread real-time
            self.dataset.save_episode(parallel_encoding=False)  # no encoder processes
        self.episodes += 1
        self.frames += size

    def discard_episode(self) -> None:
        """Drop the frames added since the last ``save_episode`` (and their files)."""
        ds = self.dataset
        if not self.buffered:
            return
        from lerobot.datasets.utils import DEFAULT_IMAGE_PATH

        index = int(ds.episode_buffer["episode_index"])
        if ds.image_writer is not None:
            ds.image_writer.wait_until_done()
        ds.clear_episode_buffer(delete_images=True)  # image keys, and the encoder's episode
        for key in ds.meta.video_keys:  # lerobot leaves the PNGs of video keys behind
            folder = ds.root / Path(DEFAULT_IMAGE_PATH.format(
                image_key=key, episode_index=index, frame_index=0)).parent
            shutil.rmtree(folder, ignore_errors=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        dataset, self._dataset = self._dataset, None
        with keep_scheduling_policy():  # finalize() may encode the last batch of episodes
            if exc is not None:
                # flush lerobot's buffers and stop its threads now: its destructors would
                # otherwise write into the build folder while it is removed
                for close in (dataset.stop_image_writer, dataset.finalize):
                    try:
                        close()
                    except Exception:  # the first error matters, not the cleanup's
                        log.debug("closing the failed dataset: %s failed", close, exc_info=True)
                return
            empty = self.episodes == 0 and not self.appended_to
            if empty and not self.allow_empty:
                raise RuntimeError("no episode was written; refusing to leave an empty dataset")
            dataset.finalize()
            dataset.stop_image_writer()
        if empty:
            return
        _remove_empty_dirs(Path(dataset.root) / "images")
        check_stats(Path(dataset.root))
        for name, text in self.extra_files.items():
            (Path(dataset.root) / name).write_text(text)
