"""The one structure every dataset loader returns: a list of :class:`ImageRecord`.

A record holds what training and evaluation need about one image: where it is, its size, and the
annotated people. Each person has a box ``x1, y1, x2, y2`` in image pixels (already clipped to the
image), a multi-hot vector over the dataset's category set (:mod:`caer_ros.labels`, index ``i``
is the set's ``i``-th name) and the continuous valence/arousal/dominance on the datasets' 1..10
scale (NaN where not annotated).

Loaders never drop anything silently: people without a usable box or category, images that
cannot be read, values left out and category values that had to be mapped are counted in the
:class:`LoadReport` with the place and the reason; its :meth:`~LoadReport.warnings` name them.

The record validator is here, shared by every loader, so a bad value means the same for EMOTIC
and HECO in training, evaluation and teacher training:

- :func:`clip_box`: a box that is not 4 finite numbers, or has no area inside the image, is
  skipped;
- :func:`match_category`: a category value equal to a known name up to case and surrounding
  space, or an unambiguous misspelling of one (one name within a small edit distance, no other
  as close), is mapped and reported; anything else is the loader's to skip or refuse;
- :func:`continuous_values`: a valence/arousal/dominance value that is not a number in 1..10
  is left out (NaN, "not annotated") and counted;
- :func:`checked_image_size`: the image file is checked whole
  (:func:`caer_ros.image_file.image_info`); an unreadable one is skipped with its people, an
  annotated size that is not a positive number or differs from the file's is replaced by the
  file's and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caer_ros.image_file import ImageFileError, image_info
from caer_ros.labels import category_set

CONTINUOUS_RANGE = (1.0, 10.0)  # the datasets' valence/arousal/dominance scale


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
    """One image and its annotated people. ``split`` is the split the source put it in;
    ``names``: the categories of a set of the data's own (a lab's COCO folder), empty for the
    known sets of :mod:`caer_ros.labels`."""

    path: Path
    width: int
    height: int
    people: list[PersonRecord]
    split: str
    category_set: str
    names: tuple[str, ...] = ()

    @property
    def categories(self) -> tuple[str, ...]:
        """Names of the category set, in the order of every person's ``categories`` vector."""
        return self.names or category_set(self.category_set)


@dataclass
class SkippedPerson:
    """A person (or image, or value) a loader left out or changed, where it was, and why."""

    where: str
    reason: str


def _by_reason(entries: list[SkippedPerson]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in entries:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    return counts


def _counts(entries: list[SkippedPerson]) -> str:
    return ", ".join(f"{n} {r}" for r, n in sorted(_by_reason(entries).items()))


@dataclass
class LoadReport:
    """What a loader read, skipped, changed and mapped.

    ``skipped``: people left out; ``skipped_images``: images left out with all their people;
    ``changed``: values left out or replaced (the person is kept); ``mapped``: category values
    read as another name (``"<where>: 'value' -> 'name'"``)."""

    source: str
    images: int = 0
    people: int = 0
    skipped: list[SkippedPerson] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)
    skipped_images: list[SkippedPerson] = field(default_factory=list)
    changed: list[SkippedPerson] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        self.skipped.append(SkippedPerson(where, reason))

    def skip_image(self, where: str, reason: str) -> None:
        self.skipped_images.append(SkippedPerson(where, reason))

    def change(self, where: str, reason: str) -> None:
        self.changed.append(SkippedPerson(where, reason))

    def skipped_by_reason(self) -> dict[str, int]:
        return _by_reason(self.skipped)

    def summary(self) -> str:
        text = f"{self.source}: {self.images} images, {self.people} people"
        if self.skipped_images:
            text += (f"; skipped {len(self.skipped_images)} images "
                     f"({_counts(self.skipped_images)})")
        if self.skipped:
            text += f"; skipped {len(self.skipped)} people ({_counts(self.skipped)})"
        if self.changed:
            text += f"; {_counts(self.changed)}"
        if self.mapped:
            example = self.mapped[0].rsplit(": ", 1)[-1]
            text += f"; mapped {len(self.mapped)} category values (e.g. {example})"
        return text

    def warnings(self, per_reason: int = 3) -> list[str]:
        """One line per problem (file, split, record, reason), at most ``per_reason`` of each
        reason, then how many more there are."""
        lines: list[str] = []
        groups = (("skipped image", self.skipped_images), ("skipped person", self.skipped),
                  ("changed", self.changed))
        for kind, entries in groups:
            shown: dict[str, int] = {}
            for entry in entries:
                shown[entry.reason] = shown.get(entry.reason, 0) + 1
                if shown[entry.reason] <= per_reason:
                    lines.append(f"warning: {kind}: {entry.where}: {entry.reason}")
            for reason, count in shown.items():
                if count > per_reason:
                    lines.append(f"warning: ... and {count - per_reason} more {kind} "
                                 f"({reason})")
        for text in self.mapped[:per_reason]:
            lines.append(f"warning: mapped category: {text}")
        if len(self.mapped) > per_reason:
            lines.append(f"warning: ... and {len(self.mapped) - per_reason} more mapped "
                         f"category values")
        return lines


