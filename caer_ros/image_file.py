"""The one reader of image files: whole images or a clear error naming the file.

OpenCV decodes a JPEG that was cut short (an interrupted copy or download) into an image whose
missing part is grey, and says so only in a libjpeg warning without the file's name. Training
on such an image teaches the network wrong labels, so every reader here checks that the file
is whole before it trusts it:

- JPEG: the marker segments up to the first scan are read one by one (a header cut short or
  malformed is an error), and the end-of-image marker must follow the scan;
- PNG: the ``IHDR`` header and the closing ``IEND`` chunk must be there;
- other formats OpenCV reads (BMP, WebP, TIFF, ...) are decoded.

:func:`image_info` reads only the header and the end of the file (cheap enough to check every
image of a dataset when it is loaded); :func:`read_image` checks the same on the bytes it
decodes. Both raise :class:`ImageFileError`, whose message starts with the path.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import cv2
import numpy as np

_JPEG = b"\xff\xd8"
_PNG = b"\x89PNG\r\n\x1a\n"
_EOI = b"\xff\xd9"
_TAIL = 4096  # bytes of the file's end searched first for the closing marker
# start-of-frame markers (all but DHT C4, JPG C8, DAC CC) carry the image size
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


_UNDECODABLE = "not an image OpenCV can decode (unsupported format or corrupted data)"


class ImageFileError(ValueError):
    """An image file that is missing, unreadable, cut short or not an image. ``str()`` is
    ``"<path>: <reason>"``; ``detail`` is what is wrong without the path or a preamble."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.detail = detail or reason


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: size in pixels and the format (``jpeg``, ``png`` or ``other``)."""

    width: int
    height: int
    format: str


def image_info(path: str | os.PathLike) -> ImageInfo:
    """Size and format of the image file ``path``, after checking the file is whole. The size
    is the stored one: :func:`read_image` turns a photo upright by its EXIF orientation, which
    may swap width and height.

    Raises:
        ImageFileError: missing, unreadable, empty, cut short, malformed, or not an image.
    """
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            return _inspect(stream, size, path)
    except OSError as error:
        raise _unreadable(path, error) from None


def read_image(path: str | os.PathLike, rgb: bool = False) -> np.ndarray:
    """The image file ``path`` as (h, w, 3) uint8, BGR (OpenCV's order) or ``rgb``.

    Raises:
        ImageFileError: as :func:`image_info`, or OpenCV cannot decode it.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise _unreadable(path, error) from None
    _inspect(io.BytesIO(data.tobytes()), int(data.size), path, decode=False)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # turned upright by its EXIF orientation
    if image is None or image.size == 0:
        raise ImageFileError(path, _UNDECODABLE)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image


def _unreadable(path: str | os.PathLike, error: OSError) -> ImageFileError:
    if isinstance(error, FileNotFoundError):
        return ImageFileError(path, "no such file")
    if isinstance(error, IsADirectoryError):
        return ImageFileError(path, "a folder, not an image file")
    return ImageFileError(path, f"cannot be read ({error.strerror or error})")


def _inspect(stream: BinaryIO, size: int, path: str | os.PathLike, decode: bool = True
             ) -> ImageInfo:
    if size == 0:
        raise ImageFileError(path, "empty file")
    head = stream.read(32)
    try:
        if head.startswith(_JPEG):
            return _jpeg(stream, size)
        if head.startswith(_PNG):
            return _png(stream, head, size)
    except _Broken as error:
        raise ImageFileError(path, f"not an image that can be read ({error})", str(error)) from None
    if not decode:
        return ImageInfo(0, 0, "other")
    stream.seek(0)
    image = cv2.imdecode(np.frombuffer(stream.read(), np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageFileError(path, _UNDECODABLE)
    return ImageInfo(int(image.shape[1]), int(image.shape[0]), "other")


class _Broken(Exception):
    pass


def _exactly(stream: BinaryIO, count: int, what: str) -> bytes:
    data = stream.read(count)
    if len(data) < count:
        raise _Broken(f"JPEG cut short in its {what}")
    return data


def _jpeg(stream: BinaryIO, size: int) -> ImageInfo:
    stream.seek(2)
    width = height = None
    while True:
        marker = _exactly(stream, 2, "header")
        if marker[0] != 0xFF:
            raise _Broken("malformed JPEG header: a marker was expected")
        kind = marker[1]
        while kind == 0xFF:  # fill bytes before a marker
            kind = _exactly(stream, 1, "header")[0]
        if kind == 0x01 or 0xD0 <= kind <= 0xD8:  # markers without a segment
            continue
        if kind == 0xD9:
            raise _Broken("JPEG ends before any image data")
        (length,) = struct.unpack(">H", _exactly(stream, 2, "header"))
        if length < 2:
            raise _Broken("malformed JPEG header: a segment length below 2")
        if kind == 0xDA:  # start of scan: the compressed image data follows
            break
        if kind in _SOF:
            segment = _exactly(stream, length - 2, "header")
            if len(segment) < 5:
                raise _Broken("malformed JPEG frame header")
            height, width = struct.unpack(">xHH", segment[:5])
        else:  # skipped unread (EXIF and its thumbnail, ICC profiles, tables)
            end = stream.tell() + length - 2
            if end > size:
                raise _Broken("JPEG cut short in its header")
            stream.seek(end)
    if not width or not height:
        raise _Broken("JPEG without a frame header giving its size")
    scan = stream.tell()
    start = max(scan, size - _TAIL)
    stream.seek(start)
    if _EOI not in stream.read():
        stream.seek(scan)
        if start == scan or _EOI not in stream.read():
            raise _Broken("JPEG cut short: its image data has no end marker, a truncated file")
    return ImageInfo(int(width), int(height), "jpeg")


def _png(stream: BinaryIO, head: bytes, size: int) -> ImageInfo:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise _Broken("PNG cut short or malformed in its header")
    width, height = struct.unpack(">II", head[16:24])
    if not width or not height:
        raise _Broken("PNG header gives a zero size")
    start = max(0, size - 4096)
    stream.seek(start)
    if b"IEND" not in stream.read():
        stream.seek(0)
        if start == 0 or b"IEND" not in stream.read():
            raise _Broken("PNG cut short: no IEND chunk, a truncated file")
    return ImageInfo(int(width), int(height), "png")
