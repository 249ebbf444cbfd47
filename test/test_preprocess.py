"""Letterbox preprocessing (caer_ros/inference/preprocess.py)."""

from __future__ import annotations

import numpy as np
import pytest

from caer_ros.inference.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_RGB,
    Letterbox,
    letterbox,
    normalize,
    preprocess,
)

INPUT = (512, 512)


def _random_image(h: int, w: int, c: int | None = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize(
    ("h", "w", "channels", "scale", "pad_x", "pad_y"),
    [
        (480, 640, 3, 0.8, 0, 64),  # landscape: full width, bands top and bottom
        (640, 480, 3, 0.8, 64, 0),  # portrait
        (256, 256, 3, 2.0, 0, 0),  # square, upscaled
        (300, 400, None, 1.28, 0, 64),  # grayscale (h, w)
        (300, 400, 1, 1.28, 0, 64),  # grayscale (h, w, 1)
        (480, 640, 4, 0.8, 0, 64),  # BGRA
    ],
)
def test_letterbox_shapes(h, w, channels, scale, pad_x, pad_y):
    image = _random_image(h, w, channels)
    tensor, box = preprocess(image, INPUT)
    assert tensor.shape == (1, 3, 512, 512)
    assert tensor.dtype == np.float32
    assert box == Letterbox(scale, pad_x, pad_y, (h, w), INPUT)
    canvas, _ = letterbox(image, INPUT)
    assert canvas.shape == (512, 512, 3) and canvas.dtype == np.uint8
    # The border holds the pad colour (which normalises to ~0).
    if pad_y:
        assert (canvas[: pad_y] == PAD_RGB).all() and (canvas[-pad_y:] == PAD_RGB).all()
        assert np.abs(tensor[0, :, : pad_y]).max() < 0.01
    if pad_x:
        assert (canvas[:, : pad_x] == PAD_RGB).all() and (canvas[:, -pad_x:] == PAD_RGB).all()


def test_non_square_input_size_and_odd_padding():
    _, box = letterbox(_random_image(100, 100), (384, 511))
    assert box.scale == pytest.approx(3.84)
    assert (box.pad_x, box.pad_y) == ((511 - 384) // 2, 0)


def test_channel_order_bgr_rgb_gray_bgra():
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV order
    canvas, _ = letterbox(bgr, (8, 8))
    assert (canvas[..., 2] == 200).all() and (canvas[..., :2] == 0).all()
    canvas, _ = letterbox(bgr, (8, 8), rgb=True)  # the same array read as RGB: red
    assert (canvas[..., 0] == 200).all()
    bgra = np.concatenate([bgr, np.full((8, 8, 1), 7, np.uint8)], axis=2)
    assert (letterbox(bgra, (8, 8))[0] == letterbox(bgr, (8, 8))[0]).all()
    gray = np.full((8, 8), 90, np.uint8)
    assert (letterbox(gray, (8, 8))[0] == 90).all()


def test_normalize_values():
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 0, 128
    out = normalize(image)
    expected = (np.array([255, 0, 128]) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert out.shape == (1, 3, 2, 3)
    np.testing.assert_allclose(out[0, :, 1, 2], expected, rtol=1e-5)


@pytest.mark.parametrize(("h", "w"), [(480, 640), (640, 480), (333, 517), (100, 100)])
def test_box_round_trip_is_exact(h, w):
    _, box = letterbox(_random_image(h, w), INPUT)
    rng = np.random.default_rng(1)
    xy1 = rng.uniform(0, [w, h], size=(50, 2))
    xy2 = rng.uniform(xy1, [w, h])
    boxes = np.concatenate([xy1, xy2], axis=1)
    there = box.to_input(boxes)
    assert (there >= 0).all() and (there <= 512).all()
    np.testing.assert_allclose(box.to_original(there), boxes, atol=1e-4)
    np.testing.assert_allclose(box.to_input(box.to_original(there)), there, atol=1e-4)
    assert box.to_input(boxes.astype(np.float32)).dtype == np.float32


def test_to_original_clips_to_the_image():
    _, box = letterbox(_random_image(480, 640), INPUT)  # pad_y = 64
    out = box.to_original(np.array([[-10.0, 10.0, 600.0, 500.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.0, 640.0, 480.0]])
    unclipped = box.to_original(np.array([[-10.0, 10.0, 600.0, 500.0]]), clip=False)
    assert unclipped[0, 0] < 0 and unclipped[0, 1] < 0


@pytest.mark.parametrize(("h", "w"), [(480, 640), (700, 350), (211, 299), (333, 1337)])
def test_filled_rectangle_lands_on_the_mapped_box(h, w):
    image = np.full((h, w, 3), 20, np.uint8)
    rect = np.array([w * 0.3, h * 0.2, w * 0.6, h * 0.7]).round()
    x1, y1, x2, y2 = rect.astype(int)
    image[y1:y2, x1:x2] = 230
    canvas, box = letterbox(image, INPUT)
    mx1, my1, mx2, my2 = box.to_input(rect)
    gray = canvas[..., 0].astype(int)
    # Bilinear sampling mixes in the other colour only within half an original pixel of the
    # rectangle's edge (0.5 * scale input pixels): beyond that the mapping must be exact.
    m = 0.5 * box.scale + 0.01
    ys, xs = np.mgrid[0:512, 0:512] + 0.5  # pixel centres
    inside = (xs > mx1 + m) & (xs < mx2 - m) & (ys > my1 + m) & (ys < my2 - m)
    outside = (xs < mx1 - m) | (xs > mx2 + m) | (ys < my1 - m) | (ys > my2 + m)
    ix1, iy1, ix2, iy2 = box.to_input(np.array([0.0, 0.0, w, h]))
    image_area = (xs > ix1 + m) & (xs < ix2 - m) & (ys > iy1 + m) & (ys < iy2 - m)
    assert (gray[inside] == 230).all()
    assert (gray[outside & image_area] == 20).all()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 0), np.uint8), "empty"),
        (np.zeros((10, 10, 3), np.float32), "dtype"),
        (np.zeros((10, 10, 2), np.uint8), "channels"),
        (np.zeros((10, 10, 3, 1), np.uint8), "dimensions"),
        (np.zeros(10, np.uint8), "dimensions"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_images_raise(image, message):
    with pytest.raises(ValueError, match=message):
        preprocess(image, INPUT)


@pytest.mark.parametrize("size", [(0, 512), (512, -1), (512,), "big"])
def test_bad_input_size_raises(size):
    with pytest.raises(ValueError, match="input_size"):
        preprocess(_random_image(10, 10), size)


def test_bad_normalize_input_raises():
    with pytest.raises(ValueError, match="uint8 RGB"):
        normalize(np.zeros((4, 4, 4), np.uint8))


def test_custom_normalisation_statistics():
    image = np.full((4, 8, 3), 128, np.uint8)
    out, _ = preprocess(image, (8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    np.testing.assert_allclose(out[0, :, 4, 4], [1 / 255, 2 / 255, 0.5 / 255], atol=1e-6)
    assert np.abs(out[0, :, 0, 0]).max() < 0.01  # the border: the mean colour
    with pytest.raises(ValueError, match="mean and std"):
        normalize(image, std=(0.5, 0.0, 1.0))


def test_output_is_c_contiguous():
    tensor, _ = preprocess(_random_image(480, 640), INPUT)
    assert tensor.flags.c_contiguous  # ONNX Runtime and torch.from_numpy want it dense


def test_preprocess_writes_into_a_given_buffer():
    image = _random_image(480, 640)
    expected, _ = preprocess(image, INPUT)
    buffer = np.full((1, 3, *INPUT), np.nan, np.float32)
    out, _ = preprocess(image, INPUT, out=buffer)
    assert out is buffer
    np.testing.assert_array_equal(buffer, expected)
    with pytest.raises(ValueError, match="out must be"):
        preprocess(image, INPUT, out=np.empty((1, 3, 256, 256), np.float32))


@pytest.mark.parametrize("shape", [(1, 2000, 3), (2000, 1), (1, 1, 3)])
def test_degenerate_shapes_still_fill_the_input(shape):
    tensor, box = preprocess(np.zeros(shape, np.uint8), INPUT)
    assert tensor.shape == (1, 3, 512, 512)
    assert box.to_original(np.array([0.0, 0.0, 512.0, 512.0])).tolist() == [
        0.0, 0.0, shape[1], shape[0]
    ]
