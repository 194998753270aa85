"""The converter's sync report: a JSON document and a readable summary of it.

Both are written at the dataset root beside ``meta/`` (``sync_report.json``,
``sync_report.txt``; lerobot only reads ``meta/``, ``data/`` and ``videos/``). Per bag: slots,
frames written, frames dropped per reason, reused reference frames, episodes, the tasks
written, each feature's freshness window (and where it came from), unusable messages with the
first faults, the deviation of frame intervals from 1/fps, each feature's sample age, each
topic's rate and interval jitter, and warnings. Reasons: ``no_reference`` (no reference
message near the slot and none fresh enough), ``missing:<key>`` (no message at or before the
frame), ``stale:<key>`` (older than the freshness window), ``bad:<key>`` (the message it would
use cannot be used: NaN joint, image buffer of the wrong length, undecodable image),
``missing:task``, ``outside_episode`` (between stop and start markers), ``short_episode`` (a
gap-free piece shorter than ``--min-episode-frames``). Joint features name the first failing
joint when only some fail: ``stale:observation.state[gripper]``.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from snapflow_ros.data.sync import (
    NO_REFERENCE,
    OUTSIDE_EPISODE,
    SHORT_EPISODE,
    BagPlan,
    SyncOptions,
)
from snapflow_ros.topic_map import ACTION_KEY, IMAGE_PREFIX, STATE_KEY

JSON_NAME, TEXT_NAME = "sync_report.json", "sync_report.txt"
WARN_DROPPED = 0.05
"""Warn when more than this fraction of a bag's slots (inside episodes) is dropped."""


def flag_name(key: str) -> str:
    """Feature key → the name ``--max-age-for`` takes (camera name, ``state``, ``action``)."""
    return {STATE_KEY: "state", ACTION_KEY: "action"}.get(key, key.removeprefix(IMAGE_PREFIX))


def age_sources(opts: SyncOptions, keys: list[str]) -> dict[str, str]:
    return {k: "--max-age-for" if k in opts.max_age else "--max-age"
            if opts.default_age is not None else "measured" for k in keys}


def bag_entry(path: Path, storage: str, task: str | None, plan: BagPlan, opts: SyncOptions,
              notes: list[str] | None = None) -> dict[str, Any]:
    """One bag's section of the report."""
    kept = [plan.tasks[i] or task for a, b in plan.episodes for i in range(a, b)]
    stats = dict(plan.stats)
    return {"bag": str(path), "storage": storage, "tasks": dict(Counter(kept)),
            "slots": plan.slots, "frames_written": plan.kept,
            "episodes_written": len(plan.episodes),
            "episode_lengths": [b - a for a, b in plan.episodes],
            "reference_repeated": plan.repeated, "dropped": dict(plan.drop_counts.most_common()),
            "max_age_s": {k: round(v, 6) for k, v in plan.ages.items()},
            "max_age_from": age_sources(opts, list(plan.ages)),
            "bad_messages": {k: t["bad_messages"] for k, t in stats["topics"].items()
                             if t.get("bad_messages")},
            **stats, "notes": [*stats["notes"], *(notes or [])]}


def _fix(reason: str, entry: dict[str, Any]) -> str:
    code, _, rest = reason.partition(":")
    key = rest.split("[")[0] or entry.get("reference", "")
    topic = entry.get("topics", {}).get(key, {})
    age = entry.get("max_age_s", {}).get(key)
    if code in ("stale", NO_REFERENCE):
        return (f"widen the window with --max-age-for {flag_name(key)}=S (now "
                f"{age if age is not None else '?'} s; the topic's mean interval is "
                f"{topic.get('interval_ms', float('nan')):.1f} ms, largest gap "
                f"{topic.get('max_gap_ms', float('nan')):.1f} ms)")
    if code == "bad":
        return f"{entry['bad_messages'].get(key, 0)} message(s) could not be used (faults " \
               f"listed in the report): fix the publisher"
    if code == "missing" and "[" in rest:
        return f"joint {rest.split('[')[1].rstrip(']')!r} has no value yet at those frames: " \
               f"check the topic map's joint list and that its driver publishes"
    if code == "missing":
        return "the topic starts after the reference camera or is empty: check its publisher"
    if reason == SHORT_EPISODE:
        return "lower --min-episode-frames"
    return "see the sync report"


def bag_warnings(entry: dict[str, Any], opts: SyncOptions) -> list[str]:
    """A warning when more than ``WARN_DROPPED`` of a bag's slots are dropped, naming the main
    reason and the flag (or fix) that helps."""
    dropped = {k: v for k, v in entry["dropped"].items() if k != OUTSIDE_EPISODE}
    slots = entry["slots"] - entry["dropped"].get(OUTSIDE_EPISODE, 0)
    total = sum(dropped.values())
    if slots <= 0 or total <= WARN_DROPPED * slots:
        return []
    reason, count = max(dropped.items(), key=lambda kv: kv[1])
    entry_ref = {**entry, "reference": opts.reference}
    line = (f"bag {entry['bag']}: {100 * total / slots:.0f}% of the frames dropped, most as "
            f"{reason} ({count}): {_fix(reason, entry_ref)}")
    entry.setdefault("warnings", []).append(line)
    return [line]


