"""caer_ros.inference (pure PyTorch/numpy; imports neither rclpy nor training code).

- ``preprocess``: letterbox + ImageNet normalisation of a camera frame, box mapping back.
- ``decode``: network maps -> people (CenterNet peaks, boxes, emotion scores from the maps).
"""
