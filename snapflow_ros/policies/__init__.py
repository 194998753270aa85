"""lerobot flow-matching policies under SnapFlow: one interface (``base.SnapFlowPolicy``), one
adapter per model (SmolVLA now; ``registry.py``), checkpoints, tiny offline models.

The only layer (with ``distill``/``data``) that imports lerobot; never imports rclpy. Tools
name no concrete model: they load through ``load_policy``/``make_any`` and use the interface.
"""

from snapflow_ros.policies.base import SnapFlowPolicy
from snapflow_ros.policies.checkpoint import (
    CheckpointError,
    LoadedPolicy,
    load_policy,
    save_policy,
)
from snapflow_ros.policies.factory import BUILTIN_POLICIES, make_any, make_builtin
from snapflow_ros.policies.registry import wrap

__all__ = [
    "BUILTIN_POLICIES",
    "CheckpointError",
    "LoadedPolicy",
    "SnapFlowPolicy",
    "load_policy",
    "make_any",
    "make_builtin",
    "save_policy",
    "wrap",
]
