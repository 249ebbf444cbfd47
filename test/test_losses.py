"""Training losses (training/objectives/losses.py): each against values worked out by hand here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.data.targets import build_targets
from training.objectives.losses import (
    bce_loss,
    center_focal_loss,
    detection_loss,
    in_box_variance,
    multilabel_focal_loss,
    single_label_ce_loss,
    size_l1_loss,
)

LN3 = math.log(3.0)  # sigmoid(ln 3) = 3/4


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def assert_finite_grad(loss: torch.Tensor, *inputs: torch.Tensor) -> None:
    loss.backward()
    for tensor in inputs:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()


# --------------------------------------------------------------------------- BENet eq. 1


def test_center_focal_loss_two_pixels_by_hand():
    # pixel 0: logit 0 -> p = 1/2, Y = 1 (a person): (1 - 1/2)^2 log(1/2)
    # pixel 1: logit ln 3 -> p = 3/4, Y = 1/2: (1 - 1/2)^4 (3/4)^2 log(1 - 3/4)
    logits = leaf([[[[0.0, LN3]]]])
    target = torch.tensor([[[[1.0, 0.5]]]])
    expected = -(0.25 * math.log(0.5) + 0.0625 * 0.5625 * math.log(0.25)) / 1  # N = 1
    loss = center_focal_loss(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert_finite_grad(loss, logits)


def test_center_focal_loss_divides_by_the_number_of_people():
    # two peaks with p = 1/2 and one negative Y = 0, p = 1/4 (logit -ln 3): (1/4)^2 log(3/4)
    logits = torch.tensor([[[[0.0, 0.0, -LN3]]]])
    target = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    expected = -(2 * 0.25 * math.log(0.5) + 0.0625 * math.log(0.75)) / 2
    assert center_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_center_focal_loss_without_people_penalises_false_positives_only():
    logits = leaf([[[[0.0, -100.0]]]])  # p = 1/2 and ~0
    loss = center_focal_loss(logits, torch.zeros(1, 1, 1, 2))
    assert loss.item() == pytest.approx(-(0.25 * math.log(0.5)), rel=1e-6)  # divided by 1
    assert_finite_grad(loss, logits)


def test_center_focal_loss_is_stable_for_extreme_logits():
    logits = leaf([[[[100.0, -100.0, 100.0]]]])
    loss = center_focal_loss(logits, torch.tensor([[[[1.0, 1.0, 0.0]]]]))
    assert torch.isfinite(loss) and loss.item() > 0
    assert_finite_grad(loss, logits)


# --------------------------------------------------------------------------- BENet eq. 2, 3


def size_case():
    # 2 x 2 map; person 0 at cell 0 (row 0, col 0), person 1 at cell 3 (row 1, col 1),
    # a padded third slot (mask False) with a target that would cost a lot.
    size_map = leaf([[[[1.5, 0.0], [0.0, 2.0]],  # widths
                      [[2.0, 0.0], [0.0, 5.0]]]])  # heights
    sizes = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    indices = torch.tensor([[0, 3, 0]])
    mask = torch.tensor([[True, True, False]])
    return size_map, sizes, indices, mask


def test_size_l1_loss_by_hand():
    size_map, sizes, indices, mask = size_case()
    # person 0: |1.5 - 1| + |2 - 2| = 0.5; person 1: |2 - 3| + |5 - 4| = 2; mean over 2
    loss = size_l1_loss(size_map, sizes, indices, mask)
    assert loss.item() == pytest.approx((0.5 + 2.0) / 2)
    assert_finite_grad(loss, size_map)


def test_size_l1_loss_without_people_is_zero_with_grad():
    size_map = leaf(np.ones((2, 2, 3, 3)).tolist())
    loss = size_l1_loss(size_map, torch.zeros(2, 0, 2), torch.zeros(2, 0, dtype=torch.long),
                        torch.zeros(2, 0, dtype=torch.bool))
    assert loss.item() == 0.0
    assert_finite_grad(loss, size_map)


def test_detection_loss_is_center_plus_a_tenth_of_size():
    # One person, box 0..8 x 0..8 input pixels at stride 4: centre (4, 4) -> cell (1, 1);
    # size target (8/4, 8/4) = (2, 2) map pixels; a 2 x 2 box has radius 0, so the heatmap
    # target is 1 at cell (1, 1) and 0 elsewhere.
    targets = build_targets([np.array([[0.0, 0.0, 8.0, 8.0]])], [None], 4, (2, 2))
    assert targets.heatmap[0, 0].tolist() == [[0.0, 0.0], [0.0, 1.0]]
    heatmap = leaf([[[[0.0, 0.0], [0.0, 0.0]]]])  # p = 1/2 everywhere
    size_map = leaf([[[[0.0, 0.0], [0.0, 3.0]], [[0.0, 0.0], [0.0, 2.5]]]])
    center = -(0.25 * math.log(0.5) + 3 * 0.25 * math.log(0.5)) / 1
    size = abs(3.0 - 2.0) + abs(2.5 - 2.0)
    loss = detection_loss(heatmap, size_map, targets)
    assert loss.center.item() == pytest.approx(center, rel=1e-6)
    assert loss.size.item() == pytest.approx(size)
    assert loss.total.item() == pytest.approx(1.0 * center + 0.1 * size, rel=1e-6)
    assert_finite_grad(loss.total, heatmap, size_map)


def test_detection_loss_for_a_batch_without_people_is_finite():
    targets = build_targets([np.zeros((0, 4)), np.zeros((0, 4))], [None, None], 2, (4, 4))
    heatmap, size_map = leaf(np.zeros((2, 1, 4, 4)).tolist()), leaf(np.zeros((2, 2, 4, 4)).tolist())
    loss = detection_loss(heatmap, size_map, targets)
    assert loss.size.item() == 0.0
    assert loss.center.item() == pytest.approx(-32 * 0.25 * math.log(0.5), rel=1e-6)
    assert_finite_grad(loss.total, heatmap, size_map)


# --------------------------------------------------------------------------- emotion losses

# Two people, two emotions. Logits 0 -> p = 1/2, ln 3 -> p = 3/4.
EMO_LOGITS = [[0.0, LN3], [LN3, 0.0]]
EMO_LABELS = [[1.0, 0.0], [1.0, 1.0]]


def test_multilabel_focal_loss_by_hand():
    logits = leaf(EMO_LOGITS)
    # person 0: Y=1, p=1/2: (1/2)^2 log(1/2); Y=0, p=3/4: (3/4)^2 log(1/4)
    # person 1: Y=1, p=3/4: (1/4)^2 log(3/4); Y=1, p=1/2: (1/2)^2 log(1/2)
    person0 = 0.25 * math.log(0.5) + 0.5625 * math.log(0.25)
    person1 = 0.0625 * math.log(0.75) + 0.25 * math.log(0.5)
    loss = multilabel_focal_loss(logits, torch.tensor(EMO_LABELS))
    assert loss.item() == pytest.approx(-(person0 + person1) / 2, rel=1e-6)
    assert_finite_grad(loss, logits)


def test_bce_loss_by_hand():
    logits = leaf(EMO_LOGITS)
    person0 = math.log(0.5) + math.log(1 - 0.75)
    person1 = math.log(0.75) + math.log(0.5)
    loss = bce_loss(logits, torch.tensor(EMO_LABELS))
    assert loss.item() == pytest.approx(-(person0 + person1) / 2, rel=1e-6)
    assert_finite_grad(loss, logits)


def test_single_label_ce_loss_by_hand():
    # row 0: softmax(0, ln 3) = (1/4, 3/4), label 1; row 1: softmax(ln 2, 0) = (2/3, 1/3), label 0
    logits = leaf([[0.0, LN3], [math.log(2.0), 0.0]])
    expected = -(math.log(0.75) + math.log(2.0 / 3.0)) / 2
    loss = single_label_ce_loss(logits, torch.tensor([1, 0]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    one_hot = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert single_label_ce_loss(logits, one_hot).item() == pytest.approx(expected, rel=1e-6)
    assert_finite_grad(loss, logits)


@pytest.mark.parametrize("loss_fn", [multilabel_focal_loss, bce_loss, single_label_ce_loss])
def test_emotion_losses_without_people_are_zero_with_grad(loss_fn):
    logits = torch.zeros(0, 3, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long) if loss_fn is single_label_ce_loss \
        else torch.zeros(0, 3)
    loss = loss_fn(logits, labels)
    assert loss.item() == 0.0 and loss.requires_grad
    assert_finite_grad(loss, logits)


def test_emotion_losses_are_stable_for_extreme_logits():
    logits = leaf([[100.0, -100.0]])
    labels = torch.tensor([[0.0, 1.0]])  # both confidently wrong
    for loss in (multilabel_focal_loss(logits, labels), bce_loss(logits, labels)):
        assert torch.isfinite(loss) and loss.item() == pytest.approx(200.0, rel=1e-4)


# --------------------------------------------------------------------------- KA eq. 3


# map 0:        map 1: constant 7
#   1 3 5
#   2 0 2
#   9 4 6
VAR_MAPS = [[[1.0, 3.0, 5.0], [2.0, 0.0, 2.0], [9.0, 4.0, 6.0]], [[7.0] * 3] * 3]
# box A (map pixels 0..2 x 0..1): cell centres x in {0.5, 1.5}, y in {0.5} -> cells 1, 3:
#   mean 2, variance ((1-2)^2 + (3-2)^2) / 2 = 1
# box B (1..3 x 1..3): cells 0, 2, 4, 6 -> mean 3, variance (9 + 1 + 1 + 9) / 4 = 5
VAR_BOXES = [[0.0, 0.0, 2.0, 1.0], [1.0, 1.0, 3.0, 3.0]]
VAR_EXPECTED = (1.0 + 5.0 + 0.0 + 0.0) / 4  # 2 people x 2 maps


def test_in_box_variance_by_hand():
    maps = leaf(VAR_MAPS)
    loss = in_box_variance(maps, torch.tensor(VAR_BOXES))
    assert loss.item() == pytest.approx(VAR_EXPECTED, rel=1e-6)
    assert_finite_grad(loss, maps)


def test_in_box_variance_batched_with_padding():
    maps = leaf([VAR_MAPS, VAR_MAPS])
    boxes = torch.tensor([VAR_BOXES, [VAR_BOXES[1], [0.0, 0.0, 3.0, 3.0]]])
    mask = torch.tensor([[True, True], [True, False]])  # the whole-map box is padding
    loss = in_box_variance(maps, boxes, mask)
    assert loss.item() == pytest.approx((1.0 + 5.0 + 5.0) / 6, rel=1e-6)  # 3 people x 2 maps
    assert_finite_grad(loss, maps)


def test_in_box_variance_does_not_cancel_on_large_values():
    maps = leaf((np.array(VAR_MAPS) + 1e4).tolist())
    assert in_box_variance(maps, torch.tensor(VAR_BOXES)).item() == pytest.approx(VAR_EXPECTED,
                                                                                  rel=1e-4)


def test_in_box_variance_without_people_is_zero_with_grad():
    maps = leaf(VAR_MAPS)
    loss = in_box_variance(maps, torch.zeros(0, 4))
    assert loss.item() == 0.0
    assert_finite_grad(loss, maps)
    batched = leaf([VAR_MAPS])
    loss = in_box_variance(batched, torch.tensor([VAR_BOXES]), torch.tensor([[False, False]]))
    assert loss.item() == 0.0
    assert_finite_grad(loss, batched)


def test_in_box_variance_matches_a_per_box_loop():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 3, 9, 11, generator=generator, requires_grad=True)
    boxes = torch.tensor([[[0.2, 1.0, 5.7, 4.4], [3.0, 3.0, 3.1, 3.2]],  # 2nd: thinner than a cell
                          [[-2.0, 6.0, 4.0, 12.0], [8.0, 0.0, 11.0, 9.0]]])  # 1st: off the map
    # by the cell rule (cell centre inside, else the centre's cell, clamped), rows x cols:
    cells = [[(slice(1, 4), slice(0, 6)), (slice(3, 4), slice(3, 4))],
             [(slice(6, 9), slice(0, 4)), (slice(0, 9), slice(8, 11))]]
    reference = torch.stack([maps[b, :, r, c].reshape(3, -1).var(dim=1, unbiased=False)
                             for b in range(2) for r, c in cells[b]]).mean()
    loss = in_box_variance(maps, boxes)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, maps)
    (expected,) = torch.autograd.grad(reference, maps)
    torch.testing.assert_close(grad, expected)


def test_box_means_match_a_per_box_loop_in_person_order():
    """KA 2.1's reading: the mean of the cells of each box (the decoder's cells), the real
    people of image 0 first, padding skipped."""
    from training.objectives.losses import box_means

    generator = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 3, 9, 11, generator=generator, requires_grad=True)
    # map-pixel boxes of test_in_box_variance_matches_a_per_box_loop, at stride 1
    boxes = [np.array([[0.2, 1.0, 5.7, 4.4], [3.0, 3.0, 3.1, 3.2]]),
             np.array([[8.0, 0.0, 11.0, 9.0]])]
    targets = build_targets(boxes, [None, None], 1, (9, 11))
    cells = [(0, slice(1, 4), slice(0, 6)), (0, slice(3, 4), slice(3, 4)),
             (1, slice(0, 9), slice(8, 11))]
    reference = torch.stack([maps[b, :, r, c].reshape(3, -1).mean(dim=1) for b, r, c in cells])
    got = box_means(maps, targets)
    torch.testing.assert_close(got, reference)
    (grad,) = torch.autograd.grad(got.sum(), maps)
    (expected,) = torch.autograd.grad(reference.sum(), maps)
    torch.testing.assert_close(grad, expected)
