"""The SnapFlow objective (core/snapflow.py) against hand computations (DESIGN §2)."""

import pytest
import torch
from torch import nn

from snapflow_ros.core import (
    SnapFlowLossConfig,
    fm_target,
    interpolate,
    route_to_fm,
    shortcut_target,
    snapflow_loss,
)

B, H, D = 6, 5, 3


class TinyField(nn.Module):
    """A small nonlinear F(x, t, s) with parameters, row-wise."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(D + 2, 16), nn.Tanh(), nn.Linear(16, D))

    def forward(self, x, t, s):
        ts = torch.stack([t, s], -1)[:, None, :].expand(x.shape[0], x.shape[1], 2)
        return self.net(torch.cat([x, ts], -1))


class CountingField(TinyField):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, s):
        self.calls.append((x.shape[0], torch.is_grad_enabled()))
        return super().forward(x, t, s)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, D, generator=g), torch.randn(B, H, D, generator=g), torch.rand(B, generator=g)


def test_constant_field_target_equals_the_velocity_exactly():
    c = torch.randn(1, H, D)

    def field(x, t, s):
        return c.expand_as(x)

    eps = torch.randn(B, H, D)
    assert torch.equal(shortcut_target(field, eps), c.expand_as(eps))  # K = 2, bit-exact
    torch.testing.assert_close(shortcut_target(field, eps, 10), c.expand_as(eps))


def test_point_mass_field_constant_along_paths():
    # Data = a single chunk a0: the marginal field u(x, t) = (x - a0) / t is constant (= eps - a0)
    # along every path, so the shortcut target is that velocity and ε - ū = a0.
    a0 = torch.randn(1, H, D, dtype=torch.float64)

    def field(x, t, s):
        return (x - a0) / t.to(x.dtype).reshape(-1, 1, 1)

    eps = torch.randn(B, H, D, dtype=torch.float64)
    for k in (2, 3, 10):
        target = shortcut_target(field, eps, k)
        # times are float32 (as lerobot passes them), so 1/3-grids round at ~1e-8
        tol = 1e-12 if k == 2 else 1e-6
        torch.testing.assert_close(target, eps - a0, rtol=tol, atol=tol)


def test_two_step_target_formula():
    f = TinyField()
    eps = torch.randn(B, H, D)
    one, half = torch.ones(B), torch.full((B,), 0.5)
    v1 = f(eps, one, one)
    v_half = f(eps - 0.5 * v1, half, half)
    torch.testing.assert_close(shortcut_target(f, eps), 0.5 * (v1 + v_half))
    assert not shortcut_target(f, eps).requires_grad  # stop-gradient


def test_all_fm_rows_give_plain_flow_matching_loss():
    f = TinyField()
    a, eps, t = _inputs()
    out = snapflow_loss(f, a, noise=eps, time=t, fm_mask=torch.ones(B, dtype=torch.bool))
    expected = (f(interpolate(a, eps, t), t, t) - fm_target(a, eps)).pow(2).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.fm_loss, expected.detach())
    assert torch.isnan(out.consistency_loss)


def test_mixed_batch_loss_gradient_and_passes():
    f = CountingField()
    a, eps, t = _inputs()
    fm = torch.tensor([True, False, True, False, False, True])
    cfg = SnapFlowLossConfig(consistency_weight=0.3)
    out = snapflow_loss(f, a, noise=eps, time=t, fm_mask=fm, config=cfg)
    # one gradient pass over the batch, two stop-gradient passes over the 3 consistency rows
    assert f.calls == [(B, True), (3, False), (3, False)]

    # the same loss written out by hand
    ref = TinyField()
    one, zero = torch.ones(B), torch.zeros(B)
    fm_err = (ref(interpolate(a, eps, t), t, t) - (eps - a)).pow(2).mean((1, 2))
    target = shortcut_target(ref, eps).detach()
    cons_err = (ref(eps, one, zero) - target).pow(2).mean((1, 2))
    expected = (fm_err[fm].sum() + 0.3 * cons_err[~fm].sum()) / B
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.consistency_loss, cons_err[~fm].mean().detach())

    out.loss.backward()
    expected.backward()
    for p_out, p_ref in zip(f.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p_out.grad, p_ref.grad)


def test_padded_steps_do_not_count():
    f = TinyField()
    a, eps, t = _inputs()
    fm = torch.ones(B, dtype=torch.bool)
    valid = torch.ones(B, H, dtype=torch.bool)
    valid[:, 3:] = False
    base = snapflow_loss(f, a, noise=eps, time=t, fm_mask=fm, valid=valid)
    a2 = a.clone()
    a2[:, 3:] += 100.0  # garbage beyond the episode end
    moved = snapflow_loss(f, a2, noise=eps, time=t, fm_mask=fm, valid=valid)
    torch.testing.assert_close(base.loss, moved.loss)
    unmasked = snapflow_loss(f, a2, noise=eps, time=t, fm_mask=fm)
    assert unmasked.loss > 10 * base.loss


class ConditionedField:
    """F depends on a per-row conditioning vector; implements rows() like a policy prefix."""

    def __init__(self, cond):
        self.cond = cond

    def __call__(self, x, t, s):
        return torch.sin(x + self.cond[:, None, None]) * (1 + t.reshape(-1, 1, 1))

    def rows(self, index):
        return ConditionedField(self.cond[index])


def test_consistency_target_uses_each_rows_own_conditioning():
    cond = torch.arange(B, dtype=torch.float32)
    field = ConditionedField(cond)
    a, eps, _ = _inputs()
    fm = torch.tensor([False, True, False, True, True, False])
    out = snapflow_loss(field, a, noise=eps, time=torch.rand(B), fm_mask=fm)
    full_target = shortcut_target(field, eps)  # computed on the whole batch for reference
    cons = ~fm
    one, zero = torch.ones(B), torch.zeros(B)
    pred = field(eps, one, zero)
    expected = (pred - full_target).pow(2).mean((1, 2))[cons]
    torch.testing.assert_close(out.per_row[cons], expected)


def test_routing_fraction_and_config_validation():
    mask = route_to_fm(100_000, 0.5, generator=torch.Generator().manual_seed(0))
    assert abs(mask.float().mean().item() - 0.5) < 0.01
    assert route_to_fm(10, 1.0).all() and not route_to_fm(10, 0.0).any()
    for bad in (dict(alpha=1.5), dict(consistency_weight=-1), dict(target_steps=0),
                dict(velocity_clamp=0.0)):
        with pytest.raises(ValueError):
            SnapFlowLossConfig(**bad)
    with pytest.raises(ValueError, match="unknown SnapFlow loss keys"):
        SnapFlowLossConfig.from_dict({"alpah": 0.5})


def test_velocity_clamp_limits_targets():
    def field(x, t, s):
        return torch.full_like(x, 50.0)

    target = shortcut_target(field, torch.zeros(2, H, D), velocity_clamp=20.0)
    assert torch.equal(target, torch.full((2, H, D), 20.0))


def test_shape_errors():
    f = TinyField()
    a, eps, t = _inputs()
    with pytest.raises(ValueError, match="noise"):
        snapflow_loss(f, a, noise=eps[:, :2], time=t, fm_mask=torch.ones(B, dtype=torch.bool))
    with pytest.raises(ValueError, match="fm_mask"):
        snapflow_loss(f, a, noise=eps, time=t, fm_mask=torch.ones(B + 1, dtype=torch.bool))
