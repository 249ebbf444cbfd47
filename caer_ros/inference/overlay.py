"""Draw people, track ids and emotion labels on an image (the node's overlay and caer-infer's).

:func:`draw_detections` is the one call both use: per person a box, then a caption block of
a first line ``<id>  <detection score>`` and one line per label ``<category> <score>`` (the
categories at or above their threshold, highest first, at most ``max_labels``). The caption
sits above the box, or inside it when the box touches the top, and is shifted to stay inside
the image. Text size and line width scale with the image. The input is never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from caer_ros.inference.decode import labels_over_threshold

FONT = cv2.FONT_HERSHEY_SIMPLEX
# Distinct, saturated BGR colours; a person's colour follows their track id.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
    (10, 249, 72), (23, 204, 146), (134, 219, 61), (211, 188, 0), (209, 85, 0),
    (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132),
    (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255),
)


def text_scale(height: int, width: int) -> tuple[float, int]:
    """Font scale and stroke thickness for an image: ~2.5 % of its shorter side per line."""
    scale = max(0.3, min(height, width) / 900.0)
    return scale, max(1, round(scale * 1.6))


def top_labels(scores: np.ndarray, categories: Sequence[str],
               thresholds: float | Sequence[float], max_labels: int = 3,
               single_label: bool = False, top_needs_threshold: bool = False
               ) -> list[list[tuple[str, float]]]:
    """Per person, ``(category, score)`` of :func:`~caer_ros.inference.decode.
    labels_over_threshold` (at or above the threshold, highest first; the top one alone for a
    ``single_label`` set), at most ``max_labels``."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1, len(categories))
    index = {name: j for j, name in enumerate(categories)}
    return [[(name, float(row[index[name]])) for name in names[:max_labels]]
            for row, names in zip(s, labels_over_threshold(s, categories, thresholds,
                                                           single_label, top_needs_threshold),
                                  strict=True)]


def draw_detections(image: np.ndarray, detections: Any, categories: Sequence[str],
                    thresholds: float | Sequence[float], ids: Sequence[str] | None = None,
                    scores: np.ndarray | None = None, max_labels: int = 3,
                    single_label: bool = False, top_needs_threshold: bool = False
                    ) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 BGR with every detected person drawn.

    ``detections``: anything with ``boxes`` (N, 4) and ``detection_scores`` (N,) and
    ``scores`` (N, E) (a :class:`~caer_ros.inference.decode.Detections`); ``ids``: track ids,
    or None; ``scores``: scores to show instead of ``detections.scores`` (smoothed ones).
    """
    boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4)
    shown = np.asarray(detections.scores if scores is None else scores)
    labels = top_labels(shown, categories, thresholds, max_labels, single_label,
                        top_needs_threshold) if len(boxes) else []
    captions = []
    for n, person_labels in enumerate(labels):
        head = f"{ids[n]}  " if ids is not None and ids[n] else ""
        head += f"person {float(detections.detection_scores[n]):.2f}"
        captions.append([head] + [f"{name} {score:.2f}" for name, score in person_labels])
    colours = [PALETTE[_colour_index(ids[n] if ids is not None else "", n)]
               for n in range(len(boxes))]
    return draw_people(image, boxes, captions, colours)


def draw_people(image: np.ndarray, boxes: np.ndarray, captions: Sequence[Sequence[str]],
                colours: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    """A copy of ``image`` with each box (x1, y1, x2, y2 pixels) and its caption lines."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {image.dtype} {image.shape}")
    out = np.array(image, copy=True, order="C")
    height, width = out.shape[:2]
    scale, thickness = text_scale(height, width)
    line = max(1, round(min(height, width) / 300))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for n, box in enumerate(boxes):
        if not np.all(np.isfinite(box)):
            continue
        colour = colours[n] if colours is not None else PALETTE[n % len(PALETTE)]
        x1, x2 = (int(round(v)) for v in np.clip(box[[0, 2]], 0, width - 1))
        y1, y2 = (int(round(v)) for v in np.clip(box[[1, 3]], 0, height - 1))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, line)
        if n < len(captions) and captions[n]:
            _caption(out, list(captions[n]), x1, y1, colour, scale, thickness)
    return out


def _caption(out: np.ndarray, lines: list[str], x1: int, y1: int,
             colour: tuple[int, int, int], scale: float, thickness: int) -> None:
    """Filled block of text lines above the box (inside it when there is no room above)."""
    height, width = out.shape[:2]
    sizes = [cv2.getTextSize(text, FONT, scale, thickness) for text in lines]
    pad = max(1, round(3 * scale))
    text_h = max(h for (_, h), _ in sizes)
    line_h = text_h + max(base for _, base in sizes) + pad
    block_w = max(w for (w, _), _ in sizes) + 2 * pad
    block_h = line_h * len(lines) + pad
    top = y1 - block_h if y1 - block_h >= 0 else y1
    top = max(0, min(top, height - block_h))
    left = max(0, min(x1, width - block_w))
    cv2.rectangle(out, (left, top), (left + block_w - 1, top + block_h - 1), colour, cv2.FILLED)
    ink = (0, 0, 0) if _luma(colour) > 140 else (255, 255, 255)
    for i, text in enumerate(lines):
        baseline_y = top + pad + i * line_h + text_h
        cv2.putText(out, text, (left + pad, baseline_y), FONT, scale, ink, thickness, cv2.LINE_AA)


def _luma(colour: tuple[int, int, int]) -> float:
    b, g, r = colour
    return 0.114 * b + 0.587 * g + 0.299 * r


def _colour_index(track_id: str, n: int) -> int:
    """Same colour for the same track id in every frame; by position without ids."""
    if track_id.isdigit():
        return int(track_id) % len(PALETTE)
    if track_id:
        return sum(track_id.encode()) % len(PALETTE)
    return n % len(PALETTE)
