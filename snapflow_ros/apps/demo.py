"""``python -m snapflow_ros demo``: the product end to end, closed loop, offline, on CPU.

The built-in default task is the packaged arm reaching either of two targets left and right
(``reach_two_fixed_targets``, the arm starting a little off home): the demonstrations go to
each target equally often, with nothing in the observation saying which, so they are bimodal
and a sampler that averages the two modes ends between the targets and fails.

1. **Demonstrations**: the scripted expert through the MuJoCo bridge, recorded as rosbag2.
2. **Dataset**: ``bag_to_lerobot`` → a LeRobot v3.0 dataset.
3. **Teacher**: a tiny SmolVLA (``--policy-type pi05`` or ``pi0``: a tiny pi0.5 / pi0) trained
   with lerobot's flow-matching loss (``teacher.py``), saved as a plain LeRobot policy directory
   (a stand-in for your fine-tuned policy).
4. **SnapFlow**: ``distill`` turns it into a 1-NFE student (plus the offline eval).
5. **Closed loop**: ``mujoco_bridge`` + ``policy_node`` on the same ROS topics, lock-stepped,
   for the 10-step teacher, the teacher run naively with 1 step, and the SnapFlow student
   with 1 step; success rate, which target was reached, latency.

Everything lands in ``--out`` (default ``snapflow_demo/``): bags, dataset, teacher, the
distillation run (``distill/student`` is the 1-NFE checkpoint), ``closed_loop.json`` and
``closed_loop.png``. ``--quick`` is a miniature run (tests); ``--policy DIR`` only runs the
closed loop for an existing checkpoint. ``--cpu-threads N`` (default 0 = auto) sets the CPU
threads of the teacher's and the distillation's training and of the policy node
(``cpu_threads.py``).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from snapflow_ros import config_cli
from snapflow_ros.cpu_threads import apply_cpu_threads
from snapflow_ros.paths import config_path

log = logging.getLogger("snapflow_ros.apps.demo")
TASK = "reach_two_fixed_targets"
FULL = {"demos": 30, "teacher_steps": 3000, "distill_steps": 1200, "eval_episodes": 20}
QUICK = {"demos": 3, "teacher_steps": 20, "distill_steps": 6, "eval_episodes": 1}
METHODS = {  # name: (checkpoint, num_steps, label)
    "teacher_10": ("teacher", 10, "teacher, Euler 10 steps"),
    "naive_1": ("teacher", 1, "teacher, naive 1 step"),
    "snapflow_1": ("student", 1, "SnapFlow 1-NFE"),
}


@dataclass
class DemoConfig:
    """The closed-loop demo: sim demos -> bags -> dataset -> teacher -> SnapFlow -> ROS nodes."""

    out: Path = Path("snapflow_demo")  # output directory
    overwrite: bool = False  # replace an existing --out
    quick: bool = False  # miniature run (a minute; for tests)
    demos: int | None = None  # expert demonstrations (null: 30; 3 with --quick)
    teacher_steps: int | None = None  # teacher training steps (null: 3000; 20 with --quick)
    distill_steps: int | None = None  # SnapFlow steps (null: 1200; 6 with --quick)
    eval_episodes: int | None = None  # closed-loop episodes per method (null: 20; 1 --quick)
    seed: int = 0  # seed of the demos, training and episodes
    policy: Path | None = None  # skip training: closed-loop episodes for this checkpoint only
    policy_type: str = "smolvla"  # the teacher trained from scratch: smolvla, pi05 or pi0 (tiny)
    # torch/OpenMP CPU threads of the training and the policy node: 0 = auto (cores in the
    # affinity mask minus 1, at least 1), N = exactly N
    cpu_threads: int = 0
    # the policy node's inference engine in the closed loop: auto (eager on CPU), eager,
    # static, compile (graph needs CUDA; the demo runs the node on the CPU)
    engine: str = "auto"

    def __post_init__(self) -> None:
        from snapflow_ros.apps.teacher import TEACHER_TYPES
        from snapflow_ros.policies.engine import resolve_engine

        resolve_engine(self.engine, "cpu")  # graph: a ValueError that names the fix

        if self.policy_type not in TEACHER_TYPES:
            raise ValueError(f"policy_type must be one of {', '.join(TEACHER_TYPES)}, got "
                             f"{self.policy_type!r}")
        for name in (*FULL, "cpu_threads"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "cpu_threads" else 1):
                raise ValueError(f"{name} must be >= {0 if name == 'cpu_threads' else 1}, "
                                 f"got {value}")


def write_topic_map(out: Path, source: str, height: int, width: int,
                    task_text: str | None = None) -> Path:
    """``out/topic_map.yaml``: the packaged map ``source`` (under ``config/``) with every
    camera at ``height`` x ``width`` and, if given, a fixed task text."""
    data = yaml.safe_load(config_path(source).read_text())
    for cam in data["cameras"].values():
        cam.update(height=height, width=width)
    if task_text is not None:
        data["task"] = {"source": "fixed", "text": task_text, "topic": ""}
    path = out / "topic_map.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _demo_topic_map(out: Path) -> Path:
    """The packaged topic map with 64x64 cameras (the tiny policy's native size)."""
    return write_topic_map(out, "topic_map.yaml", 64, 64, "reach one of the two targets")


#: SnapFlow loss recipes the demo and ``scripts/bench_fidelity.py`` distil: name → (label,
#: ``SnapFlowLossConfig`` fields). The optimisation around them is the demo's (below).
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "paper": ("λ 0.1 (paper)", {}),
    "lam1": ("λ 1", {"consistency_weight": 1.0}),
    "lam1_k10": ("λ 1, K = 10 target", {"consistency_weight": 1.0, "target_steps": 10}),
}
#: The recipe the demo ships (``_train``); ``bench_fidelity.py`` ranks them all.
DEMO_RECIPE = "lam1"


