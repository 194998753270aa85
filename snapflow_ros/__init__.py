"""snapflow_ros: one-step (1-NFE) SnapFlow flow-matching robot policies for ROS 2.

Layers (each only imports the ones above it in this list):

* ``core``      SnapFlow math on any velocity field F(x, t, s); torch only.
* ``policies``  lerobot policies under SnapFlow (SmolVLA), checkpoints, tiny offline models.
* tools         ``python -m snapflow_ros <tool>`` (see ``snapflow_ros/_tools.py``).
"""

__version__ = "0.1.0"
