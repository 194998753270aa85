"""SnapFlow checkpoints: round trip (DESIGN §2 invariant 4), teachers, and bad input."""

import json
import logging
import shutil

import pytest
import torch

from snapflow_ros.policies import CheckpointError, load_policy, save_policy
from snapflow_ros.policies.checkpoint import PHI_WEIGHTS, SIDECAR
from snapflow_ros.policies.smolvla import SnapFlowSmolVLA
from snapflow_ros.policies.tiny import make_smolvla, random_batch, random_observation


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _distill_a_little(loaded, steps=3):
    policy = loaded.policy
    batch = loaded.preprocessor(random_batch(policy.config, 4, generator=_gen(0)))
    opt = torch.optim.AdamW(policy.freeze_for_snapflow(), lr=1e-2)
    policy.train()
    g = _gen(1)
    for _ in range(steps):
        out = policy.snapflow_loss(batch, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    policy.eval()
    policy.set_sampling(1, "snap")
    assert policy.phi.fc2.weight.abs().sum() > 0  # φ is no longer zero: the test means something


def test_invariant_4_save_load_gives_bit_identical_actions(tiny_teacher, tmp_path):
    _distill_a_little(tiny_teacher)
    policy = tiny_teacher.policy
    save_policy(policy, tmp_path / "ckpt", preprocessor=tiny_teacher.preprocessor,
                postprocessor=tiny_teacher.postprocessor)
    loaded = load_policy(tmp_path / "ckpt")
    assert loaded.is_snapflow
    assert (loaded.policy.default_num_steps, loaded.policy.sampler) == (1, "snap")

    obs = random_observation(policy.config, generator=_gen(2))
    noise = policy.noise_like(1, _gen(3))
    for kwargs in ({}, {"num_steps": 2}, {"num_steps": 10, "sampler": "euler"}):
        before = tiny_teacher.postprocessor(
            policy.predict_action_chunk(tiny_teacher.preprocessor(obs), noise=noise, **kwargs))
        after = loaded.postprocessor(
            loaded.policy.predict_action_chunk(loaded.preprocessor(obs), noise=noise, **kwargs))
        assert torch.equal(before, after), kwargs


def test_sidecar_records_phi_steps_and_teacher(tiny_teacher, tmp_path):
    tiny_teacher.policy.set_sampling(1, "snap")
    save_policy(tiny_teacher.policy, tmp_path / "ckpt", extra={"recipe": {"alpha": 0.5}})
    sidecar = json.loads((tmp_path / "ckpt" / SIDECAR).read_text())
    assert sidecar["default_num_steps"] == 1 and sidecar["sampler"] == "snap"
    assert sidecar["phi"]["width"] == tiny_teacher.policy.phi.config.width
    assert sidecar["teacher"]["source"] == "smolvla-tiny"
    assert sidecar["recipe"] == {"alpha": 0.5}
    for name in ("config.json", "model.safetensors", PHI_WEIGHTS, "vlm/config.json",
                 "vlm/tokenizer.json"):
        assert (tmp_path / "ckpt" / name).is_file(), name


def test_checkpoint_loads_offline_after_the_original_vlm_dir_is_gone(tmp_path):
    vlm_dir = tmp_path / "my_vlm"
    from snapflow_ros.policies.tiny import write_smolvlm_dir

    write_smolvlm_dir(vlm_dir)
    lerobot_policy, pre, post = make_smolvla(vlm_dir=vlm_dir, seed=3)
    policy = SnapFlowSmolVLA(lerobot_policy)
    save_policy(policy, tmp_path / "ckpt", preprocessor=pre, postprocessor=post)
    obs = random_observation(policy.config, generator=_gen(4))
    noise = policy.noise_like(1, _gen(5))
    expected = policy.sample(pre(obs), noise=noise)
    shutil.rmtree(vlm_dir)
    loaded = load_policy(tmp_path / "ckpt")
    assert torch.equal(loaded.policy.sample(loaded.preprocessor(obs), noise=noise), expected)


def test_plain_lerobot_directory_loads_as_the_teacher(tmp_path):
    lerobot_policy, pre, post = make_smolvla(seed=5)
    lerobot_policy.save_pretrained(tmp_path / "teacher")
    pre.save_pretrained(tmp_path / "teacher")
    post.save_pretrained(tmp_path / "teacher")
    loaded = load_policy(tmp_path / "teacher")
    assert not loaded.is_snapflow
    assert (loaded.policy.default_num_steps, loaded.policy.sampler) == (10, "euler")
    obs = random_observation(lerobot_policy.config, generator=_gen(6))
    noise = loaded.policy.noise_like(1, _gen(7))
    expected = lerobot_policy.predict_action_chunk(pre(obs), noise=noise)
    assert torch.equal(loaded.policy.predict_action_chunk(loaded.preprocessor(obs), noise=noise),
                       expected)
    # num_steps can be overridden for a teacher
    assert load_policy(tmp_path / "teacher", num_steps=4).policy.default_num_steps == 4


def test_base_weights_stay_loadable_by_lerobot(tiny_teacher, tmp_path):
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    _distill_a_little(tiny_teacher)
    save_policy(tiny_teacher.policy, tmp_path / "ckpt")
    config = PreTrainedConfig.from_pretrained(tmp_path / "ckpt")
    config.vlm_model_name = str(tmp_path / "ckpt" / "vlm")
    plain = SmolVLAPolicy.from_pretrained(tmp_path / "ckpt", config=config)
    ours = tiny_teacher.policy.policy.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, ours[key]), key


