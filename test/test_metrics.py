"""Tests of training/evaluation/metrics.py: ER mAP, PD AP, OER, IoU and F1 (DESIGN.md "Metrics")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from sklearn.metrics import average_precision_score, f1_score

from training.evaluation.metrics import (
    IOU_THRESHOLDS,
    ImageDetections,
    ImageGroundTruth,
    accuracy,
    as_percent,
    average_precision,
    er_map,
    iou_matrix,
    macro_f1,
    match_detections,
    mean_f1_multilabel,
    oer,
    pd_ap,
)

# --- AP / ER mAP -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    scores = rng.integers(0, 6, n) / 5.0  # few distinct values: many ties
    labels = rng.integers(0, 2, n)
    labels[0] = 1
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), rel=1e-12, abs=1e-12
    )


@pytest.mark.parametrize("seed", range(3))
def test_average_precision_equals_sklearn_continuous_scores(seed):
    rng = np.random.default_rng(100 + seed)
    scores = rng.normal(size=300)
    labels = (rng.random(300) < 0.2).astype(int)
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), rel=1e-12
    )


def test_average_precision_hand_case_and_no_positive():
    # Ranked: 1, 0, 1 -> 0.5 * 1 + 0.5 * 2/3.
    assert average_precision([0.9, 0.5, 0.1], [1, 0, 1]) == pytest.approx(5 / 6)
    # All tied: one threshold, precision = prevalence.
    assert average_precision([0.3, 0.3, 0.3, 0.3], [1, 0, 0, 0]) == pytest.approx(0.25)
    assert np.isnan(average_precision([0.1, 0.2], [0, 0]))
    with pytest.raises(ValueError):
        average_precision([0.1, 0.2], [0, 2])


@pytest.mark.parametrize("seed", range(3))
def test_er_map_is_mean_of_sklearn_aps_without_empty_categories(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 10, (80, 6)) / 9.0
    labels = rng.integers(0, 2, (80, 6))
    labels[:, 3] = 0  # a category nobody shows: excluded from the mean
    mean, per_category = er_map(scores, labels)
    assert np.isnan(per_category[3])
    kept = [e for e in range(6) if e != 3]
    expected = [average_precision_score(labels[:, e], scores[:, e]) for e in kept]
    np.testing.assert_allclose(per_category[kept], expected, rtol=1e-12)
    assert mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert as_percent(mean) == pytest.approx(100 * mean)


def test_er_map_rejects_no_positive_and_bad_shapes():
    with pytest.raises(ValueError, match="no emotion category"):
        er_map(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        er_map(np.zeros((3, 2)), np.zeros((3, 3)))


# --- F1 ----------------------------------------------------------------------------------------


def _one_hot(classes, num_classes):
    return np.eye(num_classes)[classes]


def test_macro_f1_perfect_prediction():
    classes = np.array([0, 1, 2, 2, 1])
    scores = _one_hot(classes, 3) * 0.8 + 0.1
    mean, per_class = macro_f1(scores, classes)
    assert mean == 1.0
    np.testing.assert_array_equal(per_class, [1.0, 1.0, 1.0])
    assert accuracy(scores, classes) == 1.0


def test_macro_f1_class_never_predicted_and_class_absent_from_both_sides():
    # Truth 0 0 1 1, predicted 0 0 0 1: class 1 missed once, class 2 absent on both sides.
    truth = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.1, 0.0], [0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    mean, per_class = macro_f1(scores, truth)
    # class 0: TP 2, FP 1, FN 0 -> 4/5; class 1: TP 1, FP 0, FN 1 -> 2/3; class 2: 0/0.
    np.testing.assert_allclose(per_class[:2], [4 / 5, 2 / 3])
    assert np.isnan(per_class[2])
    assert mean == pytest.approx((4 / 5 + 2 / 3 + 0.0) / 3)  # ABAW: every class counts
    assert accuracy(scores, truth) == pytest.approx(3 / 4)

    # A class that is someone's label but never predicted has F1 0 and stays in the mean.
    never = np.array([[0.9, 0.1, 0.0], [0.8, 0.1, 0.1], [0.1, 0.9, 0.0]])
    mean, per_class = macro_f1(never, [0, 2, 1])
    # class 0: TP 1, FP 1 -> 2/3; class 1: 1; class 2: TP 0, FN 1 -> 0.
    np.testing.assert_allclose(per_class, [2 / 3, 1.0, 0.0])
    assert mean == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_macro_f1_ties_take_the_first_class():
    mean, per_class = macro_f1([[0.5, 0.5], [0.5, 0.5]], [0, 1])
    np.testing.assert_allclose(per_class, [2 / 3, 0.0])  # both predicted 0
    assert mean == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(3))
def test_macro_f1_indices_equal_one_hot_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores = rng.random((60, 8))
    classes = rng.integers(0, 6, 60)  # classes 6 and 7 absent from the truth
    mean, per_class = macro_f1(scores, classes)
    mean_one_hot, per_class_one_hot = macro_f1(scores, _one_hot(classes, 8))
    assert mean == mean_one_hot
    np.testing.assert_array_equal(per_class, per_class_one_hot)
    assert accuracy(scores, classes) == accuracy(scores, _one_hot(classes, 8))
    predicted = scores.argmax(axis=1)
    assert mean == pytest.approx(f1_score(classes, predicted, labels=range(8), average="macro",
                                          zero_division=0), rel=1e-12)
    assert accuracy(scores, classes) == pytest.approx(np.mean(predicted == classes))


def test_macro_f1_input_errors():
    scores = np.zeros((3, 4))
    with pytest.raises(ValueError, match="one-hot"):
        macro_f1(scores, [[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]])  # multi-label row
    with pytest.raises(ValueError, match="one-hot"):
        macro_f1(scores, np.zeros((3, 4)))  # a person without a label
    with pytest.raises(ValueError, match="must be one-hot"):
        macro_f1(scores, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="must be one-hot"):
        macro_f1(scores, [0, 1])
    with pytest.raises(ValueError, match=r"0\.\.3"):
        macro_f1(scores, [0, 1, 4])
    with pytest.raises(ValueError, match="integers"):
        macro_f1(scores, [0.0, 1.5, 2.0])
    with pytest.raises(ValueError, match=r"\(N, E\)"):
        macro_f1(np.zeros(3), [0, 1, 2])
    with pytest.raises(ValueError, match="no person"):
        macro_f1(np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="finite"):
        accuracy([[np.nan, 0.0]], [0])
    assert macro_f1(np.eye(3), [0.0, 1.0, 2.0])[0] == 1.0  # integral floats are indices


def test_mean_f1_multilabel_hand_case():
    scores = np.array([[0.9, 0.2, 0.1, 0.0],
                       [0.6, 0.7, 0.1, 0.0],
                       [0.1, 0.4, 0.8, 0.0]])
    labels = np.array([[1, 0, 0, 0],
                       [1, 1, 0, 0],
                       [0, 1, 0, 0]])
    mean, per_category = mean_f1_multilabel(scores, labels, [0.5, 0.4, 0.5, 0.5])
    # predicted (>= threshold): [1 0 0 0], [1 1 0 0], [0 1 1 0].
    # 0: TP 2 -> 1; 1: TP 2 -> 1; 2: FP 1 -> 0; 3: nothing on either side -> left out.
    np.testing.assert_allclose(per_category[:3], [1.0, 1.0, 0.0])
    assert np.isnan(per_category[3])
    assert mean == pytest.approx(2 / 3)
    # One threshold for all: category 1 at 0.5 loses the 0.4 (TP 1, FN 1 -> 2/3).
    mean, per_category = mean_f1_multilabel(scores, labels, 0.5)
    np.testing.assert_allclose(per_category[:3], [1.0, 2 / 3, 0.0])
    assert mean == pytest.approx((1 + 2 / 3 + 0) / 3)


@pytest.mark.parametrize("seed", range(2))
def test_mean_f1_multilabel_equals_sklearn_binary_f1(seed):
    rng = np.random.default_rng(10 + seed)
    scores = rng.random((50, 5))
    labels = (rng.random((50, 5)) < 0.3).astype(int)
    thresholds = rng.uniform(0.2, 0.8, 5)
    mean, per_category = mean_f1_multilabel(scores, labels, thresholds)
    expected = [f1_score(labels[:, e], scores[:, e] >= thresholds[e]) for e in range(5)]
    np.testing.assert_allclose(per_category, expected, rtol=1e-12)
    assert mean == pytest.approx(np.mean(expected), rel=1e-12)


def test_mean_f1_multilabel_input_errors():
    with pytest.raises(ValueError, match="must be equal"):
        mean_f1_multilabel(np.zeros((3, 2)), np.zeros((3, 3)), 0.5)
    with pytest.raises(ValueError, match="thresholds"):
        mean_f1_multilabel(np.zeros((3, 2)), np.zeros((3, 2)), [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="0 or 1"):
        mean_f1_multilabel(np.zeros((3, 2)), np.full((3, 2), 2), 0.5)
    with pytest.raises(ValueError, match="no category"):
        mean_f1_multilabel(np.zeros((3, 2)), np.zeros((3, 2)), 0.5)
    with pytest.raises(ValueError, match="no person"):
        mean_f1_multilabel(np.zeros((0, 2)), np.zeros((0, 2)), 0.5)


# --- IoU -------------------------------------------------------------------------------------


def test_iou_matrix_hand_cases():
    a = np.array([[0, 0, 10, 10]], dtype=float)
    b = np.array(
        [
            [0, 0, 10, 10],  # identical
            [20, 20, 30, 30],  # disjoint
            [0, 0, 5, 10],  # half of a, inside it
            [5, 0, 15, 10],  # half of a, shifted: 50 / 150
            [10, 0, 20, 10],  # touching edge
            [10, 10, 20, 20],  # touching corner
        ],
        dtype=float,
    )
    iou = iou_matrix(a, b)
    assert iou.shape == (1, 6)
    np.testing.assert_array_equal(iou[0], [1.0, 0.0, 0.5, 1 / 3, 0.0, 0.0])
    np.testing.assert_array_equal(iou_matrix(b, a)[:, 0], iou[0])  # symmetric
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 6)
    assert iou_matrix(a, np.zeros((0, 4))).shape == (1, 0)
    assert iou_matrix([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0.0  # empty boxes


def test_match_detections_is_greedy_by_score():
    gt = np.array([[0, 0, 10, 10]], dtype=float)
    dets = np.array([[0, 0, 10, 10], [0, 0, 10, 6]], dtype=float)  # IoU 1.0 and 0.6
    # The higher-scoring detection takes the person even though its IoU is lower.
    match = match_detections(dets, [0.2, 0.9], gt, [0.5, 0.7])
    np.testing.assert_array_equal(match, [[1], [0]])


# --- PD AP -----------------------------------------------------------------------------------


def _random_boxes(rng, n):
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 80, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def _cocoeval_ap(tmp_path, gt_boxes, detections):
    """pycocotools run directly on JSON files written here, boxes converted by hand."""
    images, annotations, results = [], [], []
    for image_id, boxes in enumerate(gt_boxes, start=7):
        images.append({"id": image_id, "width": 300, "height": 300})
        for x1, y1, x2, y2 in boxes.tolist():
            annotations.append(
                {
                    "id": len(annotations) + 100,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    for image_id, (boxes, scores) in enumerate(detections, start=7):
        for (x1, y1, x2, y2), score in zip(boxes.tolist(), scores.tolist(), strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    gt_file, res_file = tmp_path / "gt.json", tmp_path / "res.json"
    categories = [{"id": 1, "name": "person"}]
    gt_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    res_file.write_text(json.dumps(results))
    coco_gt = COCO(str(gt_file))
    evaluation = COCOeval(coco_gt, coco_gt.loadRes(str(res_file)), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return evaluation.stats[0]


@pytest.mark.parametrize("seed", range(3))
def test_pd_ap_equals_cocoeval_on_random_predictions(tmp_path, seed):
    rng = np.random.default_rng(seed)
    gt_boxes, detections = [], []
    for image in range(8):
        gt = _random_boxes(rng, int(rng.integers(0, 5)) if image else 0)  # image 0: no GT
        jitter = rng.normal(0, 4, gt.shape)
        boxes = np.concatenate([gt + jitter, _random_boxes(rng, int(rng.integers(0, 3)))])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        if image == 3:
            boxes = boxes[:0]  # an image with no detection
        gt_boxes.append(gt)
        detections.append((boxes, rng.random(len(boxes))))
    assert sum(len(g) for g in gt_boxes) > 0
    expected = _cocoeval_ap(tmp_path, gt_boxes, detections)
    assert 0.0 < expected < 1.0
    assert pd_ap(detections, gt_boxes) == pytest.approx(expected, abs=1e-12)
    # ImageGroundTruth / ImageDetections work the same as plain boxes / tuples.
    wrapped_gt = [ImageGroundTruth(g, np.zeros((len(g), 2))) for g in gt_boxes]
    wrapped_det = [ImageDetections(*d) for d in detections]
    assert pd_ap(wrapped_det, wrapped_gt) == pytest.approx(expected, abs=1e-12)


def test_pd_ap_perfect_detector_and_edge_cases():
    rng = np.random.default_rng(0)
    gt_boxes = [_random_boxes(rng, 3), np.zeros((0, 4)), _random_boxes(rng, 2)]
    detections = [(g, np.linspace(1, 0.5, len(g))) for g in gt_boxes]
    assert pd_ap(detections, gt_boxes) == pytest.approx(1.0)
    empty = [(np.zeros((0, 4)), np.zeros(0)) for _ in gt_boxes]
    assert pd_ap(empty, gt_boxes) == 0.0
    with pytest.raises(ValueError, match="no ground-truth"):
        pd_ap(detections[1:2], gt_boxes[1:2])
    with pytest.raises(ValueError):
        pd_ap(detections[:2], gt_boxes)


def test_pd_ap_box_conversion_matters(tmp_path):
    """A detection exactly on the person, given to COCO as x1y1x2y2 by mistake, scores 0.1."""
    gt = np.array([[10.0, 10.0, 30.0, 50.0]])  # COCO [10, 10, 20, 40]
    assert pd_ap([(gt.copy(), np.array([0.9]))], [gt]) == pytest.approx(1.0)

    coco_gt = COCO()
    coco_gt.dataset = {
        "images": [{"id": 1}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 40],
             "area": 800, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    coco_gt.createIndex()
    # Unconverted: read as w=30, h=50, i.e. the box 10..40 x 10..60. IoU = 800 / 1500 = 0.533:
    # a match at t = 0.50 only, so AP = 1/10 of the ten thresholds.
    wrong = coco_gt.loadRes(
        [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 50], "score": 0.9}]
    )
    evaluation = COCOeval(coco_gt, wrong, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(0.1)


# --- OER -------------------------------------------------------------------------------------

GT_BOXES = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], dtype=float)
GT_LABELS = np.array([[1, 0], [0, 1], [1, 1]])
EMOTIONS = np.array([[0.9, 0.2], [0.3, 0.8], [0.6, 0.7]])  # both categories ranked perfectly


def test_oer_perfect_detections_equal_er_map_with_gt_boxes():
    rng = np.random.default_rng(1)
    gt = [
        ImageGroundTruth(_random_boxes(rng, 4), rng.integers(0, 2, (4, 5))),
        ImageGroundTruth(np.zeros((0, 4)), np.zeros((0, 5))),  # an image without people
        ImageGroundTruth(_random_boxes(rng, 3), rng.integers(0, 2, (3, 5))),
    ]
    emotions = [rng.random((len(g.boxes), 5)) for g in gt]
    dets = [
        ImageDetections(g.boxes, rng.random(len(g.boxes)), e)
        for g, e in zip(gt, emotions, strict=True)
    ]
    expected, _ = er_map(np.concatenate(emotions), np.concatenate([g.labels for g in gt]))
    value, per_threshold = oer(dets, gt)
    assert list(per_threshold) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert list(per_threshold) == list(IOU_THRESHOLDS)
    assert all(v == pytest.approx(expected) for v in per_threshold.values())
    assert value == pytest.approx(expected)


def test_oer_missed_person_gets_zeros():
    perfect, _ = oer([(GT_BOXES, [0.9, 0.8, 0.7], EMOTIONS)], [(GT_BOXES, GT_LABELS)])
    assert perfect == pytest.approx(1.0)
    # Person 3 is missed: scores (0, 0). Category 0 ranks 1, 0, 1 -> 5/6; category 1 ranks
    # 1, 0, 1 -> 5/6.
    value, per_threshold = oer([(GT_BOXES[:2], [0.9, 0.8], EMOTIONS[:2])], [(GT_BOXES, GT_LABELS)])
    assert value == pytest.approx(5 / 6)
    assert all(v == pytest.approx(5 / 6) for v in per_threshold.values())
    # An image whose person nobody detected counts the same way.
    value, _ = oer(
        [(GT_BOXES[:2], [0.9, 0.8], EMOTIONS[:2]), (np.zeros((0, 4)), [], [])],
        [(GT_BOXES[:2], GT_LABELS[:2]), (GT_BOXES[2:], GT_LABELS[2:])],
    )
    assert value == pytest.approx(5 / 6)


def test_oer_ignores_false_positives():
    fp_boxes = np.concatenate([GT_BOXES, [[100, 100, 120, 120], [0, 0, 3, 3]]])
    fp_emotions = np.concatenate([EMOTIONS, [[1.0, 1.0], [1.0, 1.0]]])
    value, per_threshold = oer(
        [(fp_boxes, [0.5, 0.4, 0.3, 0.99, 0.98], fp_emotions),
         (np.array([[5, 5, 9, 9]], dtype=float), [1.0], [[1.0, 1.0]])],  # image without people
        [(GT_BOXES, GT_LABELS), (np.zeros((0, 4)), np.zeros((0, 2)))],
    )
    assert value == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in per_threshold.values())


def test_oer_detection_matching_at_iou_06_only_counts_up_to_06():
    boxes = GT_BOXES.copy()
    boxes[0] = [0, 0, 10, 6]  # IoU with person 1 = 60 / 100 = 0.6
    value, per_threshold = oer([(boxes, [0.9, 0.8, 0.7], EMOTIONS)], [(GT_BOXES, GT_LABELS)])
    # t <= 0.6: all matched, AP 1 for both categories. t > 0.6: person 1 gets (0, 0):
    # category 0 ranks person 3 (1), person 2 (0), person 1 (1) -> 5/6; category 1 stays 1.
    expected = {t: 1.0 if t <= 0.6 else (5 / 6 + 1) / 2 for t in IOU_THRESHOLDS}
    assert per_threshold == pytest.approx(expected)
    assert per_threshold[0.6] == 1.0
    assert per_threshold[0.65] == pytest.approx(11 / 12)
    assert value == pytest.approx((3 * 1.0 + 7 * 11 / 12) / 10)


def test_oer_input_errors():
    with pytest.raises(ValueError, match="emotion scores"):
        oer([(GT_BOXES, [0.9, 0.8, 0.7])], [(GT_BOXES, GT_LABELS)])
    with pytest.raises(ValueError, match="labels"):
        oer([(GT_BOXES, [0.9, 0.8, 0.7], EMOTIONS)], [(GT_BOXES, None)])
    with pytest.raises(ValueError, match="no ground-truth"):
        oer([(GT_BOXES, [0.9, 0.8, 0.7], EMOTIONS)], [(np.zeros((0, 4)), np.zeros((0, 2)))])
    with pytest.raises(ValueError, match="x2 >= x1"):
        oer([(GT_BOXES[:, [2, 1, 0, 3]], [0.9, 0.8, 0.7], EMOTIONS)], [(GT_BOXES, GT_LABELS)])
