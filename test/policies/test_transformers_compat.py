"""``policies/transformers_compat.py``: lerobot's pi0/pi0.5 on PyPI transformers.

The behaviour it must reproduce (the patched transformers branch lerobot's pi0/pi0.5 are
written for), pinned on small tensors and on tiny random-weight pi0/pi0.5 models built offline:
the adaptive RMSNorm against its formula, gated residuals, a prefix KV cache that denoise steps
read without extending, and the cached denoise step equal to the joint (uncached) pass.
"""

import pytest
import torch

from snapflow_ros.policies import transformers_compat as compat

# tiny shapes: lerobot's joint path needs 8 heads and equal depth/head size in both models
TINY_VLM = {"width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1,
            "head_dim": 8}
TINY_EXPERT = {**TINY_VLM, "width": 32, "mlp_dim": 64}
VOCAB = 512


def test_adaptive_norm_follows_its_formula():
    torch.manual_seed(0)
    norm = compat.AdaptiveNorm(8, eps=1e-6, cond_dim=4)
    torch.nn.init.normal_(norm.dense.weight, 0, 0.5)
    torch.nn.init.normal_(norm.dense.bias, 0, 0.5)
    x, cond = torch.randn(2, 3, 8), torch.randn(2, 4)
    y, gate = norm(x, cond)
    scale, shift, expected_gate = (cond @ norm.dense.weight.T + norm.dense.bias).chunk(3, dim=-1)
    normed = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    expected = normed * (1 + scale[:, None]) + shift[:, None]
    assert torch.allclose(y, expected, atol=1e-6)
    assert torch.allclose(gate, expected_gate[:, None].expand_as(gate), atol=1e-6)
    y2, _ = norm(x[:, 0], cond)  # 2-D input: no sequence axis
    assert torch.allclose(y2, expected[:, 0], atol=1e-6)
    yb, gb = norm(x.bfloat16(), cond)
    assert yb.dtype == gb.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="expected 4"):
        norm(x, torch.randn(2, 5))


def test_plain_norm_is_gemmas_rmsnorm():
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    stock = GemmaRMSNorm(8, eps=1e-6)
    torch.nn.init.normal_(stock.weight)
    ours = compat._norm_from(stock, None, 0.02)
    x = torch.randn(2, 5, 8)
    y, gate = ours(x, cond=torch.randn(2, 3))  # a condition is ignored by a plain norm
    assert gate is None and torch.equal(y, stock(x))


def test_gated_residual():
    x, y, g = torch.ones(3), torch.full((3,), 2.0), torch.full((3,), 0.5)
    assert torch.equal(compat._gated_residual(x, y, g), torch.full((3,), 2.0))
    assert torch.equal(compat._gated_residual(x, y, None), torch.full((3,), 3.0))
    assert compat._gated_residual(x, None, g) is x and compat._gated_residual(None, y, g) is y


def test_versions_are_checked():
    compat.check_versions("4.57.6", "0.4.4")
    with pytest.raises(compat.TransformersCompatError, match=r"installed: 4.53.2"):
        compat.check_versions("4.53.2", "0.4.4")
    with pytest.raises(compat.TransformersCompatError, match=r"installed: 0.5.0"):
        compat.check_versions("4.57.6", "0.5.0")


@pytest.fixture
def tiny_pi(monkeypatch):
    """A tiny pi0 or pi0.5 (``kind``) built offline through lerobot's own constructors."""
    assert compat.install() is True  # stock transformers here: the layer is in use
    assert compat.install() is True  # idempotent

    def build(kind):
        from transformers.models.paligemma import modeling_paligemma

        if kind == "pi05":
            from lerobot.policies.pi05 import modeling_pi05 as module
            from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
        else:
            from lerobot.policies.pi0 import modeling_pi0 as module
            from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
        gemma = module.GemmaConfig
        monkeypatch.setattr(module, "get_gemma_config", lambda variant: gemma(
            **(TINY_VLM if variant == "gemma_2b" else TINY_EXPERT)))
        build_paligemma = modeling_paligemma.PaliGemmaForConditionalGeneration

        def small_paligemma(config):
            vision = config.vision_config
            vision.hidden_size, vision.intermediate_size = 32, 64
            vision.num_hidden_layers, vision.num_attention_heads, vision.patch_size = 1, 2, 16
            vision.projection_dim = config.text_config.hidden_size
            config.text_config.vocab_size = VOCAB
            return build_paligemma(config=config)

        monkeypatch.setattr(module, "PaliGemmaForConditionalGeneration", small_paligemma)
        torch.manual_seed(0)
        config = Config(chunk_size=4, n_action_steps=4, image_resolution=(32, 32),
                        max_action_dim=8, max_state_dim=8, device="cpu")
        core = module.PI05Pytorch if kind == "pi05" else module.PI0Pytorch
        return module, core(config).eval()

    return build


