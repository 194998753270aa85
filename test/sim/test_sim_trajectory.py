"""JointTrajectory sampling on sim time (positions-only, joint_trajectory_controller style)."""

import numpy as np
import pytest

from snapflow_ros.sim.trajectory import TrajectoryError, TrajectoryFollower

MS = 1_000_000
JOINTS = ("a", "b")


def _follower(start_ns=1000 * MS, now_ns=1000 * MS, current=(0.0, 0.0)):
    f = TrajectoryFollower(JOINTS)
    # message joint order differs from the follower's: mapped by name
    f.set(["b", "a"], start_ns, [100 * MS, 300 * MS], [[10.0, 1.0], [30.0, 3.0]], now_ns,
          np.array(current))
    return f


def test_interpolates_from_current_targets_through_the_points_then_holds():
    f = _follower(current=(0.5, 5.0))
    assert np.allclose(f.sample(1000 * MS), [0.5, 5.0])  # the point before the trajectory
    assert np.allclose(f.sample(1050 * MS), [0.75, 7.5])  # half way to point 0
    assert np.allclose(f.sample(1100 * MS), [1.0, 10.0])
    assert np.allclose(f.sample(1200 * MS), [2.0, 20.0])
    assert np.allclose(f.sample(5000 * MS), [3.0, 30.0])  # holds the last point
    assert f.end_ns == 1300 * MS


def test_future_start_waits_and_zero_stamp_means_now():
    f = _follower(start_ns=2000 * MS, now_ns=1000 * MS)
    assert f.sample(1500 * MS) is None
    g = _follower(start_ns=0, now_ns=700 * MS)
    assert np.allclose(g.sample(800 * MS), [1.0, 10.0])


def test_stamp_in_the_past_skips_what_is_over():
    f = _follower(start_ns=1000 * MS, now_ns=1250 * MS)
    assert np.allclose(f.sample(1250 * MS), [2.5, 25.0])


@pytest.mark.parametrize(("names", "times", "points", "match"), [
    (["a"], [100], [[1.0]], r"lacks joint\(s\) \['b'\]"),
    (["a", "a"], [100], [[1.0, 2.0]], "duplicates"),
    (["a", "b"], [], [], "no points"),
    (["a", "b"], [100], [[1.0]], "needs 2 positions"),
    (["a", "b"], [200, 100], [[1, 2], [3, 4]], "strictly increasing"),
    (["a", "b"], [100], [[np.nan, 2]], "finite"),
])
def test_bad_trajectories_are_rejected_and_the_old_one_kept(names, times, points, match):
    f = _follower()
    with pytest.raises(TrajectoryError, match=match):
        f.set(names, 0, [t * MS for t in times], points, 0, np.zeros(2))
    assert np.allclose(f.sample(5000 * MS), [3.0, 30.0])


def test_clear():
    f = _follower()
    f.clear()
    assert not f.active and f.sample(1200 * MS) is None
