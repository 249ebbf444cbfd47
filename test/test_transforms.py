"""Pre-transforms and augmentations (training/data/transforms.py, BENet 3.3): eligibility and crop
of ExtractSubject, the 40 % rule of MaskAllSubjects, the subsets of RandomMaskSubjects, the
drawing with fallbacks, and boxes that follow the geometric augmentations."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from caer_ros.inference.preprocess import PAD_RGB
from training.data.transforms import (
    AugmentConfig,
    Sample,
    augment,
    augment_sample,
    draw_pre_transform,
    eligible_subjects,
    extract_subject,
    geometric,
    map_boxes,
    mask_all_subjects,
    photometric,
    random_mask_subjects,
    raw,
)

FILL = np.array(PAD_RGB, dtype=np.uint8)


def _coordinate_image(height: int, width: int) -> np.ndarray:
    """R = row, G = column, B = 7: a crop's origin can be read from its first pixel."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows, cols, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def _sample(image: np.ndarray, boxes) -> Sample:
    """People identified by one-hot labels (row k has label k) and continuous value k."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    k = len(boxes)
    return Sample(image, boxes, np.eye(k, dtype=np.float32).reshape(k, k),
                  np.repeat(np.arange(k, dtype=np.float32)[:, None], 3, axis=1))


def _ids(sample: Sample) -> tuple[int, ...]:
    return tuple(int(i) for i in sample.labels.argmax(axis=1))


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------
# Sample


def test_sample_checks_shapes_and_subsets():
    s = _sample(_random_image(10, 10), [[0, 0, 5, 5], [2, 2, 8, 8], [1, 1, 3, 3]])
    assert _ids(s.subset(np.array([True, False, True]))) == (0, 2)
    assert _ids(s.subset(np.array([2, 1]))) == (2, 1)
    with pytest.raises(ValueError, match="keep mask"):
        s.subset(np.array([True, False]))
    with pytest.raises(ValueError, match="continuous"):
        Sample(s.image, s.boxes, s.labels, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="boxes"):
        Sample(s.image, np.zeros((3, 5), np.float32), s.labels, s.continuous)


# ------------------------------------------------------------------------------------------
# ExtractSubject


def test_extract_subject_crop_and_box():
    height, width = 100, 120
    image = _coordinate_image(height, width)
    boxes = [[10.0, 20.0, 40.0, 80.0], [60.5, 3.0, 118.0, 50.25]]
    sample = _sample(image, boxes)
    seen = set()
    for seed in range(20):
        out = extract_subject(sample, np.random.default_rng(seed), margin=0.1)
        assert out is not None and len(out) == 1
        (k,) = _ids(out)
        seen.add(k)
        assert out.continuous[0, 0] == k
        x1, y1, x2, y2 = boxes[k]
        r0, c0 = int(out.image[0, 0, 0]), int(out.image[0, 0, 1])  # crop origin
        mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
        assert c0 == max(0, np.floor(x1 - mx)) and r0 == max(0, np.floor(y1 - my))
        h, w = out.image.shape[:2]
        assert c0 + w == min(width, np.ceil(x2 + mx)) and r0 + h == min(height, np.ceil(y2 + my))
        np.testing.assert_allclose(out.boxes[0], [x1 - c0, y1 - r0, x2 - c0, y2 - r0])
        # the crop contains the subject and is exactly that part of the image
        assert out.boxes[0, 0] >= 0 and out.boxes[0, 1] >= 0
        assert out.boxes[0, 2] <= w and out.boxes[0, 3] <= h
        np.testing.assert_array_equal(out.image, image[r0:r0 + h, c0:c0 + w])
    assert seen == {0, 1}  # both subjects get drawn


def test_eligibility_rule_by_hand():
    # 0 contains 1 entirely; 2 is apart
    boxes = np.array([[0, 0, 60, 60], [10, 10, 30, 30], [70, 0, 90, 40]], np.float32)
    np.testing.assert_array_equal(eligible_subjects(boxes, 100, 100), [False, True, True])
    # the other's box 50 % inside: still eligible; 60 % inside: not
    half = np.array([[0, 0, 50, 50], [40, 0, 60, 20]], np.float32)
    np.testing.assert_array_equal(eligible_subjects(half, 100, 100), [True, True])
    more = np.array([[0, 0, 50, 50], [38, 0, 58, 20]], np.float32)
    np.testing.assert_array_equal(eligible_subjects(more, 100, 100), [False, True])
    # only the eligible one is ever extracted
    sample = _sample(_random_image(100, 100), boxes[:2])
    for seed in range(10):
        assert _ids(extract_subject(sample, np.random.default_rng(seed))) == (1,)


def test_extract_subject_none_when_nobody_eligible():
    rng = np.random.default_rng(0)
    twins = _sample(_random_image(50, 50), [[5, 5, 30, 30], [5, 5, 30, 30]])
    assert extract_subject(twins, rng) is None
    assert extract_subject(_sample(_random_image(50, 50), np.zeros((0, 4))), rng) is None
    outside = _sample(_random_image(50, 50), [[60, 0, 80, 20]])  # zero area in the image
    assert extract_subject(outside, rng) is None


# ------------------------------------------------------------------------------------------
# MaskAllSubjects


def test_mask_all_fills_boxes_only():
    image = _random_image(100, 100)
    before = image.copy()
    boxes = [[10, 10, 30, 40], [50.5, 50.5, 69.2, 79.7]]  # the second touches pixels 50..69
    out = mask_all_subjects(_sample(image, boxes), np.random.default_rng(0))
    inside = np.zeros((100, 100), bool)
    inside[10:40, 10:30] = True
    inside[50:80, 50:70] = True
    assert np.all(out.image[inside] == FILL)
    np.testing.assert_array_equal(out.image[~inside], image[~inside])
    np.testing.assert_array_equal(image, before)  # input untouched
    np.testing.assert_array_equal(out.boxes, np.asarray(boxes, np.float32))
    assert _ids(out) == (0, 1)


def test_mask_all_40_percent_rule_on_the_sum():
    rng = np.random.default_rng(0)
    image = _random_image(100, 100)
    assert mask_all_subjects(_sample(image, [[0, 0, 40, 100]]), rng) is not None  # 40 %
    assert mask_all_subjects(_sample(image, [[0, 0, 41, 100]]), rng) is None  # 41 %
    two = [[0, 0, 20, 100], [50, 0, 70, 100]]  # 20 % + 20 %
    assert mask_all_subjects(_sample(image, two), rng) is not None
    overlapping = [[0, 0, 25, 100], [0, 0, 25, 100]]  # union 25 %, sum 50 %
    assert mask_all_subjects(_sample(image, overlapping), rng) is None
    # area outside the image does not count
    assert mask_all_subjects(_sample(image, [[70, 0, 140, 100]]), rng) is not None
    assert mask_all_subjects(_sample(image, np.zeros((0, 4))), rng) is None


# ------------------------------------------------------------------------------------------
# RandomMaskSubjects


def test_random_mask_subsets_and_pixels():
    image = _random_image(80, 100)
    boxes = np.array([[0, 0, 40, 40], [30, 30, 70, 70], [60, 0, 95, 30]], np.float32)
    sample = _sample(image, boxes)
    footprints = []
    for x1, y1, x2, y2 in boxes.astype(int):
        m = np.zeros(image.shape[:2], bool)
        m[y1:y2, x1:x2] = True
        footprints.append(m)
    kept_sets = Counter()
    for seed in range(300):
        out = random_mask_subjects(sample, np.random.default_rng(seed))
        ids = _ids(out)
        assert 1 <= len(ids) <= 3 and list(ids) == sorted(ids)
        kept_sets[ids] += 1
        np.testing.assert_array_equal(out.boxes, boxes[list(ids)])
        kept = np.any([footprints[i] for i in ids], axis=0)
        masked = np.any([footprints[i] for i in range(3) if i not in ids] or
                        [np.zeros_like(kept)], axis=0) & ~kept
        np.testing.assert_array_equal(out.image[kept], image[kept])  # kept people intact
        assert np.all(out.image[masked] == FILL)
        rest = ~kept & ~masked
        np.testing.assert_array_equal(out.image[rest], image[rest])
    assert set(kept_sets) == {(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)}
    # keep-count uniform in 1..3: about 1/3 keep everyone
    assert 0.2 < kept_sets[(0, 1, 2)] / 300 < 0.45


def test_random_mask_without_keep_all_always_masks_someone():
    sample = _sample(_random_image(40, 40), [[0, 0, 10, 10], [20, 20, 30, 30]])
    for seed in range(50):
        out = random_mask_subjects(sample, np.random.default_rng(seed), allow_keep_all=False)
        assert len(out) == 1


def test_random_mask_one_and_zero_people():
    rng = np.random.default_rng(0)
    one = _sample(_random_image(30, 30), [[5, 5, 20, 20]])
    out = random_mask_subjects(one, rng)
    assert out.image is not one.image
    np.testing.assert_array_equal(out.image, one.image)
    np.testing.assert_array_equal(out.boxes, one.boxes)
    assert random_mask_subjects(_sample(one.image, np.zeros((0, 4))), rng) is None
    copy = raw(one, rng)
    assert copy.image is not one.image and np.array_equal(copy.image, one.image)


# ------------------------------------------------------------------------------------------
# draw_pre_transform


def test_draw_follows_probabilities():
    sample = _sample(_random_image(32, 32), [[1, 1, 8, 8], [20, 20, 28, 30]])  # all apply
    rng = np.random.default_rng(1)
    probabilities = {"raw": 2.0, "random_mask": 1.0, "extract_subject": 1.0, "mask_all": 0.0}
    n = 2000
    counts = Counter(draw_pre_transform(sample, probabilities, rng)[0] for _ in range(n))
    assert "mask_all" not in counts
    for name, expected in (("raw", 0.5), ("random_mask", 0.25), ("extract_subject", 0.25)):
        assert abs(counts[name] / n - expected) < 0.05, counts
    # deterministic given the generator
    a = draw_pre_transform(sample, probabilities, np.random.default_rng(7))
    b = draw_pre_transform(sample, probabilities, np.random.default_rng(7))
    assert a[0] == b[0] and np.array_equal(a[1].image, b[1].image)


def test_draw_redraws_and_falls_back():
    # twins covering > 40 %: neither extract_subject nor mask_all applies
    crowded = _sample(_random_image(40, 40), [[0, 0, 30, 40], [0, 0, 30, 40]])
    rng = np.random.default_rng(0)
    for _ in range(20):
        name, out = draw_pre_transform(crowded, {"mask_all": 1.0, "extract_subject": 1.0,
                                                 "raw": 1e-6}, rng)
        assert name == "raw" and len(out) == 2
        name, out = draw_pre_transform(crowded, {"mask_all": 1.0, "extract_subject": 1.0}, rng)
        assert name == "random_mask" and 1 <= len(out) <= 2
    # mask_all not applicable: redraw among the rest only
    counts = Counter(draw_pre_transform(crowded, {"mask_all": 0.9, "extract_subject": 0.05,
                                                  "random_mask": 0.05}, rng)[0]
                     for _ in range(50))
    assert set(counts) == {"random_mask"}
    nobody = _sample(_random_image(20, 20), np.zeros((0, 4)))
    name, out = draw_pre_transform(nobody, {"mask_all": 1.0}, rng)
    assert name == "raw" and len(out) == 0


@pytest.mark.parametrize("probabilities, message", [
    ({"raw": 1.0, "rotate": 1.0}, "rotate"),
    ({"raw": 1.0, "mask_all": -0.1}, "mask_all"),
    ({"raw": float("nan")}, "raw"),
    ({"raw": 0.0, "mask_all": 0.0}, "all zero"),
    ({}, "all zero"),
])
def test_draw_rejects_bad_probabilities(probabilities, message):
    sample = _sample(_random_image(20, 20), [[0, 0, 5, 5]])
    with pytest.raises(ValueError, match=message):
        draw_pre_transform(sample, probabilities, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------
# Augmentations

GEOMETRIC = AugmentConfig(noise_p=0, blur_p=0, jitter_p=0, flip_p=1, perspective_p=1,
                          perspective_scale=0.3)
FLIP = AugmentConfig(noise_p=0, blur_p=0, jitter_p=0, flip_p=1, perspective_p=0)
PHOTOMETRIC = AugmentConfig(noise_p=1, blur_p=1, jitter_p=1, flip_p=0, perspective_p=0)


def _person(height: int, width: int, seed: int, ellipse: bool = True):
    """Background image with a magenta person, its (h, w) uint8 mask and tight box."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    cx, cy = int(rng.integers(30, width - 30)), int(rng.integers(30, height - 30))
    ax, ay = int(rng.integers(8, 28)), int(rng.integers(8, 28))
    if ellipse:
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(mask, (cx, cy), (ax, ay), angle, 0, 360, 255, thickness=-1)
    else:
        mask[cy - ay:cy + ay, cx - ax:cx + ax] = 255
    image = _random_image(height, width, seed)
    image[mask > 0] = (255, 0, 255)
    return image, mask, _tight_box(mask)


