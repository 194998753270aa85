"""SnapFlow math: pure torch, no ROS and no lerobot (conventions in ``core/flow.py``)."""

from snapflow_ros.core.flow import (
    VelocityFn,
    fm_target,
    interpolate,
    jump,
    restrict_rows,
    sample_fm_time,
)
from snapflow_ros.core.sampling import euler_sample, one_step_sample, snap_sample, uniform_times
from snapflow_ros.core.snapflow import (
    SnapFlowLossConfig,
    SnapFlowLossOutput,
    route_to_fm,
    shortcut_target,
    snapflow_loss,
)
from snapflow_ros.core.target_time import (
    TargetTimeEmbedding,
    TargetTimeEmbeddingConfig,
    sinusoidal_embedding,
)

__all__ = [
    "SnapFlowLossConfig",
    "SnapFlowLossOutput",
    "TargetTimeEmbedding",
    "TargetTimeEmbeddingConfig",
    "VelocityFn",
    "euler_sample",
    "fm_target",
    "interpolate",
    "jump",
    "one_step_sample",
    "restrict_rows",
    "route_to_fm",
    "sample_fm_time",
    "shortcut_target",
    "sinusoidal_embedding",
    "snap_sample",
    "snapflow_loss",
    "uniform_times",
]
