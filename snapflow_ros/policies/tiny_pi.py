"""Random-weight lerobot pi0 / pi0.5 built offline: tiny (tests, demos, CI) and full (bench).

lerobot 0.4.4 knows two Gemma variants (``gemma_2b`` VLM, ``gemma_300m`` expert) and hard-codes
a SigLIP-so400m vision tower and the gated ``google/paligemma-3b-pt-224`` tokenizer. The tiny
shape keeps the configs' legal variant names and swaps, only while the model is built, the
module's ``get_gemma_config`` and PaliGemma constructor for small shapes (its joint attention
needs 8 heads and equal depth/head size in both models), and the processor's tokenizer for a
local byte-level BPE one (``cached_pi_tokenizer_dir``). ``transformers_compat.install()`` runs
first: stock transformers cannot run pi0/pi0.5 without it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from snapflow_ros.atomic import atomic_directory
from snapflow_ros.policies import transformers_compat
from snapflow_ros.policies._quiet import quiet_stdout
from snapflow_ros.policies.tiny import unit_stats

PiKind = Literal["pi0", "pi05"]
KINDS: dict[str, tuple[str, str, str, str]] = {  # modeling, policy, config, processors
    "pi0": ("lerobot.policies.pi0.modeling_pi0", "PI0Policy",
            "lerobot.policies.pi0.configuration_pi0:PI0Config",
            "lerobot.policies.pi0.processor_pi0:make_pi0_pre_post_processors"),
    "pi05": ("lerobot.policies.pi05.modeling_pi05", "PI05Policy",
             "lerobot.policies.pi05.configuration_pi05:PI05Config",
             "lerobot.policies.pi05.processor_pi05:make_pi05_pre_post_processors"),
}
TINY_VLM = {"width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1,
            "head_dim": 8}
TINY_EXPERT = {**TINY_VLM, "width": 32, "mlp_dim": 64}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
               "num_attention_heads": 2, "patch_size": 16}
VOCAB_SIZE = 512
_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]
_CORPUS = ["Task: ", "State: ", ";\nAction: ", "pick up the red cube and place it in the box",
           "reach the nearest of the two targets", "push the blue block to the left target",
           " ".join(str(i) for i in range(256))]


def _load(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def cached_pi_tokenizer_dir(cache_root: str | Path | None = None) -> Path:
    """A local PaliGemma-style tokenizer (pad, bos, eos; byte-level, 512 ids), written once.

    Cache root: ``cache_root``, else ``$SNAPFLOW_CACHE``, else ``~/.cache/snapflow_ros``.
    """
    root = Path(cache_root or os.environ.get("SNAPFLOW_CACHE")
                or Path.home() / ".cache" / "snapflow_ros")
    path = root / "pi-tokenizer-tiny"
    if not (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=_SPECIAL,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(_CORPUS * 8, trainer=trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                       eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
                                       model_max_length=1024)
        with atomic_directory(path) as tmp:
            fast.save_pretrained(tmp)
    return path


@contextlib.contextmanager
def _scoped(module: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def tiny_shapes(kind: PiKind) -> Iterator[None]:
    """While open, lerobot builds ``kind`` with the tiny Gemma/SigLIP shapes."""
    from transformers.models.paligemma import modeling_paligemma

    module = importlib.import_module(KINDS[kind][0])
    gemma = module.GemmaConfig
    build = modeling_paligemma.PaliGemmaForConditionalGeneration

    def small_paligemma(config: Any) -> Any:
        for key, value in TINY_VISION.items():
            setattr(config.vision_config, key, value)
        config.vision_config.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = VOCAB_SIZE
        return build(config=config)

    with _scoped(module, "get_gemma_config", lambda variant: gemma(
            **(TINY_VLM if variant == "gemma_2b" else TINY_EXPERT))), \
            _scoped(module, "PaliGemmaForConditionalGeneration", small_paligemma):
        yield


@contextlib.contextmanager
def local_tokenizer(kind: PiKind, tokenizer_dir: Path) -> Iterator[None]:
    """While open, the processors of ``kind`` tokenize with ``tokenizer_dir`` (no download)."""
    processor_module = importlib.import_module(KINDS[kind][3].split(":")[0])
    step = processor_module.TokenizerProcessorStep

    def local_step(**kwargs: Any) -> Any:
        return step(**{**kwargs, "tokenizer_name": str(tokenizer_dir)})

    with _scoped(processor_module, "TokenizerProcessorStep", local_step):
        yield


def make_pi_config(kind: PiKind, *, cameras: tuple[str, ...] = ("front", "wrist"),
                   state_dim: int = 6, action_dim: int = 6, chunk_size: int = 50,
                   n_action_steps: int = 10, image_hw: int | tuple[int, int] = 32,
                   **overrides: Any) -> Any:
    """A ``PI0Config``/``PI05Config`` with these features (images ``image_hw`` px: a side or
    (height, width); PaliGemma's input is square, the larger side: lerobot pads to it).

    lerobot's state/action padding (32) and prompt lengths stay: its pi0.5 state-prompt step
    does not save its ``max_state_dim``, so a reloaded processor would pad to 32 anyway."""
    from lerobot.configs.types import FeatureType, PolicyFeature

    height, width = (image_hw, image_hw) if isinstance(image_hw, int) else image_hw
    features = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, height, width))
                for c in cameras}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (state_dim,))
    config_cls = _load(KINDS[kind][2])
    return config_cls(
        input_features=features,
        output_features={"action": PolicyFeature(FeatureType.ACTION, (action_dim,))},
        chunk_size=chunk_size, n_action_steps=n_action_steps,
        image_resolution=(max(height, width),) * 2, device="cpu", **overrides)


def make_pi(kind: PiKind, *, shape: str = "tiny", seed: int = 0, device: str = "cpu",
            stats: dict[str, Any] | None = None, **config_kwargs: Any) -> tuple[Any, Any, Any]:
    """A random-weight lerobot pi0/pi0.5 policy with its pre/post-processors, offline.

    ``shape``: "tiny" (``TINY_*``), or "full": lerobot's own shapes (Gemma 2B + 300M expert,
    SigLIP so400m, 224 px, ~3.3 B parameters, ~13 GB in fp32) for benchmarks. Both tokenize with
    the local tokenizer (random weights: only the prompt's padded length matters, lerobot's).
    Returns (policy, preprocessor, postprocessor), the policy in eval mode.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown pi kind {kind!r}; choose one of {', '.join(KINDS)}")
    if shape not in ("tiny", "full"):
        raise ValueError(f"shape must be 'tiny' or 'full', not {shape!r}")
    transformers_compat.install()
    if shape == "full":
        config_kwargs.setdefault("image_hw", 224)
    config = make_pi_config(kind, **config_kwargs)
    config.device = device
    policy_cls = getattr(importlib.import_module(KINDS[kind][0]), KINDS[kind][1])
    torch.manual_seed(seed)
    scope = tiny_shapes(kind) if shape == "tiny" else contextlib.nullcontext()
    with scope, quiet_stdout(), torch.device(device):  # built in place: 13 GB never on the CPU
        policy = policy_cls(config)
    policy.to(device).eval()
    policy.snapflow_shape = shape  # pi.SHAPE_ATTR: checkpoints of it save the shape marker
    with local_tokenizer(kind, cached_pi_tokenizer_dir()):
        pre, post = _load(KINDS[kind][3])(config, dataset_stats=stats or unit_stats(config))
    return policy, pre, post


def make_pi0(shape: str = "tiny", **kwargs: Any) -> tuple[Any, Any, Any]:
    """The built-ins ``pi0-tiny`` and ``pi0-full`` (``registry.BUILTINS``)."""
    return make_pi("pi0", shape=shape, **kwargs)


def make_pi05(shape: str = "tiny", **kwargs: Any) -> tuple[Any, Any, Any]:
    """The built-ins ``pi05-tiny`` and ``pi05-full`` (``registry.BUILTINS``)."""
    return make_pi("pi05", shape=shape, **kwargs)
