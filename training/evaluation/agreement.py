"""Agreement of a student model with its teacher on unlabelled frames: how far a model
distilled from a teacher without labels (``python -m training.distill``) does what its
teacher does.

    python -m training.evaluate --model STUDENT.pt --against TEACHER.pt --images PATH [PATH ...]
        [--frame-rate 2] [--max-frames N] [--json OUT.json]

The frames are a :class:`~training.datasets.frames.FramePool` (image folders, images, videos
at ``--frame-rate``), held out from the student's training. The teacher's output is the ground
truth; both models run through the node's :class:`~caer_ros.inference.predictor.Predictor`,
the teacher with its own (deployed) inference settings:

- the teacher's people: its detections at its own detection threshold (its inference
  settings' ``detection_threshold``, the one ``Predictor.predict`` uses when given none);
- their labels: the teacher's scores at its people over its own per-category emotion
  thresholds (the thresholds its people's ``labels`` use on the robot), or, for a single-label
  set (:meth:`~caer_ros.model.config.ModelConfig.single_label`), its top category.

The figures (x100, as :mod:`training.evaluation.evaluate`'s; ``"scale": 100`` in the JSON):

- ``pd_ap``: person-detection AP (COCO AP@[.50:.95],
  :func:`training.evaluation.metrics.pd_ap`) of the student's detections at the low
  ``detection_threshold`` (default :data:`DETECTION_THRESHOLD`, so the curve is complete, as
  the evaluator's) against the teacher's people;
- ``er_map``: ER mAP (:func:`training.evaluation.metrics.er_map`) of the student's scores read
  at the teacher's boxes against the teacher's labels; a category no teacher person has is left
  out (AP NaN, ``null`` in the JSON);
- ``score_mae``: the mean absolute difference of the student's and the teacher's scores at the
  teacher's people, over every category; ``continuous_mae`` the same for valence, arousal and
  dominance (0..1 outputs) when both models have a continuous head, else None;
- counts: ``frames``, ``teacher_people``, and ``student_people``: the student's detections at
  the teacher's detection threshold (those it would report with the teacher's setting).

The category set is the teacher's primary set; the student must have it with the same
categories in the same order (else :class:`AgreementError` naming both files).

A model against itself has ``pd_ap`` and, with a multi-label set, ``er_map`` 100 and every
MAE 0; with a single-label set its ``er_map`` can be below 100 (one person's top category can
score lower than another person's score of it, which is not that person's top).

A figure without a defined value is NaN (``null`` in the JSON), not an error, so the others
are still reported: every one of them when the teacher finds nobody in any frame (the counts
say so), the ER mAP when no teacher person has any category.

This module imports no other evaluation module but :mod:`.metrics`
(:mod:`training.evaluation.evaluate` imports it for its command line).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from caer_ros.inference.predictor import Predictor
from training.datasets.frames import FramePool
from training.evaluation import metrics

#: Every figure of an :class:`AgreementResult` is this times the 0..1 value (the evaluator's
#: ``SCALE``; defined again here, as this module cannot import the evaluator back).
SCALE = 100
#: Default minimum detection score of the student's detections for ``pd_ap`` (the evaluator's
#: ``DETECTION_THRESHOLD``).
DETECTION_THRESHOLD = 0.01


class AgreementError(ValueError):
    """Agreement cannot be measured on this input; the one-line message names the files."""


@dataclass
class AgreementResult:
    """A student's agreement with its teacher on unlabelled frames (module docstring), each
    figure x100 (:data:`SCALE`); NaN where undefined.

    ``per_category_ap`` maps every category of ``category_set``, in order, to the student's
    AP against the teacher's labels (NaN for a category no teacher person has).
    ``emotion_thresholds`` are the teacher's, which made its labels (unused for a single-label
    set).
    """

    pd_ap: float
    er_map: float
    per_category_ap: dict[str, float]
    score_mae: float
    continuous_mae: float | None
    frames: int
    teacher_people: int
    student_people: int
    category_set: str
    single_label: bool
    detection_threshold: float
    teacher_detection_threshold: float
    emotion_thresholds: tuple[float, ...]

    def to_json(self, **metadata: Any) -> dict[str, Any]:
        """A JSON-ready dict: the figures (NaN as None), ``"scale": 100``, the counts, the
        thresholds, and ``metadata`` (e.g. the model files) added as given."""
        return {
            "scale": SCALE,
            "pd_ap": _finite(self.pd_ap),
            "er_map": _finite(self.er_map),
            "per_category_ap": {name: _finite(v) for name, v in self.per_category_ap.items()},
            "score_mae": _finite(self.score_mae),
            "continuous_mae": None if self.continuous_mae is None
            else _finite(self.continuous_mae),
            "frames": self.frames,
            "teacher_people": self.teacher_people,
            "student_people": self.student_people,
            "category_set": self.category_set,
            "categories": list(self.per_category_ap),
            "single_label": self.single_label,
            "detection_threshold": self.detection_threshold,
            "teacher_detection_threshold": self.teacher_detection_threshold,
            "teacher_emotion_thresholds": list(self.emotion_thresholds),
            **metadata,
        }


def shared_category_set(student: Predictor, teacher: Predictor) -> str:
    """The category set the two models are compared on: the teacher's primary set, which the
    student must have with the same categories in the same order.

    Raises:
        AgreementError: the student lacks the set or lists other categories (names both
            files).
    """
    name = teacher.category_set
    wanted = tuple(teacher.config.categories[name])
    have = dict(student.config.categories)
    if name not in have:
        raise AgreementError(f"{student.path} has no category set {name!r}, the primary set of "
                             f"the teacher {teacher.path} (the student has "
                             f"{', '.join(have) or 'none'})")
    if tuple(have[name]) != wanted:
        raise AgreementError(f"{student.path} and the teacher {teacher.path}: their {name!r} "
                             f"categories differ (names or order)")
    return name


def teacher_labels(scores: np.ndarray, thresholds: np.ndarray, single_label: bool
                   ) -> np.ndarray:
    """The teacher's labels (N, E) in {0, 1} from its scores (N, E): each category at or over
    its threshold (as its people's ``labels``), or for a single-label set the top category
    alone (the first of equal scores). Compared in float32, as the node compares them."""
    scores = np.asarray(scores, dtype=np.float32).reshape(len(scores), -1)
    if single_label:
        labels = np.zeros(scores.shape)
        labels[np.arange(len(scores)), scores.argmax(axis=1)] = 1.0
        return labels
    return (scores >= np.asarray(thresholds, dtype=np.float32)).astype(np.float64)


def agreement(student: Predictor, teacher: Predictor, pool: FramePool,
              detection_threshold: float = DETECTION_THRESHOLD,
              progress: bool = True) -> AgreementResult:
    """``student``'s agreement with ``teacher`` on the frames of ``pool`` (module docstring).

    Per frame (RGB from the pool, given to both predictors as the BGR they take): the teacher's
    people at its own detection threshold, then one student run
    (:meth:`~caer_ros.inference.predictor.Predictor.predict_and_read`) for its detections at
    ``detection_threshold`` and its scores at the teacher's boxes. ``progress``: a bar over
    the frames on stderr.

    Raises:
        AgreementError: no frames, or category sets that do not match
            (:func:`shared_category_set`).
        FrameError: a frame that cannot be read.
    """
    set_name = shared_category_set(student, teacher)
    if not len(pool):
        raise AgreementError("no frames to compare the models on")
    categories = tuple(teacher.config.categories[set_name])
    count = len(categories)
    single_label = teacher.config.single_label(set_name)
    thresholds = np.asarray(teacher.settings.emotion_thresholds[set_name],
                            dtype=np.float64).reshape(-1)
    teacher_threshold = float(teacher.detection_threshold)
    both_continuous = bool(student.has_continuous and teacher.has_continuous)

    detections, truths = [], []
    taught_scores, read_scores, taught_continuous, read_continuous = [], [], [], []
    student_people = 0
    for ref in tqdm(pool.frames, desc="agreement", unit="frame", disable=not progress,
                    file=sys.stderr):
        image = np.ascontiguousarray(pool.load(ref)[..., ::-1])  # RGB -> BGR
        taught = teacher.predict(image)  # its deployed detection threshold
        boxes = np.asarray(taught.boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes):
            found, read = student.predict_and_read(image, boxes,
                                                   detection_threshold=detection_threshold)
            taught_scores.append(np.reshape(taught.set_scores[set_name], (-1, count)))
            read_scores.append(np.reshape(read.set_scores[set_name], (-1, count)))
            if both_continuous:
                taught_continuous.append(np.asarray(taught.continuous)[:, :3])
                read_continuous.append(np.asarray(read.continuous)[:, :3])
        else:
            found = student.predict(image, detection_threshold=detection_threshold)
        detections.append(metrics.ImageDetections(found.boxes, found.detection_scores))
        truths.append(metrics.ImageGroundTruth(boxes))
        student_people += int(np.count_nonzero(
            np.asarray(found.detection_scores) >= teacher_threshold))

    teacher_people = sum(len(t.boxes) for t in truths)
    nan = float("nan")
    per_category = np.full(count, nan)
    pd = er = score_mae = nan
    continuous_mae = nan if both_continuous else None
    if teacher_people:
        pd = SCALE * metrics.pd_ap(detections, truths)
        taught_all = np.concatenate(taught_scores).astype(np.float64)
        read_all = np.concatenate(read_scores).astype(np.float64)
        score_mae = SCALE * float(np.abs(read_all - taught_all).mean())
        if both_continuous:
            continuous_mae = SCALE * float(np.abs(
                np.concatenate(read_continuous).astype(np.float64)
                - np.concatenate(taught_continuous)).mean())
        try:
            mean_ap, per_category = metrics.er_map(
                read_all, teacher_labels(taught_all, thresholds, single_label))
            er = SCALE * mean_ap
        except ValueError:  # no teacher person has any category: ER mAP undefined
            pass
    return AgreementResult(
        pd_ap=pd,
        er_map=er,
        per_category_ap={name: SCALE * float(ap)
                         for name, ap in zip(categories, per_category, strict=True)},
        score_mae=score_mae,
        continuous_mae=continuous_mae,
        frames=len(pool),
        teacher_people=teacher_people,
        student_people=student_people,
        category_set=set_name,
        single_label=single_label,
        detection_threshold=float(detection_threshold),
        teacher_detection_threshold=teacher_threshold,
        emotion_thresholds=tuple(float(t) for t in thresholds),
    )


def format_agreement(result: AgreementResult) -> str:
    """A plain-text table of ``result`` (x100; ``-`` for an undefined figure)."""

    def number(value: float | None) -> str:
        return f"{value:6.2f}" if value is not None and math.isfinite(value) else "     -"

    labels = ("over the teacher's emotion thresholds", "its top category")[result.single_label]
    figures = [
        ("PD AP  (COCO AP@[.50:.95])", result.pd_ap),
        ("ER mAP (at the teacher's boxes)", result.er_map),
        ("score MAE (at the teacher's boxes)", result.score_mae),
    ]
    if result.continuous_mae is not None:
        figures.append(("continuous MAE (V, A, D)", result.continuous_mae))
    width = max(len(label) for label, _ in figures)
    defined = sum(math.isfinite(v) for v in result.per_category_ap.values())
    lines = [
        f"{result.frames} frames, {result.teacher_people} teacher people (at its detection "
        f"threshold {result.teacher_detection_threshold:g}), {result.student_people} student "
        f"detections at that threshold; category set {result.category_set} (figures x{SCALE})",
        *(f"  {label:<{width}} {number(value)}" for label, value in figures),
        f"Ground truth: the teacher's people and labels ({labels}); ER mAP over the "
        f"{defined} of {len(result.per_category_ap)} categories some teacher person has; PD AP "
        f"of the student's detections from {result.detection_threshold:g}",
    ]
    if not result.teacher_people:
        lines.append("the teacher found nobody in these frames: the figures are undefined")
    return "\n".join(lines)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
