"""caer_ros: context-aware emotion recognition for robots.

Subpackages: ``model`` (pure PyTorch network), ``inference`` (pre-processing, decoding,
predictors, export) and ``ros`` (the rclpy node; the only place that imports rclpy).
"""

__version__ = "0.1.0"
