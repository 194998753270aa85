"""Scripted expert for ``ReachTwoTargets``: pick a target at random, then reach it.

The plan is joint-space: inverse kinematics (damped least squares on MuJoCo's site Jacobian,
tool pointing down, null-space pull towards the start pose) gives a pre-grasp pose
``approach`` metres above the chosen goal and the goal pose itself; the joints move along
minimum-jerk segments start → pre-grasp → goal and then hold. The expert is *privileged*: it
reads the goal positions from the task, as scripted demonstrators do. Times are episode
seconds; joint vectors are (M,) in action (actuated-joint) order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from snapflow_ros.sim.scene import Scene
from snapflow_ros.sim.tasks import ReachTwoTargets

DOWN = np.array([0.0, 0.0, -1.0])


class IKError(RuntimeError):
    """Inverse kinematics did not converge; the message gives the remaining error."""


def solve_ik(scene: Scene, site_id: int, target: np.ndarray, q_init: np.ndarray,
             tool_axis: np.ndarray | None = DOWN, rot_weight: float = 0.3, damping: float = 0.05,
             iters: int = 300, tol: float = 1e-4, *, offset: np.ndarray | None = None,
             align: Sequence[tuple[int, np.ndarray]] | None = None,
             movable: np.ndarray | None = None) -> np.ndarray:
    """Actuated-joint positions (M,) that put a point at ``target`` (3,) metres.

    The point is site ``site_id``, or ``offset`` (3,) metres from it in the site's frame. With
    ``tool_axis`` the site's z axis is also turned towards it; ``align`` instead lists (site
    axis index, world direction) pairs to turn towards (each weighted ``rot_weight``).
    ``movable`` (M,) bool: the entries the solver may change (default: all; the others keep
    ``q_init``). Works on a scratch ``MjData``; the scene's state is untouched. Raises
    ``IKError``.
    """
    m = scene.model
    data = mujoco.MjData(m)
    data.qpos[:] = scene.data.qpos
    data.mocap_pos[:] = scene.data.mocap_pos
    q = np.asarray(q_init, dtype=np.float64).copy()
    free = np.ones(q.size, bool) if movable is None else np.asarray(movable, bool)
    lo, hi = scene.lower, scene.upper
    jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
    cols = scene.act_dof_adr[free]
    axes = list(align) if align is not None else (
        [(2, tool_axis)] if tool_axis is not None else [])
    local = np.zeros(3) if offset is None else np.asarray(offset, dtype=np.float64)
    err = np.inf
    for _ in range(iters):
        data.qpos[scene.act_qpos_adr] = q
        mujoco.mj_kinematics(m, data)
        mujoco.mj_comPos(m, data)
        rot = data.site_xmat[site_id].reshape(3, 3)
        lever = rot @ local
        pos_err = target - (data.site_xpos[site_id] + lever)
        mujoco.mj_jacSite(m, data, jacp, jacr, site_id)
        jp = jacp[:, cols] - _skew(lever) @ jacr[:, cols]  # velocity of the offset point
        rows, errs = [jp], [pos_err]
        for axis, direction in axes:
            rows.append(rot_weight * jacr[:, cols])
            errs.append(rot_weight * np.cross(rot[:, axis], direction))
        jac, e = np.vstack(rows), np.concatenate(errs)
        err = float(np.linalg.norm(e))
        if err < tol:
            return q
        jjt = jac @ jac.T + damping**2 * np.eye(jac.shape[0])
        dq = jac.T @ np.linalg.solve(jjt, e)
        null = np.eye(cols.size) - np.linalg.pinv(jac) @ jac
        dq += null @ (0.05 * (q_init[free] - q[free]))
        q[free] = np.clip(q[free] + dq, lo[free], hi[free])
    if np.linalg.norm(pos_err) > 5e-3:
        raise IKError(f"IK did not reach {np.round(target, 3).tolist()}: remaining error "
                      f"{err:.4f} after {iters} iterations")
    return q


def _skew(v: np.ndarray) -> np.ndarray:
    """(3, 3) cross-product matrix: ``_skew(a) @ b == np.cross(a, b)``."""
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def min_jerk(s: np.ndarray | float) -> np.ndarray | float:
    """Minimum-jerk profile 10s³ − 15s⁴ + 6s⁵ on s ∈ [0, 1] (zero speed/accel at both ends)."""
    s = np.clip(s, 0.0, 1.0)
    return s**3 * (10.0 - 15.0 * s + 6.0 * s**2)


@dataclass(frozen=True)
class JointPlan:
    """Piecewise minimum-jerk joint path through ``waypoints`` (K, M) at ``times`` (K,) s."""

    times: np.ndarray
    waypoints: np.ndarray
    mode: int  # which target the plan reaches

    def __call__(self, t: float) -> np.ndarray:
        """(M,) joint targets at episode time ``t`` seconds (holds the ends outside)."""
        if t <= self.times[0]:
            return self.waypoints[0].copy()
        if t >= self.times[-1]:
            return self.waypoints[-1].copy()
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        s = min_jerk((t - self.times[i]) / (self.times[i + 1] - self.times[i]))
        return self.waypoints[i] + s * (self.waypoints[i + 1] - self.waypoints[i])


@dataclass(frozen=True)
class ExpertConfig:
    """Timing (s) and geometry (m) of the scripted reach."""

    approach: float = 0.08  # pre-grasp height above the goal
    t_approach: float = 1.3  # start → pre-grasp
    t_descend: float = 0.7  # pre-grasp → goal


class ReachExpert:
    """Plans reaches for a ``ReachTwoTargets`` task on ``scene`` (call after ``env.reset``)."""

    def __init__(self, scene: Scene, task: ReachTwoTargets,
                 config: ExpertConfig | None = None) -> None:
        self.scene, self.task = scene, task
        self.config = config or ExpertConfig()

    def plan_for(self, mode: int) -> JointPlan:
        """The plan that reaches target ``mode`` (0 or 1) from the current pose."""
        c, goal = self.config, self.task.goals[mode]
        q0 = self.scene.actuated_positions()
        site = self.task.site_id
        q_pre = solve_ik(self.scene, site, goal + (0.0, 0.0, c.approach), q0)
        q_goal = solve_ik(self.scene, site, goal, q_pre)
        times = np.array([0.0, c.t_approach, c.t_approach + c.t_descend])
        return JointPlan(times=times, waypoints=np.stack([q0, q_pre, q_goal]), mode=mode)

    def plan(self, rng: np.random.Generator) -> JointPlan:
        """Choose a target uniformly at random from ``rng`` and plan to reach it."""
        return self.plan_for(int(rng.integers(2)))
