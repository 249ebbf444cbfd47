"""Person tracking across frames: IoU association, stable ids, exponential score smoothing.

Each frame's boxes are matched one-to-one to the live tracks by maximum total IoU (Hungarian
assignment, ``scipy.optimize.linear_sum_assignment``); a pair counts only when its IoU is at
least ``iou_threshold``. Matched tracks take the new box; unmatched detections start new tracks
with new ids ("1", "2", ... never reused); a track unmatched for more than ``max_missed``
consecutive frames is dropped.

Each track smooths its emotion scores (and continuous values) exponentially:
``s_t = smoothing * s_{t-1} + (1 - smoothing) * x_t``, with ``s`` = the first observation on
the frame a track starts; ``smoothing = 0`` publishes the raw scores.

The node (:mod:`caer_ros.ros.frame_path`) and ``caer-infer`` on videos and cameras
(:mod:`caer_ros.inference.video`) both track through :func:`track` with these defaults.
SciPy (most of a second to import) is imported by the first :class:`IouTracker` made, not
with this module: a node or ``caer-infer`` run without tracking never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from caer_ros.inference.boxes import iou_matrix

IOU_THRESHOLD = 0.3  # minimum IoU of a box with the person's previous box
MAX_MISSED = 5  # frames a person may be missing before their id is dropped


@dataclass
class Track:
    """One tracked person: last box, smoothed scores, frames since last matched."""

    id: str
    box: np.ndarray  # (4,) float64
    scores: np.ndarray  # (E,) float64, smoothed
    continuous: np.ndarray | None  # (3,) float64, smoothed
    missed: int = 0


@dataclass(frozen=True)
class TrackedPeople:
    """One frame's people in detection order: their track ids and smoothed values."""

    ids: list[str]
    scores: np.ndarray  # (N, E) float32
    continuous: np.ndarray | None  # (N, 3) float32, None when the input had none


class IouTracker:
    """Associates each frame's boxes with the previous frames' people (module docstring)."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5,
                 smoothing: float = 0.0) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed!r}")
        self.iou_threshold = float(iou_threshold)
        self.max_missed = int(max_missed)
        self.smoothing = smoothing
        self.tracks: list[Track] = []
        self._next_id = 1
        from scipy.optimize import linear_sum_assignment  # here, not per frame: see above

        self._assign = linear_sum_assignment

    @property
    def smoothing(self) -> float:
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {value!r}")
        self._smoothing = float(value)

    def reset(self) -> None:
        """Forget every track (ids keep counting up)."""
        self.tracks = []

    def update(self, boxes: np.ndarray, scores: np.ndarray,
               continuous: np.ndarray | None = None) -> TrackedPeople:
        """Match one frame's detections: ``boxes`` (N, 4), ``scores`` (N, E), ``continuous``
        (N, 3) or None. Returns ids and smoothed values in the order of the detections."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = _rows(scores, len(boxes), "scores")
        if continuous is not None:
            continuous = _rows(continuous, len(boxes), "continuous")

        matches = self._match(boxes)
        matched = set(matches.values())
        for t, track in enumerate(self.tracks):
            if t not in matched:
                track.missed += 1
        result: list[Track] = []
        for d in range(len(boxes)):
            cont = None if continuous is None else continuous[d]
            if d in matches:
                track = self.tracks[matches[d]]
                track.box, track.missed = boxes[d], 0
                track.scores = self._smooth(track.scores, scores[d])
                track.continuous = self._smooth(track.continuous, cont)
            else:
                track = Track(str(self._next_id), boxes[d], scores[d].copy(),
                              None if cont is None else cont.copy())
                self._next_id += 1
                self.tracks.append(track)
            result.append(track)
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]

        n, e = scores.shape
        return TrackedPeople(
            ids=[t.id for t in result],
            scores=np.array([t.scores for t in result], dtype=np.float32).reshape(n, e),
            continuous=None if continuous is None else
            np.array([t.continuous for t in result],
                     dtype=np.float32).reshape(n, continuous.shape[1]),
        )

    def _match(self, boxes: np.ndarray) -> dict[int, int]:
        """detection index -> track index, maximum total IoU, pairs below the threshold cut."""
        if not self.tracks or not len(boxes):
            return {}
        iou = iou_matrix(boxes, np.array([t.box for t in self.tracks]))
        rows, cols = self._assign(iou, maximize=True)
        return {int(d): int(t) for d, t in zip(rows, cols, strict=True)
                if iou[d, t] >= self.iou_threshold}

    def _smooth(self, previous: np.ndarray | None, current: np.ndarray | None) -> np.ndarray | None:
        if current is None:
            return None
        if previous is None or previous.shape != current.shape:
            return current.copy()
        return self._smoothing * previous + (1.0 - self._smoothing) * current


def _rows(values: np.ndarray, n: int, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or len(values) != n:
        raise ValueError(f"{what} must have shape ({n}, K) for {n} boxes, got {values.shape}")
    return values


def track(tracker: IouTracker | None, detections: Any) -> TrackedPeople:
    """Track ids and (smoothed) scores of one frame's
    :class:`~caer_ros.inference.decode.Detections`; without a tracker, empty ids and the raw
    scores."""
    if tracker is not None:
        return tracker.update(detections.boxes, detections.scores, detections.continuous)
    return TrackedPeople(ids=[""] * len(detections.boxes),
                         scores=np.asarray(detections.scores, dtype=np.float32),
                         continuous=detections.continuous)
