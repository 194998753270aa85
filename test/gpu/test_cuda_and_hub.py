"""Checks that need a CUDA device (``-m gpu``) or Hugging Face hub access (``-m hub``).

Deselected by default (pyproject addopts); run with ``python -m pytest test -m gpu`` on a GPU
machine, or ``-m hub`` when online.
"""

import pytest
import torch

from snapflow_ros.policies import load_policy, make_builtin
from snapflow_ros.policies.tiny import random_observation

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")


@pytest.mark.gpu
@cuda
def test_cuda_teacher_matches_lerobot_and_bf16_runs():
    loaded = make_builtin("smolvla-tiny", device="cuda")
    policy = loaded.policy
    obs = random_observation(policy.config, generator=torch.Generator().manual_seed(0))
    batch = loaded.preprocessor(obs)
    noise = policy.noise_like(1, torch.Generator().manual_seed(1))
    policy.config.num_steps = 10
    ref = policy.policy.predict_action_chunk(dict(batch), noise=noise)
    assert torch.equal(policy.predict_action_chunk(batch, noise=noise, num_steps=10), ref)
    policy.to_runtime("cuda", torch.bfloat16)
    out = policy.predict_action_chunk(batch, noise=noise, num_steps=1, sampler="snap")
    assert out.device.type == "cuda" and torch.isfinite(out).all()


@pytest.mark.hub
def test_smolvla_base_from_the_hub_loads_as_a_teacher():
    loaded = load_policy("lerobot/smolvla_base")
    assert not loaded.is_snapflow and loaded.policy.default_num_steps == 10
    policy = loaded.policy
    batch = loaded.preprocessor(random_observation(policy.config))
    prefix = policy.encode_prefix(batch)
    x = policy.noise_like(1)
    t = torch.rand(1)
    base = policy.policy.model.denoise_step(prefix.pad_masks, prefix.kv_cache, x, t)
    assert torch.equal(policy.velocity(prefix, x, t, torch.zeros(1)), base)
