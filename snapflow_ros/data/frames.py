"""The converter's second pass: decode the images a bag's plan uses and emit its frames in order.

Image messages are read in bag order; only those a kept frame uses are decoded (``to_rgb``, then
resized to the topic map's size) and cached until their last frame is emitted, so memory holds a
few images, not the bag.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from snapflow_ros.conversions.image import ImageConversionError, resize_rgb, to_rgb
from snapflow_ros.data.bag_reader import BagError, BagFile
from snapflow_ros.data.streams import ConversionError, Stream
from snapflow_ros.data.sync import BagPlan
from snapflow_ros.topic_map import ACTION_KEY, STATE_KEY, TopicMap


def iter_frames(bag: BagFile, plan: BagPlan, streams: dict[str, Stream], tm: TopicMap,
                task: str | None) -> Iterator[tuple[dict[str, Any], bool]]:
    """``(frame, last_of_episode)`` for every written slot of ``plan``, in order.

    A frame holds each camera's (H, W, 3) uint8 RGB image, ``observation.state`` and ``action``
    as float32 and ``task`` (the plan's per-slot task, else ``task``).
    """
    slots = np.concatenate([np.arange(a, b) for a, b in plan.episodes]) if plan.episodes \
        else np.zeros(0, dtype=np.int64)
    if slots.size == 0:
        return
    ends = {b - 1 for _, b in plan.episodes}
    cams = {cam.key: cam for cam in tm.cameras}
    # arrival position (bag order within the topic) of the image each frame uses, per camera
    need = {key: streams[key].arrival[plan.samples[key][slots]] for key in cams}
    last_use: dict[str, dict[int, int]] = {
        key: {int(p): j for j, p in enumerate(pos.tolist())} for key, pos in need.items()}
    topic_keys: dict[str, list[str]] = {}
    for key in cams:
        topic_keys.setdefault(streams[key].spec.topic, []).append(key)
    cache: dict[tuple[str, int], np.ndarray] = {}
    seen = dict.fromkeys(topic_keys, 0)
    j = 0

    def ready(j: int) -> bool:
        return all((key, int(need[key][j])) in cache for key in cams)

    for topic, _msgtype, recv_ns, msg in bag.messages(topic_keys):
        pos = seen[topic]
        seen[topic] += 1
        for key in topic_keys[topic]:
            if pos in last_use[key]:
                cache[(key, pos)] = _decode(msg, cams[key].height, cams[key].width,
                                            bag, topic, recv_ns)
        while j < slots.size and ready(j):
            yield _frame(j, int(slots[j]), plan, streams, need, cache, task), int(slots[j]) in ends
            for key in cams:
                pos_j = int(need[key][j])
                if last_use[key][pos_j] == j:
                    del cache[(key, pos_j)]
            j += 1
        if j == slots.size:
            return
    raise BagError(f"bag '{bag.path}' ended before frame {j} of {slots.size} could be filled "
                   f"(its image messages changed between two reads?)")


def _decode(msg: Any, height: int, width: int, bag: BagFile, topic: str,
            recv_ns: int) -> np.ndarray:
    try:
        return resize_rgb(to_rgb(msg), height, width)
    except ImageConversionError as err:
        raise ConversionError(f"bag '{bag.path}', topic '{topic}', message received at "
                              f"{recv_ns} ns: {err}") from err


def _frame(j: int, slot: int, plan: BagPlan, streams: dict[str, Stream],
           need: dict[str, np.ndarray], cache: dict[tuple[str, int], np.ndarray],
           task: str | None) -> dict[str, Any]:
    frame: dict[str, Any] = {key: cache[(key, int(pos[j]))] for key, pos in need.items()}
    for key in (STATE_KEY, ACTION_KEY):
        frame[key] = streams[key].values[plan.samples[key][slot]].astype(np.float32)
    frame["task"] = plan.tasks[slot] or task
    return frame

