"""Encode a LeRobot episode's camera frames straight to mp4, with image statistics on a sample.

lerobot 0.4.4 writes every video frame as a PNG, encodes the PNGs at ``save_episode`` and
computes image statistics on ~100-180 of them (``compute_stats.sample_indices``); its streaming
encoder skips the PNGs but computes statistics on *every* frame (~8.5 ms each). This encoder
does neither: one thread per camera encodes frames as they are added, with lerobot's codec
settings (``video_utils._get_codec_options``: GOP 2, CRF 30, yuv420p), and keeps the frames
lerobot's sampling would pick for an episode of the announced length, so the statistics are
exactly those of lerobot's PNG path (PNGs are lossless; ``image_stats`` computes lerobot's
numbers from value counts).

It implements the streaming-encoder calls ``LeRobotDataset`` 0.4.4 makes (``start_episode``,
``feed_frame``, ``finish_episode``, ``cancel_episode``, ``close``); ``lerobot_writer`` hands it
to the dataset and falls back to lerobot's own writing where that interface is not found.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from snapflow_ros.data.image_stats import image_stats
from snapflow_ros.sched_guard import keep_scheduling_policy

QUEUE_FRAMES = 16
_DONE = object()


class _Camera(threading.Thread):
    """Encodes one camera's frames of one episode; keeps the sampled ones for statistics."""

    def __init__(self, path: Path, fps: int, vcodec: str, options: dict[str, str],
                 sample: set[int]) -> None:
        super().__init__(daemon=True, name=f"encode-{path.stem}")
        self.path, self.fps, self.vcodec, self.options = path, fps, vcodec, options
        self.sample = sample
        self.frames: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_FRAMES)
        self.cancelled = threading.Event()
        self.stats: dict[str, np.ndarray] | None = None
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with keep_scheduling_policy():  # SVT-AV1 makes the opening thread real-time
                self._encode()
        except BaseException as err:  # reported to the writer by finish_episode / feed
            self.error = err

    def _encode(self) -> None:
        import av
        from lerobot.datasets.compute_stats import auto_downsample_height_width

        kept: list[np.ndarray] = []
        container = stream = None
        try:
            while (rgb := self.frames.get()) is not _DONE:
                if self.cancelled.is_set():
                    return
                if container is None:
                    container = av.open(str(self.path), "w")
                    stream = container.add_stream(self.vcodec, self.fps, options=self.options)
                    stream.pix_fmt = "yuv420p"
                    stream.height, stream.width = rgb.shape[:2]
                    stream.time_base = Fraction(1, self.fps)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = self.count, Fraction(1, self.fps)
                for packet in stream.encode(frame):
                    container.mux(packet)
                if self.count in self.sample:
                    kept.append(auto_downsample_height_width(rgb.transpose(2, 0, 1)))
                self.count += 1
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
        finally:
            if container is not None:
                container.close()
        if kept:  # lerobot's compute_episode_stats on the same frames (before its /255)
            self.stats = image_stats(np.stack(kept))

    def put(self, item: Any) -> None:
        """Queue a frame (or the end); waits for room, fails if the thread died."""
        while True:
            if self.error is not None or not self.is_alive():
                raise RuntimeError(f"video encoder {self.name} stopped: {self.error!r}")
            try:
                self.frames.put(item, timeout=0.5)
                return
            except queue.Full:
                continue


class DirectVideoEncoder:
    """lerobot 0.4.4's streaming-encoder calls, without PNGs and with sampled statistics.

    Call ``expect(length)`` before the first frame of each episode: the statistics sample
    depends on the episode's length, as in lerobot's ``sample_indices``.
    """

    def __init__(self, fps: int, vcodec: str, encoder_threads: int | None = None) -> None:
        from lerobot.datasets.video_utils import _get_codec_options  # lerobot's settings

        self.fps, self.vcodec = int(fps), vcodec
        self.options = _get_codec_options(vcodec, g=2, crf=30, preset=None)
        if encoder_threads:
            if vcodec == "libsvtav1":
                self.options["svtav1-params"] = f"lp={encoder_threads}"
            else:
                self.options["threads"] = str(encoder_threads)
        self._expected = 0
        self._cams: dict[str, _Camera] = {}

    def expect(self, length: int) -> None:
        """The number of frames of the next episode."""
        self._expected = int(length)

    def start_episode(self, video_keys: list[str], temp_dir: Path) -> None:
        from lerobot.datasets.compute_stats import sample_indices

        if self._cams:
            self.cancel_episode()
        if self._expected < 1:
            raise RuntimeError("DirectVideoEncoder.expect(length) was not called")
        sample = set(sample_indices(self._expected))
        for key in video_keys:  # lerobot removes the file's folder after moving the file
            folder = Path(tempfile.mkdtemp(dir=temp_dir, prefix=".encode-"))
            cam = _Camera(folder / f"{key}.mp4", self.fps, self.vcodec, dict(self.options),
                          sample)
            cam.start()
            self._cams[key] = cam

    def feed_frame(self, video_key: str, image: np.ndarray) -> None:
        self._cams[video_key].put(np.ascontiguousarray(image))

    def finish_episode(self) -> dict[str, tuple[Path, dict[str, np.ndarray] | None]]:
        cams, self._cams = self._cams, {}
        for cam in cams.values():
            cam.put(_DONE)
        for cam in cams.values():
            cam.join()
        results = {}
        for key, cam in cams.items():
            if isinstance(cam.error, OSError):  # e.g. a full disk: reported as such
                raise cam.error
            if cam.error is not None:
                raise RuntimeError(f"encoding {key} failed: {cam.error}") from cam.error
            if cam.count != self._expected:
                raise RuntimeError(f"{key}: {cam.count} frames encoded, {self._expected} "
                                   f"announced with expect()")
            results[key] = (cam.path, cam.stats)
        self._expected = 0
        return results

    def cancel_episode(self) -> None:
        cams, self._cams = self._cams, {}
        for cam in cams.values():
            cam.cancelled.set()
            while cam.is_alive():  # unblock a thread waiting for frames
                try:
                    cam.frames.put(_DONE, timeout=0.1)
                except queue.Full:
                    continue
                cam.join(timeout=1.0)
        for cam in cams.values():
            shutil.rmtree(cam.path.parent, ignore_errors=True)
        self._expected = 0

    def close(self) -> None:
        self.cancel_episode()
