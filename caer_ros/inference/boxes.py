"""Boxes ``x1, y1, x2, y2`` (continuous pixel coordinates, no +1): areas, intersections, IoU.

The one implementation used by the node's tracker, ``caer-infer``, the training transforms,
the metrics and the demo. A box with x2 < x1 or y2 < y1 has area 0; boxes that only touch
intersect in 0; the IoU of two empty boxes is 0.
"""

from __future__ import annotations

import numpy as np


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def areas(boxes: np.ndarray) -> np.ndarray:
    """(N,) areas of (N, 4) boxes, float64."""
    b = _as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)


def intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection areas of every box of ``a`` (N, 4) with every box of ``b`` (M, 4)."""
    a, b = _as_boxes(a), _as_boxes(b)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(width, 0.0, None) * np.clip(height, 0.0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of every box of ``a`` with every box of ``b``."""
    inter = intersections(a, b)
    union = areas(a)[:, None] + areas(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
