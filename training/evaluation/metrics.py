"""Evaluation metrics of the papers: ER mAP, PD AP, OER ("on-the-field" ER) and F1.

Definitions: BENet paper (``papers/benet-bottom-up-caer.txt``) section 4.2, knowledge-amalgamation
paper (``papers/knowledge-amalgamation-single-shot-caer.txt``) section 4.2, and the "Metrics"
section of ``DESIGN.md``.

- :func:`average_precision` / :func:`er_map`: emotion-recognition AP per category and its mean,
  over all annotated people, the predictions read with the ground-truth boxes (reading them is the
  predictor's job; these functions take the score matrix).
- :func:`pd_ap`: person-detection AP, COCO AP@[.50:.95] for the one class person, computed by
  pycocotools' ``COCOeval``.
- :func:`oer`: ER mAP when the people come from the detector: per IoU threshold a matched person
  gets its detection's scores, a missed one a zero vector, false positives are ignored.
- :func:`macro_f1` / :func:`accuracy`: single-label category sets (HECO: one emotion per
  person), the prediction being the highest-scoring category; :func:`mean_f1_multilabel`:
  multi-label sets (EMOTIC), each category predicted at its threshold. These are the ABAW
  challenge's classification metrics (``papers/abaw-multitask-kd-task-discriminator.txt``
  section V.B: expression = macro F1 over the 8 categories, action units = mean F1 over the
  binary AUs; the multi-task score adds the valence-arousal CCC to them).

Every metric here is in 0..1; the papers report x100 (use :func:`as_percent` for tables).

Box format: every box given to this module is ``x1, y1, x2, y2`` in pixels (the format of the
datasets and of the decoder). :func:`pd_ap` converts to COCO's ``[x, y, w, h]`` itself before
handing boxes to pycocotools; the public BENet code skipped that conversion, which silently
produces wrong detection scores.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from caer_ros.inference.boxes import iou_matrix as box_iou

LOG = logging.getLogger(__name__)

#: The ten COCO IoU thresholds .50:.05:.95, as the decimal values (``np.linspace`` would give
#: 0.8999999999999999 for .90).
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

PERSON_CATEGORY_ID = 1


class ImageDetections(NamedTuple):
    """The detector's output for one image.

    ``boxes`` (M, 4) x1, y1, x2, y2 pixels; ``scores`` (M,) detection scores; ``emotion_scores``
    (M, E) per-category emotion scores read with each detected box (needed by :func:`oer` only).
    A plain tuple in the same order works too.
    """

    boxes: np.ndarray
    scores: np.ndarray
    emotion_scores: np.ndarray | None = None


class ImageGroundTruth(NamedTuple):
    """The annotation of one image.

    ``boxes`` (K, 4) x1, y1, x2, y2 pixels; ``labels`` (K, E) in {0, 1}, one row per person
    (needed by :func:`oer` only). A plain tuple in the same order works too.
    """

    boxes: np.ndarray
    labels: np.ndarray | None = None


def as_percent(value):
    """A metric (float, array or dict of them) x100, the way the papers' tables report it."""
    if isinstance(value, dict):
        return {key: as_percent(v) for key, v in value.items()}
    return value * 100.0


# --- emotion recognition ---------------------------------------------------------------------