def record_dataset(out: Path, topic_map: Path, demos: int, seed: int, task: str = TASK, *,
                   scene: str = "", balanced: bool = True) -> list[dict[str, Any]]:
    """Steps 1-2: ``demos`` expert episodes (seeds ``seed``...) as bags under ``out/bags``,
    converted to a LeRobot dataset at ``out/dataset``. Returns the episodes' summaries.

    With ``balanced`` (the reach tasks) the demonstrations come in pairs from one seed, one to
    each target (``record_demos(balanced=True)``): equal shares of the two modes from the same
    starts, so a teacher's preference for one is its own, not the data's. ``scene``: the
    bridge's ("": the packaged arm)."""
    from snapflow_ros.apps.sim_demos import record_demos
    from snapflow_ros.data.bag_to_lerobot import ConvertConfig, convert
    from snapflow_ros.topic_map import load_topic_map

    log.info("1/5 expert demonstrations: %d episodes", demos)
    episodes = record_demos(out / "bags", demos, seed, topic_map=str(topic_map), task=task,
                            balanced=balanced, scene=scene)
    log.info("    %d/%d successful, target a %d, target b %d",
             sum(d["success"] for d in episodes), len(episodes),
             sum(d["reached"] == 0 for d in episodes), sum(d["reached"] == 1 for d in episodes))
    log.info("2/5 bags -> LeRobot dataset")
    convert(ConvertConfig(bags=[out / "bags"], output=out / "dataset",
                          topic_map=load_topic_map(topic_map), video=False))
    return episodes


