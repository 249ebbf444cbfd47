"""The one structure every dataset loader returns: a list of :class:`ImageRecord`.

A record holds what training and evaluation need about one image: where it is, its size, and the
annotated people. Each person has a box ``x1, y1, x2, y2`` in image pixels (already clipped to the
image), a multi-hot vector over the dataset's category set (:mod:`caer_ros.labels`, index ``i``
is the set's ``i``-th name) and the continuous valence/arousal/dominance on the datasets' 1..10
scale (NaN where not annotated).

Loaders never drop anything silently: people without a usable box are counted in the
:class:`LoadReport` with the reason, and so are category values that had to be mapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from caer_ros.labels import category_set


@dataclass
class PersonRecord:
    """One annotated person: box (pixels), multi-hot categories, continuous (3,) in 1..10 or NaN."""

    box: tuple[float, float, float, float]
    categories: np.ndarray
    continuous: np.ndarray

    @property
    def category_indices(self) -> list[int]:
        """Indices of the categories this person is annotated with, ascending."""
        return [int(i) for i in np.flatnonzero(self.categories)]


@dataclass
class ImageRecord:
    """One image and its annotated people. ``split`` is the split the source put it in."""

    path: Path
    width: int
    height: int
    people: list[PersonRecord]
    split: str
    category_set: str

    @property
    def categories(self) -> tuple[str, ...]:
        """Names of the category set, in the order of every person's ``categories`` vector."""
        return category_set(self.category_set)


@dataclass
class SkippedPerson:
    """A person a loader left out, where it was, and why."""

    where: str
    reason: str


@dataclass
class LoadReport:
    """What a loader read, skipped and mapped."""

    source: str
    images: int = 0
    people: int = 0
    skipped: list[SkippedPerson] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        self.skipped.append(SkippedPerson(where, reason))

    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.skipped:
            counts[s.reason] = counts.get(s.reason, 0) + 1
        return counts

    def summary(self) -> str:
        text = f"{self.source}: {self.images} images, {self.people} people"
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped_by_reason().items()))
            text += f"; skipped {len(self.skipped)} people ({reasons})"
        if self.mapped:
            text += f"; mapped {len(self.mapped)} category values"
        return text


def clip_box(
    box: tuple[float, float, float, float] | np.ndarray, width: int, height: int
) -> tuple[tuple[float, float, float, float] | None, str]:
    """Clip ``x1, y1, x2, y2`` to the image. Returns ``(box, "")`` or ``(None, reason)``.

    Reasons: ``"not a box"`` (not 4 numbers), ``"non-finite box"`` (NaN/inf), ``"outside the
    image"`` (nothing left after clipping), ``"zero area"`` (degenerate inside the image).
    """
    values = np.asarray(box, dtype=np.float64).ravel()
    if values.size != 4:
        return None, "not a box"
    if not all(math.isfinite(v) for v in values):
        return None, "non-finite box"
    x1, y1, x2, y2 = (float(v) for v in values)
    if x2 <= x1 or y2 <= y1:
        return None, "zero area"
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return None, "outside the image"
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 <= cx1 or cy2 <= cy1:
        return None, "zero area"
    return (cx1, cy1, cx2, cy2), ""


def multi_hot(indices: list[int] | tuple[int, ...], size: int) -> np.ndarray:
    """A float32 vector of ``size`` with ones at ``indices``."""
    vec = np.zeros(size, dtype=np.float32)
    vec[list(indices)] = 1.0
    return vec
