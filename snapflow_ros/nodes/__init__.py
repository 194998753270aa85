"""Thin rclpy shells around runtime/, policies/, sim/ and data/ (the only layer using rclpy)."""
