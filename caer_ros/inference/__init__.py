"""caer_ros.inference (pure PyTorch/numpy; imports neither rclpy nor training code).

Frame path: ``preprocess`` -> ``graph`` (in the backend) -> ``decode`` -> image pixels.

- ``preprocess``: letterbox + ImageNet normalisation of a camera frame, box mapping back.
- ``graph``: ``InferenceGraph``, BENet plus the map-wide decoding steps (activation, flip test,
  scale fusion, row prefix sums); run by torch or exported to ONNX. ``graph_outputs``: its
  output names and strides without torch, so an ONNX model's frame path imports no torch.
- ``decode``: the graph's maps -> people (CenterNet peaks, boxes, emotion scores per box);
  the one decode path of the node, ``caer-infer`` and the evaluator.
- ``predictor``: ``Predictor.from_file(path)``, torch or ONNX Runtime behind one interface.
- ``export`` / ``onnx_metadata`` / ``onnx_friendly``: the ONNX file (``python -m
  caer_ros.export``), its metadata, and exact rewrites of ops ONNX Runtime runs slowly.
- ``tracking``: stable person ids and score smoothing across frames (the node's and
  ``caer-infer``'s on videos and cameras).
- ``overlay``: drawing people and labels on an image; ``cli``: ``caer-infer`` on images;
  ``video``: ``caer-infer`` on videos and cameras; ``results``: its JSON people;
  ``coco_out``: its COCO pre-labels (``--coco-out``, for CVAT and the lab-data loader).
"""