# -- bad input ----------------------------------------------------------------------------


def _write_config(directory, data):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return directory


def test_missing_path_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_policy(tmp_path / "nope")


def test_file_instead_of_directory(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a file"):
        load_policy(tmp_path / "model.safetensors")


def test_directory_without_config(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load_policy(tmp_path)


def test_broken_config_json(tmp_path):
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_policy(_write_config(tmp_path / "c", "{not json"))


def test_policy_that_is_not_flow_matching(tmp_path):
    with pytest.raises(CheckpointError, match="'act' policy, which is not a flow-matching"):
        load_policy(_write_config(tmp_path / "c", {"type": "act"}))


def test_every_flow_matching_type_has_an_adapter_and_pi0_fast_is_refused(tmp_path):
    from snapflow_ros.policies.checkpoint import SUPPORTED_TYPES
    from snapflow_ros.policies.registry import FLOW_MATCHING_TYPES

    assert set(SUPPORTED_TYPES) == set(FLOW_MATCHING_TYPES) == {"smolvla", "pi0", "pi05"}
    with pytest.raises(CheckpointError, match="'pi0_fast' policy, which is not a flow-matching"):
        load_policy(_write_config(tmp_path / "c", {"type": "pi0_fast"}))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_policy(_write_config(tmp_path / "d", {"type": "pi05"}))


@pytest.mark.parametrize("name", ["pi0-tiny", "pi05-tiny"])
def test_a_pi_checkpoint_missing_weights_is_refused_not_left_random(tmp_path, name, caplog):
    """lerobot's own pi0/pi0.5 from_pretrained keeps random weights when keys do not match;
    loading through snapflow_ros names the missing weights instead."""
    from safetensors.torch import load_file, save_file

    from snapflow_ros.policies import make_builtin

    loaded = make_builtin(name)
    save_policy(loaded.policy, tmp_path / "ckpt", preprocessor=loaded.preprocessor,
                postprocessor=loaded.postprocessor)
    with caplog.at_level(logging.WARNING):
        assert load_policy(tmp_path / "ckpt").policy.policy_type == loaded.policy.policy_type
    assert not [r for r in caplog.records if "might need handling" in r.getMessage()]
    weights = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    dropped = next(k for k in weights if "action_out_proj.weight" in k)
    del weights[dropped]
    save_file(weights, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 weights missing .*action_out_proj"):
        load_policy(tmp_path / "ckpt")


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_the_full_pi_built_ins_have_lerobots_real_shapes(kind):
    """``pi0-full``/``pi05-full`` (opt-in, ~14 GB in fp32) built on the meta device: no memory,
    every module in lerobot's own shapes (Gemma 2B VLM, 300M expert, SigLIP so400m, 224 px)."""
    from snapflow_ros.policies.tiny_pi import make_pi

    policy, _, _ = make_pi(kind, shape="full", device="meta")
    params = sum(p.numel() for p in policy.parameters())
    assert 3.4e9 < params < 3.7e9
    assert all(p.device.type == "meta" for p in policy.parameters())
    model = policy.model.paligemma_with_expert
    assert model.paligemma.config.text_config.hidden_size == 2048
    assert model.gemma_expert.config.hidden_size == 1024
    assert model.paligemma.config.vision_config.hidden_size == 1152
    assert policy.config.image_resolution == (224, 224)


def test_config_without_weights(tmp_path):
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_policy(_write_config(tmp_path / "c", {"type": "smolvla"}))


def test_weights_that_do_not_match_the_config(tiny_teacher, tmp_path):
    save_policy(tiny_teacher.policy, tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    config = json.loads(config_path.read_text())
    config["max_action_dim"] = 16
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match its config.json"):
        load_policy(tmp_path / "ckpt")


def test_hub_id_offline_says_how_to_get_it():
    with pytest.raises(CheckpointError, match="huggingface-cli download someone/no-such-policy"):
        load_policy("someone/no-such-policy")


def test_save_refuses_a_non_empty_directory_and_writes_all_or_nothing(tiny_teacher, tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_policy(tiny_teacher.policy, target)
    assert (target / "notes.txt").read_text() == "keep me"

    class FailingProcessor:
        def save_pretrained(self, directory):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_policy(tiny_teacher.policy, tmp_path / "new", preprocessor=FailingProcessor())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # nothing half-written
    save_policy(tiny_teacher.policy, target, overwrite=True)
    assert (target / SIDECAR).is_file() and not (target / "notes.txt").exists()


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("observation.images.wrist", r"camera image\(s\) \['observation.images.wrist'\]"),
        ("observation.state", "'observation.state'"),
        ("observation.language.tokens", "run the policy's preprocessor"),
    ],
)
def test_batch_missing_an_input_is_named(tiny_teacher, drop, message):
    policy = tiny_teacher.policy
    batch = tiny_teacher.preprocessor(random_observation(policy.config, generator=_gen(8)))
    del batch[drop]
    with pytest.raises(ValueError, match=message):
        policy.sample(batch)


def test_training_batch_needs_action_chunks(tiny_teacher):
    policy = tiny_teacher.policy
    batch = tiny_teacher.preprocessor(random_batch(policy.config, 2, generator=_gen(9)))
    chunkless = dict(batch, action=batch["action"][:, 0])
    with pytest.raises(ValueError, match="delta_timestamps"):
        policy.snapflow_loss(chunkless)
    del batch["action"]
    with pytest.raises(ValueError, match="'action' \\(needed for training\\)"):
        policy.snapflow_loss(batch)
