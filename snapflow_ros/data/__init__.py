"""Bags ↔ datasets: read rosbag2 (``rosbags``, no ROS install), align topics by stamp, write
LeRobot v3.0 datasets, and record rosbag2 episodes from raw message bytes. Never imports rclpy.

- ``align``: as-of sampling and frame resampling on stamp arrays (pure numpy).
- ``bag_reader``: open bags, check topics, turn reader failures into ``BagError``.
- ``message_checks``: per-message faults (NaN joints, broken images) and joints by name.
- ``streams`` / ``sync`` / ``frames``: the converter's first pass, frame plan, second pass.
- ``convert_bag``: one bag into a writer; ``parallel``: ``--jobs`` workers and the merge.
- ``lerobot_writer``: lerobot's ``LeRobotDataset`` writer, checked at the end;
  ``direct_video``: its video frames encoded without PNGs; ``image_stats``: lerobot's image
  statistics from value counts.
- ``build_dir``: the hidden build folder (all or nothing, clean after signals).
- ``bag_to_lerobot``: the ``bag_to_lerobot`` tool; ``sync_report``: its report.
- ``bag_recorder``: one rosbag2 directory per episode from wire bytes (the ``record`` node).
"""
