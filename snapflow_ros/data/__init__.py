"""Bags ↔ datasets: read rosbag2 (``rosbags``, no ROS install), align topics by stamp, write
LeRobot v3.0 datasets, and record rosbag2 episodes from raw message bytes. Never imports rclpy.

- ``align``: as-of sampling and frame resampling on stamp arrays (pure numpy).
- ``bag_reader``: open bags, check topics, turn reader failures into ``BagError``.
- ``streams`` / ``sync`` / ``frames``: the converter's first pass, frame plan, second pass.
- ``lerobot_writer``: an all-or-nothing ``LeRobotDataset`` writer.
- ``bag_to_lerobot``: the ``bag_to_lerobot`` tool; ``sync_report``: its report.
- ``bag_recorder``: one rosbag2 directory per episode from wire bytes (the ``record`` node).
"""
