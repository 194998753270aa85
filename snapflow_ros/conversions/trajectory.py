"""Action chunks → trajectory_msgs/JointTrajectory (ros2_control's positions-only chunks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from snapflow_ros.conversions.stamps import NS, fill_stamp


def chunk_to_trajectory(positions: np.ndarray, joint_names: Sequence[str], stamp_ns: int,
                        dt_ns: int, frame_id: str = "") -> JointTrajectory:
    """(H, A) joint targets → JointTrajectory stamped with the observation time.

    Point i has ``time_from_start = (i + 1)·dt``: the target of control period i is reached at
    its end (see runtime/chunking.py).
    """
    if positions.ndim != 2 or positions.shape[1] != len(joint_names):
        raise ValueError(f"positions {positions.shape} do not match {len(joint_names)} joints")
    msg = JointTrajectory()
    fill_stamp(msg.header.stamp, stamp_ns)
    msg.header.frame_id = frame_id
    msg.joint_names = list(joint_names)
    for i, row in enumerate(positions):
        point = JointTrajectoryPoint()
        point.positions = [float(v) for v in row]
        point.time_from_start.sec, point.time_from_start.nanosec = divmod((i + 1) * dt_ns, NS)
        msg.points.append(point)
    return msg


def trajectory_to_array(msg: JointTrajectory, joint_names: Sequence[str]) -> np.ndarray:
    """JointTrajectory → (H, A) positions in ``joint_names`` order (for tests and tools)."""
    index = [list(msg.joint_names).index(j) for j in joint_names]
    return np.array([[p.positions[i] for i in index] for p in msg.points], dtype=np.float64)
