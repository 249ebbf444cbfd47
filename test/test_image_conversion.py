"""sensor_msgs Image / CompressedImage <-> numpy BGR (caer_ros/ros/image_conversion.py)."""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from caer_ros.ros.image_conversion import (
    ImageConversionError,
    bgr_to_image,
    compressed_to_bgr,
    image_to_bgr,
    to_bgr,
)

RNG = np.random.default_rng(0)
BGR = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _message(pixels: np.ndarray, encoding: str, padding: int = 0,
             big_endian: bool = False) -> Image:
    """An Image holding ``pixels`` (h, w, c) row by row, each row followed by padding bytes."""
    h, w = pixels.shape[:2]
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if big_endian else "<u2")
    rows = pixels.reshape(h, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((h, padding), 0xAB, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(big_endian),
                 step=padded.shape[1], data=padded.tobytes())


@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("bgr8", BGR),
        ("8UC3", BGR),
        ("rgb8", BGR[..., ::-1]),
        ("bgra8", np.dstack([BGR, np.full(BGR.shape[:2], 9, np.uint8)])),
        ("rgba8", np.dstack([BGR[..., ::-1], np.full(BGR.shape[:2], 9, np.uint8)])),
    ],
)
def test_colour_encodings_give_bgr(encoding, pixels, padding):
    out = image_to_bgr(_message(pixels, encoding, padding))
    assert out.shape == BGR.shape and out.dtype == np.uint8
    assert np.array_equal(out, BGR)


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8"])
def test_colour_encodings_are_zero_copy_read_only_views(encoding):
    channels = 4 if encoding.endswith("a8") else 3
    msg = _message(RNG.integers(0, 256, (4, 6, channels), dtype=np.uint8), encoding, padding=2)
    out = image_to_bgr(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert not out.flags.writeable


def test_deserialized_message_converts_without_copy():
    """A message as it arrives from DDS (deserialized) is read in place."""
    sent = _message(BGR, "bgr8", padding=3)
    received = deserialize_message(serialize_message(sent), Image)
    out = image_to_bgr(received)
    assert np.array_equal(out, BGR)
    assert np.shares_memory(out, np.frombuffer(received.data, np.uint8))


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_is_copied_to_three_channels(encoding, padding):
    gray = RNG.integers(0, 256, size=(6, 4, 1), dtype=np.uint8)
    out = image_to_bgr(_message(gray, encoding, padding))
    assert out.shape == (6, 4, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], gray[..., 0])


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("padding", [0, 4])
def test_16_bit_is_stretched_min_to_max(encoding, big_endian, padding):
    values = np.array([[1000, 2000], [3000, 1500]], dtype=np.uint16)[..., None]
    out = image_to_bgr(_message(values, encoding, padding, big_endian))
    expected = np.rint((values[..., 0] - 1000) * 255.0 / 2000).astype(np.uint8)
    assert expected.tolist() == [[0, 128], [255, 64]]
    for c in range(3):
        assert np.array_equal(out[..., c], expected)


def test_constant_16_bit_frame_is_black():
    out = image_to_bgr(_message(np.full((3, 3, 1), 4242, np.uint16), "16UC1"))
    assert out.shape == (3, 3, 3) and not out.any()


def test_unsupported_encoding_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv_bridge", None)  # as here: no ROS cv_bridge
    msg = _message(BGR[..., :2].copy(), "yuv422")
    with pytest.raises(ImageConversionError, match="unsupported encoding 'yuv422'"):
        image_to_bgr(msg)


@pytest.mark.parametrize(("height", "width"), [(0, 4), (4, 0), (0, 0)])
def test_zero_size_is_rejected(height, width):
    msg = Image(height=height, width=width, encoding="bgr8", step=3 * width, data=b"")
    with pytest.raises(ImageConversionError, match=f"zero size {width}x{height}"):
        image_to_bgr(msg)


def test_step_smaller_than_row_is_rejected():
    msg = Image(height=2, width=4, encoding="bgr8", step=11, data=bytes(22))
    with pytest.raises(ImageConversionError, match="step 11 is smaller than .* = 12"):
        image_to_bgr(msg)


@pytest.mark.parametrize("size", [0, 35, 37, 72])
def test_wrong_data_size_names_both_sizes(size):
    msg = Image(height=3, width=4, encoding="bgr8", step=12, data=bytes(size))
    with pytest.raises(ImageConversionError) as err:
        image_to_bgr(msg)
    assert f"data has {size} bytes" in str(err.value)
    assert "= 36" in str(err.value)


def test_huge_declared_size_with_small_data_fails_fast():
    msg = Image(height=2**31, width=2**30, encoding="mono16", step=2**31, data=bytes(64))
    start = time.perf_counter()
    with pytest.raises(ImageConversionError, match="data has 64 bytes"):
        image_to_bgr(msg)
    assert time.perf_counter() - start < 0.5


def test_bgr_to_image_round_trip_and_header():
    header = Header(frame_id="head_camera")
    header.stamp.sec, header.stamp.nanosec = 17, 42
    view = BGR[:, ::-1]  # non-contiguous input
    msg = bgr_to_image(view, header)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, "bgr8")
    assert msg.header.frame_id == "head_camera" and msg.header.stamp.nanosec == 42
    assert len(msg.data) == 5 * 21
    assert np.array_equal(image_to_bgr(msg), view)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((4, 4, 4), np.uint8)])
def test_bgr_to_image_rejects_other_arrays(bad):
    with pytest.raises(ValueError, match="uint8 BGR"):
        bgr_to_image(bad)


def test_compressed_png_is_exact_and_jpeg_close():
    image = cv2.resize(BGR, (64, 48), interpolation=cv2.INTER_NEAREST)
    png = CompressedImage(format="png", data=cv2.imencode(".png", image)[1].tobytes())
    assert np.array_equal(compressed_to_bgr(png), image)
    smooth = cv2.GaussianBlur(image, (9, 9), 3)
    jpeg = CompressedImage(format="jpeg",
                           data=cv2.imencode(".jpg", smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
                           .tobytes())
    out = to_bgr(jpeg)
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).mean() < 3


def test_compressed_gray_png_gives_three_channels():
    gray = RNG.integers(0, 256, size=(8, 9), dtype=np.uint8)
    msg = CompressedImage(format="png", data=cv2.imencode(".png", gray)[1].tobytes())
    out = compressed_to_bgr(msg)
    assert out.shape == (8, 9, 3)
    assert np.array_equal(out[..., 1], gray)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\xff\xd8\xff" + bytes(40)])
def test_undecodable_compressed_data_raises(data):
    msg = CompressedImage(format="jpeg", data=data)
    with pytest.raises(ImageConversionError, match="jpeg"):
        to_bgr(msg)
