"""Loaders of the teachers' datasets (KA paper, section 3.1), in their own on-disk formats.

The KA paper trains two HRNet-W32 image classifiers as teachers: facial emotion recognition
(FER) on AffectNet and visual emotion analysis (VEA) on EmoSet-118K. Each loader here returns a
list of :class:`LabelledImage` (image path, class index, optional face box, valence/arousal
where the dataset has them) and a :class:`ClassLoadReport` of the rows it skipped and why.

- :func:`load_affectnet`: AffectNet's ``training.csv`` / ``validation.csv``, columns
  ``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
  expression, valence, arousal`` (the header row is optional: AffectNet's ``validation.csv``
  ships without one, and the columns are then read in that order). Images are
  ``images_dir / subDirectory_filePath``. Expressions 0..7 are :data:`AFFECTNET_EXPRESSIONS`;
  codes 8, 9, 10 (None, Uncertain, Non-Face) are skipped with their name as the reason. The
  face box ``(face_x, face_y, face_x + face_width, face_y + face_height)`` is kept on the
  record for cropping; valence and arousal (-1..1) are kept, NaN where AffectNet writes -2.
- :func:`load_emoset`: EmoSet-118K's ``train.json`` / ``val.json`` / ``test.json``, each a list
  of ``[emotion, image_path, annotation_path]`` with paths relative to the EmoSet root (the
  folder of the split file unless given). The 8 emotions are :data:`EMOSET_EMOTIONS`. With
  ``read_annotations`` every entry's annotation JSON is read too and its ``emotion`` must agree.
- :func:`load_folder`: ``split_dir/<class>/<image>`` (jpg, jpeg, png, bmp, webp); the classes
  are the sorted sub-folder names, or the names given.

Rules shared by the three: ``classes`` (optional) chooses and orders the classes (a subset of
the dataset's, matched case-insensitively); the class index of a record is the position in that
list, and rows of other classes are skipped ("class not selected"). A row whose image file does
not exist is skipped ("image file missing") when ``check_files`` is on. A file that does not
have the dataset's structure (a missing column, an entry of the wrong shape, a value that is
not a number or not a known class) raises :class:`TeacherDataError` naming the file and the
row or entry: that is a wrong or damaged file, not a row to drop quietly. A missing annotation
file or folder raises it too.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# AffectNet (Mollahosseini et al., 2017): expression codes 0..7, in code order.
AFFECTNET_EXPRESSIONS: tuple[str, ...] = (
    "Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt",
)  # fmt: skip
# Codes that are not an expression: left out of training (KA paper 3.1 uses the 8 above).
AFFECTNET_EXCLUDED: dict[int, str] = {8: "None", 9: "Uncertain", 10: "Non-Face"}
AFFECTNET_COLUMNS: tuple[str, ...] = (
    "subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
    "facial_landmarks", "expression", "valence", "arousal",
)  # fmt: skip
AFFECTNET_NOT_APPLICABLE = -2.0  # AffectNet's valence/arousal value for "not annotated"

# EmoSet (Yang et al., 2023): the 8 emotions of EmoSet-118K, in its label2idx order.
EMOSET_EMOTIONS: tuple[str, ...] = (
    "amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness",
)  # fmt: skip

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class TeacherDataError(ValueError):
    """An annotation file or folder that cannot be used; the message names it (and the row)."""


@dataclass(frozen=True)
class LabelledImage:
    """One training image of a teacher: its file, class index and optional face box.

    ``box``: ``x1, y1, x2, y2`` in image pixels (AffectNet's face box, not clipped: the image
    size is only known once the image is read), or None. ``valence`` / ``arousal``: AffectNet's
    -1..1 values, NaN where the dataset has none.
    """

    path: Path
    label: int
    box: tuple[float, float, float, float] | None = None
    valence: float = math.nan
    arousal: float = math.nan


@dataclass
class SkippedRow:
    """A row a loader left out, where it was, and why."""

    where: str
    reason: str


@dataclass
class ClassLoadReport:
    """What a loader read and skipped. ``counts[i]``: records of class ``classes[i]``."""

    source: str
    classes: tuple[str, ...]
    counts: list[int] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.classes)

    @property
    def images(self) -> int:
        return sum(self.counts)

    def add(self, record: LabelledImage) -> LabelledImage:
        self.counts[record.label] += 1
        return record

    def skip(self, where: str, reason: str) -> None:
        self.skipped.append(SkippedRow(where, reason))

    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.skipped:
            counts[row.reason] = counts.get(row.reason, 0) + 1
        return counts

    def missing_images(self) -> list[str]:
        """Where the rows skipped for a missing image file were."""
        return [row.where for row in self.skipped if row.reason == "image file missing"]

    def summary(self) -> str:
        per_class = ", ".join(f"{name} {n}" for name, n in zip(self.classes, self.counts,
                                                               strict=True))
        text = f"{self.source}: {self.images} images ({per_class})"
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped_by_reason().items()))
            text += f"; skipped {len(self.skipped)} ({reasons})"
        return text


def select_classes(known: Sequence[str], classes: Sequence[str] | None, source: str
                   ) -> tuple[str, ...]:
    """The classes to train, in order: ``known`` when ``classes`` is None, else ``classes``
    mapped to the dataset's own spelling (case-insensitive). Unknown or repeated names raise
    :class:`TeacherDataError`."""
    if classes is None:
        return tuple(known)
    if isinstance(classes, str) or not classes:
        raise TeacherDataError(f"{source}: classes must be a non-empty list of names")
    folded = {name.casefold(): name for name in known}
    chosen = []
    for name in classes:
        own = folded.get(str(name).strip().casefold())
        if own is None:
            raise TeacherDataError(f"{source}: unknown class {name!r}; known: {', '.join(known)}")
        if own in chosen:
            raise TeacherDataError(f"{source}: class {own!r} is listed twice")
        chosen.append(own)
    return tuple(chosen)


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise TeacherDataError(f"{path}: no such file ({what})")
    if not path.is_file():
        raise TeacherDataError(f"{path}: not a file ({what})")


# --------------------------------------------------------------------------------------------
# AffectNet


def _float(text: str, column: str, where: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise TeacherDataError(f"{where}: {column} {text!r} is not a number") from None
    return value


def _expression(text: str, where: str) -> int:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not value.is_integer() or not 0 <= value <= max(AFFECTNET_EXCLUDED):
        raise TeacherDataError(f"{where}: expression {text!r} is not a code 0..10")
    return int(value)


def _affectnet_rows(csv_path: Path) -> tuple[list[tuple[int, dict[str, str]]], bool]:
    """``(line number, row by column name)`` for every non-blank row, and whether the file has
    a header row."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        first = next(reader, None)
        while first is not None and not any(cell.strip() for cell in first):
            first = next(reader, None)
        if first is None:
            raise TeacherDataError(f"{csv_path}: empty file (expected AffectNet's columns "
                                   f"{', '.join(AFFECTNET_COLUMNS)})")
        header = [cell.strip() for cell in first]
        has_header = AFFECTNET_COLUMNS[0] in header
        if has_header:
            missing = [c for c in AFFECTNET_COLUMNS if c not in header]
            if missing:
                raise TeacherDataError(f"{csv_path}: missing columns {', '.join(missing)}")
            columns, pending = header, []
        else:  # AffectNet's validation.csv: no header, the standard column order
            columns, pending = list(AFFECTNET_COLUMNS), [(reader.line_num, first)]
        rows = []
        for number, cells in [*pending, *((reader.line_num, r) for r in reader)]:
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) < len(AFFECTNET_COLUMNS):
                raise TeacherDataError(
                    f"{csv_path}: line {number}: {len(cells)} columns, AffectNet rows have "
                    f"{len(AFFECTNET_COLUMNS)} ({', '.join(AFFECTNET_COLUMNS)})")
            rows.append((number, dict(zip(columns, cells, strict=False))))
    return rows, has_header


