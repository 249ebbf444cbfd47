"""The JSON form of the people found in one image or frame, shared by every ``caer-infer`` output.

Each person: ``box`` [x1, y1, x2, y2] in image pixels, ``detection_score``, ``scores``
{category: score}, ``labels`` (categories at or above their threshold, highest first) and
``valence``, ``arousal``, ``dominance`` (0..1, null without a continuous head); with tracking
also ``id`` (the track id, as the node publishes it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from caer_ros.inference.decode import labels_over_threshold
from caer_ros.labels import CONTINUOUS


def number(value: Any) -> float | None:
    """A float rounded for JSON; None for NaN or infinity."""
    value = float(value)
    return round(value, 5) if math.isfinite(value) else None


def people_json(boxes: np.ndarray, detection_scores: np.ndarray, scores: np.ndarray,
                continuous: np.ndarray | None, categories: Sequence[str],
                thresholds: np.ndarray, ids: Sequence[str] | None = None,
                single_label: bool = False) -> list[dict[str, Any]]:
    """One dict per person (module docstring), in the order given. ``scores`` (N, E) are the
    ones to report (smoothed ones for tracked people); labels are read from them (the top one
    alone for a ``single_label`` set)."""
    categories = tuple(categories)
    scores = np.asarray(scores, dtype=np.float32).reshape(len(boxes), len(categories))
    labels = labels_over_threshold(scores, categories, thresholds, single_label)
    people = []
    for n in range(len(boxes)):
        values = [None] * 3 if continuous is None else [number(v) for v in continuous[n][:3]]
        person: dict[str, Any] = {} if ids is None else {"id": ids[n]}
        person.update({
            "box": [round(float(v), 2) for v in boxes[n]],
            "detection_score": number(detection_scores[n]),
            "scores": {name: number(v) for name, v in zip(categories, scores[n], strict=True)},
            "labels": labels[n],
            **dict(zip(CONTINUOUS, values, strict=True)),
        })
        people.append(person)
    return people
