"""A tiny SmolVLA through the real ``distill`` path on bimodal action chunks.

1. Write a LeRobot v3.0 dataset (image storage): each episode is one reach with start c
   (3 dims) and, with equal probability, a bump up or down; the state is (c, phase), so the
   observation does not tell the two trajectories apart: the chunk from any frame is bimodal.
2. Fine-tune a tiny random-weight SmolVLA teacher with lerobot's own flow-matching loss and
   save it as a plain LeRobot directory with its processors (dataset stats).
3. Run ``python -m snapflow_ros distill`` (in-process ``main_distill``) per variant.
4. On held-out first frames (full chunks), with the same noise for every method: distance to
   the nearest mode / (half the gap)², mode share, GT-MSE (normalised action space).

    bash scripts/run.sh python scripts/bench_distill_smolvla.py --out /tmp/sf_smolvla  # ~6 min
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this source tree first

import numpy as np
import torch
from script_args import add_cpu_threads_argument

from snapflow_ros.cpu_threads import apply_cpu_threads
from snapflow_ros.distill.cli import main_distill
from snapflow_ros.distill.metrics import mode_metrics
from snapflow_ros.policies import load_policy
from snapflow_ros.policies.tiny import make_smolvla

H, A, BUMP, TASK = 16, 3, 1.0, "reach the nearest of the two targets"
TAU = np.linspace(0, 1, H)


def trajectory(c: np.ndarray, sign: float) -> np.ndarray:
    """(H, A): from c to 0 with a ±bump in every dim."""
    return c[None] * (1 - TAU[:, None]) + sign * BUMP * np.sin(math.pi * TAU)[:, None]


def write_dataset(root: Path, episodes: int, seed: int) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.images.front": {"dtype": "image", "shape": (16, 16, 3),
                                     "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (A + 1,), "names": None},
        "action": {"dtype": "float32", "shape": (A,), "names": None},
    }
    ds = LeRobotDataset.create(repo_id="local/bimodal", fps=10, root=root, features=features,
                               use_videos=False)
    rng = np.random.default_rng(seed)
    gray = np.full((16, 16, 3), 128, np.uint8)
    for _ in range(episodes):
        c = rng.normal(0, 0.5, A)
        traj = trajectory(c, 1.0 if rng.random() < 0.5 else -1.0)
        for i in range(H):
            ds.add_frame({"observation.images.front": gray, "task": TASK,
                          "observation.state": np.append(c, TAU[i]).astype(np.float32),
                          "action": traj[i].astype(np.float32)})
        ds.save_episode()
    ds.finalize()


def train_teacher(root: Path, out: Path, steps: int, batch: int, lr: float) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/bimodal", root=root,
                        delta_timestamps={"action": [i / 10 for i in range(H)]})
    policy, pre, post = make_smolvla("tiny", seed=0, cameras=("front",), state_dim=A + 1,
                                     action_dim=A, chunk_size=H, stats=ds.meta.stats,
                                     max_state_dim=A + 1, max_action_dim=A)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    policy.train()
    step, t0 = 0, time.perf_counter()
    while step < steps:
        for raw in loader:
            loss, _ = policy.forward(pre(raw))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 250 == 0:
                print(f"teacher step {step}: loss {loss.item():.3f} "  # noqa: T201
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            if step >= steps:
                break
    policy.eval()
    for thing in (policy, pre, post):
        thing.save_pretrained(out)


@torch.no_grad()
def score(root: Path, teacher_dir: Path, student_dir: Path, held_out: list[int],
          draws: int) -> dict[str, dict[str, float]]:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/bimodal", root=root,
                        delta_timestamps={"action": [i / 10 for i in range(H)]})
    teacher, student = load_policy(teacher_dir), load_policy(student_dir)
    starts = [int(ds.meta.episodes[e]["dataset_from_index"]) for e in held_out]
    items = [ds[i] for i in starts for _ in range(draws)]
    raw = torch.utils.data.default_collate(items)
    batch = student.preprocessor(raw)
    state = raw["observation.state"].numpy()
    modes = np.stack([np.stack([trajectory(s[:A], sign) for sign in (1.0, -1.0)])
                      for s in state])  # (N, 2, H, A), dataset units
    stats = student.preprocessor.steps[-1]  # the normaliser: compare in normalised units
    mean = torch.as_tensor(stats.stats["action"]["mean"]).float()
    std = torch.as_tensor(stats.stats["action"]["std"]).float()
    modes_n = (torch.as_tensor(modes).float() - mean) / std
    noise = student.policy.noise_like(len(items), torch.Generator().manual_seed(1234))
    rows = {"teacher_10": (teacher, 10, "euler"), "naive_1": (teacher, 1, "euler"),
            "snapflow_1": (student, 1, "snap"), "snapflow_2": (student, 2, "snap")}
    out = {}
    for name, (loaded, steps, sampler) in rows.items():
        pred = loaded.policy.predict_action_chunk(batch, noise=noise, num_steps=steps,
                                                  sampler=sampler).float().cpu()
        m = mode_metrics(pred, modes_n, batch["action"].float().cpu())
        out[name] = {k: round(v, 3) for k, v in m.items()}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/snapflow_bench_smolvla"))
    p.add_argument("--episodes", type=int, default=240, help="of which 16 are held out")
    p.add_argument("--teacher-steps", type=int, default=2000)
    p.add_argument("--distill-steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--draws", type=int, default=16, help="noise draws per held-out start")
    add_cpu_threads_argument(p, reserved=1, alias="--threads")
    args = p.parse_args()
    apply_cpu_threads(args.cpu_threads, reserved=1)  # as distill resolves it
    shutil.rmtree(args.out, ignore_errors=True)
    root, teacher = args.out / "dataset", args.out / "teacher"
    write_dataset(root, args.episodes, seed=0)
    train_teacher(root, teacher, args.teacher_steps, args.batch, lr=2e-3)
    held_out = list(range(args.episodes - 16, args.episodes))
    variants = {"paper (α .5, λ .1, K 2)": [],
                "λ 1, K 10": ["--consistency_weight", "1", "--target_steps", "10"]}
    results = {}
    for name, flags in variants.items():
        run = args.out / name.split(" (")[0].replace(" ", "").replace(",", "_")
        code = main_distill([
            "--teacher", str(teacher), "--dataset_root", str(root), "--output_dir", str(run),
            "--steps", str(args.distill_steps), "--batch_size", str(args.batch),
            "--lr", "1e-3", "--warmup_steps", "50", "--eval_episodes", "16",
            "--eval_max_samples", "64", "--num_workers", "0", "--save_every", "100000",
            "--cpu_threads", str(args.cpu_threads), *flags])
        if code != 0:
            return code
        results[name] = score(root, teacher, run / "student", held_out, args.draws)
    header = f"\n{'variant':<26} {'method':<12} {'nearest':>8} {'mode+':>6} {'GT-MSE':>7}"
    print(header)  # noqa: T201
    for name, rows in results.items():
        for method, m in rows.items():
            print(f"{name:<26} {method:<12} {m['nearest_mode']:>8.3f} "  # noqa: T201
                  f"{m['mode0_share']:>6.2f} {m['gt_mse']:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
