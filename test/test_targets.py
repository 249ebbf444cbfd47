"""Training targets (training/data/targets.py): heatmap peaks, sizes, cells, collation, and the
round trip through the decoder's peak finding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from caer_ros.inference.decode import SummedMaps, find_people
from caer_ros.model import InferenceSettings
from training.data.targets import (
    build_targets,
    draw_heatmap,
    gaussian_radius,
    image_targets,
    read_at_centers,
)

INPUT = 64  # square network input, pixels
# x1, y1, x2, y2 in input pixels; centres (30, 24), (32, 50) (on a cell border), (55.5, 9)
BOXES = np.array([[10.0, 6.0, 50.0, 42.0], [20.0, 40.0, 44.0, 60.0], [51.0, 2.0, 60.0, 16.0]])
LABELS = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_gaussian_radius_by_hand():
    # 10 x 10: a = 20, b = 100, o = 0.7
    #   r1 = (20 - sqrt(400 - 400 * 0.3 / 1.7)) / 2 = 0.925
    #   r2 = (20 - sqrt(400 - 400 * 0.3)) / 4 = 0.817   <- smallest
    #   r3 = (-20 + sqrt(400 + 400 * 0.3 / 0.7)) / 4 = 0.976
    # 40 x 60: a = 100, b = 2400: r1 = 4.43, r2 = (100 - sqrt(10000 - 2880)) / 4 = 3.905, r3 = 4.70
    r2_small = (20 - math.sqrt(400 - 400 * 0.3)) / 4
    r2_large = (100 - math.sqrt(10000 - 9600 * 0.3)) / 4
    assert math.floor(r2_small) == 0 and math.floor(r2_large) == 3
    assert gaussian_radius(np.array([10.0, 40.0, 0.0]), np.array([10.0, 60.0, 5.0])).tolist() \
        == [0, 3, 0]


def test_radius_keeps_the_iou_of_a_shifted_box_over_the_threshold():
    w, h = 40.0, 60.0
    r = float(gaussian_radius(np.array([w]), np.array([h]))[0])
    shifted = (w - r) * (h - r) / (2 * w * h - (w - r) * (h - r))
    shrunk = (w - 2 * r) * (h - 2 * r) / (w * h)
    grown = w * h / ((w + 2 * r) * (h + 2 * r))
    assert min(shifted, shrunk, grown) >= 0.7


@pytest.mark.parametrize("stride", [4, 2])
def test_heatmap_peaks_are_exactly_one_at_the_centre_cells(stride):
    size = INPUT // stride
    t = image_targets(BOXES, LABELS, stride, (size, size))
    heat = t.heatmap[0, 0]
    centres = ((BOXES[:, :2] + BOXES[:, 2:]) / 2) // stride  # (cx, cy) cells: floor(c / s)
    expected = {(int(cy), int(cx)) for cx, cy in centres}
    ones = {tuple(cell) for cell in torch.nonzero(heat == 1.0).tolist()}
    assert ones == expected
    assert heat.max().item() == 1.0 and heat.min().item() >= 0.0
    assert [(int(r), int(c)) for r, c in zip(t.rows[0], t.cols[0], strict=True)] \
        == [(int(cy), int(cx)) for cx, cy in centres]
    assert t.indices[0].tolist() == [int(cy) * size + int(cx) for cx, cy in centres]
    # the second centre x = 32 lies on a cell border: it belongs to the cell on its right
    assert t.cols[0, 1].item() == 32 // stride
    widths, heights = BOXES[:, 2] - BOXES[:, 0], BOXES[:, 3] - BOXES[:, 1]
    np.testing.assert_allclose(t.sizes[0].numpy(), np.stack([widths, heights], 1) / stride)
    np.testing.assert_allclose(t.boxes[0].numpy(), BOXES / stride)
    np.testing.assert_array_equal(t.labels[0].numpy(), LABELS)


def test_heatmap_gaussian_values():
    # radius 3 -> sigma = 7 / 6; one cell right of the centre: exp(-1 / (2 sigma^2))
    heat = draw_heatmap(np.array([5]), np.array([5]), np.array([3]), 11, 11)
    sigma = 7 / 6
    assert heat[5, 6] == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert heat[7, 8] == pytest.approx(math.exp(-(4 + 9) / (2 * sigma**2)), rel=1e-6)
    assert heat[5, 9] == 0.0 and heat[1, 5] == 0.0  # beyond the radius
    assert heat[5, 8] > 0.0


def test_overlapping_people_keep_the_maximum():
    rows, cols, radii = np.array([4, 4]), np.array([4, 6]), np.array([3, 3])
    both = draw_heatmap(rows, cols, radii, 10, 12)
    one = draw_heatmap(rows[:1], cols[:1], radii[:1], 10, 12)
    two = draw_heatmap(rows[1:], cols[1:], radii[1:], 10, 12)
    np.testing.assert_array_equal(both, np.maximum(one, two))
    assert both[4, 4] == 1.0 and both[4, 6] == 1.0
    assert both[4, 5] == one[4, 5] < 1.0  # halfway: max, not the sum (which would pass 1)
    assert one[4, 5] + two[4, 5] > 1.0


@pytest.mark.parametrize("stride", [4, 2])
def test_decoding_the_targets_gives_the_boxes_back(stride):
    size = INPUT // stride
    t = image_targets(BOXES, LABELS, stride, (size, size))
    size_map = np.zeros((1, 2, size, size), np.float32)
    size_map[0][:, t.rows[0].numpy(), t.cols[0].numpy()] = t.sizes[0].numpy().T * stride
    maps = SummedMaps(stride=stride, heatmap=t.heatmap.numpy(), size=size_map, emotion_sums={})
    people = find_people(maps, InferenceSettings(), detection_threshold=0.999)[0]
    assert len(people) == len(BOXES)
    found = people.boxes[np.lexsort((people.boxes[:, 0], people.boxes[:, 1]))]
    truth = BOXES[np.lexsort((BOXES[:, 0], BOXES[:, 1]))]
    assert np.abs(found - truth).max() <= stride / 2  # centre quantised to the cell, size exact
    assert np.all(people.detection_scores == 1.0)


def test_collation_pads_images_with_different_numbers_of_people():
    t = build_targets([BOXES[:2], np.zeros((0, 4)), BOXES[2:]],
                      [LABELS[:2], np.zeros((0, 3)), LABELS[2:]], 4, (16, 16))
    assert t.heatmap.shape == (3, 1, 16, 16)
    assert t.sizes.shape == (3, 2, 2) and t.boxes.shape == (3, 2, 4) and t.labels.shape == (3, 2, 3)
    assert t.mask.tolist() == [[True, True], [False, False], [True, False]]
    assert t.num_people == 3
    assert t.heatmap[1].abs().sum().item() == 0.0
    assert t.sizes[2, 1].abs().sum().item() == 0.0 and t.indices[2, 1].item() == 0
    alone = image_targets(BOXES[2:], LABELS[2:], 4, (16, 16))
    assert torch.equal(t.heatmap[2], alone.heatmap[0])
    assert torch.equal(t.indices[2, :1], alone.indices[0])


def test_collation_of_a_batch_without_people():
    t = build_targets([np.zeros((0, 4))] * 2, [None, None], 2, (8, 8))
    assert t.mask.shape == (2, 0) and t.sizes.shape == (2, 0, 2) and t.labels.shape == (2, 0, 0)
    assert t.num_people == 0 and t.heatmap.sum().item() == 0.0


def test_read_at_centers_picks_each_persons_cell_in_batch_order():
    t = build_targets([BOXES[:2], BOXES[2:]], [LABELS[:2], LABELS[2:]], 4, (16, 16))
    maps = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    maps.requires_grad_(True)
    values = read_at_centers(maps, t)
    expected = [[maps[b, e, t.rows[b, k], t.cols[b, k]].item() for e in range(3)]
                for b, k in ((0, 0), (0, 1), (1, 0))]
    assert values.tolist() == expected
    values.sum().backward()
    assert maps.grad.sum().item() == 3 * 3  # one cell per person and map
    empty = build_targets([np.zeros((0, 4))], [np.zeros((0, 3))], 4, (16, 16))
    assert read_at_centers(maps[:1], empty).shape == (0, 3)
