"""Overlay drawing (caer_ros/inference/overlay.py)."""

from __future__ import annotations

import numpy as np
import pytest

from caer_ros.inference.decode import Detections
from caer_ros.inference.overlay import PALETTE, draw_detections, draw_people, top_labels
from caer_ros.ros.image_conversion import bgr_to_image, image_to_bgr

CATEGORIES = ("Anger", "Happiness", "Sadness")


def _detections(boxes, scores=None) -> Detections:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    if scores is None:
        scores = np.tile([0.1, 0.9, 0.6], (n, 1))
    return Detections(boxes=boxes, detection_scores=np.linspace(0.9, 0.5, n, dtype=np.float32),
                      scores=np.asarray(scores, dtype=np.float32).reshape(n, 3))


def test_box_edges_are_drawn_and_input_untouched():
    image = np.full((240, 320, 3), 128, np.uint8)
    before = image.copy()
    out = draw_detections(image, _detections([[100, 120, 200, 220]]), CATEGORIES, 0.5, ids=["7"])
    assert out is not image and out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before)
    changed = np.any(out != image, axis=2)
    for y, x in [(170, 100), (170, 200), (120, 150), (220, 150)]:  # middle of each edge
        assert changed[y, x], (y, x)
    assert changed[100:120, 100:140].any()  # caption above the box
    assert not changed[170, 150] and not changed[5, 300] and not changed[230, 10]
    assert (out[170, 100] == PALETTE[7 % len(PALETTE)]).all()  # colour follows the id


def test_empty_detections_give_an_identical_copy():
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    out = draw_detections(image, _detections(np.zeros((0, 4))), CATEGORIES, 0.5)
    assert out is not image and np.array_equal(out, image)
    assert not np.shares_memory(out, image)


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (12, 16), (40, 30)])
def test_tiny_images_and_boxes_at_or_beyond_the_border(size):
    image = np.zeros((*size, 3), np.uint8)
    h, w = size
    boxes = [[0, 0, w, h], [-5, -5, 2, 2], [w - 1, h - 1, w + 10, h + 10], [w, h, w, h],
             [np.nan, 0, 1, 1], [-1e9, -1e9, 1e9, 1e9]]
    out = draw_detections(image, _detections(boxes), CATEGORIES, 0.5, ids=list("123456"))
    assert out.shape == image.shape
    assert out.any()


def test_caption_stays_inside_the_image():
    """A box in the top-right corner: its caption is shifted left and down into the image."""
    image = np.zeros((200, 300, 3), np.uint8)
    out = draw_detections(image, _detections([[290, 0, 300, 10]]), CATEGORIES, 0.5, ids=["3"])
    colour = np.array(PALETTE[3])
    filled = np.all(out == colour, axis=2)
    ys, xs = np.nonzero(filled)
    assert filled.sum() > 300  # a filled label block, not just the box outline
    assert xs.min() < 250  # moved left to fit its text


def test_read_only_strided_view_is_accepted():
    """image_to_bgr returns read-only, non-contiguous views (rgb8): drawing copies them."""
    rgb = np.random.default_rng(1).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    msg = bgr_to_image(rgb)
    msg.encoding = "rgb8"
    view = image_to_bgr(msg)
    out = draw_people(view, np.array([[5, 5, 40, 40]]), [["person 0.90"]])
    assert out.flags.writeable and out.flags.c_contiguous
    assert not np.array_equal(out, view)
    assert np.array_equal(out[45:, 45:], view[45:, 45:])


def test_top_labels_order_threshold_and_limit():
    scores = np.array([[0.6, 0.9, 0.7], [0.1, 0.2, 0.3]])
    assert top_labels(scores, CATEGORIES, 0.5) == [
        [("Happiness", 0.9), ("Sadness", 0.7), ("Anger", 0.6)], []]
    assert top_labels(scores, CATEGORIES, [0.65, 0.95, 0.25], max_labels=1) == [
        [("Sadness", 0.7)], [("Sadness", 0.3)]]


def test_rejects_non_bgr_images():
    with pytest.raises(ValueError, match="uint8 BGR"):
        draw_people(np.zeros((10, 10), np.uint8), np.zeros((0, 4)), [])
