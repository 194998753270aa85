"""The converter's sync report: a JSON document and a readable summary of it.

Both are written at the dataset root beside ``meta/`` (``sync_report.json``,
``sync_report.txt``; lerobot only reads ``meta/``, ``data/`` and ``videos/``). Per bag: slots,
frames written, frames dropped per reason, reused reference frames, episodes, the deviation of
frame intervals from 1/fps (stamp jitter), each feature's sample age, and each topic's rate and
interval jitter. Reasons: ``no_reference`` (no reference message near the slot and none fresh
enough), ``missing:<key>`` (no message at or before the frame), ``stale:<key>`` (older than
the freshness window), ``missing:task``, ``outside_episode`` (between stop and start markers),
``short_episode`` (a gap-free piece shorter than ``--min-episode-frames``).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from snapflow_ros.data.sync import BagPlan, SyncOptions

JSON_NAME, TEXT_NAME = "sync_report.json", "sync_report.txt"


def bag_entry(path: Path, storage: str, task: str | None, plan: BagPlan) -> dict[str, Any]:
    """One bag's section of the report."""
    return {"bag": str(path), "storage": storage, "task": task, "slots": plan.slots,
            "frames_written": plan.kept, "episodes_written": len(plan.episodes),
            "episode_lengths": [b - a for a, b in plan.episodes],
            "reference_repeated": plan.repeated, "dropped": dict(plan.drop_counts.most_common()),
            **plan.stats}


def build_report(output: Path, opts: SyncOptions, bags: list[dict[str, Any]],
                 settings: dict[str, Any]) -> dict[str, Any]:
    """The whole report: settings, totals over bags, and the bag entries."""
    dropped: Counter[str] = Counter()
    for b in bags:
        dropped.update(b["dropped"])
    return {
        "dataset": str(output),
        "fps": opts.fps,
        "reference": opts.reference,
        "max_age_s": {"default": opts.default_age, **opts.max_age},
        "settings": settings,
        "totals": {"bags": len(bags), "slots": sum(b["slots"] for b in bags),
                   "frames_written": sum(b["frames_written"] for b in bags),
                   "episodes_written": sum(b["episodes_written"] for b in bags),
                   "reference_repeated": sum(b["reference_repeated"] for b in bags),
                   "dropped": dict(dropped.most_common())},
        "bags": bags,
    }


def _f(x: float, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


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
    for b in report["bags"]:
        dev = b["frame_interval_deviation"]
        lines += ["", f"bag {b['bag']} ({b['storage']}): {b['episodes_written']} episode(s) "
                      f"{b['episode_lengths']}, {b['frames_written']}/{b['slots']} frames, task "
                      f"{b['task']!r}",
                  f"  frame interval vs 1/fps: std {_f(dev['std_ms'], 2)} ms, max "
                  f"{_f(dev['max_abs_ms'], 2)} ms"]
        if b["dropped"]:
            lines.append("  dropped: " + ", ".join(f"{k} {v}" for k, v in b["dropped"].items()))
        lines.append(f"  {'feature':<28} {'topic':<32} {'msgs':>6} {'Hz':>7} {'jitter ms':>9} "
                     f"{'age mean/p95/max ms':>21}")
        for key, info in b["topics"].items():
            age = b["sample_age"].get(key)
            age_s = (f"{_f(age['mean_ms'])}/{_f(age['p95_ms'])}/{_f(age['max_ms'])}"
                     if age else "-")
            lines.append(f"  {key:<28} {info['topic']:<32} {int(info['messages']):>6} "
                         f"{_f(info['rate_hz']):>7} {_f(info['jitter_ms'], 2):>9} {age_s:>21}")
        lines += [f"  note: {n}" for n in b["notes"]]
    return "\n".join(lines) + "\n"
