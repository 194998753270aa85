"""DESIGN §2 invariants for SnapFlow-SmolVLA on a tiny random-weight lerobot SmolVLA."""

import pytest
import torch
from lerobot.policies.smolvla.modeling_smolvla import create_sinusoidal_pos_embedding

from snapflow_ros.core import SnapFlowLossConfig, sinusoidal_embedding
from snapflow_ros.policies.tiny import random_batch, random_observation


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _obs_batch(loaded, batch_size=2, seed=0):
    cfg = loaded.policy.config
    return loaded.preprocessor(random_batch(cfg, batch_size, generator=_gen(seed)))


def test_sinusoidal_embedding_matches_lerobot():
    t = torch.rand(9)
    for dim in (16, 48):
        ref = create_sinusoidal_pos_embedding(t, dim, 4e-3, 4.0, device=torch.device("cpu")).float()
        assert torch.equal(sinusoidal_embedding(t, dim, 4e-3, 4.0), ref)


def test_invariant_1_student_equals_lerobot_at_init(tiny_teacher):
    """At init F(x, t, s) == lerobot's denoise_step(x, t) bit for bit, for any s."""
    policy = tiny_teacher.policy
    batch = _obs_batch(tiny_teacher, 3)
    prefix = policy.encode_prefix(batch)
    model = policy.policy.model
    g = _gen(1)
    x = torch.randn(3, policy.config.chunk_size, policy.config.max_action_dim, generator=g)
    t = torch.rand(3, generator=g)
    with torch.no_grad():
        base = model.denoise_step(prefix.pad_masks, prefix.kv_cache, x, t)
        for s in (torch.zeros(3), t, t / 2, torch.ones(3), torch.rand(3, generator=g)):
            assert torch.equal(policy.velocity(prefix, x, t, s), base)


def test_invariant_1_sampling_equals_lerobot(tiny_teacher):
    """The wrapped teacher's 10-step chunk is lerobot's own predict_action_chunk, bit for bit."""
    policy = tiny_teacher.policy
    obs = random_observation(policy.config, generator=_gen(0))
    batch = tiny_teacher.preprocessor(obs)
    noise = policy.noise_like(1, _gen(2))
    policy.config.num_steps = 10
    ref = policy.policy.predict_action_chunk(dict(batch), noise=noise)
    assert torch.equal(policy.predict_action_chunk(batch, noise=noise, num_steps=10), ref)
    # the SnapFlow sampler with a zero φ takes the same path
    assert torch.equal(
        policy.predict_action_chunk(batch, noise=noise, num_steps=10, sampler="snap"), ref
    )


def test_invariant_2_fm_loss_equals_lerobot_forward(tiny_teacher):
    """With s = t on every row, the SnapFlow loss is lerobot's FM loss for the same ε and t."""
    policy = tiny_teacher.policy
    batch = _obs_batch(tiny_teacher, 4)
    g = _gen(3)
    noise = torch.randn(4, policy.config.chunk_size, policy.config.max_action_dim, generator=g)
    time = torch.rand(4, generator=g) * 0.999 + 0.001
    ref, _ = policy.policy.forward(dict(batch), noise=noise, time=time)
    out = policy.snapflow_loss(
        batch, noise=noise, time=time, fm_mask=torch.ones(4, dtype=torch.bool)
    )
    # lerobot runs prefix and suffix jointly; SnapFlow caches the prefix: same math, so equal
    # to float32 rounding (not bit-exact: different kernels)
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)


