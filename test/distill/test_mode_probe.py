"""The offline mode probe (``distill/mode_probe.py``) on a tiny dataset and a tiny SmolVLA."""

from __future__ import annotations

import pytest
import torch

from snapflow_ros.distill import data
from snapflow_ros.distill.mode_probe import first_frames, probe_pairs
from snapflow_ros.policies import load_policy


@pytest.fixture(scope="module")
def loaded(tiny_teacher_dir, tiny_dataset):
    teacher = load_policy(tiny_teacher_dir)
    return teacher, data.open_dataset(tiny_dataset, None, teacher.policy.config)


class ChunkOf:
    """A sampler that answers every observation with one fixed normalised chunk (the probe's
    input, so that the right answer is known): mode 0's, mode 1's or their mean."""

    def __init__(self, policy, chunk: torch.Tensor) -> None:
        self.policy, self.chunk = policy, chunk

    def noise_like(self, n, gen):
        return self.policy.noise_like(n, gen)

    def predict_action_chunk(self, batch, *, noise, num_steps, sampler):
        return self.chunk.expand(len(noise), -1, -1)


def test_a_recorded_chunk_is_its_mode_and_their_mean_is_between(loaded):
    teacher, dataset = loaded
    chunks = teacher.preprocessor(torch.utils.data.default_collate(
        [dataset[i] for i in first_frames(dataset, (0, 1))]))["action"].float()
    methods = {"mode0": (ChunkOf(teacher.policy, chunks[:1]), 1, "euler"),
               "mode1": (ChunkOf(teacher.policy, chunks[1:]), 1, "euler"),
               "mean": (ChunkOf(teacher.policy, chunks.mean(0, keepdim=True)), 1, "euler")}
    out = probe_pairs(methods, teacher.preprocessor, dataset, [(0, 1)], draws=4)
    assert out["mode0"]["mode0_share"] == 1.0 and out["mode0"]["between_share"] == 0.0
    assert out["mode0"]["nearest_mode"] == pytest.approx(0.0, abs=1e-6)
    assert out["mode1"]["mode1_share"] == 1.0 and out["mode1"]["between_share"] == 0.0
    assert out["mean"]["between_share"] == 1.0
    assert out["mean"]["nearest_mode"] == pytest.approx(1.0, rel=1e-4)
    swapped = probe_pairs(methods, teacher.preprocessor, dataset, [(1, 0)], draws=4)
    assert swapped["mode0"]["mode1_share"] == 1.0  # the pair's order names the modes


def test_every_method_gets_the_same_observations_and_noise(loaded):
    teacher, dataset = loaded
    methods = {"a": (teacher.policy, 1, "euler"), "b": (teacher.policy, 1, "euler"),
               "ten": (teacher.policy, 10, "euler")}
    out = probe_pairs(methods, teacher.preprocessor, dataset, [(0, 1), (2, 3)], draws=8)
    assert out["a"] == out["b"]
    for entry in out.values():
        assert entry["pairs"] == 2 and entry["draws"] == 8
        assert entry["mode0_share"] + entry["mode1_share"] == pytest.approx(1.0)
        assert 0.0 <= entry["between_share"] <= 1.0 and entry["nearest_mode"] >= 0.0
    assert out == probe_pairs(methods, teacher.preprocessor, dataset, [(0, 1), (2, 3)], draws=8)


def test_episodes_missing_from_the_dataset_are_named(loaded):
    _, dataset = loaded
    with pytest.raises(ValueError, match=r"episodes \[7\] are not in the dataset"):
        first_frames(dataset, (0, 7))
