"""The converter's second pass: decode the images a bag's plan uses and emit its frames in order.

Image messages are read in bag order; only those a kept frame uses are decoded (``to_rgb``, then
resized to the topic map's size, in a few threads: OpenCV and numpy release the GIL) and cached
until their last frame is emitted, so memory holds a few images, not the bag. An image that
turns out not to decode (corrupt compressed data, or another size than its camera's) raises
``BadImageError`` before any frame that uses it is emitted: the caller marks it bad, re-plans
the bag and resumes at the episode being written.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from snapflow_ros.conversions.image import resize_rgb
from snapflow_ros.data.bag_reader import BagError, BagFile
from snapflow_ros.data.message_checks import decode_image
from snapflow_ros.data.streams import Stream
from snapflow_ros.data.sync import BagPlan
from snapflow_ros.topic_map import ACTION_KEY, STATE_KEY, TopicMap

DECODE_THREADS = 2
LOOKAHEAD = 8


class BadImageError(Exception):
    """An image a planned frame needs cannot be used (found while decoding)."""

    def __init__(self, key: str, arrival: int, fault: str) -> None:
        super().__init__(f"{key}: {fault}")
        self.key, self.arrival, self.fault = key, arrival, fault


def iter_frames(bag: BagFile, plan: BagPlan, streams: dict[str, Stream], tm: TopicMap,
                task: str | None, first_episode: int = 0,
                ) -> Iterator[tuple[int, dict[str, Any], bool]]:
    """``(episode, frame, last_of_episode)`` for every written slot of the plan's episodes
    from ``first_episode`` on, in order (``episode`` indexes ``plan.episodes``).

    A frame holds each camera's (H, W, 3) uint8 RGB image, ``observation.state`` and ``action``
    as float32 and ``task`` (the plan's per-slot task, else ``task``). Images are decoded and
    resized by ``DECODE_THREADS`` threads, up to ``LOOKAHEAD`` frames ahead of the caller.

    Raises:
        BadImageError: an image that a frame not yet emitted needs cannot be decoded.
    """
    episodes = plan.episodes[first_episode:]
    if not episodes:
        return
    slots = np.concatenate([np.arange(a, b) for a, b in episodes])
    owner = np.concatenate([np.full(b - a, first_episode + e) for e, (a, b) in
                            enumerate(episodes)])
    ends = {b - 1 for _, b in episodes}
    cams = {cam.key: cam for cam in tm.cameras}
    # arrival position (bag order within the topic) of the image each frame uses, per camera
    need = {key: streams[key].arrival[plan.samples[key][slots]] for key in cams}
    last_use: dict[str, dict[int, int]] = {
        key: {int(p): j for j, p in enumerate(pos.tolist())} for key, pos in need.items()}
    topic_keys: dict[str, list[str]] = {}
    for key in cams:
        topic_keys.setdefault(streams[key].spec.topic, []).append(key)
    cache: dict[tuple[str, int], Future[np.ndarray]] = {}
    seen = dict.fromkeys(topic_keys, 0)
    ready = emitted = 0  # frames whose images are all submitted / already emitted

    def emit(j: int) -> tuple[int, dict[str, Any], bool]:
        images = {key: cache[(key, int(need[key][j]))].result() for key in cams}
        for key in cams:
            pos = int(need[key][j])
            if last_use[key][pos] == j:
                del cache[(key, pos)]
        slot = int(slots[j])
        return int(owner[j]), _frame(slot, images, plan, streams, task), slot in ends

    with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode") as pool:
        try:
            for topic, _msgtype, _recv_ns, msg in bag.messages(topic_keys):
                pos = seen[topic]
                seen[topic] += 1
                for key in topic_keys[topic]:
                    if pos in last_use[key]:
                        cache[(key, pos)] = pool.submit(_decode, msg, key, pos,
                                                        streams[key].size, cams[key].height,
                                                        cams[key].width)
                while ready < slots.size and all((k, int(need[k][ready])) in cache
                                                 for k in cams):
                    ready += 1
                while emitted < ready and (ready - emitted > LOOKAHEAD or all(
                        cache[(k, int(need[k][emitted]))].done() for k in cams)):
                    yield emit(emitted)
                    emitted += 1
                if ready == slots.size:
                    break
            while emitted < ready:
                yield emit(emitted)
                emitted += 1
        finally:
            for future in cache.values():
                future.cancel()
    if emitted < slots.size:
        raise BagError(f"bag '{bag.path}' ended before frame {emitted} of {slots.size} could "
                       f"be filled (its image messages changed between two reads?)")


def _decode(msg: Any, key: str, pos: int, size: tuple[int, int] | None, height: int,
            width: int) -> np.ndarray:
    rgb, fault = decode_image(msg, size) if size is not None else (None, "no usable size")
    if rgb is None:
        raise BadImageError(key, pos, fault)
    return resize_rgb(rgb, height, width)


def _frame(slot: int, images: dict[str, np.ndarray], plan: BagPlan,
           streams: dict[str, Stream], task: str | None) -> dict[str, Any]:
    frame: dict[str, Any] = dict(images)
    for key in (STATE_KEY, ACTION_KEY):
        idx = plan.samples[key][slot]  # (D,) message index per joint
        values = streams[key].values[idx, np.arange(idx.size)]
        if not np.all(np.isfinite(values)):  # the plan never selects one; never write one
            raise RuntimeError(f"internal error: non-finite {key} {values} planned for slot "
                               f"{slot}; please report it")
        frame[key] = values.astype(np.float32)
    frame["task"] = plan.tasks[slot] or task
    return frame
