"""Control-rate logic without ROS or torch: timing, (later) observation sync and chunking."""
