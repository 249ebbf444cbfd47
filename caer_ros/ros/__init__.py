"""caer_ros.ros: the rclpy node (emotion_node), its frame path, image conversion, QoS and
diagnostics. Tracking and overlay drawing are in caer_ros.inference (shared with caer-infer)."""
