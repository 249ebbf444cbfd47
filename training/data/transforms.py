"""BENet's data processing (BENet section 3.3): pre-transforms, then box-keeping augmentations.

**Part 1, pre-transforms** (one drawn per image by :func:`draw_pre_transform`; the drawn name
decides which head the image trains). Each takes ``(sample, rng)`` and returns a new
:class:`Sample`, or ``None`` when it cannot be drawn for that image; the input arrays are never
modified.

- :func:`extract_subject` (*ExtractSubject*, person-centric head): crop around one subject whose
  box "does not contain other people". Rule used here: subject ``i`` is **eligible** when no
  other person ``j`` has more than 50 % of the area of ``j``'s box inside ``i``'s box (boxes
  clipped to the image, no margin; a box of zero area after clipping is never eligible and
  never counts as contained). One eligible subject is picked uniformly; the crop is its box
  enlarged by ``margin`` of its width/height on each side, clipped to the image and rounded
  outward to whole pixels. The result holds exactly that subject's row.
- :func:`mask_all_subjects` (*MaskAllSubjects*, background head): every person's box is filled
  with the mean colour, only when the **sum** of the box areas (clipped to the image; the
  paper's rule, not the union) is at most ``max_cover`` (40 %) of the image area. Rows are
  kept: the background target (the max over people of the labels) is the trainer's business.
- :func:`random_mask_subjects` (*RandomMaskSubjects*, bottom-up head): with ``K >= 2`` people,
  a keep-count ``n`` is drawn uniformly in ``1..K`` (``1..K-1`` with ``allow_keep_all=False``)
  and then a uniformly random set of ``n`` people is kept; the others' boxes are filled,
  except the pixels inside a kept person's box (kept people stay intact); only the kept rows
  are returned. Keeping everyone is allowed by default: it is the only way the bottom-up head
  sees the complete multi-person images it meets at inference, and ``K == 1`` is unmasked too.
- :func:`raw`: the image as is (detection head).

**Part 2, augmentations** (:func:`augment`), at network-input size on uint8 RGB: geometric
first (:func:`geometric`: horizontal flip, random perspective), then photometric
(:func:`photometric`: colour jitter, Gaussian blur, Gaussian noise). Boxes follow the geometry:
a box is clipped to the image, its 4 corners are mapped through the homography and it is
replaced by their enclosing box (a homography maps the box to a convex quadrilateral that
contains the transformed person, so the enclosing box does too), then clipped again. A box
with no area inside the image is dropped; after a perspective warp, so is a box narrower or
shorter than ``min_box_side`` (e.g. pushed out of the image, or shrunk to a few pixels).

Coordinates: continuous pixel coordinates as in :mod:`caer_ros.inference.preprocess`; pixel
``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)``. The pixels of a box (for masking)
are those it touches: columns ``floor(x1) .. ceil(x2) - 1``, rows likewise, clipped to the
image, so a fractional box is masked completely.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from numbers import Real
from typing import ClassVar

import cv2
import numpy as np

from caer_ros.config_data import ConfigData
from caer_ros.inference.boxes import areas as box_areas
from caer_ros.inference.boxes import intersections, subject_crop
from caer_ros.inference.preprocess import PAD_RGB

Fill = tuple[int, int, int] | float


@dataclass
class Sample:
    """One training image in pixel space."""

    image: np.ndarray  # (h, w, 3) uint8 RGB
    boxes: np.ndarray  # (K, 4) float32 x1, y1, x2, y2 in pixels of `image` (continuous coords)
    labels: np.ndarray  # (K, E) float32 category labels (multi-hot or one-hot)
    continuous: np.ndarray  # (K, 3) float32 valence/arousal/dominance, NaN where unknown

    def __post_init__(self) -> None:
        k = len(self.boxes)
        if self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"Sample.image must be (h, w, 3), got {self.image.shape}")
        if self.boxes.shape != (k, 4):
            raise ValueError(f"Sample.boxes must be (K, 4), got {self.boxes.shape}")
        if self.labels.ndim != 2 or len(self.labels) != k:
            raise ValueError(f"Sample.labels must be ({k}, E), got {self.labels.shape}")
        if self.continuous.shape != (k, 3):
            raise ValueError(f"Sample.continuous must be ({k}, 3), got {self.continuous.shape}")

    def __len__(self) -> int:
        """Number of people."""
        return len(self.boxes)

    def subset(self, keep: np.ndarray) -> Sample:
        """The people selected by ``keep`` (a bool mask of length K, or row indices).

        The image array is shared, the row arrays are new.
        """
        keep = np.asarray(keep)
        if keep.dtype == bool and keep.shape != (len(self),):
            raise ValueError(f"keep mask must have shape ({len(self)},), got {keep.shape}")
        return Sample(self.image, self.boxes[keep], self.labels[keep], self.continuous[keep])

    def copy(self) -> Sample:
        """A deep copy (every array copied)."""
        return Sample(self.image.copy(), self.boxes.copy(), self.labels.copy(),
                      self.continuous.copy())


# --------------------------------------------------------------------------------------------
# Part 1: pre-transforms


def _clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(K, 4)`` boxes clipped to ``[0, width] x [0, height]``, float64."""
    limit = np.array([width, height, width, height], dtype=np.float64)
    return np.clip(boxes.astype(np.float64), 0.0, limit)


