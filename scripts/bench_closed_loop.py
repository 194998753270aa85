"""Closed-loop success with error bars: re-run the demo's three methods on its checkpoints.

    bash scripts/run.sh python scripts/bench_closed_loop.py [--out snapflow_demo]
        [--episodes 20] [--repeats 2] [--cpu-threads N] [--json]

Reads a finished ``make demo`` output (``teacher/``, ``distill/student/``, ``topic_map.yaml``)
and runs, per repeat, ``--episodes`` fresh seeds per method (teacher 10 steps, teacher naive 1
step, SnapFlow 1-NFE) through the same bridge + policy_node closed loop as the demo. Prints the
success rate per repeat and pooled, with a 95 % Wilson interval. One repeat of 20 episodes
takes about 2 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this source tree first

from script_args import add_cpu_threads_argument

from snapflow_ros.apps.closed_loop import run_episodes, summarize, wilson
from snapflow_ros.apps.demo import METHODS, TASK
from snapflow_ros.cpu_threads import apply_cpu_threads


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("snapflow_demo"), help="a demo's output")
    p.add_argument("--episodes", type=int, default=20, help="episodes per method and repeat")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--first-seed", type=int, default=20_000,
                   help="episode seeds start here (the demo's own are 10000...)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--engine", default="auto",
                   help="the policy node's inference engine: auto (eager on CPU), eager, "
                        "static, compile")
    add_cpu_threads_argument(p, reserved=1)
    args = p.parse_args()
    threads = apply_cpu_threads(args.cpu_threads, reserved=1)  # this process: the bridge
    checkpoints = {"teacher": args.out / "teacher", "student": args.out / "distill" / "student"}
    missing = [str(c) for c in [*checkpoints.values(), args.out / "topic_map.yaml"]
               if not c.exists()]
    if missing:
        p.error(f"not a finished demo output: missing {missing}; run `make demo` first")
    results: dict[str, dict] = {}
    for rep in range(args.repeats):
        first = args.first_seed + rep * args.episodes
        for name, (which, steps, label) in METHODS.items():
            runs = run_episodes(checkpoints[which], range(first, first + args.episodes),
                                topic_map=str(args.out / "topic_map.yaml"), task=TASK,
                                policy_params={"num_steps": steps, "device": "cpu"},
                                desc=f"{label} (repeat {rep + 1})",
                                cpu_threads=args.cpu_threads, engine=args.engine)
            entry = results.setdefault(name, {"label": label, "per_repeat": [], "wins": 0,
                                              "episodes": 0, "wall_s": []})
            entry["per_repeat"].append(summarize(runs)["success_rate"])
            entry["wins"] += sum(r["success"] for r in runs)
            entry["episodes"] += len(runs)
            entry["wall_s"] += [r["wall_s"] for r in runs]
            if not args.json:
                print(f"repeat {rep + 1}  {label:<24} {entry['per_repeat'][-1]:.0%}", flush=True)
    for entry in results.values():
        low, high = wilson(entry["wins"], entry["episodes"])
        entry.update(pooled=round(entry["wins"] / entry["episodes"], 3),
                     ci95=[round(low, 3), round(high, 3)],
                     mean_wall_s=round(sum(entry.pop("wall_s")) / entry["episodes"], 3))
    if args.json:
        print(json.dumps({"task": TASK, "out": str(args.out), "methods": results,
                          "cpu_threads": {"requested": args.cpu_threads, "resolved": threads}},
                         indent=2))
        return 0
    print(f"\n{'method':<26}{'pooled':>8}{'95% CI':>16}{'episodes':>10}{'wall s/ep':>11}")
    for e in results.values():
        ci = f"{e['ci95'][0]:.0%}-{e['ci95'][1]:.0%}"
        print(f"{e['label']:<26}{e['pooled']:>8.0%}{ci:>16}{e['episodes']:>10}"
              f"{e['mean_wall_s']:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
