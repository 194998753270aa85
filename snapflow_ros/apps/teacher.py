"""Train a small flow-matching teacher (SmolVLA, pi0 or pi0.5) on a LeRobot dataset (offline,
CPU-sized).

Users bring their own fine-tuned policy (``lerobot-train``); the closed-loop demo needs one
built from scratch in minutes, so this trains a tiny random-initialised lerobot policy (the
``<type>-tiny`` built-in) with lerobot's own flow-matching loss (the policy's ``forward``) and
saves it as a plain LeRobot policy directory with its processors: exactly what ``distill``
takes as a teacher.

The policy's features come from the dataset (cameras, state and action sizes, image size).
SmolVLA's state and action are not padded to lerobot's 32 dims (nothing pretrained to stay
compatible with); pi0/pi0.5 keep lerobot's padding (pi0.5's state-prompt processor does not save
its size and pads to 32 when reloaded).
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from snapflow_ros.atomic import atomic_directory
from snapflow_ros.cpu_threads import apply_cpu_threads
from snapflow_ros.distill.data import InMemoryDataset, open_dataset
from snapflow_ros.distill.state import optimizer_step
from snapflow_ros.policies._quiet import quiet_stdout
from snapflow_ros.policies.registry import adapter_class, builtin_builder
from snapflow_ros.topic_map import IMAGE_PREFIX

log = logging.getLogger(__name__)
#: policy types the trainer builds, each from its tiny built-in (``policies.registry``)
TEACHER_TYPES = ("smolvla", "pi0", "pi05")


def teacher_shape(features: dict[str, Any], *, chunk_size: int, n_action_steps: int,
                  policy_type: str = "smolvla") -> dict[str, Any]:
    """The tiny teacher's config arguments (``policies.tiny``, ``policies.tiny_pi``) that match
    a dataset's ``features``: its cameras, state and action sizes, image size, chunking."""
    cameras = [k.removeprefix(IMAGE_PREFIX) for k in features if k.startswith(IMAGE_PREFIX)]
    if not cameras or "observation.state" not in features or "action" not in features:
        raise ValueError(f"the dataset needs camera images, observation.state and action; it "
                         f"has {sorted(features)}")
    height, width = features[IMAGE_PREFIX + cameras[0]]["shape"][:2]
    state_dim = int(features["observation.state"]["shape"][0])
    action_dim = int(features["action"]["shape"][0])
    shape = {"cameras": cameras, "state_dim": state_dim, "action_dim": action_dim,
             "chunk_size": chunk_size, "n_action_steps": n_action_steps,
             "image_hw": (int(height), int(width))}
    if policy_type == "smolvla":
        shape.update(max_state_dim=state_dim, max_action_dim=action_dim)
    return shape


def train_teacher(dataset_root: str | Path, out_dir: str | Path, *, steps: int = 1500,
                  batch_size: int = 32, lr: float = 1e-3, chunk_size: int = 30,
                  n_action_steps: int = 10, seed: int = 0, progress: bool = True,
                  cpu_threads: int = 0, policy_type: str = "smolvla") -> Path:
    """Train a tiny ``policy_type`` teacher on every frame of the dataset (held in memory) and
    save it to ``out_dir``.

    Learning rate: ``lr`` with cosine decay to 5 % over ``steps``. ``cpu_threads``: torch's
    CPU threads (0 = auto: the cores in the affinity mask minus 1; ``cpu_threads.py``).
    Returns ``out_dir``.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    if policy_type not in TEACHER_TYPES:
        raise ValueError(f"policy_type must be one of {', '.join(TEACHER_TYPES)}, got "
                         f"{policy_type!r}")
    threads = apply_cpu_threads(cpu_threads, reserved=1)  # 1: the main thread's batching

    meta = LeRobotDatasetMetadata(f"local/{Path(dataset_root).name}", root=dataset_root)
    shape = teacher_shape(meta.features, chunk_size=chunk_size, n_action_steps=n_action_steps,
                          policy_type=policy_type)
    _, build, size = builtin_builder(f"{policy_type}-tiny")
    policy, pre, post = build(size, seed=seed, stats=meta.stats, **shape)
    dataset = open_dataset(dataset_root, None, policy.config)
    frames = InMemoryDataset(dataset, range(len(dataset)), max_bytes=8e9, progress=progress)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=1e-10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    gen = torch.Generator().manual_seed(seed)
    task = meta.tasks.index[0] if len(meta.tasks) else ""
    policy.train()
    bar = tqdm(range(steps), desc=f"{policy_type} teacher (flow matching)", disable=not progress,
               file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10.0)
    for _ in bar:
        idx = torch.randint(0, len(dataset), (batch_size,), generator=gen).tolist()
        items = [frames[i] for i in idx]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if torch.is_tensor(
            items[0][k])}
        batch["task"] = [it.get("task", task) for it in items]
        loss, _ = policy.forward(pre(batch))
        loss.backward()
        optimizer_step(params, opt, sched, clip_norm=10.0)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    policy.eval()
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp, quiet_stdout():
        policy.save_pretrained(tmp)
        pre.save_pretrained(tmp)
        post.save_pretrained(tmp)
        adapter_class(policy_type).save_builtin_files(tmp, size)
    log.info("%s teacher: %d steps on %d CPU threads, last loss %.4f, saved to %s", policy_type,
             steps, threads, loss.item(), out_dir)
    return out_dir
