"""lerobot flow-matching policies under SnapFlow: adapters, checkpoints, tiny offline models.

The only layer (with ``distill``/``data``) that imports lerobot; never imports rclpy.
"""

from snapflow_ros.policies.checkpoint import (
    CheckpointError,
    LoadedPolicy,
    load_policy,
    save_policy,
)
from snapflow_ros.policies.factory import BUILTIN_POLICIES, make_any, make_builtin
from snapflow_ros.policies.smolvla import SmolVLAPrefix, SnapFlowSmolVLA

__all__ = [
    "BUILTIN_POLICIES",
    "CheckpointError",
    "LoadedPolicy",
    "SmolVLAPrefix",
    "SnapFlowSmolVLA",
    "load_policy",
    "make_any",
    "make_builtin",
    "save_policy",
]
