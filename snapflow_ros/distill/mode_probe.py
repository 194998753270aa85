"""Offline mode probe: does a sampler pick one of two demonstrated modes, or average them?

Demonstrations recorded in pairs (``sim_demos --balanced``: one start state, one episode to each
of two targets) give, at the pair's first frame, one observation with two valid action chunks.
For each pair the probe draws ``draws`` noise samples, runs every method on the same
observation and noise, and scores the chunks with ``metrics.mode_metrics`` in the policy's
normalised action space against the two recorded chunks: the share nearer each mode, the share
nearer their midpoint than to either (an averaged chunk), and the nearest-mode distance (0: on a
mode, 1: the midpoint). GT-MSE on such data rewards the average (DESIGN §5); this does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from snapflow_ros.distill.metrics import mode_metrics


def first_frames(dataset: Any, episodes: Sequence[int]) -> list[int]:
    """Dataset index of the first frame of each of ``episodes`` (in that order)."""
    from snapflow_ros.distill.data import episode_ranges

    first = {ep: start for ep, start, _ in episode_ranges(dataset)}
    missing = [ep for ep in episodes if ep not in first]
    if missing:
        raise ValueError(f"episodes {missing} are not in the dataset ({len(first)} episodes)")
    return [first[ep] for ep in episodes]


@torch.no_grad()
def probe_pairs(methods: dict[str, tuple[Any, int, str]], preprocessor: Any, dataset: Any,
                pairs: Sequence[tuple[int, int]], *, draws: int = 32,
                seed: int = 1234) -> dict[str, dict[str, float]]:
    """Mode shares per method at the first frame of each pair of episodes.

    Args:
        methods: name → (policy, num_steps, sampler), as ``evaluate.methods``.
        preprocessor: normalises a collated batch (the student's copy of the teacher's).
        dataset: a LeRobotDataset yielding action chunks (``distill.data.open_dataset``).
        pairs: (episode to mode 0, episode to mode 1) from the same start state.
        draws: noise samples per pair; every method gets the same ones.

    Returns:
        name → ``mode0_share``, ``mode1_share``, ``between_share``, ``nearest_mode`` (means
        over pairs × draws), ``pairs``, ``draws``.
    """
    if not pairs:
        raise ValueError("no episode pairs to probe")
    gen = torch.Generator().manual_seed(seed)
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    modes = []
    firsts = first_frames(dataset, [ep for pair in pairs for ep in pair])
    noise_source = next(iter(methods.values()))[0]
    for i0, i1 in zip(firsts[::2], firsts[1::2], strict=True):
        item0, item1 = dataset[i0], dataset[i1]
        batch = preprocessor(torch.utils.data.default_collate([item0] * draws))
        pair_modes = preprocessor(torch.utils.data.default_collate([item0, item1]))["action"]
        modes.append(pair_modes.float().cpu()[None].expand(draws, -1, -1, -1))
        noise = noise_source.noise_like(draws, gen)
        for name, (policy, steps, sampler) in methods.items():
            pred = policy.predict_action_chunk(batch, noise=noise, num_steps=steps,
                                               sampler=sampler)
            samples[name].append(pred.float().cpu())
    all_modes = torch.cat(modes)
    out = {}
    for name, chunks in samples.items():
        m = mode_metrics(torch.cat(chunks), all_modes)
        out[name] = {"mode0_share": round(m["mode0_share"], 4),
                     "mode1_share": round(1.0 - m["mode0_share"], 4),
                     "between_share": round(m["between_share"], 4),
                     "nearest_mode": round(m["nearest_mode"], 4),
                     "pairs": len(pairs), "draws": draws}
    return out
