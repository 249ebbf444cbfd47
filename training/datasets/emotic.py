"""EMOTIC loader: ``<root>/Annotations/Annotations.mat`` -> :class:`ImageRecord` list.

EMOTIC (Kosti et al., 2019; KA paper section 4.1) ships one MATLAB v5 file with the variables
``train``, ``val`` and ``test``: arrays of per-image structs with ``filename``, ``folder``,
``image_size`` (``n_col``, ``n_row``) and ``person`` (one struct or an array of them). Each
person has ``body_bbox`` (``[x1 y1 x2 y2]``, pixels) and:

- in ``train``: ``annotations_categories.categories`` (category names) and
  ``annotations_continuous`` (``valence``, ``arousal``, ``dominance``, 1..10), one annotator;
- in ``val``/``test``: per-annotator arrays of those, plus the merged ``combined_categories``
  (names) and ``combined_continuous``, which are the ground truth read here.

Images are at ``<root>/emotic/<folder>/<filename>``. Every record goes through the shared
validator (:mod:`training.datasets.records`): boxes are clipped to the image; people with no
usable box or no category, images that cannot be read (or whose annotated size is not a
number) are skipped, continuous values outside 1..10 left out, a misspelt category name mapped,
all counted in the :class:`LoadReport`. A category name that matches none, or a missing
variable/field, is an error naming the file and the record (EMOTIC's own file has neither).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from caer_ros.labels import CONTINUOUS, EMOTIC
from training.datasets.records import (
    ImageRecord,
    LoadReport,
    PersonRecord,
    checked_image_size,
    clip_box,
    continuous_values,
    match_category,
    multi_hot,
)

SPLITS = ("train", "val", "test")
ANNOTATIONS = Path("Annotations") / "Annotations.mat"
_INDEX = {name: i for i, name in enumerate(EMOTIC)}


class EmoticFormatError(ValueError):
    """The annotation file does not have the structure EMOTIC's has."""


def _as_list(value: Any) -> list[Any]:
    """A struct array, one struct (``squeeze_me`` squeezes 1-element arrays) or nothing -> list."""
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _as_strings(value: Any) -> list[str]:
    """A cell of strings, one string or an empty cell -> list of stripped names."""
    if isinstance(value, str):
        names = [value]
    elif isinstance(value, np.ndarray):
        names = [str(v) for v in value.ravel()]
    else:
        names = [str(value)]
    return [n.strip() for n in names if n.strip()]


def _field(struct: Any, name: str, where: str) -> Any:
    try:
        return getattr(struct, name)
    except AttributeError:
        raise EmoticFormatError(f"{where}: missing field {name!r}") from None


def load_emotic(root: str | Path, split: str) -> tuple[list[ImageRecord], LoadReport]:
    """Read one split (``train``, ``val`` or ``test``) of EMOTIC under ``root``.

    ``root`` holds ``Annotations/Annotations.mat`` and ``emotic/<folder>/<image>``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown EMOTIC split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root)
    mat_path = root / ANNOTATIONS
    if not mat_path.is_file():
        raise FileNotFoundError(f"EMOTIC annotations not found: {mat_path}")
    try:
        mat = scipy.io.loadmat(str(mat_path), squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several types for a damaged file
        raise EmoticFormatError(f"{mat_path}: not a readable MATLAB file ({exc})") from exc
    if split not in mat:
        present = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise EmoticFormatError(f"{mat_path}: variable {split!r} missing (variables: {present})")

    report = LoadReport(source=f"EMOTIC {split} ({mat_path})")
    records = []
    combined = split != "train"
    for index, entry in enumerate(_as_list(mat[split])):
        where = f"{mat_path}: split {split!r}, image {index}"
        filename = str(_field(entry, "filename", where))
        where = f"{where} ({filename})"
        folder = str(_field(entry, "folder", where))
        size = _field(entry, "image_size", where)
        path = root / "emotic" / folder / filename
        persons = _field(entry, "person", where)
        found = checked_image_size(path, _field(size, "n_col", f"{where}: image_size"),
                                   _field(size, "n_row", f"{where}: image_size"), where, report)
        if found is None:
            continue
        width, height = found
        people = []
        for p, person in enumerate(_as_list(persons) if np.size(persons) else []):
            pwhere = f"{where}, person {p}"
            box, reason = clip_box(_field(person, "body_bbox", pwhere), width, height)
            if box is None:
                report.skip(pwhere, reason)
                continue
            if combined:
                names = _as_strings(_field(person, "combined_categories", pwhere))
                cont = _field(person, "combined_continuous", pwhere)
            else:
                cats = _field(person, "annotations_categories", pwhere)
                names = _as_strings(_field(_as_list(cats)[0], "categories", pwhere))
                cont = _as_list(_field(person, "annotations_continuous", pwhere))[0]
            indices = set()
            for value in names:
                name, mapped = match_category(value, EMOTIC)
                if name is None:
                    raise EmoticFormatError(f"{pwhere}: unknown category name {value!r}")
                if mapped:
                    report.mapped.append(f"{pwhere}: {value!r} -> {name!r}")
                indices.add(_INDEX[name])
            if not indices:
                report.skip(pwhere, "no category")
                continue
            continuous = continuous_values([_field(cont, dim, pwhere) for dim in CONTINUOUS],
                                           pwhere, report)
            people.append(PersonRecord(box, multi_hot(sorted(indices), len(EMOTIC)), continuous))
        records.append(ImageRecord(path, width, height, people, split, "emotic"))
        report.images += 1
        report.people += len(people)
    return records, report