def build_report(output: Path, opts: SyncOptions, bags: list[dict[str, Any]],
                 settings: dict[str, Any]) -> dict[str, Any]:
    """The whole report: settings, totals over bags, and the bag entries."""
    dropped: Counter[str] = Counter()
    bad: Counter[str] = Counter()
    for b in bags:
        dropped.update(b["dropped"])
        bad.update(b.get("bad_messages", {}))
    return {
        "dataset": str(output),
        "fps": opts.fps,
        "reference": opts.reference,
        "max_age_s": {"default": opts.default_age if opts.default_age is not None
                      else "measured per bag", **opts.max_age},
        "settings": settings,
        "totals": {"bags": len(bags), "slots": sum(b["slots"] for b in bags),
                   "frames_written": sum(b["frames_written"] for b in bags),
                   "episodes_written": sum(b["episodes_written"] for b in bags),
                   "reference_repeated": sum(b["reference_repeated"] for b in bags),
                   "dropped": dict(dropped.most_common()), "bad_messages": dict(bad),
                   "warnings": [w for b in bags for w in b.get("warnings", [])]},
        "bags": bags,
    }


def _f(x: float, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _tasks(b: dict[str, Any]) -> str:
    if "tasks" not in b:  # a report written before tasks were counted
        return f"task {b.get('task')!r}"
    return "task " + ", ".join(f"{t!r} ({n})" for t, n in b["tasks"].items()) if b["tasks"] \
        else "no task"


def _bag_lines(b: dict[str, Any]) -> list[str]:
    dev = b["frame_interval_deviation"]
    lines = ["", f"bag {b['bag']} ({b['storage']}): {b['episodes_written']} episode(s) "
                 f"{b['episode_lengths']}, {b['frames_written']}/{b['slots']} frames, "
                 f"{_tasks(b)}",
             f"  frame interval vs 1/fps: std {_f(dev['std_ms'], 2)} ms, max "
             f"{_f(dev['max_abs_ms'], 2)} ms"]
    if b["dropped"]:
        lines.append("  dropped: " + ", ".join(f"{k} {v}" for k, v in b["dropped"].items()))
    if b.get("max_age_s"):
        src = b.get("max_age_from", {})
        lines.append("  max age: " + ", ".join(
            f"{flag_name(k)} {v * 1e3:.0f} ms ({src.get(k, '?')})"
            for k, v in b["max_age_s"].items()))
    lines.append(f"  {'feature':<28} {'topic':<32} {'msgs':>6} {'Hz':>7} {'jitter ms':>9} "
                 f"{'age mean/p95/max ms':>21} {'bad':>4}")
    for key, info in b["topics"].items():
        age = b["sample_age"].get(key)
        age_s = f"{_f(age['mean_ms'])}/{_f(age['p95_ms'])}/{_f(age['max_ms'])}" if age else "-"
        lines.append(f"  {key:<28} {info['topic']:<32} {int(info['messages']):>6} "
                     f"{_f(info['rate_hz']):>7} {_f(info['jitter_ms'], 2):>9} {age_s:>21} "
                     f"{info.get('bad_messages', 0):>4}")
        for joint, hz in info.get("joint_rate_hz", {}).items():
            lines.append(f"    joint {joint}: {_f(hz)} Hz")
    for key, faults in b.get("faults", {}).items():
        lines += [f"  bad {key}: {f}" for f in faults]
    lines += [f"  note: {n}" for n in b["notes"]]
    lines += [f"  WARNING: {w}" for w in b.get("warnings", [])]
    return lines


def format_summary(report: dict[str, Any]) -> str:
    """A few readable lines per bag (the same numbers as the JSON)."""
    t = report["totals"]
    kept, slots = t["frames_written"], t["slots"]
    lines = [
        f"dataset {report['dataset']}: {t['episodes_written']} episodes, {kept} frames "
        f"from {t['bags']} bag(s) at {report['fps']:g} fps (reference {report['reference']})",
        f"slots {slots}, written {kept} ({100 * kept / max(slots, 1):.1f}%), reference frames "
        f"reused {t['reference_repeated']}",
    ]
    if t["dropped"]:
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in t["dropped"].items()))
    if t.get("bad_messages"):
        lines.append("unusable messages: " + ", ".join(
            f"{k} {v}" for k, v in t["bad_messages"].items()))
    for b in report["bags"]:
        lines += _bag_lines(b)
    return "\n".join(lines) + "\n"
