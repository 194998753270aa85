"""Fidelity benchmark: closed-loop success and mode shares per method, with 95 % intervals.

    bash scripts/run.sh python scripts/bench_fidelity.py --out fidelity --cpu-threads 1
    bash scripts/run.sh python scripts/bench_fidelity.py --out /tmp/fid --mini   # CI-sized

Per task (``TASKS``): expert demonstrations → LeRobot dataset → tiny teacher → three SnapFlow
students (``demo.RECIPES``: λ 0.1 as in the paper, λ 1, λ 1 with a 10-step target), then
``--episodes`` seeded closed-loop episodes per method (``METHODS``; bridge + policy_node,
lock-step, the demo's loop) and the offline held-out eval of each distillation beside them.
Every stage whose output is already in ``--out`` is reused (a second run with other seeds or
more episodes only runs the closed loop); ``--overwrite`` starts from scratch.

Writes ``OUT/fidelity.json`` (per task and method: success rate with its 95 % Wilson interval,
the share of episodes that reached each target with its interval, failures that ended between
the targets, mean episode time, the offline metrics, on two-mode tasks the first-chunk mode
probe of ``distill/mode_probe.py``; the 1-NFE recipes ranked) and ``OUT/fidelity.png``. Full
runs (60 episodes per method) on our 2 cores: the reach task 10.4 min on a quiet machine (build
7.7 min, closed loop 2.7 min), the SO-101 pick 52.6 min, partly loaded (build 19.1 min, closed
loop 33.5 min: failed picks run to the 6 s limit); ``wall_s``, ``build_s``, ``closed_loop_s``
in the JSON. ``--mini`` is a miniature end-to-end run (tiny everything, 2 episodes) for CI:
2-4 min here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this source tree first

from script_args import add_cpu_threads_argument

from snapflow_ros.apps import demo
from snapflow_ros.apps.closed_loop import wilson
from snapflow_ros.cpu_threads import apply_cpu_threads
from snapflow_ros.sim.robots import ROBOTS

log = logging.getLogger("bench_fidelity")


@dataclass(frozen=True)
class Sizes:
    """How much of everything one task gets."""

    demos: int  # expert demonstrations (seeds 0...)
    teacher_steps: int  # teacher flow-matching steps
    distill_steps: int  # SnapFlow steps per recipe
    episode_timeout_s: float = 0.0  # closed-loop episode limit (0: the task's own)


@dataclass(frozen=True)
class FidelityTask:
    """A task of the benchmark: how to get its demonstrations and run its closed loop."""

    name: str  # the bridge's task (``sim_demos``/``mujoco_bridge`` ``task``)
    full: Sizes
    mini: Sizes
    # writes the task's topic map into a directory, returns its path
    topic_map: Callable[[Path], Path] = demo._demo_topic_map
    targets: tuple[str, str] = ("a", "b")  # what ``reached`` 0 and 1 mean
    scene: Callable[[], str] = lambda: ""  # the bridge's scene ("": the packaged arm)
    balanced: bool = True  # demonstrations in pairs, one to each target (two-mode tasks)


def _so101_topic_map(out: Path) -> Path:
    """The SO-101 map with its front camera at 128x96 (the tiny policy pads it to a square
    and resizes to 64)."""
    return demo.write_topic_map(out, "robots/so101_topic_map.yaml", 96, 128)


#: The benchmark's tasks, in order. To add one, append a ``FidelityTask`` here: its name as the
#: bridge knows it, its sizes, a topic-map writer and the scene of its robot.
TASKS: list[FidelityTask] = [
    FidelityTask(demo.TASK, full=Sizes(demo.FULL["demos"], demo.FULL["teacher_steps"],
                                       demo.FULL["distill_steps"]),
                 mini=Sizes(3, 20, 6, episode_timeout_s=1.0), targets=("left", "right")),
    # LeRobot's SO-101 picking a cube it must find in the front camera (one mode); 100 demos
    # and 3000 teacher steps: two runs of 60 episodes gave teacher 10 steps 25 % and 17 %,
    # naive 1 step 7 % and 10 %, SnapFlow 1 17-28 % (README)
    FidelityTask("so101_pick_cube", full=Sizes(100, 3000, 1200),
                 mini=Sizes(2, 20, 6, episode_timeout_s=1.0), topic_map=_so101_topic_map,
                 targets=("picked", "-"), scene=ROBOTS["so101"].scene, balanced=False),
]

#: name: (checkpoint, num_steps, label); checkpoint "teacher" or "student_<recipe>".
METHODS: dict[str, tuple[str, int, str]] = {
    "teacher_10": ("teacher", 10, "teacher, Euler 10 steps"),
    "naive_1": ("teacher", 1, "teacher, naive 1 step"),
    "snapflow_1_paper": ("student_paper", 1, "SnapFlow 1, λ 0.1 (paper)"),
    "snapflow_1_lam1": ("student_lam1", 1, "SnapFlow 1, λ 1"),
    "snapflow_1_lam1_k10": ("student_lam1_k10", 1, "SnapFlow 1, λ 1, K = 10"),
    "snapflow_2_lam1": ("student_lam1", 2, "SnapFlow 2, λ 1"),
}
#: method → (distillation run whose eval.json holds its offline metrics, entry in it)
OFFLINE = {"teacher_10": ("paper", "teacher_10"), "naive_1": ("paper", "naive_1"),
           "snapflow_1_paper": ("paper", "snapflow_1"), "snapflow_1_lam1": ("lam1", "snapflow_1"),
           "snapflow_1_lam1_k10": ("lam1_k10", "snapflow_1"),
           "snapflow_2_lam1": ("lam1", "snapflow_2")}


def build(task: FidelityTask, sizes: Sizes, out: Path, seed: int,
          cpu_threads: int) -> tuple[Path, dict[str, Path]]:
    """Dataset, teacher and one student per recipe under ``out`` (each reused when present).
    Returns the topic map and the checkpoints by ``METHODS`` key."""
    from snapflow_ros.apps.teacher import train_teacher

    out.mkdir(parents=True, exist_ok=True)
    settings = out / "settings.json"
    wanted = {"task": task.name, "seed": seed, **asdict(sizes)}
    if settings.is_file() and json.loads(settings.read_text()) != wanted:
        raise SystemExit(f"{out} was built with {settings.read_text().strip()}, not {wanted}: "
                         "pass --overwrite or another --out")
    settings.write_text(json.dumps(wanted) + "\n")
    topic_map = task.topic_map(out)
    if (out / "dataset" / "meta" / "info.json").is_file():
        log.info("[%s] reusing the dataset in %s", task.name, out / "dataset")
    else:
        for stale in ("bags", "dataset"):
            shutil.rmtree(out / stale, ignore_errors=True)
        demo.record_dataset(out, topic_map, sizes.demos, seed, task.name, scene=task.scene(),
                            balanced=task.balanced)
    checkpoints = {"teacher": out / "teacher"}
    if (out / "teacher" / "model.safetensors").is_file():
        log.info("[%s] reusing the teacher in %s", task.name, out / "teacher")
    else:
        log.info("[%s] teacher: %d flow-matching steps", task.name, sizes.teacher_steps)
        train_teacher(out / "dataset", out / "teacher", steps=sizes.teacher_steps, seed=seed,
                      cpu_threads=cpu_threads)
    for recipe, (label, _) in demo.RECIPES.items():
        run = out / f"distill_{recipe}"
        if (run / "student" / "model.safetensors").is_file() and (run / "eval.json").is_file():
            log.info("[%s] reusing the %s student in %s", task.name, label, run)
        else:
            log.info("[%s] SnapFlow %s: %d steps", task.name, label, sizes.distill_steps)
            demo.distill_student(out / "teacher", out / "dataset", run,
                                 steps=sizes.distill_steps, seed=seed, recipe=recipe,
                                 eval_episodes=2 if sizes.demos > 4 else 1,
                                 cpu_threads=cpu_threads)
        checkpoints[f"student_{recipe}"] = run / "student"
    return topic_map, checkpoints


def _demos(out: Path) -> list[dict[str, Any]]:
    """The task's demonstrations, one summary each (``sim_demos``' ``episodes.jsonl``)."""
    return [json.loads(line)
            for line in (out / "bags" / "episodes.jsonl").read_text().splitlines()]


def demo_pairs(out: Path) -> list[tuple[int, int]]:
    """(episode to target 0, episode to target 1) for each pair of demonstrations recorded
    from one start state (``sim_demos --balanced``: consecutive episodes, one seed)."""
    demos = _demos(out)
    pairs = []
    for a, b in zip(demos[::2], demos[1::2], strict=False):
        if a["seed"] == b["seed"] and {a["reached"], b["reached"]} == {0, 1}:
            pairs.append((a["episode"], b["episode"]) if a["reached"] == 0
                         else (b["episode"], a["episode"]))
    return pairs


def first_chunk_modes(out: Path, checkpoints: dict[str, Path],
                      draws: int) -> dict[str, dict[str, float]]:
    """``distill.mode_probe`` at the first frame of every demonstration pair, per method: do
    its chunks pick a target or average the two? (training starts and the held-out one)"""
    from snapflow_ros.distill import data
    from snapflow_ros.distill.mode_probe import probe_pairs
    from snapflow_ros.policies import load_policy

    loaded = {key: load_policy(path) for key, path in checkpoints.items()}
    teacher = loaded["teacher"]
    dataset = data.open_dataset(out / "dataset", None, teacher.policy.config)
    methods = {name: (loaded[which].policy, steps, "euler" if which == "teacher" else "snap")
               for name, (which, steps, _) in METHODS.items() if which in loaded}
    return probe_pairs(methods, teacher.preprocessor, dataset, demo_pairs(out), draws=draws)


def _rate(count: int, n: int) -> dict[str, Any]:
    low, high = wilson(count, n)
    return {"rate": round(count / max(n, 1), 3), "ci95": [round(low, 3), round(high, 3)]}


def method_entry(result: dict[str, Any], offline: dict[str, Any] | None,
                 targets: tuple[str, str],
                 first_chunk: dict[str, float] | None = None) -> dict[str, Any]:
    """One method's JSON entry from ``demo.run_methods``'s result, its offline metrics and
    its first-chunk mode probe (two-mode tasks)."""
    n = result["episodes"]
    failed = n - result["reached_a"] - result["reached_b"]
    return {
        "label": result["label"], "num_steps": result["num_steps"], "episodes": n,
        "success": _rate(result["reached_a"] + result["reached_b"], n),
        "modes": {targets[0]: _rate(result["reached_a"], n),
                  targets[1]: _rate(result["reached_b"], n),
                  "failed_between": _rate(result["failed_between"], n),
                  "failed_elsewhere": _rate(failed - result["failed_between"], n)},
        "mean_time_s": result["mean_time_s"], "mean_wall_s": result["mean_wall_s"],
        "model_ms_p50": result["model_ms_p50"], "offline": offline,
        "first_chunk": first_chunk, "failures_got_to": result.get("failures_got_to") or None,
        "episodes_": result["episodes_"],
    }


def rank_recipes(methods: dict[str, dict[str, Any]]) -> list[str]:
    """The 1-NFE SnapFlow methods, best first: success rate, then the share of first chunks
    that average the two demonstrated ones (two-mode tasks; fewer is better), then the rarer
    mode's share in closed loop (both modes kept), then the offline P95 error."""
    def key(name: str) -> tuple[float, float, float, float]:
        m = methods[name]
        shares = [v["rate"] for k, v in m["modes"].items() if not k.startswith("failed")]
        averaged = (m.get("first_chunk") or {}).get("between_share", 0.0)
        p95 = (m["offline"] or {}).get("p95_abs_err", float("inf"))
        return -m["success"]["rate"], averaged, -min(shares), p95
    return sorted((n for n in methods if n.startswith("snapflow_1_")), key=key)


