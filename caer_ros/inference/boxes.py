"""Boxes ``x1, y1, x2, y2`` (continuous pixel coordinates, no +1): areas, intersections, IoU,
and the crop around a person.

The one implementation used by the node's tracker, ``caer-infer``, the training transforms,
the metrics, the person-centric fusion and the demo. A box with x2 < x1 or y2 < y1 has area
0; boxes that only touch intersect in 0; the IoU of two empty boxes is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SUBJECT_MARGIN = 0.1  # ExtractSubject's margin: 10 % of the box width / height on each side


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


def subject_crop(box: Sequence[float] | np.ndarray, height: int, width: int,
                 margin: float = SUBJECT_MARGIN) -> tuple[int, int, int, int]:
    """Image rows and columns ``(r0, r1, c0, c1)`` (ends exclusive) of the crop around
    ``box`` (x1, y1, x2, y2 in pixels of a ``height`` x ``width`` image): the box clipped to
    the image, enlarged by ``margin`` of its size on each side, clipped again, rounded outward
    to whole pixels. Training's *ExtractSubject* and the person-centric fusion at inference
    (:mod:`caer_ros.inference.fusion`) cut the same crop. At least one pixel:
    a crop that would be empty is widened to the pixel at (or nearest to) the box.
    """
    limit = np.array([width, height, width, height], dtype=np.float64)
    x1, y1, x2, y2 = np.clip(np.asarray(box, dtype=np.float64).reshape(4), 0.0, limit)
    mx, my = margin * max(x2 - x1, 0.0), margin * max(y2 - y1, 0.0)
    c0, r0 = max(0, math.floor(x1 - mx)), max(0, math.floor(y1 - my))
    c1, r1 = min(width, math.ceil(x2 + mx)), min(height, math.ceil(y2 + my))
    c0, r0 = min(c0, width - 1), min(r0, height - 1)
    return r0, max(r1, r0 + 1), c0, max(c1, c0 + 1)
