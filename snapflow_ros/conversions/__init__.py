"""ROS message ↔ numpy conversions. Duck-typed on message fields, so they serve rclpy messages
(policy node, bridge, recorder) and rosbags' deserialised messages (converter) alike. Never
imports rclpy."""