def run_task(task: FidelityTask, args: argparse.Namespace) -> dict[str, Any]:
    """Build (or reuse) one task's checkpoints, run every method, return its JSON entry."""
    sizes = task.mini if args.mini else task.full
    out = args.out / task.name
    start = time.perf_counter()
    topic_map, checkpoints = build(task, sizes, out, args.seed, args.cpu_threads)
    built = time.perf_counter()
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    log.info("[%s] closed loop: %d episodes (seeds %d...) for each of %d methods", task.name,
             args.episodes, args.first_seed, len(METHODS))
    results = demo.run_methods(out, topic_map, checkpoints, seeds, methods=METHODS,
                               task=task.name, episode_timeout_s=sizes.episode_timeout_s,
                               cpu_threads=args.cpu_threads, scene=task.scene(),
                               policy_params=_policy_params(args))
    evals = {r: json.loads((out / f"distill_{r}" / "eval.json").read_text())
             for r in demo.RECIPES}
    probe = first_chunk_modes(out, checkpoints, draws=4 if args.mini else 32) \
        if task.balanced else {}
    methods = {name: method_entry(results[name], evals[OFFLINE[name][0]].get(OFFLINE[name][1]),
                                  task.targets, probe.get(name)) for name in METHODS}
    demos = _demos(out)
    return {"sizes": asdict(sizes), "dir": str(out),
            "demos": {task.targets[0]: sum(d["reached"] == 0 for d in demos),
                      task.targets[1]: sum(d["reached"] == 1 for d in demos),
                      "episodes": len(demos)},
            "methods": methods, "ranking_1nfe": rank_recipes(methods),
            "build_s": round(built - start, 1),
            "closed_loop_s": round(time.perf_counter() - built, 1)}


