"""The target-time embedding φ (core/target_time.py)."""

import pytest
import torch

from snapflow_ros.core import TargetTimeEmbedding, TargetTimeEmbeddingConfig, sinusoidal_embedding


def test_zero_output_at_init_for_every_s():
    phi = TargetTimeEmbedding(TargetTimeEmbeddingConfig(width=32))
    t = torch.rand(7)
    for s in (torch.zeros(7), t, torch.rand(7), torch.ones(7)):
        assert torch.equal(phi(t, s), torch.zeros(7, 32))


def test_only_last_layer_is_zero_so_phi_learns_to_tell_s_apart():
    torch.manual_seed(0)
    phi = TargetTimeEmbedding(TargetTimeEmbeddingConfig(width=16))
    assert phi.fc1.weight.abs().sum() > 0  # first layer keeps its random init
    opt = torch.optim.SGD(phi.parameters(), lr=0.5)
    t = torch.ones(8)
    s = torch.tensor([0.0, 1.0] * 4)
    target = torch.where(s[:, None] == 0, 1.0, -1.0).expand(8, 16)  # different per s
    grads = []
    for _ in range(30):
        loss = (phi(t, s) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        grads.append((phi.fc1.weight.grad.abs().sum().item(), phi.fc2.weight.grad.abs().sum().item()))
        opt.step()
    assert grads[0][0] == 0.0 and grads[0][1] > 0  # step 1: only the last layer moves
    assert grads[1][0] > 0  # from then on the first layer learns too
    out = phi(torch.ones(2), torch.tensor([0.0, 1.0]))
    assert (out[0] - out[1]).abs().mean() > 0.5  # φ(s=0) and φ(s=1) now differ


def test_input_t_minus_s_depends_only_on_the_gap():
    torch.manual_seed(0)
    phi = TargetTimeEmbedding(TargetTimeEmbeddingConfig(width=8, input="t_minus_s"))
    torch.nn.init.normal_(phi.fc2.weight)
    a = phi(torch.tensor([1.0]), torch.tensor([0.5]))
    b = phi(torch.tensor([0.75]), torch.tensor([0.25]))
    torch.testing.assert_close(a, b)


def test_sinusoidal_embedding_shape_and_values():
    e = sinusoidal_embedding(torch.tensor([0.0, 0.5]), 8)
    assert e.shape == (2, 8) and e.dtype == torch.float32
    assert torch.equal(e[0, :4], torch.zeros(4)) and torch.equal(e[0, 4:], torch.ones(4))
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(torch.zeros(2), 7)


def test_config_validation_and_roundtrip():
    cfg = TargetTimeEmbeddingConfig(width=64, hidden=32, input="t_minus_s")
    assert TargetTimeEmbeddingConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (dict(width=7), dict(width=8, hidden=0), dict(width=8, input="dt"),
                dict(width=8, min_period=5.0)):
        with pytest.raises(ValueError):
            TargetTimeEmbeddingConfig(**bad)