def load_affectnet(csv_path: str | Path, images_dir: str | Path,
                   classes: Sequence[str] | None = None, face_boxes: bool = True,
                   check_files: bool = True) -> tuple[list[LabelledImage], ClassLoadReport]:
    """Read an AffectNet ``training.csv`` or ``validation.csv`` (module docstring).

    ``face_boxes``: keep each row's face box on the record; a row whose box is not a positive
    finite rectangle is then skipped ("invalid face box"). Without it every box is None.
    """
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    _require_file(csv_path, "AffectNet annotation CSV")
    chosen = select_classes(AFFECTNET_EXPRESSIONS, classes, str(csv_path))
    index = {name: i for i, name in enumerate(chosen)}
    report = ClassLoadReport(f"AffectNet ({csv_path})", chosen)
    rows, _ = _affectnet_rows(csv_path)
    records = []
    for number, row in rows:
        name = row["subDirectory_filePath"].strip()
        where = f"{csv_path}: line {number} ({name})"
        code = _expression(row["expression"], where)
        if code in AFFECTNET_EXCLUDED:
            report.skip(where, f"expression {code} ({AFFECTNET_EXCLUDED[code]})")
            continue
        expression = AFFECTNET_EXPRESSIONS[code]
        if expression not in index:
            report.skip(where, "class not selected")
            continue
        valence, arousal = (_float(row[c], c, where) for c in ("valence", "arousal"))
        box = None
        if face_boxes:
            x, y, w, h = (_float(row[c], c, where)
                          for c in ("face_x", "face_y", "face_width", "face_height"))
            if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
                report.skip(where, "invalid face box")
                continue
            box = (x, y, x + w, y + h)
        path = images_dir / name
        if check_files and not path.is_file():
            report.skip(where, "image file missing")
            continue
        records.append(report.add(LabelledImage(
            path, index[expression], box,
            math.nan if valence == AFFECTNET_NOT_APPLICABLE else valence,
            math.nan if arousal == AFFECTNET_NOT_APPLICABLE else arousal)))
    return records, report


# --------------------------------------------------------------------------------------------
# EmoSet