def clip_box(
    box: tuple[float, float, float, float] | np.ndarray, width: int, height: int
) -> tuple[tuple[float, float, float, float] | None, str]:
    """Clip ``x1, y1, x2, y2`` to the image. Returns ``(box, "")`` or ``(None, reason)``.

    Reasons: ``"not a box"`` (not 4 numbers), ``"non-finite box"`` (NaN/inf), ``"outside the
    image"`` (nothing left after clipping), ``"zero area"`` (degenerate inside the image).
    """
    try:
        values = np.asarray(box, dtype=np.float64).ravel()
    except (TypeError, ValueError):  # text, nested lists of other lengths, None
        return None, "not a box"
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


def _distance(a: str, b: str, limit: int) -> int:
    """Edit distance (insert, delete, replace, swap of neighbours) of ``a`` and ``b``, or
    ``limit + 1`` when it is over ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before: list[int] | None = None
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (ca != cb))
            if before is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], before[j - 2] + 1)
        before, row = row, current
        if min(row) > limit:
            return limit + 1
    return row[-1]


def match_category(value: Any, names: Sequence[str]) -> tuple[str | None, bool]:
    """The name of ``names`` that ``value`` means, and whether it had to be mapped.

    Exact names are themselves; a value that differs only in case or surrounding space, or is
    an unambiguous misspelling (edit distance at most 1, or 2 for names of 8 letters or more,
    to exactly one name, case ignored) is mapped. Otherwise ``(None, False)``."""
    text = "" if value is None else str(value)
    if text in names:
        return text, False
    folded = text.strip().casefold()
    if not folded:
        return None, False
    for name in names:
        if name.casefold() == folded:
            return name, True
    close = []
    for name in names:
        limit = 2 if len(name) >= 8 else 1
        if len(folded) >= 4 and _distance(folded, name.casefold(), limit) <= limit:
            close.append(name)
    return (close[0], True) if len(close) == 1 else (None, False)


def continuous_values(values: Sequence[Any], where: str, report: LoadReport) -> np.ndarray:
    """Valence, arousal, dominance as float32 (3,): a value that is not a number in 1..10 is
    left out (NaN) and counted in ``report``; an empty value is simply not annotated."""
    low, high = CONTINUOUS_RANGE
    out = np.full(3, np.nan, np.float32)
    for i, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()) \
                or (isinstance(value, np.ndarray) and value.size == 0):
            continue  # not annotated
        try:
            number = float(np.asarray(value, dtype=np.float64).ravel()[0]) \
                if not isinstance(value, str) else float(value)
        except (TypeError, ValueError, IndexError):
            report.change(where, "continuous value that is not a number left out")
            continue
        if math.isnan(number):
            continue
        if not low <= number <= high:
            report.change(where, f"continuous value outside {low:g}..{high:g} left out")
            continue
        out[i] = number
    return out


def _size(width: Any, height: Any) -> tuple[int, int] | None:
    try:
        w, h = float(np.asarray(width, np.float64).ravel()[0]), \
            float(np.asarray(height, np.float64).ravel()[0])
    except (TypeError, ValueError, IndexError):
        return None
    if not (math.isfinite(w) and math.isfinite(h)) or w < 1 or h < 1:
        return None
    return int(round(w)), int(round(h))


def checked_image_size(path: Path, width: Any, height: Any, where: str, report: LoadReport
                       ) -> tuple[int, int] | None:
    """The size to use for the image at ``path`` annotated as ``width`` x ``height``, or None
    when the image must be skipped (counted in ``report``).

    An existing file is checked whole (:func:`caer_ros.image_file.image_info`). A missing file
    keeps the annotated size (the caller decides what a missing image means). ``width`` and
    ``height`` both None: the dataset annotates no size; the file's is used."""
    annotated = _size(width, height)
    unannotated = width is None and height is None
    found = None
    if Path(path).is_file():
        try:
            info = image_info(path)
        except ImageFileError as error:
            report.skip_image(f"{where}, file {path}", error.detail)
            return None
        found = info.width, info.height
    if annotated is None:
        if found is None:
            report.skip_image(where, "image_size not a positive number")
            return None
        if not unannotated:
            report.change(where, "image_size not a positive number: the file's size is used")
        return found
    if found is not None and annotated not in (found, found[::-1]):  # [::-1]: EXIF-rotated
        report.change(f"{where} (annotated {annotated[0]}x{annotated[1]}, file "
                      f"{found[0]}x{found[1]})", "image size differs from its annotation: the "
                      "file's is used, boxes as annotated")
        return found
    return annotated