def _tight_box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


@pytest.mark.parametrize("seed", range(8))
def test_geometric_box_encloses_the_person(seed):
    image, mask, box = _person(96, 128, seed)
    out, boxes, keep, matrix = geometric(image, box[None], GEOMETRIC,
                                         np.random.default_rng(seed))
    warped, _, _, same = geometric(mask, box[None], GEOMETRIC, np.random.default_rng(seed),
                                   fill=0)
    np.testing.assert_array_equal(matrix, same)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert keep.tolist() == [True]
    assert matrix[0, 0] < 0  # flipped (up to the perspective's positive scale)
    rows, cols = np.nonzero(warped)
    assert len(rows) > 0
    x1, y1, x2, y2 = boxes[0]
    assert (cols + 0.5 >= x1 - 1).all() and (cols + 0.5 <= x2 + 1).all()
    assert (rows + 0.5 >= y1 - 1).all() and (rows + 0.5 <= y2 + 1).all()
    # the person's colour went where the mask went (the image got the same warp)
    person = np.all(out == (255, 0, 255), axis=-1)
    assert person.sum() > 0 and (warped[person] > 0).all()


@pytest.mark.parametrize("seed", range(4))
def test_perspective_box_is_tight_for_a_box_shaped_person(seed):
    image, mask, box = _person(96, 128, seed, ellipse=False)
    _, boxes, _, _ = geometric(image, box[None], GEOMETRIC, np.random.default_rng(seed))
    warped, *_ = geometric(mask, box[None], GEOMETRIC, np.random.default_rng(seed), fill=0)
    np.testing.assert_allclose(boxes[0], _tight_box(warped > 127), atol=1.5)


