"""caer_ros.ros: the rclpy node(s), image conversion, overlay drawing, tracking."""