def _inputs(batch=2, tokens=6):
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(batch, 3, 32, 32, generator=gen) * 2 - 1]
    masks = [torch.ones(batch, dtype=torch.bool)]
    tok = torch.randint(0, VOCAB, (batch, tokens), generator=gen)
    tok_mask = torch.ones(batch, tokens, dtype=torch.bool)
    tok_mask[1, 4:] = False
    return images, masks, tok, tok_mask, torch.randn(batch, 8, generator=gen)


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_cached_denoise_step_equals_the_joint_pass_and_leaves_the_cache(tiny_pi, kind):
    module, model = tiny_pi(kind)
    images, masks, tok, tok_mask, state = _inputs()
    x, t = torch.randn(2, 4, 8), torch.full((2,), 0.7)
    with torch.no_grad():
        prefix, pad, att = model.embed_prefix(images, masks, tok, tok_mask)
        att4 = model._prepare_attention_masks_4d(module.make_att_2d_masks(pad, att))
        _, cache = model.paligemma_with_expert.forward(
            attention_mask=att4, position_ids=torch.cumsum(pad, 1) - 1, past_key_values=None,
            inputs_embeds=[prefix, None], use_cache=True)
        cached_len = cache.get_seq_length()
        step = {"prefix_pad_masks": pad, "past_key_values": cache, "x_t": x, "timestep": t}
        if kind == "pi0":
            step["state"] = state
        v = model.denoise_step(**step)
        assert cache.get_seq_length() == cached_len  # read, never extended
        assert torch.equal(model.denoise_step(**step), v)  # a second step sees the same cache
        # the joint pass (lerobot's training path, no cache) gives the same velocity
        suffix = (model.embed_suffix(state, x, t) if kind == "pi0"
                  else model.embed_suffix(x, t))
        emb, s_pad, s_att, cond = suffix
        all_pad, all_att = torch.cat([pad, s_pad], 1), torch.cat([att, s_att], 1)
        joint_mask = model._prepare_attention_masks_4d(module.make_att_2d_masks(all_pad, all_att))
        (_, out), _ = model.paligemma_with_expert.forward(
            attention_mask=joint_mask, position_ids=torch.cumsum(all_pad, 1) - 1,
            past_key_values=None, inputs_embeds=[prefix, emb], use_cache=False,
            adarms_cond=[None, cond])
        joint = model.action_out_proj(out[:, -4:].float())
        assert torch.allclose(v, joint, atol=1e-5), (v - joint).abs().max()
        # the velocity depends on time and on the cached prefix (neither is silently dropped)
        assert not torch.allclose(model.denoise_step(**{**step, "timestep": t * 0.5}), v)
        other = tok.clone()
        other[:, 0] = (other[:, 0] + 1) % VOCAB
        prefix2, _, _ = model.embed_prefix(images, masks, other, tok_mask)
        _, cache2 = model.paligemma_with_expert.forward(
            attention_mask=att4, position_ids=torch.cumsum(pad, 1) - 1, past_key_values=None,
            inputs_embeds=[prefix2, None], use_cache=True)
        assert not torch.equal(model.denoise_step(**{**step, "past_key_values": cache2}), v)
        # lerobot's own sampler runs several steps (stock transformers fails at the second)
        args = (images, masks, tok, tok_mask, state) if kind == "pi0" else (
            images, masks, tok, tok_mask)
        actions = model.sample_actions(*args, num_steps=3)
    assert actions.shape == (2, 4, 8) and torch.isfinite(actions).all()


def test_pi05_expert_norms_are_adaptive_and_the_vlm_norms_plain(tiny_pi):
    _, model = tiny_pi("pi05")
    keys = model.state_dict()
    expert = "paligemma_with_expert.gemma_expert.model"
    vlm = "paligemma_with_expert.paligemma.model.language_model"
    assert f"{expert}.layers.0.input_layernorm.dense.weight" in keys
    assert f"{expert}.norm.dense.bias" in keys
    assert f"{expert}.layers.0.input_layernorm.weight" not in keys
    assert f"{vlm}.layers.0.input_layernorm.weight" in keys
    assert f"{vlm}.layers.0.input_layernorm.dense.weight" not in keys
