"""HECO loader and the KA paper's HECO partition.

HECO (Yang et al., 2022) ships ``HECO_Labels.csv``: one row per annotated person with the columns
``Image, xmin, ymin, xmax, ymax, Category, Valence, Arousal, Dominance`` (then Self-assurance,
Catharsis, which are not read here). :func:`load_heco` groups the rows per image. Each person has
one of the 8 HECO categories (:data:`caer_ros.labels.HECO`). Every row goes through the shared
validator (:mod:`training.datasets.records`), so one bad row never blocks the rest: a category
that differs from a name only in case or surrounding space, or is an unambiguous misspelling
(the real file's "Happinesst"), is mapped; a row with no or an unknown category, too few
columns or no usable box is skipped; a valence/arousal/dominance outside 1..10 is left out; an
image that cannot be read is skipped with its rows. All of it is counted in the
:class:`LoadReport` and named in its warnings. A file that is not UTF-8 text or lacks a column
is an error naming it. Rows are numbered as in a spreadsheet: the header is row 1, the first
person row 2.

HECO has no official split. :func:`heco_partition` reproduces the KA paper's (section 4.1): images
with one annotated person and images with several are split 70/10/20 separately, then merged.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np

from caer_ros.labels import HECO
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

COLUMNS = ("Image", "xmin", "ymin", "xmax", "ymax", "Category", "Valence", "Arousal", "Dominance")
PARTITION = (("train", 0.7), ("val", 0.1), ("test", 0.2))
_INDEX = {name: i for i, name in enumerate(HECO)}


class HecoFormatError(ValueError):
    """The label file does not have the structure HECO's has."""


def _number(text: str | None) -> float:
    text = (text or "").strip()
    return float(text) if text else math.nan


def _read_rows(csv_path: Path) -> dict[str, list[tuple[int, dict[str, str]]]]:
    """The CSV's person rows grouped by image, each with its spreadsheet row number."""
    rows: dict[str, list[tuple[int, dict[str, str]]]] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise HecoFormatError(f"{csv_path}: missing columns {', '.join(missing)}")
            reader.fieldnames = header
            for number, row in enumerate(reader, start=2):
                rows.setdefault((row["Image"] or "").strip(), []).append((number, row))
    except UnicodeDecodeError as error:
        raise HecoFormatError(f"{csv_path}: not UTF-8 text (byte {error.start}: "
                              f"{error.reason}); save it as UTF-8") from None
    except csv.Error as error:
        raise HecoFormatError(f"{csv_path}: not a readable CSV file ({error})") from None
    return rows


def load_heco(csv_path: str | Path, images_dir: str | Path) -> tuple[list[ImageRecord], LoadReport]:
    """Read ``HECO_Labels.csv``; images are ``images_dir / <Image>``. Split is ``"all"``."""
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    report = LoadReport(source=f"HECO ({csv_path})")
    rows = _read_rows(csv_path)
    records = []
    for name, image_rows in rows.items():
        path = images_dir / name
        first = image_rows[0][0]
        if not name or not path.is_file():
            for number, _ in image_rows:
                report.skip(f"{csv_path}: row {number} ({name})",
                            "image file missing" if name else "no image name")
            continue
        found = checked_image_size(path, None, None, f"{csv_path}: row {first} ({name})", report)
        if found is None:  # the image is counted as skipped, with why; its rows too
            for number, _ in image_rows:
                report.skip(f"{csv_path}: row {number} ({name})", "in a skipped image")
            continue
        width, height = found
        people = []
        for number, row in image_rows:
            where = f"{csv_path}: row {number} ({name})"
            if None in row.values():  # DictReader fills the columns a short row lacks with None
                have = sum(v is not None for k, v in row.items() if k is not None)
                report.skip(where, f"short row ({have} of {len(row)} columns)")
                continue
            value = row["Category"]
            category, mapped = match_category(value, HECO)
            if category is None:
                report.skip(where, f"unknown category {value.strip()!r}" if value.strip()
                            else "no category")
                continue
            if mapped:
                report.mapped.append(f"{where}: {value!r} -> {category!r}")
            try:
                box_values = [_number(row[c]) for c in ("xmin", "ymin", "xmax", "ymax")]
            except ValueError:
                box_values = None
            box, reason = clip_box(box_values, width, height)
            if box is None:
                report.skip(where, reason)
                continue
            continuous = continuous_values([row[c] for c in ("Valence", "Arousal", "Dominance")],
                                           where, report)
            people.append(PersonRecord(box, multi_hot([_INDEX[category]], len(HECO)),
                                       continuous))
        records.append(ImageRecord(path, width, height, people, "all", "heco"))
        report.images += 1
        report.people += len(people)
    return records, report


def heco_partition(records: list[ImageRecord], seed: int) -> dict[str, list[ImageRecord]]:
    """The KA paper's HECO partition (section 4.1), reproducible from ``seed``.

    Single-subject and multi-subject images are each shuffled and split 70/10/20 (sizes rounded,
    test takes the rest), then the sets of the two groups are merged. The result does not depend
    on the order of ``records``; each returned record carries its new ``split``.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[ImageRecord]] = {name: [] for name, _ in PARTITION}
    ordered = sorted(records, key=lambda r: str(r.path))
    for group in (
        [r for r in ordered if len(r.people) == 1],
        [r for r in ordered if len(r.people) != 1],
    ):
        order = rng.permutation(len(group))
        n_train = round(PARTITION[0][1] * len(group))
        n_val = round(PARTITION[1][1] * len(group))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val)}
        bounds["test"] = (n_train + n_val, len(group))
        for name, (start, stop) in bounds.items():
            parts[name].extend(dataclasses.replace(group[i], split=name) for i in order[start:stop])
    return parts