def distill_student(teacher: Path, dataset: Path, out_dir: Path, *, steps: int, seed: int,
                    recipe: str = DEMO_RECIPE, eval_episodes: int = 2,
                    cpu_threads: int = 0) -> Path:
    """Step 4: SnapFlow-distil ``teacher`` on ``dataset`` with loss recipe ``recipe``
    (``RECIPES``) into ``out_dir`` (held-out eval of the last ``eval_episodes`` episodes in
    ``out_dir/eval.json``). Returns the student's directory."""
    from snapflow_ros.core import SnapFlowLossConfig
    from snapflow_ros.distill.config import DistillConfig
    from snapflow_ros.distill.trainer import distill

    # Around the loss: a short cosine schedule at a higher lr than the paper's (2.5e-5 over
    # 30k steps), batch 32: CPU-sized, and measured better on bimodal data (README).
    distill(DistillConfig(
        teacher=str(teacher), dataset_root=str(dataset), output_dir=str(out_dir), steps=steps,
        batch_size=32, lr=1e-3, warmup_steps=min(50, steps // 10),
        loss=SnapFlowLossConfig(**RECIPES[recipe][1]), eval_episodes=eval_episodes,
        cache_dataset=True, num_workers=0, save_every=steps, seed=seed,
        cpu_threads=cpu_threads))
    return out_dir / "student"


def _train(out: Path, topic_map: Path, n: dict[str, int], seed: int, cpu_threads: int = 0,
           policy_type: str = "smolvla") -> Path:
    from snapflow_ros.apps.teacher import train_teacher

    record_dataset(out, topic_map, n["demos"], seed)
    log.info("3/5 teacher: tiny %s, %d flow-matching steps", policy_type, n["teacher_steps"])
    train_teacher(out / "dataset", out / "teacher", steps=n["teacher_steps"], seed=seed,
                  cpu_threads=cpu_threads, policy_type=policy_type)
    log.info("4/5 SnapFlow distillation (%s): %d steps", RECIPES[DEMO_RECIPE][0],
             n["distill_steps"])
    return distill_student(out / "teacher", out / "dataset", out / "distill",
                           steps=n["distill_steps"], seed=seed,
                           eval_episodes=2 if n["demos"] > 4 else 1, cpu_threads=cpu_threads)


def run_methods(out: Path, topic_map: Path, checkpoints: dict[str, Path], seeds: Sequence[int],
                *, methods: dict[str, tuple[str, int, str]] = METHODS, task: str = TASK,
                episode_timeout_s: float = 0.0, cpu_threads: int = 0, engine: str = "auto",
                scene: str = "", policy_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Step 5: one closed-loop episode per seed for each of ``methods`` (name → (checkpoint
    key, num_steps, label)) whose checkpoint is in ``checkpoints``; node logs under
    ``out/logs``; ``engine``: the node's inference engine; ``scene``: the bridge's ("": the
    packaged arm); ``policy_params``: more policy_node parameters for every method (e.g.
    ``n_action_steps``). Returns name → label, num_steps, ``closed_loop.summarize`` and the
    episodes (``episodes_``)."""
    from snapflow_ros.apps.closed_loop import run_episodes, summarize

    (out / "logs").mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    for name, (which, steps, label) in methods.items():
        if which not in checkpoints:
            continue
        runs = run_episodes(checkpoints[which], seeds, topic_map=str(topic_map), task=task,
                            episode_timeout_s=episode_timeout_s, desc=label,
                            policy_params={**(policy_params or {}), "num_steps": steps,
                                           "device": "cpu"},
                            log_path=out / "logs" / f"policy_node_{name}.log",
                            cpu_threads=cpu_threads, engine=engine, scene=scene)
        report[name] = {"label": label, "num_steps": steps, **summarize(runs), "episodes_": runs}
        log.info("    %-24s success %3.0f%%  (target a %d, b %d; failed between %d)", label,
                 100 * report[name]["success_rate"], report[name]["reached_a"],
                 report[name]["reached_b"], report[name]["failed_between"])
    return report


def _closed_loop(out: Path, topic_map: Path, checkpoints: dict[str, Path], episodes: int,
                 seed: int, quick: bool, cpu_threads: int = 0,
                 engine: str = "auto") -> dict[str, Any]:
    log.info("5/5 closed loop: %d episodes per method (bridge + policy_node, lock-step)",
             episodes)
    return run_methods(out, topic_map, checkpoints, range(10_000 + seed, 10_000 + seed + episodes),
                       episode_timeout_s=1.0 if quick else 0.0, cpu_threads=cpu_threads,
                       engine=engine)


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    a = [report[n]["reached_a"] / max(report[n]["episodes"], 1) for n in names]
    b = [report[n]["reached_b"] / max(report[n]["episodes"], 1) for n in names]
    labels = [report[n]["label"] for n in names]
    ax.barh(labels, a, color="tab:blue", label="reached target a")
    ax.barh(labels, b, left=a, color="tab:orange", label="reached target b")
    between = [report[n]["failed_between"] / max(report[n]["episodes"], 1) for n in names]
    ax.barh(labels, between, left=[x + y for x, y in zip(a, b, strict=True)], color="tab:red",
            label="failed between the targets")
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of closed-loop episodes")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Two-target reach, closed loop in MuJoCo")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(report: dict[str, Any], offline: dict[str, Any] | None) -> str:
    lines = ["", f"{'method':<24} {'NFE':>3} {'success':>8} {'target a/b':>10} "
                 f"{'between':>7} {'sim s':>6} {'offline P95':>11}"]
    for name, r in report.items():
        p95 = f"{offline[name]['p95_abs_err']:.3f}" if offline and name in offline else "-"
        lines.append(f"{r['label']:<24} {r['num_steps']:>3} {100 * r['success_rate']:>7.0f}% "
                     f"{r['reached_a']:>5}/{r['reached_b']:<4} {r['failed_between']:>7} "
                     f"{r['mean_time_s']:>6.2f} {p95:>11}")
    lines.append("success: closed-loop episodes that reached a target (a: left, b: right); "
                 "between: failures that ended between the targets; sim s: mean episode time; "
                 "offline P95: held-out |action error| (normalised, distill/eval.json). "
                 "Latency: `python -m snapflow_ros bench`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = config_cli.from_command_line(DemoConfig, argv, prog="snapflow_ros demo")
    logging.basicConfig(level=logging.INFO, format="[demo] %(message)s", stream=sys.stderr,
                        force=True)
    n = {k: getattr(args, k) or (QUICK if args.quick else FULL)[k] for k in FULL}
    out = args.out
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise SystemExit(f"'{out}' exists and is not empty; pass --overwrite or --out DIR")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # The demo's own training and the bridge use the resolved count; the policy node gets the
    # user's number, or 0 so that it resolves auto itself.
    threads = apply_cpu_threads(args.cpu_threads, reserved=1)
    log.info("CPU threads: %d (--cpu-threads %d%s)", threads, args.cpu_threads,
             ", auto" if not args.cpu_threads else "")
    topic_map = _demo_topic_map(out)
    if args.policy is not None:
        checkpoints = {"student": args.policy}
    else:
        checkpoints = {"teacher": out / "teacher",
                       "student": _train(out, topic_map, n, args.seed, args.cpu_threads,
                                         args.policy_type)}
    report = _closed_loop(out, topic_map, checkpoints, n["eval_episodes"], args.seed, args.quick,
                          args.cpu_threads, args.engine)
    summary = {"task": TASK, "settings": n, "seed": args.seed, "policy_type": args.policy_type,
               "cpu_threads": {"requested": args.cpu_threads, "resolved": threads},
               "methods": report,
               "offline_eval": json.loads((out / "distill" / "eval.json").read_text())
               if (out / "distill" / "eval.json").is_file() else None,
               "wall_s": round(time.perf_counter() - start, 1)}
    (out / "closed_loop.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(report, out / "closed_loop.png")
    print(_table(report, summary["offline_eval"]))  # noqa: T201
    print(f"\n1-NFE checkpoint: {checkpoints['student']}\nreport: {out / 'closed_loop.json'}, "  # noqa: T201
          f"{out / 'closed_loop.png'}; done in {summary['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
