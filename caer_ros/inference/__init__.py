"""caer_ros.inference (pure PyTorch/numpy; imports neither rclpy nor training code)."""
