"""Conventions and samplers of core/flow.py and core/sampling.py on closed-form fields."""

import math

import pytest
import torch

from snapflow_ros.core import (
    euler_sample,
    fm_target,
    interpolate,
    jump,
    one_step_sample,
    sample_fm_time,
    snap_sample,
    uniform_times,
)

B, H, D = 3, 5, 4


def test_path_endpoints_and_target():
    a, eps = torch.randn(B, H, D), torch.randn(B, H, D)
    assert torch.equal(interpolate(a, eps, torch.ones(B)), eps)  # t = 1 is noise
    assert torch.equal(interpolate(a, eps, torch.zeros(B)), a)  # t = 0 is the action chunk
    t = torch.rand(B)
    x_t = interpolate(a, eps, t)
    # moving against u = eps - a for time t returns to the data exactly (up to rounding)
    torch.testing.assert_close(jump(x_t, t, torch.zeros(B), fm_target(a, eps)), a)


def test_fm_time_matches_lerobot_distribution():
    n = 200_000
    ours = sample_fm_time(n, generator=torch.Generator().manual_seed(0))
    beta = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0))
    torch.manual_seed(1)
    ref = beta.sample((n,)) * 0.999 + 0.001
    assert ours.min() >= 0.001 and ours.max() <= 1.0
    qs = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])
    torch.testing.assert_close(torch.quantile(ours, qs), torch.quantile(ref, qs), atol=0.01, rtol=0)
    # and reproducible from a generator
    again = sample_fm_time(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours, again)


def test_uniform_times():
    assert uniform_times(1) == [1.0, 0.0]
    assert uniform_times(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError, match="num_steps"):
        uniform_times(0)


def test_euler_on_linear_field_matches_closed_form():
    # dx/dt = x (local velocity; s ignored). Euler from 1 to 0 with dt = -1/N: x1 (1 - 1/N)^N.
    x1 = torch.randn(B, H, D, dtype=torch.float64)
    for n in (1, 2, 7, 10):
        out = euler_sample(lambda x, t, s: x, x1, n)
        torch.testing.assert_close(out, x1 * (1 - 1 / n) ** n, rtol=1e-12, atol=1e-12)


def test_snap_sample_with_exact_flow_map_is_exact_for_any_schedule():
    # For dx/dt = x the exact average velocity of the jump t -> s is x (1 - e^{-(t-s)}) / (t - s),
    # so any jump schedule lands on the true solution x1 / e.
    def average_velocity(x, t, s):
        d = (t - s).to(x.dtype).reshape(-1, 1, 1)
        return x * (1 - torch.exp(-d)) / d

    x1 = torch.randn(B, H, D, dtype=torch.float64)
    torch.testing.assert_close(snap_sample(average_velocity, x1, 1), x1 / math.e, rtol=1e-12, atol=1e-12)
    # times travel as float32 (lerobot's dtype), so non-dyadic grids are exact to ~1e-7
    for out in (
        snap_sample(average_velocity, x1, 3),
        snap_sample(average_velocity, x1, times=[1.0, 0.8, 0.3, 0.0]),
    ):
        torch.testing.assert_close(out, x1 / math.e, rtol=1e-6, atol=1e-6)


def test_snap_equals_euler_when_field_ignores_target_time():
    # A zero target-time embedding makes F(x, t, s) = F(x, t, t): both samplers must agree bit
    # for bit, including lerobot's time arithmetic.
    w = torch.randn(D, D)

    def field(x, t, s):
        return torch.tanh(x @ w) * (1 + t.reshape(-1, 1, 1))

    x1 = torch.randn(B, H, D)
    for n in (1, 2, 5, 10):
        assert torch.equal(snap_sample(field, x1, n), euler_sample(field, x1, n))
    assert torch.equal(one_step_sample(field, x1), x1 - field(x1, torch.ones(B), torch.ones(B)))


def test_one_step_passes_t1_s0():
    seen = []

    def field(x, t, s):
        seen.append((t.clone(), s.clone()))
        return torch.zeros_like(x)

    one_step_sample(field, torch.randn(B, H, D))
    assert len(seen) == 1
    assert torch.equal(seen[0][0], torch.ones(B)) and torch.equal(seen[0][1], torch.zeros(B))


def test_k_step_snap_passes_next_grid_time_as_target():
    seen = []

    def field(x, t, s):
        seen.append((t[0].item(), s[0].item()))
        return torch.zeros_like(x)

    snap_sample(field, torch.randn(B, H, D), 4)
    assert seen == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]


@pytest.mark.parametrize(
    "times", [[1.0, 0.5], [0.9, 0.0], [1.0, 0.5, 0.6, 0.0], [1.0]]
)
def test_snap_rejects_bad_schedules(times):
    with pytest.raises(ValueError, match="times"):
        snap_sample(lambda x, t, s: x, torch.randn(1, 2, 2), times=times)
