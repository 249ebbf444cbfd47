"""HECO loader and the KA paper's HECO partition.

HECO (Yang et al., 2022) ships ``HECO_Labels.csv``: one row per annotated person with the columns
``Image, xmin, ymin, xmax, ymax, Category, Valence, Arousal, Dominance`` (then Self-assurance,
Catharsis, which are not read here). :func:`load_heco` groups the rows per image. Each person has
one of the 8 HECO categories (:data:`caer_ros.labels.HECO`); a value that differs from a name only
in case or surrounding whitespace is mapped and reported, any other value is an error naming its
row. Rows are numbered as in a spreadsheet: the header is row 1, the first person row 2.

HECO has no official split. :func:`heco_partition` reproduces the KA paper's (section 4.1): images
with one annotated person and images with several are split 70/10/20 separately, then merged.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import struct
from pathlib import Path

import cv2
import numpy as np

from caer_ros.labels import HECO
from training.datasets.records import ImageRecord, LoadReport, PersonRecord, clip_box, multi_hot

COLUMNS = ("Image", "xmin", "ymin", "xmax", "ymax", "Category", "Valence", "Arousal", "Dominance")
PARTITION = (("train", 0.7), ("val", 0.1), ("test", 0.2))
_INDEX = {name: i for i, name in enumerate(HECO)}
_FOLDED = {name.casefold(): name for name in HECO}


class HecoFormatError(ValueError):
    """The label file does not have the structure HECO's has."""


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of a PNG or JPEG from its header; other formats are decoded."""
    with open(path, "rb") as f:
        head = f.read(26)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", head[16:24])
        if head[:2] == b"\xff\xd8":
            f.seek(2)
            while True:
                marker = f.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    break
                (length,) = struct.unpack(">H", f.read(2))
                if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                    height, width = struct.unpack(">xHH", f.read(5))
                    return width, height
                f.seek(length - 2, 1)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise HecoFormatError(f"cannot read image {path}")
    return image.shape[1], image.shape[0]


def _number(text: str) -> float:
    text = (text or "").strip()
    return float(text) if text else math.nan


def load_heco(csv_path: str | Path, images_dir: str | Path) -> tuple[list[ImageRecord], LoadReport]:
    """Read ``HECO_Labels.csv``; images are ``images_dir / <Image>``. Split is ``"all"``."""
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    report = LoadReport(source=f"HECO ({csv_path})")
    rows: dict[str, list[tuple[int, dict[str, str]]]] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise HecoFormatError(f"{csv_path}: missing columns {', '.join(missing)}")
        reader.fieldnames = header
        for number, row in enumerate(reader, start=2):
            rows.setdefault(row["Image"].strip(), []).append((number, row))

    records = []
    for name, image_rows in rows.items():
        path = images_dir / name
        if not path.is_file():
            for number, _ in image_rows:
                report.skip(f"{csv_path}: row {number} ({name})", "image file missing")
            continue
        width, height = image_size(path)
        people = []
        for number, row in image_rows:
            where = f"{csv_path}: row {number} ({name})"
            value = row["Category"] or ""
            category = value if value in _INDEX else _FOLDED.get(value.strip().casefold())
            if category is None:
                known = ", ".join(HECO)
                raise HecoFormatError(f"{where}: unknown category {value!r} (known: {known})")
            if category != value:
                report.mapped.append(f"{where}: {value!r} -> {category!r}")
            try:
                box_values = [_number(row[c]) for c in ("xmin", "ymin", "xmax", "ymax")]
                continuous = [_number(row[c]) for c in ("Valence", "Arousal", "Dominance")]
            except ValueError as exc:
                raise HecoFormatError(f"{where}: not a number ({exc})") from None
            box, reason = clip_box(box_values, width, height)
            if box is None:
                report.skip(where, reason)
                continue
            people.append(
                PersonRecord(
                    box,
                    multi_hot([_INDEX[category]], len(HECO)),
                    np.array(continuous, dtype=np.float32),
                )
            )
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
