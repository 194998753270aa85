"""lerobot policy type → SnapFlow adapter, and the built-in random-weight models.

Adding a model is one adapter module (a ``SnapFlowPolicy`` subclass) plus one line in
``ADAPTERS`` (and, for offline tests/benchmarks, its built-in shapes in ``BUILTINS``). Adapters
import lazily: naming a type does not import its lerobot code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

#: lerobot policy types that are flow-matching VLAs (SnapFlow applies to them).
FLOW_MATCHING_TYPES = ("smolvla", "pi0", "pi05")
#: lerobot policy type → "module:class" of its SnapFlow adapter.
ADAPTERS: dict[str, str] = {
    "smolvla": "snapflow_ros.policies.smolvla:SnapFlowSmolVLA",
    "pi0": "snapflow_ros.policies.pi:SnapFlowPi0",
    "pi05": "snapflow_ros.policies.pi:SnapFlowPi05",
}
#: built-in random-weight teachers (offline): name → (policy type, "module:builder", shape).
BUILTINS: dict[str, tuple[str, str, str]] = {
    "smolvla-tiny": ("smolvla", "snapflow_ros.policies.tiny:make_smolvla", "tiny"),
    "smolvla-full": ("smolvla", "snapflow_ros.policies.tiny:make_smolvla", "full"),
    "pi0-tiny": ("pi0", "snapflow_ros.policies.tiny_pi:make_pi0", "tiny"),
    "pi05-tiny": ("pi05", "snapflow_ros.policies.tiny_pi:make_pi05", "tiny"),
    "pi0-full": ("pi0", "snapflow_ros.policies.tiny_pi:make_pi0", "full"),  # ~13 GB in fp32
    "pi05-full": ("pi05", "snapflow_ros.policies.tiny_pi:make_pi05", "full"),  # ~13 GB in fp32
}


def _load(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def adapter_class(policy_type: str) -> type:
    """The ``SnapFlowPolicy`` subclass for a lerobot policy type (KeyError: none)."""
    return _load(ADAPTERS[policy_type])


def wrap(lerobot_policy: Any, **kwargs: Any) -> Any:
    """A lerobot policy wrapped in its adapter (chosen by ``config.type``)."""
    policy_type = getattr(lerobot_policy.config, "type", None)
    if policy_type not in ADAPTERS:
        raise TypeError(f"no SnapFlow adapter for lerobot policy type {policy_type!r} "
                        f"(adapters: {', '.join(ADAPTERS)})")
    return adapter_class(policy_type)(lerobot_policy, **kwargs)


def builtin_builder(name: str) -> tuple[str, Callable[..., Any], str]:
    """(policy type, builder, shape) of a built-in model name (KeyError: none)."""
    policy_type, target, shape = BUILTINS[name]
    return policy_type, _load(target), shape
