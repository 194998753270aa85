"""SnapFlow end to end on a two-mode toy (pure core, small MLP): the 1-NFE sample must move
from the mode average (naive 1-step) to the modes, as DESIGN §5 predicts from the exact field."""

import torch
from torch import nn

from snapflow_ros.core import (
    SnapFlowLossConfig,
    TargetTimeEmbedding,
    TargetTimeEmbeddingConfig,
    euler_sample,
    route_to_fm,
    sample_fm_time,
    sinusoidal_embedding,
    snap_sample,
    snapflow_loss,
)

H, D, WIDTH = 4, 2, 32
MODE = torch.tensor([[1.0, 0.5]] * H) * 1.5  # modes at ±MODE: |Δ| = 2·|MODE| ≈ 6.7


class ToyField(nn.Module):
    """F(x, t, s): an MLP on [x, sincos(t) + φ(t, s)] (φ enters where time does)."""

    def __init__(self):
        super().__init__()
        self.phi = TargetTimeEmbedding(TargetTimeEmbeddingConfig(width=WIDTH))
        self.net = nn.Sequential(
            nn.Linear(H * D + WIDTH, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(),
            nn.Linear(128, H * D),
        )

    def forward(self, x, t, s):
        time = sinusoidal_embedding(t, WIDTH) + self.phi(t, s)
        return self.net(torch.cat([x.flatten(1), time], 1)).view(-1, H, D)


def _data(n, g):
    sign = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
    return sign[:, None, None] * MODE + 0.05 * torch.randn(n, H, D, generator=g)


def _nearest_mode(samples):
    """(mean squared distance to the nearest mode / |Δ/2|², fraction choosing +MODE)."""
    d = torch.stack([(samples - MODE).pow(2).sum((1, 2)), (samples + MODE).pow(2).sum((1, 2))], 1)
    return (d.min(1).values / MODE.pow(2).sum()).mean().item(), (d.argmin(1) == 0).float().mean().item()


def _train(model, steps, g, config=None, alpha=1.0):
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(steps):
        a = _data(256, g)
        out = snapflow_loss(
            model, a, noise=torch.randn(a.shape, generator=g), time=sample_fm_time(256, generator=g),
            fm_mask=route_to_fm(256, alpha, generator=g), config=config,
        )
        opt.zero_grad()
        out.loss.backward()
        opt.step()


def test_snapflow_one_step_reaches_the_modes_that_naive_one_step_averages():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ToyField()
    _train(model, 1500, g)  # the flow-matching teacher (every row FM, s = t)
    noise = torch.randn(2000, H, D, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        naive_1, _ = _nearest_mode(euler_sample(model, noise, 1))
        teacher_2, _ = _nearest_mode(euler_sample(model, noise, 2))
        teacher_10, _ = _nearest_mode(euler_sample(model, noise, 10))
    assert naive_1 > 0.6  # one Euler step lands near the mean of the modes
    assert teacher_10 < 0.05  # ten steps reach them

    _train(model, 1000, g, SnapFlowLossConfig(), alpha=0.5)  # SnapFlow, paper defaults
    with torch.no_grad():
        snap_1, share = _nearest_mode(snap_sample(model, noise, 1))
        snap_2, _ = _nearest_mode(snap_sample(model, noise, 2))
        teacher_10_after, _ = _nearest_mode(euler_sample(model, noise, 10))
    assert snap_1 < 0.5 * naive_1  # the one-step jump now lands near a mode
    assert snap_1 < teacher_2 + 0.1  # ... about where the two-step target it distils does
    assert snap_2 < snap_1
    assert 0.3 < share < 0.7  # both modes kept
    assert teacher_10_after < 0.05  # the FM branch keeps the local velocity intact
