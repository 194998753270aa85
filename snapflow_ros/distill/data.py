"""LeRobot v3.0 datasets for distillation: open, check against the teacher, split, sample.

* ``open_dataset``: a ``LeRobotDataset`` whose ``action`` is the chunk the policy predicts
  (``delta_timestamps`` from the policy config's ``action_delta_indices``), with a video
  backend that works here (torchcodec when its FFmpeg libraries load, else PyAV).
* ``check_features``: the dataset must provide every input/output feature the teacher reads;
  the error lists what is missing and what the dataset has.
* ``split_episodes``: the last N episodes are held out for evaluation.
* ``EpochBatchSampler``: shuffled batches from a seed and an epoch number only, restartable at
  any batch; this is what makes ``--resume`` reproduce the uninterrupted data order exactly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler

from snapflow_ros.distill.config import DistillError

log = logging.getLogger(__name__)

_EMPTY_CAMERA = "observation.images.empty_camera_"


def pick_video_backend(name: str = "auto") -> str:
    """"auto" → torchcodec when it imports (it needs FFmpeg's shared libraries), else pyav."""
    if name != "auto":
        return name
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception:  # ImportError, OSError/RuntimeError when FFmpeg libs are missing
        return "pyav"
    return "torchcodec"


def delta_timestamps(policy_config: Any, fps: float, features: Sequence[str]) -> dict:
    """Chunked keys for the dataset: ``action`` over the policy's action horizon, plus any
    observation history longer than the current frame.

    Not lerobot's ``resolve_delta_timestamps``: for SmolVLA (``observation_delta_indices`` =
    [0]) that one also queries every observation key at offset [0] (the delta path: an extra
    time axis of length 1 and a timestamp query per video frame); a one-frame "history" is
    the current frame, which the dataset returns anyway.
    """
    out: dict[str, list[float]] = {}
    actions = getattr(policy_config, "action_delta_indices", None)
    if actions is None:
        raise DistillError(f"policy type {policy_config.type!r} predicts no action chunk")
    out["action"] = [i / fps for i in actions]
    history = getattr(policy_config, "observation_delta_indices", None)
    if history is not None and list(history) != [0]:
        for key in features:
            if key.startswith("observation."):
                out[key] = [i / fps for i in history]
    return out


def required_features(policy_config: Any) -> dict[str, tuple[int, ...]]:
    """Dataset keys the policy reads or predicts → the policy's feature shape."""
    features = {**policy_config.input_features, **policy_config.output_features}
    return {k: tuple(f.shape) for k, f in features.items() if not k.startswith(_EMPTY_CAMERA)}


def check_features(
    policy_config: Any, dataset_features: dict[str, dict], rename_map: dict[str, str] | None = None
) -> None:
    """Raise a DistillError naming missing or mis-shaped features (after the teacher's renames).

    Images may have any size (the policy resizes them); state and action dims must match.
    """
    renamed = {(rename_map or {}).get(k, k): k for k in dataset_features}
    missing, wrong = [], []
    for key, shape in required_features(policy_config).items():
        if key not in renamed:
            missing.append(key)
            continue
        have = tuple(dataset_features[renamed[key]].get("shape", ()))
        if key.startswith("observation.images."):
            if 3 not in have:
                wrong.append(f"'{key}' has shape {have}, not an RGB image")
        elif have != shape:
            wrong.append(f"'{key}' has shape {have}, the teacher expects {shape}")
    have_keys = sorted(k for k in dataset_features
                       if k not in ("timestamp", "frame_index", "episode_index", "index",
                                    "task_index"))
    if missing:
        raise DistillError(
            f"the dataset lacks feature(s) the teacher needs: {missing}. The dataset has: "
            f"{have_keys}. Use a dataset recorded with the teacher's features (or a teacher "
            f"trained on this dataset)."
        )
    if wrong:
        raise DistillError(f"dataset features do not match the teacher: {'; '.join(wrong)}")


def rename_map_of(preprocessor: Any) -> dict[str, str]:
    """The observation renames of a lerobot preprocessor (its rename step), else {}."""
    for step in getattr(preprocessor, "steps", []):
        mapping = getattr(step, "rename_map", None)
        if isinstance(mapping, dict):
            return dict(mapping)
    return {}


def open_dataset(
    root: str | Path | None,
    repo_id: str | None,
    policy_config: Any,
    *,
    video_backend: str = "auto",
) -> Any:
    """A LeRobotDataset yielding the policy's action chunks (with ``action_is_pad``).

    Local ``root`` loads offline; a ``repo_id`` without a root downloads (online only).
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    if root is not None and not (Path(root) / "meta" / "info.json").is_file():
        raise DistillError(
            f"'{root}' is not a LeRobot v3.0 dataset root (meta/info.json is missing); pass the "
            f"directory that holds meta/, data/ (and videos/)"
        )
    repo = repo_id or f"local/{Path(root).name if root else 'dataset'}"
    try:
        meta = LeRobotDatasetMetadata(repo, root=root)
    except Exception as err:  # offline hub id, bad files: all mean "cannot open it here"
        raise DistillError(f"cannot open dataset {root or repo_id!r}: {err}") from err
    stamps = delta_timestamps(policy_config, meta.fps, list(meta.features))
    return LeRobotDataset(repo, root=root, delta_timestamps=stamps,
                          video_backend=pick_video_backend(video_backend))


def episode_ranges(dataset: Any) -> list[tuple[int, int, int]]:
    """(episode_index, first frame, end frame) per episode, in dataset index order."""
    eps = dataset.meta.episodes
    return [(int(e), int(a), int(b)) for e, a, b in zip(
        eps["episode_index"], eps["dataset_from_index"], eps["dataset_to_index"], strict=True)]


def split_episodes(num_episodes: int, held_out: int) -> tuple[list[int], list[int]]:
    """(training episodes, held-out episodes): the last ``held_out`` are held out."""
    if held_out >= num_episodes:
        raise DistillError(
            f"the dataset has {num_episodes} episode(s); eval_episodes={held_out} holds out "
            f"{held_out} and leaves none to train on. Use --eval_episodes "
            f"{max(num_episodes - 1, 0)} or fewer (0 skips the held-out evaluation)"
        )
    cut = num_episodes - held_out
    return list(range(cut)), list(range(cut, num_episodes))


def frames_of(dataset: Any, episodes: Sequence[int]) -> list[int]:
    """Dataset indices of all frames of ``episodes``."""
    wanted = set(episodes)
    return [i for ep, a, b in episode_ranges(dataset) if ep in wanted for i in range(a, b)]


def evenly_spaced(indices: Sequence[int], limit: int) -> list[int]:
    """At most ``limit`` of ``indices``, evenly spaced and deterministic."""
    if len(indices) <= limit:
        return list(indices)
    picks = torch.linspace(0, len(indices) - 1, limit).round().long().unique()
    return [indices[i] for i in picks.tolist()]


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled, sharded batches that depend only on (seed, epoch): restartable exactly.

    Epoch e permutes ``indices`` with ``torch.Generator().manual_seed(seed + e)``, cuts it into
    full batches (the last partial batch is dropped) and gives process ``rank`` every
    ``world``-th batch. ``set_position(epoch, batch)`` makes the next iteration start at that
    batch, so a resumed run sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, *, seed: int,
                 rank: int = 0, world: int = 1) -> None:
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.epoch, self.start = 0, 0
        if len(self) == 0:
            raise DistillError(
                f"{len(self.indices)} training frame(s) give no full batch of {batch_size} per "
                f"process ({world} process(es)); lower --batch_size or add episodes"
            )

    def __len__(self) -> int:
        return (len(self.indices) // self.batch_size) // self.world

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.start = int(epoch), int(batch)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.indices),
                               generator=torch.Generator().manual_seed(self.seed + self.epoch))
        perm = self.indices[order]
        per_rank = len(self)
        for b in range(self.start, per_rank):
            k = b * self.world + self.rank
            yield perm[k * self.batch_size:(k + 1) * self.batch_size].tolist()


def batches(loader: torch.utils.data.DataLoader, sampler: EpochBatchSampler, epoch: int,
            position: int, seed: int) -> Iterator[tuple[dict[str, Any], int, int]]:
    """Endless (batch, epoch, batches consumed in that epoch) from (epoch, position) on.

    The loader's worker seed generator is re-seeded per epoch, so nothing here draws from the
    global RNG.
    """
    while True:
        sampler.set_position(epoch, position)
        if loader.generator is not None:
            loader.generator.manual_seed(seed + epoch)
        for batch in loader:
            position += 1
            yield batch, epoch, position
        epoch, position = epoch + 1, 0


def _nbytes(item: dict[str, Any]) -> int:
    return sum(v.element_size() * v.nelement() for v in item.values() if torch.is_tensor(v))


class InMemoryDataset(torch.utils.data.Dataset):
    """The items of ``dataset`` at ``indices``, decoded once and kept in memory.

    For small datasets (a few thousand frames) decoding and the chunk queries cost more than
    the training step itself; this pays them once. Batches are identical to the uncached path.
    """

    def __init__(self, dataset: Any, indices: Sequence[int], *, max_bytes: float,
                 progress: bool = True) -> None:
        from tqdm import tqdm

        indices = list(indices)
        estimate = _nbytes(dataset[indices[0]]) * len(indices) if indices else 0
        if estimate > max_bytes:
            raise DistillError(
                f"cache_dataset would hold ~{estimate / 1e9:.1f} GB for {len(indices)} frames "
                f"(cache_limit_gb {max_bytes / 1e9:g}); drop --cache_dataset or raise the limit"
            )
        self.meta = dataset.meta
        self._length = len(dataset)
        self._items = {i: dataset[i] for i in tqdm(indices, desc="caching frames", unit="frame",
                                                   disable=not progress, file=sys.stderr)}

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._items[int(index)]


def make_loader(dataset: Any, sampler: EpochBatchSampler, num_workers: int) -> Any:
    """A DataLoader over ``sampler``'s batches that never touches the global RNG."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers,
        generator=torch.Generator(), persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
