"""A tiny LeRobot v3.0 dataset on disk and a tiny SmolVLA teacher saved as a plain LeRobot
policy directory (with its processors, normalised by the dataset's stats), built offline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from snapflow_ros.sched_guard import keep_scheduling_policy

FPS = 10
CHUNK = 8
EPISODES = 4
FRAMES = 12
STATE_DIM = ACTION_DIM = 4
TASK = "reach the nearest of the two targets"


def write_dataset(root: Path, *, episodes: int = EPISODES, features: dict | None = None,
                  seed: int = 0) -> Path:
    """``episodes`` episodes of ``FRAMES`` frames: a 24x32 camera, state and action (4 dims).

    The action is a smooth function of the state and time, so the data is learnable.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = features or {
        "observation.images.front": {"dtype": "image", "shape": (24, 32, 3),
                                     "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (STATE_DIM,),
                              "names": [f"j{i}" for i in range(STATE_DIM)]},
        "action": {"dtype": "float32", "shape": (ACTION_DIM,),
                   "names": [f"j{i}" for i in range(ACTION_DIM)]},
    }
    videos = any(spec["dtype"] == "video" for spec in features.values())
    ds = LeRobotDataset.create(repo_id="local/tiny_distill", fps=FPS, root=root,
                               robot_type="sim", features=features, use_videos=videos)
    rng = np.random.default_rng(seed)
    for ep in range(episodes):
        start = rng.normal(size=STATE_DIM).astype(np.float32)
        sign = 1.0 if ep % 2 else -1.0
        for i in range(FRAMES):
            tau = i / (FRAMES - 1)
            state = start * (1 - tau) + sign * math.sin(math.pi * tau)
            frame = {"task": TASK}
            for key, spec in features.items():
                if spec["dtype"] in ("image", "video"):
                    frame[key] = rng.integers(0, 255, spec["shape"], dtype=np.uint8)
                elif key == "action":
                    frame[key] = (state + 0.1 * sign).astype(np.float32)
                else:
                    frame[key] = state[: spec["shape"][0]].astype(np.float32)
            ds.add_frame(frame)
        with keep_scheduling_policy():  # video: libsvtav1 would make this process real-time
            ds.save_episode()
    with keep_scheduling_policy():
        ds.finalize()
    return root


def write_teacher(directory: Path, dataset_root: Path) -> Path:
    """A tiny random-weight SmolVLA saved as lerobot saves a fine-tuned policy."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    from snapflow_ros.policies.tiny import make_smolvla

    stats = LeRobotDatasetMetadata("local/tiny_distill", root=dataset_root).stats
    policy, pre, post = make_smolvla("tiny", seed=0, cameras=("front",), state_dim=STATE_DIM,
                                     action_dim=ACTION_DIM, chunk_size=CHUNK, stats=stats)
    policy.save_pretrained(directory)
    pre.save_pretrained(directory)
    post.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def make_dataset():
    """``write_dataset`` (root, episodes=..., features=...) for tests that need another one."""
    return write_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, tiny_dataset) -> Path:
    return write_teacher(tmp_path_factory.mktemp("teacher") / "smolvla", tiny_dataset)


@pytest.fixture(scope="session")
def act_policy_dir(tmp_path_factory) -> Path:
    """A LeRobot directory holding an ACT policy: not flow matching."""
    directory = tmp_path_factory.mktemp("act") / "act_policy"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"type": "act", "chunk_size": 8}))
    (directory / "model.safetensors").write_bytes(b"")
    return directory


@pytest.fixture
def distill_args(tiny_teacher_dir, tiny_dataset):
    """Miniature distill flags (single thread, no workers) for an output dir, plus extras."""

    def make(out: Path, *extra: str, teacher: Path | None = None,
             dataset: Path | None = None) -> list[str]:
        return ["--teacher", str(teacher or tiny_teacher_dir),
                "--dataset_root", str(dataset or tiny_dataset), "--output_dir", str(out),
                "--warmup_steps", "2", "--lr", "1e-3", "--num_workers", "0",
                "--cpu_threads", "1", "--eval_max_samples", "8", "--eval_batch_size", "8",
                *extra]

    return make
