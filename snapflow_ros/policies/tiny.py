"""Random-weight SmolVLA policies built entirely from local files (nothing downloads).

lerobot 0.4.4's SmolVLA always calls ``AutoConfig``/``AutoProcessor.from_pretrained`` on
``vlm_model_name``, and its preprocessor loads the tokenizer from the same name. So a policy
without hub access needs one local directory holding a SmolVLM ``config.json``, a tokenizer
and the processor files. ``write_smolvlm_dir`` writes one; the tokenizer is a small byte-level
BPE trained on robot instructions (deterministic), with the special tokens SmolVLA reads.

Two shapes:

* ``tiny``: Llama text 64 wide × 4 layers, SigLIP 32 wide × 2 layers, 64 px images
  (≈0.4 M parameters): for tests, demos and CI.
* ``full``: SmolVLM2-500M-Video-Instruct's shape (text 960 × 32 layers, SigLIP-B/16 at 512 px),
  cut to SmolVLA's 16 VLM layers with a 720-wide expert (≈450 M parameters): for benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from snapflow_ros.atomic import atomic_directory
from snapflow_ros.policies._quiet import quiet_stdout

Shape = Literal["tiny", "full"]
SHAPES: tuple[str, ...] = ("tiny", "full")

_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<global-img>",
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
]
_CORPUS = [
    "pick up the red cube and place it in the box",
    "push the blue block to the left target",
    "reach the nearest of the two targets",
    "open the drawer and close the gripper",
    "stack the green cup on the yellow plate",
    "move the arm up, down, left and right",
    "grasp the object on the table",
    "insert the peg into the hole",
]
_VOCAB_SIZE = 512

_TEXT = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
    ),
    "full": dict(
        vocab_size=49280,
        hidden_size=960,
        intermediate_size=2560,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        head_dim=64,
        max_position_embeddings=8192,
    ),
}
_VISION = {
    "tiny": dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=64, patch_size=16,
    ),
    "full": dict(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        image_size=512, patch_size=16,
    ),
}
_SCALE_FACTOR = {"tiny": 2, "full": 4}
#: SmolVLA settings per shape: (VLM layers kept, image size the policy resizes to).
_POLICY = {"tiny": dict(num_vlm_layers=4, image=64), "full": dict(num_vlm_layers=16, image=512)}


def _check_shape(shape: str) -> None:
    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; choose one of {', '.join(SHAPES)}")


def _build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 8, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        additional_special_tokens=["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
        # SmolVLA reads tokenizer.fake_image_token_id / global_image_token_id.
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
        model_max_length=8192,
    )


def write_smolvlm_dir(out: str | Path, shape: Shape = "tiny") -> Path:
    """Write a SmolVLM config + tokenizer + processor directory usable as ``vlm_model_name``.

    Written all or nothing (``atomic_directory``). Returns ``out``.
    """
    from transformers import (
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    _check_shape(shape)
    out = Path(out)
    with atomic_directory(out) as tmp:
        tokenizer = _build_tokenizer()
        text = {
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "rms_norm_eps": 1e-5,
            "rope_theta": 100000,
            "pad_token_id": tokenizer.pad_token_id,
            **_TEXT[shape],
        }
        config = SmolVLMConfig(
            text_config=text,
            vision_config={"model_type": "smolvlm_vision", **_VISION[shape]},
            scale_factor=_SCALE_FACTOR[shape],
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            tie_word_embeddings=False,
        )
        config.save_pretrained(tmp)
        vision = _VISION[shape]
        patches = (vision["image_size"] // vision["patch_size"]) ** 2
        size = {"longest_edge": vision["image_size"]}
        processor = SmolVLMProcessor(
            image_processor=SmolVLMImageProcessor(
                size=size, max_image_size=size, do_image_splitting=False
            ),
            tokenizer=tokenizer,
            video_processor=SmolVLMVideoProcessor(size=size, max_image_size=size),
            image_seq_len=patches // _SCALE_FACTOR[shape] ** 2,
        )
        processor.save_pretrained(tmp)
    return out


def cached_smolvlm_dir(shape: Shape = "tiny", cache_root: str | Path | None = None) -> Path:
    """The local SmolVLM directory for ``shape``, written once under the snapflow cache.

    Cache root: ``cache_root``, else ``$SNAPFLOW_CACHE``, else ``~/.cache/snapflow_ros``.
    """
    _check_shape(shape)
    root = Path(cache_root or os.environ.get("SNAPFLOW_CACHE")
                or Path.home() / ".cache" / "snapflow_ros")
    path = root / f"smolvlm-{shape}"
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        write_smolvlm_dir(path, shape)
    return path


def make_smolvla_config(
    vlm_dir: str | Path,
    shape: Shape = "tiny",
    *,
    cameras: Sequence[str] = ("front", "wrist"),
    state_dim: int = 6,
    action_dim: int = 6,
    chunk_size: int = 50,
    n_action_steps: int | None = None,
    image_hw: tuple[int, int] | None = None,
    device: str = "cpu",
    **overrides: Any,
) -> Any:
    """A lerobot ``SmolVLAConfig`` for a random-weight policy over ``vlm_dir``.

    Cameras become ``observation.images.<name>`` features of shape (3, H, W) with H×W =
    ``image_hw`` (default: the shape's native size, 64 or 512 px). ``overrides`` are further
    ``SmolVLAConfig`` fields (e.g. ``max_action_dim``).
    """
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    _check_shape(shape)
    side = _POLICY[shape]["image"]
    hw = image_hw or (side, side)
    inputs = {
        f"observation.images.{name}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, *hw))
        for name in cameras
    }
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(state_dim,))
    return SmolVLAConfig(
        vlm_model_name=str(vlm_dir),
        load_vlm_weights=False,
        device=device,
        num_vlm_layers=_POLICY[shape]["num_vlm_layers"],
        resize_imgs_with_padding=(side, side),
        chunk_size=chunk_size,
        n_action_steps=n_action_steps or chunk_size,
        input_features=inputs,
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))},
        **overrides,
    )


def unit_stats(config: Any) -> dict[str, dict[str, torch.Tensor]]:
    """Normalisation stats that leave state and action unchanged (mean 0, std 1, range ±1)."""
    stats = {}
    for key, feat in {**config.input_features, **config.output_features}.items():
        if key.startswith("observation.images."):
            continue
        (dim,) = feat.shape
        zeros, ones = torch.zeros(dim), torch.ones(dim)
        stats[key] = {"mean": zeros, "std": ones, "min": -ones, "max": ones,
                      "q01": -ones, "q99": ones}
    return stats


def make_smolvla(
    shape: Shape = "tiny",
    *,
    vlm_dir: str | Path | None = None,
    seed: int = 0,
    stats: dict[str, dict[str, torch.Tensor]] | None = None,
    **config_kwargs: Any,
) -> tuple[Any, Any, Any]:
    """A random-weight lerobot ``SmolVLAPolicy`` with its pre/post-processors, built offline.

    Args:
        shape: "tiny" or "full".
        vlm_dir: the local SmolVLM directory (default: ``cached_smolvlm_dir(shape)``).
        seed: torch seed for the random weights.
        stats: normalisation stats (default: ``unit_stats``).
        **config_kwargs: forwarded to ``make_smolvla_config`` (cameras, state_dim, ...).

    Returns:
        (policy, preprocessor, postprocessor), the policy in eval mode.
    """
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    vlm_dir = Path(vlm_dir) if vlm_dir is not None else cached_smolvlm_dir(shape)
    config = make_smolvla_config(vlm_dir, shape, **config_kwargs)
    torch.manual_seed(seed)
    with quiet_stdout():
        policy = SmolVLAPolicy(config)
    policy.eval()
    pre, post = make_smolvla_pre_post_processors(config, dataset_stats=stats or unit_stats(config))
    return policy, pre, post


def random_observation(
    config: Any, *, generator: torch.Generator | None = None, task: str = "pick up the red cube"
) -> dict[str, Any]:
    """One raw (unbatched) observation as the preprocessor expects it: images (3, H, W) in
    [0, 1], ``observation.state`` (S,) and the ``task`` string."""
    obs: dict[str, Any] = {
        key: torch.rand(feat.shape, generator=generator)
        for key, feat in config.image_features.items()
        if not key.startswith("observation.images.empty_camera_")
    }
    obs["observation.state"] = torch.randn(config.robot_state_feature.shape, generator=generator)
    obs["task"] = task
    return obs


def random_batch(
    config: Any, batch_size: int, *, generator: torch.Generator | None = None,
    task: str = "pick up the red cube",
) -> dict[str, Any]:
    """A raw training batch: images (B, 3, H, W), state (B, S), ``action`` (B, chunk, A),
    ``task`` (list of B strings), as a LeRobot DataLoader yields it."""
    batch: dict[str, Any] = {
        key: torch.rand((batch_size, *feat.shape), generator=generator)
        for key, feat in config.image_features.items()
        if not key.startswith("observation.images.empty_camera_")
    }
    batch["observation.state"] = torch.randn(
        (batch_size, *config.robot_state_feature.shape), generator=generator
    )
    batch["action"] = torch.randn(
        (batch_size, config.chunk_size, *config.action_feature.shape), generator=generator
    )
    batch["task"] = [task] * batch_size
    return batch
