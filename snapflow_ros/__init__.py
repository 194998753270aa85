"""snapflow_ros: one-step (1-NFE) SnapFlow flow-matching robot policies for ROS 2.

Layers (DESIGN.md §3; ``test/test_package.py`` enforces who may import whom):

* ``core``         SnapFlow math on any velocity field F(x, t, s); torch only.
* ``policies``     lerobot policies under SnapFlow (SmolVLA), checkpoints, tiny offline models.
* ``inference``    the model in its own process (policy runner behind shared memory).
* ``distill``      the distillation trainer, held-out eval and their CLI.
* ``data``         rosbag2 reading, stamp sync, the LeRobot writer, ``bag_to_lerobot``.
* ``runtime``      observation sync, chunk scheduling, the safety gate; numpy only.
* ``conversions``  ROS message fields ↔ numpy.
* ``sim``          MuJoCo scenes, tasks and scripted experts; no ROS.
* ``nodes``        the rclpy nodes (policy, MuJoCo bridge, recorder) and their entry points.
* ``apps``         what orchestrates: demo, closed loop, sim demos, benchmarks, teacher training.

Tools: ``python -m snapflow_ros <tool>`` (``snapflow_ros/_tools.py``).
"""

__version__ = "0.1.0"