def average_precision(scores, labels) -> float:
    """Average precision of one category (BENet section 4.2, "the standard AP score").

    The area under the precision-recall curve as scikit-learn's ``average_precision_score``
    computes it: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, highest first,
    with ``R_0 = 0``. People with equal scores enter the curve together (one threshold), so their
    order does not matter. No interpolation.

    Args:
        scores: (N,) predicted scores, any real values (higher = more confident).
        labels: (N,) ground truth in {0, 1}.

    Returns:
        AP in 0..1, or NaN when ``labels`` has no positive (AP is undefined then; scikit-learn
        warns and returns 0, which would bias a mean downwards).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = _binary(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal (N,)")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    positives = labels.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Index of the last person of each group of equal scores: one threshold per group.
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), scores.size - 1]
    tp = np.cumsum(sorted_labels)[last]
    precision = tp / (last + 1.0)
    recall = tp / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def er_map(scores, labels) -> tuple[float, np.ndarray]:
    """ER mAP: per-category AP over all annotated people, and their mean (BENet section 4.2).

    Args:
        scores: (N, E) emotion scores of N people, read with the ground-truth boxes.
        labels: (N, E) ground truth in {0, 1}.

    Returns:
        (mAP, per-category AP (E,)), in 0..1. A category without any positive among the N people
        has AP NaN and is left out of the mean.

    Raises:
        ValueError: shapes differ, or no category has a positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = _binary(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal (N, E)")
    per_category = np.array(
        [average_precision(scores[:, e], labels[:, e]) for e in range(scores.shape[1])]
    )
    defined = ~np.isnan(per_category)
    if not defined.any():
        raise ValueError("no emotion category has a positive label: ER mAP is undefined")
    return float(per_category[defined].mean()), per_category


# --- F1 (ABAW) -------------------------------------------------------------------------------


def macro_f1(scores, labels) -> tuple[float, np.ndarray]:
    """Macro F1 of a single-label category set (ABAW expression metric; the KA paper's HECO, one
    emotion per person).

    Each person's prediction is the category with the highest score (the first one on ties).
    Per category ``F1 = 2 TP / (2 TP + FP + FN)``, counted over the N people one-vs-rest; the
    macro F1 is their unweighted mean.

    The mean is over **all** E categories, as ABAW averages its expression F1 over all 8
    classes: a category that no person has and that is never predicted has no F1 (0 / 0); it is
    NaN in the per-category array (so a reader sees it was undefined) and counts 0 in the mean.
    This equals scikit-learn's ``f1_score(y_true, y_pred, labels=range(E), average="macro",
    zero_division=0)``; its default ``labels=None`` would leave such categories out and raise
    the mean on data where some categories do not occur.

    Args:
        scores: (N, E) per-person category scores, any real values (higher = more likely).
        labels: (N, E) one-hot ground truth (exactly one 1 per row), or (N,) class indices in
            0..E-1; both give the same result.

    Returns:
        (macro F1, per-category F1 (E,) with NaN for left-out categories), in 0..1.

    Raises:
        ValueError: bad shapes, no person, non-finite scores, a label row that is not one-hot,
            or an index outside 0..E-1.
    """
    predicted, truth, num_classes = _single_label(scores, labels)
    classes = np.arange(num_classes)
    _, per_category = _mean_f1(predicted[:, None] == classes, truth[:, None] == classes)
    return float(np.nan_to_num(per_category, nan=0.0).mean()), per_category


def accuracy(scores, labels) -> float:
    """Fraction of people whose highest-scoring category is their label (0..1); the inputs and
    checks are those of :func:`macro_f1`."""
    predicted, truth, _ = _single_label(scores, labels)
    return float(np.mean(predicted == truth))


def mean_f1_multilabel(scores, labels, thresholds) -> tuple[float, np.ndarray]:
    """Mean F1 of a multi-label category set (ABAW action-unit metric; EMOTIC's categories).

    A category is predicted for a person when its score is at or above the category's threshold
    (the node's rule for a person's ``labels``). Per category the binary
    ``F1 = 2 TP / (2 TP + FP + FN)`` over the N people; the result is their unweighted mean over
    the categories with at least one positive or predicted person. A category with neither has
    no F1 (0 / 0): NaN and left out of the mean, as in :func:`macro_f1` (scikit-learn's binary
    ``f1_score`` would give its ``zero_division``, 0 by default).

    Args:
        scores: (N, E) per-person category scores.
        labels: (N, E) ground truth in {0, 1}.
        thresholds: one threshold for every category, or (E,) per category.

    Returns:
        (mean F1, per-category F1 (E,) with NaN for left-out categories), in 0..1.

    Raises:
        ValueError: bad shapes, no person, non-finite scores or thresholds, labels not in
            {0, 1}, or no category with a positive or predicted person.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = _binary(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal (N, E)")
    if scores.shape[0] == 0:
        raise ValueError("no person: F1 is undefined")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim == 0:
        thresholds = np.full(scores.shape[1], float(thresholds))
    if thresholds.shape != (scores.shape[1],):
        raise ValueError(f"thresholds {thresholds.shape} must be one value or one per category "
                         f"({scores.shape[1]},)")
    if not np.all(np.isfinite(thresholds)):
        raise ValueError("thresholds must be finite")
    mean, per_category = _mean_f1(scores >= thresholds, labels == 1)
    if np.isnan(mean):
        raise ValueError("no category has a positive or predicted person: mean F1 is undefined")
    return mean, per_category


def _mean_f1(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """Per-column F1 of two (N, E) boolean arrays (NaN where a column has neither a true nor a
    predicted sample) and the mean of the defined ones (NaN if none is)."""
    tp = np.sum(predicted & truth, axis=0)
    errors = np.sum(predicted != truth, axis=0)  # FP + FN
    denominator = 2.0 * tp + errors
    per_category = np.divide(2.0 * tp, denominator, out=np.full(denominator.shape, np.nan),
                             where=denominator > 0)
    defined = ~np.isnan(per_category)
    mean = float(per_category[defined].mean()) if defined.any() else float("nan")
    return mean, per_category


def _single_label(scores, labels) -> tuple[np.ndarray, np.ndarray, int]:
    """(predicted class (N,), true class (N,), E) of :func:`macro_f1`'s inputs, checked."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be (N, E) with E >= 1, got {scores.shape}")
    count, num_classes = scores.shape
    if count == 0:
        raise ValueError("no person: F1 and accuracy are undefined")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    labels = np.asarray(labels)
    if labels.shape == scores.shape:
        one_hot = _binary(labels)
        if not np.all(one_hot.sum(axis=1) == 1):
            raise ValueError("one-hot labels need exactly one 1 per row (for multi-label "
                             "categories use mean_f1_multilabel)")
        truth = np.argmax(one_hot, axis=1)
    elif labels.shape == (count,):
        if labels.dtype.kind not in "iu" and not (
                labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
            raise ValueError(f"class indices must be integers, got {labels.dtype}")
        truth = labels.astype(np.int64)
        if np.any((truth < 0) | (truth >= num_classes)):
            raise ValueError(f"class indices must be in 0..{num_classes - 1}")
    else:
        raise ValueError(f"labels {labels.shape} must be one-hot {scores.shape} or class "
                         f"indices ({count},) for scores {scores.shape}")
    return np.argmax(scores, axis=1), truth, num_classes


# --- person detection ------------------------------------------------------------------------


def _images(detections: Sequence, ground_truth: Sequence, emotions: bool, metric: str
            ) -> tuple[list[ImageDetections], list[ImageGroundTruth]]:
    """Per-image detections and ground truth, checked: as many images of each, at least one
    ground-truth person; with ``emotions`` the emotion scores and labels are required."""
    dets = [_as_detections(d, need_emotions=emotions) for d in detections]
    gts = [_as_ground_truth(g, need_labels=emotions) for g in ground_truth]
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} images of detections but {len(gts)} of ground truth")
    if sum(len(g.boxes) for g in gts) == 0:
        raise ValueError(f"no ground-truth person in any image: {metric} is undefined")
    return dets, gts


def pd_ap(detections: Sequence[ImageDetections], ground_truth: Sequence) -> float:
    """Person-detection AP: COCO AP@[.50:.95], area "all", maxDets 100 (``stats[0]``).

    Computed with pycocotools' ``COCO`` / ``COCOeval`` (BENet section 4.2, KA paper section 4.2)
    on COCO dicts built in memory: one category (person), ``iscrowd`` 0, ``area = w * h``, boxes
    converted from x1, y1, x2, y2 to COCO's ``[x, y, w, h]``. pycocotools' prints go to this
    module's logger at DEBUG level.

    Args:
        detections: per image, ``(boxes (M, 4) x1y1x2y2, scores (M,)[, emotion scores])``.
        ground_truth: per image, ``ImageGroundTruth`` / ``(boxes, labels)`` or just the boxes
            (K, 4) x1y1x2y2. Images may have no ground truth and/or no detections.

    Returns:
        AP in 0..1 (0 when there is no detection at all).

    Raises:
        ValueError: the two sequences differ in length, or there is no ground-truth box at all.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dets, gts = _images(detections, ground_truth, emotions=False, metric="PD AP")

    images, annotations, results = [], [], []
    for image_id, (det, gt) in enumerate(zip(dets, gts, strict=True), start=1):
        images.append({"id": image_id})
        for box in _xyxy_to_xywh(gt.boxes):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": PERSON_CATEGORY_ID,
                    "bbox": box.tolist(),
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        for box, score in zip(_xyxy_to_xywh(det.boxes), det.scores, strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": PERSON_CATEGORY_ID,
                    "bbox": box.tolist(),
                    "score": float(score),
                }
            )
    if not results:
        return 0.0  # pycocotools' loadRes cannot take an empty list; AP is 0 by definition

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": PERSON_CATEGORY_ID, "name": "person"}],
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluation = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    LOG.debug("pycocotools:\n%s", printed.getvalue())
    ap = float(evaluation.stats[0])
    return max(ap, 0.0)  # pycocotools writes -1 for "no ground truth"; excluded above anyway


# --- on-the-field emotion recognition --------------------------------------------------------


def oer(
    detections: Sequence[ImageDetections], ground_truth: Sequence[ImageGroundTruth]
) -> tuple[float, dict[float, float]]:
    """OER, "on-the-field" ER (BENet section 4.2, KA paper section 4.2, DESIGN.md "Metrics").

    For each IoU threshold t in .50:.05:.95, every image's detections are matched to its
    ground-truth people COCO-style: detections in decreasing score order, each takes the
    not-yet-matched person with the highest IoU >= t (ties: the first person), each person is
    matched at most once. A matched person gets its detection's emotion scores, a missed person
    a zero vector (its positives become false negatives); false positives are ignored. The ER
    mAP (:func:`er_map`) at t is taken over all ground-truth people of all images; OER is the
    mean over the ten thresholds.

    Args:
        detections: per image, ``(boxes (M, 4) x1y1x2y2, scores (M,), emotion scores (M, E))``.
        ground_truth: per image, ``(boxes (K, 4) x1y1x2y2, labels (K, E) in {0, 1})``.

    Returns:
        (OER in 0..1, {t: ER mAP at t} for t = 0.5, 0.55, ..., 0.95).

    Raises:
        ValueError: inconsistent lengths or shapes, no ground-truth person, or no category
            with a positive.
    """
    dets, gts = _images(detections, ground_truth, emotions=True, metric="OER")
    widths = {g.labels.shape[1] for g in gts if len(g.boxes)} | {
        d.emotion_scores.shape[1] for d in dets if len(d.boxes)
    }
    if len(widths) != 1:
        raise ValueError(f"emotion score / label widths differ across images: {sorted(widths)}")
    num_emotions = widths.pop()

    thresholds = np.asarray(IOU_THRESHOLDS)
    labels = np.concatenate([g.labels for g in gts if len(g.boxes)])
    per_threshold_scores = []
    for det, gt in zip(dets, gts, strict=True):
        match = match_detections(det.boxes, det.scores, gt.boxes, thresholds)  # (T, K)
        scores = np.zeros((len(thresholds), len(gt.boxes), num_emotions))
        if len(det.boxes):
            matched = match >= 0
            scores[matched] = det.emotion_scores[match[matched]]
        per_threshold_scores.append(scores)
    all_scores = np.concatenate(per_threshold_scores, axis=1)  # (T, sum K, E)

    per_threshold = {
        float(t): er_map(all_scores[i], labels)[0] for i, t in enumerate(IOU_THRESHOLDS)
    }
    return float(np.mean(list(per_threshold.values()))), per_threshold


def match_detections(det_boxes, det_scores, gt_boxes, thresholds) -> np.ndarray:
    """Greedy COCO-style matching of one image's detections to its ground truth, per threshold.

    Args:
        det_boxes: (M, 4) x1y1x2y2; det_scores: (M,); gt_boxes: (K, 4) x1y1x2y2;
        thresholds: (T,) IoU thresholds (a match needs IoU >= t).

    Returns:
        (T, K) int array: the index of the detection matched to each ground-truth box at each
        threshold, -1 where none. Detections are visited in decreasing score order (stable for
        equal scores); each takes the unmatched box with the highest IoU (the first on ties).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    det_boxes = _boxes(det_boxes)
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    ious = iou_matrix(det_boxes, gt_boxes)  # (M, K)
    match = np.full((thresholds.size, ious.shape[1]), -1, dtype=np.int64)
    if ious.size == 0:
        return match
    rows = np.arange(thresholds.size)
    for d in np.argsort(-det_scores, kind="stable"):
        candidates = np.where(match >= 0, -1.0, ious[d])  # (T, K): taken boxes are out
        best = np.argmax(candidates, axis=1)
        ok = candidates[rows, best] >= thresholds
        match[rows[ok], best[ok]] = d
    return match


def iou_matrix(a, b) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4).

    Boxes are x1, y1, x2, y2 (continuous coordinates, no +1). Boxes that only touch have IoU 0;
    two empty boxes have IoU 0. Returns (N, M) float64.
    """
    return box_iou(_boxes(a), _boxes(b))


# --- input checks ----------------------------------------------------------------------------


def _boxes(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) x1, y1, x2, y2, got {boxes.shape}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError("boxes must be finite")
    if np.any(boxes[:, 2:] < boxes[:, :2]):
        raise ValueError("boxes must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
    return boxes


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """x1, y1, x2, y2 -> COCO's x, y, width, height."""
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _binary(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 or 1")
    return labels.astype(np.float64)


def _as_detections(item, need_emotions: bool) -> ImageDetections:
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise ValueError("detections must be (boxes, scores[, emotion scores]) per image")
    boxes = _boxes(item[0])
    scores = np.asarray(item[1], dtype=np.float64).reshape(-1)
    if scores.shape != (len(boxes),):
        raise ValueError(f"{len(boxes)} detected boxes but scores of shape {scores.shape}")
    emotions = item[2] if len(item) == 3 else None
    if need_emotions:
        if emotions is None:
            raise ValueError("OER needs the emotion scores of every detection")
        emotions = np.asarray(emotions, dtype=np.float64)
        if len(boxes) == 0 and emotions.size == 0:
            emotions = emotions.reshape(0, emotions.shape[-1] if emotions.ndim == 2 else 0)
        elif emotions.ndim != 2 or emotions.shape[0] != len(boxes):
            raise ValueError(f"{len(boxes)} detected boxes but emotions of {emotions.shape}")
    return ImageDetections(boxes, scores, emotions)


def _as_ground_truth(item, need_labels: bool) -> ImageGroundTruth:
    boxes, labels = item if isinstance(item, tuple) else (item, None)
    boxes = _boxes(boxes)
    if need_labels:
        if labels is None:
            raise ValueError("OER needs the emotion labels of every ground-truth person")
        labels = _binary(labels)
        if len(boxes) == 0 and labels.size == 0:
            labels = labels.reshape(0, labels.shape[-1] if labels.ndim == 2 else 0)
        elif labels.ndim != 2 or labels.shape[0] != len(boxes):
            raise ValueError(f"{len(boxes)} ground-truth boxes but labels of {labels.shape}")
    return ImageGroundTruth(boxes, labels)