def _pixel_window(box: np.ndarray, height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns of the pixels that ``box`` touches, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    c0, c1 = max(0, math.floor(x1)), min(width, math.ceil(x2))
    r0, r1 = max(0, math.floor(y1)), min(height, math.ceil(y2))
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _boxes_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(h, w)`` bool: pixels touched by any of ``boxes``."""
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        mask[_pixel_window(box, height, width)] = True
    return mask


def eligible_subjects(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(K,)`` bool: whose box "does not contain other people" (see the module docstring).

    ``i`` is eligible iff its clipped box has positive area and, for every other ``j`` with a
    positive clipped area, ``area(box_i & box_j) <= 0.5 * area(box_j)``.
    """
    b = _clip_boxes(np.asarray(boxes).reshape(-1, 4), height, width)
    areas = box_areas(b)
    inter = intersections(b, b)  # [i, j]
    contains = (inter > 0.5 * areas[None, :]) & (areas[None, :] > 0)
    np.fill_diagonal(contains, False)
    return (areas > 0) & ~contains.any(axis=1)


def extract_subject(sample: Sample, rng: np.random.Generator, margin: float = 0.1
                    ) -> Sample | None:
    """*ExtractSubject*: crop around one uniformly drawn eligible subject (BENet 3.3).

    The crop is the subject's box enlarged by ``margin`` of its size on each side, clipped to
    the image, rounded outward to whole pixels. Returns the crop with exactly one row, the
    subject's box (clipped to the image) in crop coordinates; ``None`` when nobody is eligible.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    height, width = sample.image.shape[:2]
    candidates = np.flatnonzero(eligible_subjects(sample.boxes, height, width))
    if len(candidates) == 0:
        return None
    i = int(candidates[rng.integers(len(candidates))])
    x1, y1, x2, y2 = _clip_boxes(sample.boxes[i:i + 1], height, width)[0]
    r0, r1, c0, c1 = subject_crop((x1, y1, x2, y2), height, width, margin)
    box = np.array([[x1 - c0, y1 - r0, x2 - c0, y2 - r0]], dtype=sample.boxes.dtype)
    return Sample(sample.image[r0:r1, c0:c1].copy(), box, sample.labels[i:i + 1].copy(),
                  sample.continuous[i:i + 1].copy())


def mask_all_subjects(sample: Sample, rng: np.random.Generator, max_cover: float = 0.4,
                      fill: Fill = PAD_RGB) -> Sample | None:
    """*MaskAllSubjects*: fill every person's box with ``fill`` (BENet 3.3).

    Only when the sum of the box areas (clipped to the image) is at most ``max_cover`` of the
    image area; otherwise, or without people, ``None``. The rows are returned unchanged.
    ``rng`` is unused (the transform is deterministic); it keeps the common signature.
    """
    if len(sample) == 0:
        return None
    height, width = sample.image.shape[:2]
    covered = float(box_areas(_clip_boxes(sample.boxes, height, width)).sum())
    if covered > max_cover * height * width * (1 + 1e-9):  # 1e-9: 40 % exactly is allowed
        return None
    image = sample.image.copy()
    image[_boxes_mask(sample.boxes, height, width)] = fill
    return Sample(image, sample.boxes.copy(), sample.labels.copy(), sample.continuous.copy())


def random_mask_subjects(sample: Sample, rng: np.random.Generator, fill: Fill = PAD_RGB,
                         allow_keep_all: bool = True) -> Sample | None:
    """*RandomMaskSubjects*: mask a random set of people, always keeping one (BENet 3.3).

    With ``K >= 2``: a keep-count ``n`` uniform in ``1..K`` (``1..K-1`` when not
    ``allow_keep_all``), then a uniform set of ``n`` people to keep. The boxes of the others
    are filled with ``fill`` except the pixels inside kept boxes; only the kept rows are
    returned, in their original order. ``K == 1``: an unchanged copy. ``K == 0``: ``None``.
    """
    k = len(sample)
    if k == 0:
        return None
    if k == 1:
        return sample.copy()
    n = int(rng.integers(1, k + 1 if allow_keep_all else k))
    keep = np.zeros(k, dtype=bool)
    keep[rng.choice(k, size=n, replace=False)] = True
    image = sample.image.copy()
    if not keep.all():
        height, width = image.shape[:2]
        masked = _boxes_mask(sample.boxes[~keep], height, width)
        masked &= ~_boxes_mask(sample.boxes[keep], height, width)
        image[masked] = fill
    return Sample(image, sample.boxes[keep], sample.labels[keep], sample.continuous[keep])


def raw(sample: Sample, rng: np.random.Generator) -> Sample:
    """The image as is (a copy); trains the detection head (BENet 3.3)."""
    return sample.copy()


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


PreTransform = Callable[[Sample, np.random.Generator], "Sample | None"]

PRE_TRANSFORMS: dict[str, PreTransform] = {
    "raw": raw,
    "random_mask": random_mask_subjects,
    "extract_subject": extract_subject,
    "mask_all": mask_all_subjects,
}


def check_probabilities(probabilities: Mapping[str, float]) -> dict[str, float]:
    """Validate pre-transform probabilities; returns the positive ones in registry order.

    Raises ``ValueError`` for an unknown name, a negative or non-finite value, or all zero.
    The values need not sum to 1 (they are normalised when drawing).
    """
    unknown = sorted(set(probabilities) - set(PRE_TRANSFORMS))
    if unknown:
        raise ValueError(f"unknown pre-transform(s) {unknown}; known: {list(PRE_TRANSFORMS)}")
    for name, p in probabilities.items():
        if not _is_number(p) or p < 0:
            raise ValueError(f"probability of pre-transform {name!r} must be a finite number "
                             f">= 0, got {p!r}")
    positive = {n: float(probabilities[n]) for n in PRE_TRANSFORMS if probabilities.get(n, 0) > 0}
    if not positive:
        raise ValueError(f"pre-transform probabilities are all zero: {dict(probabilities)}")
    return positive


def draw_pre_transform(sample: Sample, probabilities: Mapping[str, float],
                       rng: np.random.Generator, max_cover: float = 0.4, margin: float = 0.1
                       ) -> tuple[str, Sample]:
    """Draw one pre-transform by ``probabilities`` and apply it; returns ``(name, sample)``.

    Names absent or at 0 are never drawn. When the drawn one does not apply (returns
    ``None``), it is removed and another is drawn among the rest, renormalised. When none
    applies: ``"raw"`` if it has p > 0, else ``"random_mask"`` (applicable to any ``K >= 1``).
    Without people: ``("raw", copy)`` whatever the probabilities. Deterministic given ``rng``.
    """
    weights = check_probabilities(probabilities)
    if len(sample) == 0:
        return "raw", raw(sample, rng)
    names = list(weights)
    while names:
        p = np.array([weights[n] for n in names])
        name = names[int(rng.choice(len(names), p=p / p.sum()))]
        out = _apply(name, sample, rng, max_cover, margin)
        if out is not None:
            return name, out
        names.remove(name)
    # here raw and random_mask have p = 0 (either always applies when K >= 1)
    return "random_mask", random_mask_subjects(sample, rng)


def _apply(name: str, sample: Sample, rng: np.random.Generator, max_cover: float,
           margin: float) -> Sample | None:
    if name == "mask_all":
        return mask_all_subjects(sample, rng, max_cover=max_cover)
    if name == "extract_subject":
        return extract_subject(sample, rng, margin=margin)
    return PRE_TRANSFORMS[name](sample, rng)


# --------------------------------------------------------------------------------------------
# Part 2: augmentations


@dataclass(frozen=True)
class AugmentConfig(ConfigData):
    """Probabilities and magnitudes of the augmentations (BENet 3.3, second part).

    Colour jitter factors follow torchvision's ``ColorJitter``: brightness, contrast and
    saturation factors uniform in ``[max(0, 1 - m), 1 + m]``, a hue shift uniform in
    ``[-hue, hue]`` of the colour circle, applied in a random order.
    """

    config_name: ClassVar[str] = "augment"

    noise_p: float = 0.5
    noise_std: float = 8.0  # Gaussian noise, std in 0..255 units
    blur_p: float = 0.3
    blur_max_sigma: float = 1.5  # Gaussian blur, sigma uniform in (0.1, max)
    jitter_p: float = 0.8
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.03  # fraction of the circle, <= 0.5
    flip_p: float = 0.5  # horizontal flip
    perspective_p: float = 0.3
    perspective_scale: float = 0.15  # each corner moved inward by up to scale * side, < 0.5
    min_box_side: float = 2.0  # boxes narrower/shorter than this after a warp are dropped

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not _is_number(value):
                raise ValueError(f"AugmentConfig.{f.name} must be a finite number, got {value!r}")
            if f.name.endswith("_p") and not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{f.name} is a probability in [0, 1], got {value}")
            if value < 0:
                raise ValueError(f"AugmentConfig.{f.name} must be >= 0, got {value}")
        if self.hue > 0.5:
            raise ValueError(f"AugmentConfig.hue must be <= 0.5, got {self.hue}")
        if self.perspective_scale >= 0.5:
            raise ValueError("AugmentConfig.perspective_scale must be < 0.5 (corners would "
                             f"cross), got {self.perspective_scale}")

    @classmethod
    def off(cls) -> AugmentConfig:
        """Every probability 0: :func:`augment` is the identity."""
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name.endswith("_p")})


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _border(fill: Fill) -> tuple[float, ...]:
    """cv2's border value: a scalar fill is repeated on every channel."""
    values = np.asarray(fill, dtype=np.float64).ravel()
    return tuple(float(v) for v in (np.repeat(values, 4) if values.size == 1 else values))


def map_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(K, 4)`` boxes -> enclosing boxes of their 4 corners mapped by the 3x3 ``matrix``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xs, ys = b[:, [0, 2, 2, 0]], b[:, [1, 1, 3, 3]]
    pts = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ matrix.T  # (K, 4, 3)
    px, py = pts[..., 0] / pts[..., 2], pts[..., 1] / pts[..., 2]
    return np.stack([px.min(1), py.min(1), px.max(1), py.max(1)], axis=1)


def geometric(image: np.ndarray, boxes: np.ndarray, config: AugmentConfig,
              rng: np.random.Generator, fill: Fill = PAD_RGB
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random horizontal flip then random perspective; returns ``(image, boxes, keep, matrix)``.

    ``image``: ``(h, w)`` or ``(h, w, C)``, any dtype cv2 warps. ``matrix``: the 3x3 homography
    from input to output continuous pixel coordinates (identity when nothing was drawn).
    ``boxes``: all ``K`` boxes mapped and clipped (same dtype as given; a dropped row holds
    whatever its box became), ``keep``: ``(K,)`` bool, the survivors: use ``boxes[keep]``.
    The random draws depend only on the image size, so calling this twice with equally seeded
    generators on two images of the same size (e.g. an image and a mask) applies the same warp.
    """
    height, width = image.shape[:2]
    flip = rng.random() < config.flip_p
    warp = rng.random() < config.perspective_p
    matrix = np.eye(3)
    if flip:  # x' = W - x
        matrix = np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    if warp:
        src = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
        inward = rng.uniform(0.0, config.perspective_scale, size=(4, 2)) * [width, height]
        dst = src + inward * np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        matrix = cv2.getPerspectiveTransform(src.astype(np.float32),
                                             dst.astype(np.float32)) @ matrix
        # cv2 works on pixel indices; pixel j's centre is at continuous j + 0.5
        on_indices = _translation(-0.5, -0.5) @ matrix @ _translation(0.5, 0.5)
        out = cv2.warpPerspective(image, on_indices, (width, height), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=_border(fill))
        out = out.reshape(image.shape)
    elif flip:
        out = np.ascontiguousarray(image[:, ::-1])
    else:
        out = image.copy()
    # clip first: the homography would carry a box's outside part into the filled border
    clipped = _clip_boxes(np.asarray(boxes).reshape(-1, 4), height, width)
    mapped = _clip_boxes(map_boxes(clipped, matrix), height, width) if flip or warp else clipped
    sides = np.minimum(mapped[:, 2] - mapped[:, 0], mapped[:, 3] - mapped[:, 1])
    keep = (box_areas(clipped) > 0) & (sides >= config.min_box_side if warp else sides > 0)
    return out, mapped.astype(np.asarray(boxes).dtype), keep, matrix


def _jitter(x: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """torchvision-like ColorJitter on float32 RGB in 0..255 (clamped after each step)."""
    for op in rng.permutation(4):
        if op == 0 and config.brightness > 0:
            f = rng.uniform(max(0.0, 1 - config.brightness), 1 + config.brightness)
            x = x * np.float32(f)
        elif op == 1 and config.contrast > 0:
            f = rng.uniform(max(0.0, 1 - config.contrast), 1 + config.contrast)
            mean = float(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).mean())
            x = x * np.float32(f) + np.float32((1 - f) * mean)
        elif op == 2 and config.saturation > 0:
            f = rng.uniform(max(0.0, 1 - config.saturation), 1 + config.saturation)
            gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
            x = x * np.float32(f) + gray * np.float32(1 - f)
        elif op == 3 and config.hue > 0:
            shift = rng.uniform(-config.hue, config.hue) * 360.0
            hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float: H in degrees [0, 360)
            hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(shift), np.float32(360.0))
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        else:
            continue
        np.clip(x, 0.0, 255.0, out=x)
    return x


def photometric(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator
                ) -> np.ndarray:
    """Random colour jitter, Gaussian blur, Gaussian noise on ``(h, w, 3)`` uint8 RGB.

    Returns a new uint8 image of the same shape; pixels move in value only, never in place.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"photometric expects (h, w, 3) uint8 RGB, got {image.dtype} "
                         f"{image.shape}")
    jitter = rng.random() < config.jitter_p
    blur = rng.random() < config.blur_p
    noise = rng.random() < config.noise_p
    if not (jitter or blur or noise):
        return image.copy()
    x = image.astype(np.float32)
    if jitter:
        x = _jitter(x, config, rng)
    if blur:
        sigma = rng.uniform(min(0.1, config.blur_max_sigma), config.blur_max_sigma)
        if sigma > 0:
            x = cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma)
    if noise and config.noise_std > 0:
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(config.noise_std)
    np.clip(x, 0.0, 255.0, out=x)
    return np.rint(x).astype(np.uint8)


def augment(image: np.ndarray, boxes: np.ndarray, config: AugmentConfig,
            rng: np.random.Generator, fill: Fill = PAD_RGB
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BENet 3.3's augmentations: :func:`geometric` then :func:`photometric`.

    ``image``: ``(h, w, 3)`` uint8 RGB at network-input size; ``boxes``: ``(K, 4)``. Returns
    ``(image, boxes, keep)``: the new image (same shape, uint8), all ``K`` boxes transformed and
    clipped to the image, and the ``(K,)`` bool mask of the survivors: ``boxes[keep]`` and the
    label rows ``[keep]`` are what remains (or use :func:`augment_sample`).
    """
    out, boxes, keep, _ = geometric(image, boxes, config, rng, fill)
    return photometric(out, config, rng), boxes, keep


def augment_sample(sample: Sample, config: AugmentConfig, rng: np.random.Generator,
                   fill: Fill = PAD_RGB) -> Sample:
    """:func:`augment` on a :class:`Sample`: the survivors' rows with their new boxes."""
    image, boxes, keep = augment(sample.image, sample.boxes, config, rng, fill)
    return replace(sample.subset(keep), image=image, boxes=boxes[keep])