@pytest.mark.parametrize("seed", range(3))
def test_warp_matrix_is_in_continuous_coordinates(seed):
    # a ramp image holding each pixel centre's x (y): bilinear sampling reproduces it exactly,
    # so output pixel centre p must hold the x (y) of matrix^-1 p
    height, width = 48, 64
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    for ramp, axis in ((cols, 0), (rows, 1)):
        out, _, _, matrix = geometric(ramp, np.zeros((0, 4)), GEOMETRIC,
                                      np.random.default_rng(seed), fill=-1.0)
        pts = np.stack([cols, rows, np.ones_like(cols)], axis=-1) @ np.linalg.inv(matrix).T
        src = pts[..., axis] / pts[..., 2]
        sx, sy = pts[..., 0] / pts[..., 2], pts[..., 1] / pts[..., 2]
        inside = (sx > 1) & (sx < width - 1) & (sy > 1) & (sy < height - 1)
        assert inside.sum() > 0.3 * height * width
        np.testing.assert_allclose(out[inside], src[inside], atol=0.02)


@pytest.mark.parametrize("seed", range(4))
def test_flip_is_exact(seed):
    image, mask, box = _person(64, 90, seed)
    out, boxes, keep, _ = geometric(image, box[None], FLIP, np.random.default_rng(seed))
    warped, *_ = geometric(mask, box[None], FLIP, np.random.default_rng(seed), fill=0)
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_array_equal(boxes[0], _tight_box(warped))
    np.testing.assert_array_equal(boxes[0], [90 - box[2], box[1], 90 - box[0], box[3]])


