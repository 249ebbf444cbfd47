"""sensor_msgs images <-> numpy BGR uint8 arrays, without ROS cv_bridge.

:func:`image_to_bgr` turns a ``sensor_msgs/Image`` into the ``(H, W, 3)`` uint8 BGR array the
predictor takes, :func:`compressed_to_bgr` does the same for ``sensor_msgs/CompressedImage``
(``cv2.imdecode``), and :func:`bgr_to_image` builds a ``bgr8`` Image (the overlay).

Supported encodings (exact ROS names):

- ``bgr8`` and ``8UC3`` (read as bgr8): a view of the message buffer, no copy;
- ``rgb8``, ``bgra8``, ``rgba8``: views with the channels reordered or alpha dropped, no copy;
- ``mono8`` and ``8UC1``: gray copied into three channels;
- ``mono16`` and ``16UC1`` (``is_bigendian`` honoured): linearly stretched from the frame's own
  minimum..maximum to 0..255, so 10-, 12- and 16-bit sensors and depth images (millimetres) all
  come out with full contrast without knowing their bit depth; a constant frame becomes black.

Row padding (``step`` > ``width * bytes_per_pixel``) is honoured by a strided view. The views
are read-only, share memory with the message (do not change the message while using them)
and may be non-contiguous: OpenCV and numpy read them as they are. A message that cannot be
read raises :class:`ImageConversionError` naming the problem, before any memory is allocated
for it.
Encodings outside this list go to ROS ``cv_bridge`` when it is importable (it is not on PyPI).
"""

from __future__ import annotations

import array
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

# encoding -> (channels, bytes per channel)
ENCODINGS: dict[str, tuple[int, int]] = {
    "bgr8": (3, 1),
    "8UC3": (3, 1),
    "rgb8": (3, 1),
    "bgra8": (4, 1),
    "rgba8": (4, 1),
    "mono8": (1, 1),
    "8UC1": (1, 1),
    "mono16": (1, 2),
    "16UC1": (1, 2),
}


class ImageConversionError(ValueError):
    """An image message that cannot be turned into a BGR array; the message says why."""


def image_to_bgr(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``(height, width, 3)`` uint8 BGR (see the module docstring)."""
    if msg.encoding not in ENCODINGS:
        return _with_cv_bridge(msg)
    channels, depth = ENCODINGS[msg.encoding]
    pixels = _pixels(msg, channels, depth)
    if msg.encoding in ("bgr8", "8UC3"):
        return pixels
    if msg.encoding == "rgb8":
        return pixels[..., ::-1]
    if msg.encoding == "bgra8":
        return pixels[..., :3]
    if msg.encoding == "rgba8":
        return pixels[..., 2::-1]
    if depth == 2:
        pixels = _stretch_to_uint8(pixels[..., 0])
    return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_GRAY2BGR)


def compressed_to_bgr(msg: CompressedImage) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) -> ``(H, W, 3)`` uint8 BGR."""
    data = _buffer(msg.data)
    if data.size == 0:
        raise ImageConversionError(f"compressed image (format {msg.format!r}) has no data")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as err:
        image, reason = None, " ".join(str(err).split())
    else:
        reason = "not a JPEG/PNG/... image OpenCV can read"
    if image is None:
        raise ImageConversionError(
            f"cannot decode compressed image (format {msg.format!r}, {data.size} bytes): {reason}"
        )
    return image


def to_bgr(msg: Image | CompressedImage) -> np.ndarray:
    """Either image message -> ``(H, W, 3)`` uint8 BGR."""
    if isinstance(msg, CompressedImage):
        return compressed_to_bgr(msg)
    return image_to_bgr(msg)


def bgr_to_image(image: np.ndarray, header: Any = None) -> Image:
    """``(H, W, 3)`` uint8 BGR -> ``sensor_msgs/Image`` ``bgr8`` (one copy of the pixels)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {image.dtype} {image.shape}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = "bgr8"
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(image).data)
    msg.data = data
    return msg


def _pixels(msg: Image, channels: int, depth: int) -> np.ndarray:
    """The ``(height, width, channels)`` view of the message buffer, after checking its sizes."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(f"{msg.encoding} image has zero size {width}x{height} (w x h)")
    row = width * channels * depth
    if step < row:
        raise ImageConversionError(
            f"{msg.encoding} image {width}x{height}: step {step} is smaller than "
            f"width * bytes per pixel = {row}"
        )
    data = _buffer(msg.data)
    if data.size != height * step:
        raise ImageConversionError(
            f"{msg.encoding} image {width}x{height}: data has {data.size} bytes, expected "
            f"height * step = {height} * {step} = {height * step}"
        )
    dtype = np.dtype(np.uint8) if depth == 1 else np.dtype(">u2" if msg.is_bigendian else "<u2")
    view = np.ndarray(
        shape=(height, width, channels), dtype=dtype, buffer=data,
        strides=(step, channels * depth, depth),
    )
    view.flags.writeable = False  # it is the message's memory
    return view


def _buffer(data: Any) -> np.ndarray:
    """Message bytes as a flat uint8 array, sharing memory where the type allows it."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a list of ints (only when built by hand)
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _stretch_to_uint8(gray16: np.ndarray) -> np.ndarray:
    """Linear map of the frame's min..max to 0..255 (a constant frame gives zeros)."""
    native = gray16.astype(np.uint16, copy=False)  # big-endian data is byte-swapped here
    low, high = int(native.min()), int(native.max())
    if high == low:
        return np.zeros(native.shape, dtype=np.uint8)
    scaled = (native.astype(np.float32) - low) * (255.0 / (high - low))
    return np.rint(scaled).astype(np.uint8)


def _with_cv_bridge(msg: Image) -> np.ndarray:
    """Encodings we do not read ourselves: ROS cv_bridge when installed, else an error."""
    supported = ", ".join(ENCODINGS)
    try:
        from cv_bridge import CvBridge  # optional: rare encodings only
    except Exception:  # absent, or the PyPI cv-bridge failing to import next to numpy 2
        raise ImageConversionError(
            f"unsupported encoding {msg.encoding!r} (supported: {supported})"
        ) from None
    try:
        return CvBridge().imgmsg_to_cv2(msg, desired_encoding="bgr8")
    except Exception as err:  # cv_bridge raises several types
        raise ImageConversionError(
            f"unsupported encoding {msg.encoding!r} (supported: {supported}; cv_bridge: "
            f"{' '.join(str(err).split())})"
        ) from None
