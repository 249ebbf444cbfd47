"""caer_ros.model (pure PyTorch/numpy; imports neither rclpy nor training code)."""