def test_boxes_out_of_the_image_or_too_small_are_dropped():
    image = _random_image(64, 64)
    boxes = np.array([[10, 10, 40, 50], [30, 30, 31, 31], [70, 0, 90, 20]], np.float32)
    for seed in range(5):
        _, out, keep, _ = geometric(image, boxes, GEOMETRIC, np.random.default_rng(seed))
        assert keep.tolist() == [True, False, False] and out.shape == (3, 4)
        assert (out >= 0).all() and (out <= 64).all()
    _, out, keep, _ = geometric(image, boxes, FLIP, np.random.default_rng(0))
    assert keep.tolist() == [True, True, False]  # a flip shrinks nothing
    # only the part inside the image is warped (the rest would land in the filled border)
    partly = np.array([[50, 10, 90, 40]], np.float32)
    _, out, _, matrix = geometric(image, partly, GEOMETRIC, np.random.default_rng(0))
    np.testing.assert_allclose(out, map_boxes([[50, 10, 64, 40]], matrix), atol=1e-4)


def test_photometric_keeps_boxes_shape_and_dtype():
    image, _, box = _person(64, 80, 3)
    out, boxes, keep = augment(image, box[None], PHOTOMETRIC, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(boxes, box[None])
    assert keep.tolist() == [True]
    assert not np.array_equal(out, image)
    # a grey image stays grey under saturation/hue/noise-free jitter
    grey = np.full((16, 16, 3), 100, np.uint8)
    jitter = AugmentConfig(noise_p=0, blur_p=0, jitter_p=1, flip_p=0, perspective_p=0)
    out = photometric(grey, jitter, np.random.default_rng(0))
    assert (out == out[..., :1]).all()
    with pytest.raises(ValueError, match="uint8"):
        photometric(grey.astype(np.float32), jitter, np.random.default_rng(0))


def test_hue_shift_rotates_colours():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    hue = AugmentConfig(noise_p=0, blur_p=0, jitter_p=1, brightness=0, contrast=0,
                        saturation=0, hue=0.5, flip_p=0, perspective_p=0)
    outs = [photometric(red, hue, np.random.default_rng(s)) for s in range(5)]
    assert any(not np.array_equal(o, red) for o in outs)
    for o in outs:
        assert o.max(axis=-1).min() >= 199  # value (max channel) kept


def test_off_is_identity_and_seeds_reproduce():
    image, _, box = _person(64, 80, 1)
    out, boxes, keep = augment(image, box[None], AugmentConfig.off(), np.random.default_rng(0))
    assert out is not image
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(boxes, box[None])
    assert keep.tolist() == [True]
    full = AugmentConfig(noise_p=1, blur_p=1, jitter_p=1, flip_p=1, perspective_p=1)
    a = augment(image, box[None], full, np.random.default_rng(5))
    b = augment(image, box[None], full, np.random.default_rng(5))
    c = augment(image, box[None], full, np.random.default_rng(6))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_augment_sample_keeps_rows_aligned():
    sample = _sample(_random_image(64, 64), [[10, 10, 40, 50], [70, 0, 90, 20], [5, 5, 20, 20]])
    out = augment_sample(sample, FLIP, np.random.default_rng(0))
    assert _ids(out) == (0, 2)
    np.testing.assert_array_equal(out.boxes, [[24, 10, 54, 50], [44, 5, 59, 20]])


@pytest.mark.parametrize("field, value", [
    ("flip_p", 1.5), ("noise_p", -0.1), ("noise_std", -1.0), ("brightness", float("nan")),
    ("hue", 0.6), ("perspective_scale", 0.5), ("min_box_side", -1.0),
])
def test_augment_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        AugmentConfig(**{field: value})


def test_augment_config_off():
    off = AugmentConfig.off()
    assert off.flip_p == off.perspective_p == off.noise_p == off.blur_p == off.jitter_p == 0
    assert off.noise_std == AugmentConfig().noise_std