def _policy_params(args: argparse.Namespace) -> dict[str, Any]:
    """policy_node parameters that the command line sets for every method."""
    return {"n_action_steps": args.n_action_steps} if args.n_action_steps else {}


def plot(report: dict[str, Any], path: Path) -> None:
    """Per task: stacked shares per method (each target, failed between, failed elsewhere),
    the success rate's 95 % interval and (two-mode tasks) the first-chunk probe's averaged
    share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = report["tasks"]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(9, 0.5 + 2.6 * len(tasks)),
                             squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:red", "tab:gray"]
    for ax, (name, entry) in zip(axes[:, 0], tasks.items(), strict=True):
        methods = entry["methods"]
        labels = [m["label"] for m in methods.values()]
        left = [0.0] * len(methods)
        for key, color in zip(next(iter(methods.values()))["modes"], colors, strict=True):
            share = [m["modes"][key]["rate"] for m in methods.values()]
            if not any(share):
                continue  # e.g. the second target and "failed between" of a one-mode task
            ax.barh(labels, share, left=left, color=color, label=key.replace("_", " "))
            left = [a + b for a, b in zip(left, share, strict=True)]
        rate = [m["success"]["rate"] for m in methods.values()]
        err = [[r - m["success"]["ci95"][0] for r, m in zip(rate, methods.values(), strict=True)],
               [m["success"]["ci95"][1] - r for r, m in zip(rate, methods.values(), strict=True)]]
        ax.errorbar(rate, labels, xerr=err, fmt="k|", capsize=3, label="success, 95 % CI")
        if all(m.get("first_chunk") for m in methods.values()):
            ax.plot([m["first_chunk"]["between_share"] for m in methods.values()], labels, "wD",
                    markeredgecolor="k", label="first chunks averaged\n(offline probe)")
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        steps = report.get("n_action_steps")
        ax.set_title(f"{name}: {methods[next(iter(methods))]['episodes']} episodes per method"
                     + (f", {steps} steps of each chunk executed" if steps else ""), fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    axes[-1, 0].set_xlabel("fraction of closed-loop episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(report: dict[str, Any]) -> str:
    """A text table per task; ``1st avg``: the share of first chunks nearer the midpoint of
    the two demonstrated chunks than to either (two-mode tasks)."""
    lines = []
    for name, entry in report["tasks"].items():
        t = list(next(iter(entry["methods"].values()))["modes"])
        lines += ["", f"{name} (demos: {entry['demos']})",
                  f"{'method':<28}{'success (95% CI)':>20}{t[0]:>8}{t[1]:>8}{'between':>9}"
                  f"{'sim s':>7}{'MSE':>9}{'P95':>7}{'1st avg':>9}"]
        for m in entry["methods"].values():
            s, off = m["success"], m["offline"] or {}
            mse, p95 = off.get("mse", float("nan")), off.get("p95_abs_err", float("nan"))
            lines.append(
                f"{m['label']:<28}{s['rate']:>8.0%} ({s['ci95'][0]:.0%}-{s['ci95'][1]:.0%})"
                f"{m['modes'][t[0]]['rate']:>8.0%}{m['modes'][t[1]]['rate']:>8.0%}"
                f"{m['modes']['failed_between']['rate']:>9.0%}{m['mean_time_s']:>7.2f}"
                f"{mse:>9.4f}{p95:>7.3f}"
                + (f"{m['first_chunk']['between_share']:>9.0%}" if m.get("first_chunk") else ""))
        for m in entry["methods"].values():
            if m.get("failures_got_to"):  # how far failed picks got
                lines.append(f"  {m['label']}: failures got to "
                             + ", ".join(f"{k} {v}" for k, v in m["failures_got_to"].items()))
        lines.append(f"1-NFE recipes ranked: {', '.join(entry['ranking_1nfe'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("fidelity"), help="output (and reuse) dir")
    p.add_argument("--mini", action="store_true", help="miniature run (CI): tiny everything")
    p.add_argument("--episodes", type=int, default=None,
                   help="closed-loop episodes per method (default 60; 2 with --mini)")
    p.add_argument("--first-seed", type=int, default=50_000, help="episode seeds start here")
    p.add_argument("--seed", type=int, default=0, help="seed of demos and training")
    p.add_argument("--tasks", nargs="+", default=None, choices=[t.name for t in TASKS],
                   help="run only these tasks (default: all)")
    p.add_argument("--overwrite", action="store_true", help="rebuild everything in --out")
    p.add_argument("--n-action-steps", type=int, default=0,
                   help="steps of each chunk executed before the next (policy_node's "
                        "n_action_steps; 0: the policy's, 10 of 30); the chunk size (30) runs "
                        "whole chunks open loop, where an averaged chunk cannot be corrected")
    add_cpu_threads_argument(p, reserved=1)
    args = p.parse_args(argv)
    args.episodes = args.episodes or (2 if args.mini else 60)
    logging.basicConfig(level=logging.INFO, format="[fidelity] %(message)s", stream=sys.stderr,
                        force=True)
    if args.overwrite:
        shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    threads = apply_cpu_threads(args.cpu_threads, reserved=1)
    start, load = time.perf_counter(), os.getloadavg()
    report: dict[str, Any] = {
        "command": " ".join(["scripts/bench_fidelity.py", *(argv or sys.argv[1:])]),
        "mini": args.mini, "episodes": args.episodes, "first_seed": args.first_seed,
        "seed": args.seed, "n_action_steps": args.n_action_steps,
        "cpu_threads": {"requested": args.cpu_threads, "resolved": threads},
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(v, 2) for v in load]},
        "tasks": {}}
    for task in TASKS:
        if args.tasks is None or task.name in args.tasks:
            report["tasks"][task.name] = run_task(task, args)
    report["machine"]["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    report["wall_s"] = round(time.perf_counter() - start, 1)
    (args.out / "fidelity.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "fidelity.png")
    print(table(report))  # noqa: T201
    print(f"\n{args.out / 'fidelity.json'}, {args.out / 'fidelity.png'}; "  # noqa: T201
          f"{report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