def _train(loaded, steps, batch, seed=0, lr=1e-3):
    policy = loaded.policy
    params = policy.freeze_for_snapflow()
    opt = torch.optim.AdamW(params, lr=lr)
    policy.train()
    g = _gen(seed)
    losses = []
    for _ in range(steps):
        out = policy.snapflow_loss(batch, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    policy.eval()
    return losses


def test_snapflow_steps_lower_the_loss_and_train_only_expert_and_phi(tiny_teacher):
    policy = tiny_teacher.policy
    batch = _obs_batch(tiny_teacher, 4, seed=7)
    cfg = policy.config
    g = _gen(11)
    fixed = dict(
        noise=torch.randn(4, cfg.chunk_size, cfg.max_action_dim, generator=g),
        time=torch.rand(4, generator=g),
        fm_mask=torch.tensor([True, False, True, False]),
    )
    before = policy.snapflow_loss(batch, **fixed).loss.item()
    snapshot = {k: v.clone() for k, v in policy.state_dict().items()}
    _train(tiny_teacher, 25, batch)
    with torch.no_grad():
        after = policy.snapflow_loss(batch, **fixed).loss.item()
    assert after < 0.8 * before

    changed = {k for k, v in policy.state_dict().items() if not torch.equal(v, snapshot[k])}
    assert any(k.startswith("phi.") for k in changed)
    assert any(".lm_expert." in k for k in changed)
    assert any("action_time_mlp_in" in k for k in changed)
    frozen = [k for k in changed if ".vlm_with_expert.vlm." in k or "state_proj" in k]
    assert frozen == []  # the VLM and state_proj (part of the cached prefix) never move

    # φ has learned to separate the jump (s = 0) from the local velocity (s = t = 1)
    prefix = policy.encode_prefix(batch)
    x = policy.noise_like(4, _gen(12))
    one = torch.ones(4)
    with torch.no_grad():
        jump_v = policy.velocity(prefix, x, one, torch.zeros(4))
        local_v = policy.velocity(prefix, x, one, one)
    assert not torch.equal(jump_v, local_v)


def test_loss_masks_padded_action_steps(tiny_teacher):
    policy = tiny_teacher.policy
    batch = _obs_batch(tiny_teacher, 2)
    cfg = policy.config
    g = _gen(13)
    kw = dict(noise=torch.randn(2, cfg.chunk_size, cfg.max_action_dim, generator=g),
              time=torch.rand(2, generator=g), fm_mask=torch.ones(2, dtype=torch.bool))
    pad = torch.zeros(2, cfg.chunk_size, dtype=torch.bool)
    pad[:, 30:] = True
    batch["action_is_pad"] = pad
    base = policy.snapflow_loss(batch, **kw).loss
    batch["action"] = batch["action"].clone()
    batch["action"][:, 30:] += 50.0
    assert torch.equal(policy.snapflow_loss(batch, **kw).loss, base)


def _count_passes(policy):
    """Count VLM (prefix) and action-expert passes by the final norm each pass runs once."""
    counts = {"prefix": 0, "expert": 0}
    vlm = policy.policy.model.vlm_with_expert
    handles = [
        vlm.get_vlm_model().text_model.norm.register_forward_hook(
            lambda *_: counts.__setitem__("prefix", counts["prefix"] + 1)
        ),
        vlm.lm_expert.norm.register_forward_hook(
            lambda *_: counts.__setitem__("expert", counts["expert"] + 1)
        ),
    ]
    return counts, handles


@pytest.mark.parametrize("num_steps", [1, 2, 10])
def test_sampling_runs_one_prefix_pass_and_one_expert_pass_per_step(tiny_teacher, num_steps):
    policy = tiny_teacher.policy
    batch = _obs_batch(tiny_teacher, 1)
    counts, handles = _count_passes(policy)
    try:
        policy.sample(batch, num_steps=num_steps, sampler="snap")
        ours = dict(counts)
        counts.update(prefix=0, expert=0)
        policy.policy.predict_action_chunk(dict(batch))  # lerobot's own 10-step loop
    finally:
        for h in handles:
            h.remove()
    assert ours == {"prefix": 1, "expert": num_steps}
    assert counts == {"prefix": 1, "expert": policy.config.num_steps}  # the counter is sound


def test_training_step_shares_one_prefix_across_three_expert_passes(tiny_teacher):
    policy = tiny_teacher.policy
    batch = _obs_batch(tiny_teacher, 4)
    counts, handles = _count_passes(policy)
    try:
        policy.snapflow_loss(batch, fm_mask=torch.tensor([True, False, False, True]))
        mixed = dict(counts)
        counts.update(prefix=0, expert=0)
        policy.snapflow_loss(batch, SnapFlowLossConfig(target_steps=10),
                             fm_mask=torch.tensor([False] * 4))
    finally:
        for h in handles:
            h.remove()
    assert mixed == {"prefix": 1, "expert": 3}  # 1 gradient pass + 2 stop-gradient passes
    assert counts == {"prefix": 1, "expert": 11}  # K = 10 target


def test_prefix_rows_match_the_full_batch(tiny_teacher):
    policy = tiny_teacher.policy
    batch = _obs_batch(tiny_teacher, 4)
    prefix = policy.encode_prefix(batch)
    x = policy.noise_like(4, _gen(14))
    t, s = torch.rand(4, generator=_gen(15)), torch.zeros(4)
    idx = torch.tensor([3, 1])
    with torch.no_grad():
        full = policy.velocity(prefix, x, t, s)
        part = policy.velocity(prefix.rows(idx), x[idx], t[idx], s[idx])
    torch.testing.assert_close(part, full[idx], rtol=1e-5, atol=1e-6)
