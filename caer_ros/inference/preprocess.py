"""Image preprocessing: letterbox to the network input size, then ImageNet normalisation.

The network looks at the whole image once (BENet section 2.1, KA section 2), so every frame is
resized to the fixed network input size ``(H, W)``. Here the aspect ratio is kept (letterbox):
the image is scaled by ``scale = min(H / h, W / w)`` and **centred** on a canvas of the input
size, the border filled with the normalisation mean colour (which normalises to ~0). The
normalisation statistics default to ImageNet's; a model file can carry its own. The
:class:`Letterbox` record maps boxes between the two coordinate frames.

Coordinate convention (used by every module of ``caer_ros.inference``): continuous pixel
coordinates, pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)``; a box
``x1, y1, x2, y2`` therefore covers ``x2 - x1`` pixels in width. ``cv2.resize`` with
``INTER_LINEAR`` samples at pixel centres, so in this convention the resized image is exactly
``x_input = x_original * scale + pad_x`` (same for y).

Pipeline: :func:`letterbox` (uint8 in, uint8 RGB out, so training augmentations can run on it)
then :func:`normalize`; :func:`preprocess` does both for the per-frame path.

BENet's test path (the setting ``resize: short_side``) sizes the input by the frame instead:
:func:`short_side_size` gives the network input for a frame (short side to ``short_side``,
the long side kept in proportion and rounded up to a multiple of ``divisor``) and
:func:`center_warp` places the frame there as BENet's public code does: an affine warp
``x_in = s * (x - cx) + W / 2`` about the frame's centre pixel ``cx = floor(w / 2 + 0.5)``,
in OpenCV's convention (integer coordinates at pixel centres), black outside the frame. In
this module's convention that is ``x_input = x * s + pad_x`` with
``pad_x = W / 2 - s * cx + (1 - s) / 2``: the same :class:`Letterbox` record, with a
fractional offset. :func:`prepare` picks the path from the settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, images in 0..1
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# Fill colour of the letterbox border: the ImageNet mean as uint8 RGB (normalises to ~0).
PAD_RGB: tuple[int, int, int] = tuple(round(255 * m) for m in IMAGENET_MEAN)  # (124, 116, 104)


# Limits of the short-side path: the long side of the network input at most this many pixels
# (8:1 at a 512-pixel short side; a wider frame is not a camera image the model can read).
MAX_INPUT_SIDE = 4096


class FrameSizeError(ValueError):
    """A frame whose size the network cannot take (one line naming the size and the limit)."""


@dataclass(frozen=True)
class Letterbox:
    """How one image was placed on the network input: ``input = original * scale + pad``.

    ``original_size`` and ``input_size`` are ``(height, width)``. ``pad_x`` and ``pad_y`` are
    whole pixels for :func:`letterbox`, fractional for :func:`center_warp`.
    """

    scale: float
    pad_x: float
    pad_y: float
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(..., 4)`` boxes x1, y1, x2, y2 from original-image to network-input pixels."""
        b = _as_boxes(boxes)
        out = b * self.scale + self._offset()
        return out.astype(_float_dtype(boxes), copy=False)

    def to_original(self, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map ``(..., 4)`` boxes from network-input to original-image pixels.

        Exact inverse of :meth:`to_input`; with ``clip`` the result is clipped to the original
        image ``[0, width] x [0, height]`` (a box in the letterbox border collapses to the edge).
        """
        b = _as_boxes(boxes)
        out = (b - self._offset()) / self.scale
        if clip:
            h, w = self.original_size
            np.clip(out, 0.0, np.array([w, h, w, h], dtype=np.float64), out=out)
        return out.astype(_float_dtype(boxes), copy=False)

    def _offset(self) -> np.ndarray:
        return np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float64)


def letterbox(
    image: np.ndarray,
    input_size: tuple[int, int],
    *,
    rgb: bool = False,
    pad_rgb: tuple[int, int, int] = PAD_RGB,
) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` keeping its aspect ratio and centre it on an ``input_size`` canvas.

    ``image``: uint8, ``(h, w)`` grayscale, ``(h, w, 1)``, ``(h, w, 3)`` BGR (OpenCV order, or
    RGB with ``rgb=True``) or ``(h, w, 4)`` BGRA/RGBA (alpha dropped). ``input_size``:
    ``(H, W)`` of the network input. Returns the ``(H, W, 3)`` uint8 **RGB** canvas and the
    :class:`Letterbox` record. The left/top padding is ``floor`` of half the free space; the
    border is filled with ``pad_rgb``.
    """
    height, width = _check_size(input_size)
    _check_image(image)
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    # fx/fy (not dsize) so that OpenCV samples with exactly ``scale``; the output size is
    # round(w * scale) <= W. That makes Letterbox.to_input exact, not off by up to half a pixel.
    new_w = min(width, max(1, round(w * scale)))
    new_h = min(height, max(1, round(h * scale)))
    if (new_w, new_h) == (w, h):
        resized, scale = image, 1.0
    elif (new_w, new_h) == (round(w * scale), round(h * scale)):
        resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    else:  # a side would round to 0: tiny images, 1 pixel minimum
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    resized = _to_rgb(resized.reshape(new_h, new_w, -1), rgb)
    pad_x = (width - new_w) // 2
    pad_y = (height - new_h) // 2
    canvas = cv2.copyMakeBorder(  # much faster than a numpy fill with a 3-channel colour
        resized, pad_y, height - new_h - pad_y, pad_x, width - new_w - pad_x,
        cv2.BORDER_CONSTANT, value=tuple(int(v) for v in pad_rgb),
    )
    return canvas, Letterbox(float(scale), pad_x, pad_y, (h, w), (height, width))


def short_side_size(height: int, width: int, short_side: int = 512, divisor: int = 64
                    ) -> tuple[int, int]:
    """BENet's test input ``(H, W)`` for an ``height`` x ``width`` frame: the short side becomes
    ``short_side``, the long one ``short_side * long / short`` rounded up to a multiple of
    ``divisor`` (e.g. 600x400 -> 768x512 W x H, 1280x720 -> 960x512). Raises
    :class:`FrameSizeError` for an empty frame or one whose long side would exceed
    :data:`MAX_INPUT_SIDE`."""
    if height < 1 or width < 1:
        raise FrameSizeError(f"frame {width}x{height} (w x h) has no pixels")
    short, long = min(height, width), max(height, width)
    # integers: ceil(short_side * long / (short * divisor)) * divisor, no float rounding
    sized = -(-short_side * long // (short * divisor)) * divisor
    if sized > MAX_INPUT_SIDE:
        raise FrameSizeError(
            f"frame {width}x{height} (w x h) is too elongated: with its short side at "
            f"{short_side} px the network input would be {sized} px long, over the "
            f"{MAX_INPUT_SIDE} px limit (aspect ratio at most {MAX_INPUT_SIDE // short_side}:1)")
    return (short_side, sized) if height <= width else (sized, short_side)


def center_warp(image: np.ndarray, input_size: tuple[int, int], *, rgb: bool = False
                ) -> tuple[np.ndarray, Letterbox]:
    """Place ``image`` on an ``input_size`` (H, W) canvas by BENet's test-time affine warp.

    The scale is ``s = min(H, W) / min(h, w)`` (the short side fills the short side); the
    frame's centre pixel ``(cx, cy) = (floor(w / 2 + 0.5), floor(h / 2 + 0.5))`` goes to
    ``(W / 2, H / 2)`` in OpenCV's pixel-centre coordinates; bilinear sampling
    (``cv2.warpAffine``, ``INTER_LINEAR``); input pixels outside the frame are black. Images as
    for :func:`letterbox`; returns the (H, W, 3) uint8 RGB canvas and the placement in this
    module's convention (see the module docstring).
    """
    height, width = _check_size(input_size)
    _check_image(image)
    h, w = image.shape[:2]
    scale = min(height, width) / min(h, w)
    cx, cy = np.floor(w / 2 + 0.5), np.floor(h / 2 + 0.5)
    ox, oy = width / 2 - scale * cx, height / 2 - scale * cy
    matrix = np.array([[scale, 0.0, ox], [0.0, scale, oy]], dtype=np.float64)
    warped = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    canvas = _to_rgb(warped.reshape(height, width, -1), rgb)
    shift = 0.5 * (1.0 - scale)  # OpenCV's pixel-centre coordinates -> pixel k covers [k, k+1)
    return canvas, Letterbox(float(scale), float(ox + shift), float(oy + shift), (h, w),
                             (height, width))


def input_size_for(image_size: tuple[int, int], resize: str, fixed: tuple[int, int],
                   short_side: int = 512, divisor: int = 64) -> tuple[int, int]:
    """The network input (H, W) for a frame of ``image_size`` (h, w): ``fixed`` (the model's
    ``input_size``) with ``resize`` ``letterbox``, :func:`short_side_size` with ``short_side``.
    """
    if resize == "letterbox":
        if image_size[0] < 1 or image_size[1] < 1:
            raise FrameSizeError(f"frame {image_size[1]}x{image_size[0]} (w x h) has no pixels")
        return tuple(fixed)
    if resize == "short_side":
        return short_side_size(*image_size, short_side, divisor)
    raise ValueError(f"resize must be letterbox or short_side, got {resize!r}")


def prepare(image: np.ndarray, input_size: tuple[int, int], resize: str = "letterbox", *,
            rgb: bool = False, mean: tuple[float, float, float] = IMAGENET_MEAN,
            std: tuple[float, float, float] = IMAGENET_STD, out: np.ndarray | None = None
            ) -> tuple[np.ndarray, Letterbox]:
    """One frame -> network input of ``input_size`` by ``resize``: :func:`preprocess`
    (``letterbox``) or :func:`center_warp` then :func:`normalize` (``short_side``; the size from
    :func:`input_size_for`)."""
    if resize == "letterbox":
        return preprocess(image, input_size, rgb=rgb, mean=mean, std=std, out=out)
    canvas, placement = center_warp(image, input_size, rgb=rgb)
    return normalize(canvas, mean, std, out=out), placement


def normalize(
    image_rgb: np.ndarray,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(1, 3, H, W)`` float32, ``(x / 255 - mean) / std``.

    ``out``: a C-contiguous ``(1, 3, H, W)`` float32 array to write into (and return), so a
    per-frame caller reuses one buffer.
    """
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(
            f"normalize expects an (H, W, 3) uint8 RGB image, got {image_rgb.dtype} "
            f"{image_rgb.shape}"
        )
    mean_a, std_a = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean_a.shape != (3,) or std_a.shape != (3,) or not (std_a > 0).all():
        raise ValueError(f"mean and std must be 3 numbers (std > 0), got {mean!r}, {std!r}")
    scale = (1.0 / (255.0 * std_a)).astype(np.float32)
    bias = (-mean_a / std_a).astype(np.float32)
    shape = (1, 3, *image_rgb.shape[:2])
    if out is None:
        out = np.empty(shape, dtype=np.float32)  # C-contiguous NCHW
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}, got "
                         f"{out.dtype} {out.shape}")
    for c in range(3):  # one plane at a time: contiguous writes, no broadcasting over HWC
        np.multiply(image_rgb[..., c], scale[c], out=out[0, c], dtype=np.float32)
        out[0, c] += bias[c]
    return out


def preprocess(
    image: np.ndarray,
    input_size: tuple[int, int],
    *,
    rgb: bool = False,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, Letterbox]:
    """One frame -> network input: :func:`letterbox` then :func:`normalize`.

    The border gets the ``mean`` colour (0 after normalisation). Returns the
    ``(1, 3, H, W)`` float32 array (``out`` when given; ``torch.from_numpy`` shares its memory)
    and the :class:`Letterbox` that maps the decoded boxes back to ``image`` pixels.
    """
    canvas, placement = letterbox(image, input_size, rgb=rgb, pad_rgb=mean_color(mean))
    return normalize(canvas, mean, std, out=out), placement


def mean_color(mean: tuple[float, float, float] = IMAGENET_MEAN) -> tuple[int, int, int]:
    """A normalisation mean (RGB in 0..1) as the nearest uint8 RGB colour."""
    return tuple(int(np.clip(round(255 * float(m)), 0, 255)) for m in mean)


def _check_size(input_size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be (height, width), got {input_size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"input_size must be positive, got {input_size!r}")
    return height, width


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8, got {image.dtype}")
    if image.ndim not in (2, 3):
        raise ValueError(
            f"image must be (h, w) or (h, w, channels), got {image.ndim} dimensions "
            f"{image.shape}"
        )
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"image must have 1, 3 or 4 channels (gray, BGR/RGB, BGRA/RGBA), got "
            f"{image.shape[2]}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: size {image.shape[1]}x{image.shape[0]} (w x h)")


def _to_rgb(image: np.ndarray, rgb: bool) -> np.ndarray:
    """(h, w, c) uint8 with c in 1, 3, 4 -> (h, w, 3) RGB."""
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB if rgb else cv2.COLOR_BGRA2RGB)
    return image if rgb else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4) x1, y1, x2, y2, got {b.shape}")
    return b


def _float_dtype(boxes: np.ndarray) -> np.dtype:
    """float32 (or smaller) boxes come back as float32, float64 and integers as float64."""
    return np.result_type(np.asarray(boxes).dtype, np.float32)
