"""MuJoCo simulation without ROS: scenes, tasks, scripted experts, trajectory following.

Imports mujoco and numpy, never rclpy (DESIGN §3); the ``mujoco_bridge`` node wraps it.
The offscreen GL backend is chosen here, before anything imports mujoco (``_gl``).
"""

from snapflow_ros.sim._gl import select_backend

GL_BACKEND = select_backend()
