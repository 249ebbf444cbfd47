"""caer_ros: context-aware emotion recognition for robots.

Subpackages: ``model`` (pure PyTorch network), ``inference`` (pre-processing, decoding,
predictors, export) and ``ros`` (the rclpy node; the only place that imports rclpy).
"""

__version__ = "0.1.0"

# The inference backends a model runs on (the predictor, caer-infer and the node's ``backend``
# parameter); here so that the node's parameter checks need not import the predictor.
BACKENDS = ("onnxruntime", "torch")