def _read_json(path: Path, what: str) -> Any:
    _require_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise TeacherDataError(f"{path}: not valid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TeacherDataError(f"{path}: cannot be read ({exc})") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_emoset(split_json: str | Path, root: str | Path | None = None,
                classes: Sequence[str] | None = None, check_files: bool = True,
                read_annotations: bool = False
                ) -> tuple[list[LabelledImage], ClassLoadReport]:
    """Read an EmoSet-118K split file (``train.json``, ``val.json`` or ``test.json``).

    ``root``: the folder the entries' paths are relative to (default: the split file's folder).
    ``read_annotations``: also read each entry's annotation JSON, which must be a mapping whose
    ``emotion`` is the entry's (a missing annotation file skips the entry, "annotation file
    missing"). Off by default: the split file already names every image's emotion.
    """
    split_json = Path(split_json)
    root = split_json.parent if root is None else Path(root)
    chosen = select_classes(EMOSET_EMOTIONS, classes, str(split_json))
    index = {name: i for i, name in enumerate(chosen)}
    folded = {name.casefold(): name for name in EMOSET_EMOTIONS}
    report = ClassLoadReport(f"EmoSet ({split_json})", chosen)
    entries = _read_json(split_json, "EmoSet split file")
    if not isinstance(entries, list):
        raise TeacherDataError(f"{split_json}: must be a list of [emotion, image_path, "
                               f"annotation_path] entries, got a {type(entries).__name__}")
    records = []
    for number, entry in enumerate(entries):
        where = f"{split_json}: entry {number}"
        if not isinstance(entry, list | tuple) or len(entry) != 3 \
                or not all(isinstance(v, str) and v for v in entry):
            raise TeacherDataError(f"{where}: {_short(entry)} is not [emotion, image_path, "
                                   f"annotation_path] (three non-empty strings)")
        value, image, annotation = entry
        emotion = folded.get(value.strip().casefold())
        if emotion is None:
            raise TeacherDataError(f"{where}: unknown emotion {value!r}; known: "
                                   f"{', '.join(EMOSET_EMOTIONS)}")
        where = f"{where} ({image})"
        if emotion not in index:
            report.skip(where, "class not selected")
            continue
        path = root / image
        if check_files and not path.is_file():
            report.skip(where, "image file missing")
            continue
        if read_annotations:
            annotation_path = root / annotation
            if not annotation_path.is_file():
                report.skip(where, "annotation file missing")
                continue
            data = _read_json(annotation_path, "EmoSet annotation")
            if not isinstance(data, dict) or not isinstance(data.get("emotion"), str):
                raise TeacherDataError(f"{annotation_path}: must be a mapping with an "
                                       f"'emotion' name ({where})")
            if folded.get(data["emotion"].strip().casefold()) != emotion:
                raise TeacherDataError(f"{annotation_path}: emotion {data['emotion']!r} does "
                                       f"not match {where}: {value!r}")
        records.append(report.add(LabelledImage(path, index[emotion])))
    return records, report


# --------------------------------------------------------------------------------------------
# Folder per class


def folder_classes(split_dir: str | Path) -> tuple[str, ...]:
    """The sorted names of the (non-hidden) class folders of ``split_dir``."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise TeacherDataError(f"{split_dir}: no such folder (expected one folder per class)")
    names = tuple(sorted(p.name for p in split_dir.iterdir()
                         if p.is_dir() and not p.name.startswith(".")))
    if not names:
        raise TeacherDataError(f"{split_dir}: no class folders inside")
    return names


def load_folder(split_dir: str | Path, classes: Sequence[str] | None = None
                ) -> tuple[list[LabelledImage], ClassLoadReport]:
    """Read ``split_dir/<class>/<image>``. ``classes``: the class folders to use, in index
    order (exact names); default: :func:`folder_classes`. A listed class without a folder
    has no images (its count is 0); files of other folders are skipped ("class not selected"),
    files that are not images ("not an image file") and files beside the class folders ("not
    in a class folder") too. Images are listed in sorted order."""
    split_dir = Path(split_dir)
    found = folder_classes(split_dir)
    if classes is None:
        chosen = found
    elif isinstance(classes, str) or not classes or len(set(classes)) != len(classes):
        raise TeacherDataError(f"{split_dir}: classes must be a list of distinct folder names, "
                               f"got {_short(classes)}")
    else:
        chosen = tuple(str(name) for name in classes)
    index = {name: i for i, name in enumerate(chosen)}
    report = ClassLoadReport(f"folder ({split_dir})", chosen)
    records = []
    for path in sorted(split_dir.rglob("*")):
        if path.is_dir() or any(part.startswith(".") for part in path.relative_to(split_dir).parts):
            continue
        relative = path.relative_to(split_dir)
        if len(relative.parts) == 1:
            report.skip(str(path), "not in a class folder")
        elif relative.parts[0] not in index:
            report.skip(str(path), "class not selected")
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            report.skip(str(path), "not an image file")
        else:
            records.append(report.add(LabelledImage(path, index[relative.parts[0]])))
    return records, report
