"""A lab's own data: COCO JSON as annotation tools export it (CVAT's "COCO 1.0", Label Studio,
...), one file per split in one folder.

Layout: ``DIR/train.json``, ``DIR/val.json`` and optionally ``DIR/test.json``
(:func:`is_coco_folder`: a folder holding ``train.json`` is one). Each is a COCO file:
``images`` (``id``, ``file_name`` relative to ``DIR``, or to ``DIR/images`` as CVAT exports
them with the images; ``width``, ``height``), ``annotations`` (``id``, ``image_id``, ``bbox``
``[x, y, w, h]`` in pixels) and ``categories``. When ``categories`` has one named ``person``,
only its annotations are people (others are counted and left out); otherwise every annotation
is a person. An image without people is a valid negative.

A person's emotions (the names of the :class:`EmotionSet` in use, matched up to case and
surrounding space) are read from any of these spellings, together:

- ``"emotions": ["Happiness", ...]``;
- ``"attributes": {"Happiness": true, "Sadness": false, ...}``, one checkbox per emotion, as
  CVAT writes them (``1``/``0`` and ``"true"``/``"false"`` too). CVAT's own attributes
  (``occluded``, ``rotation``, ``track_id``, ...) are not emotions; any other checkbox that
  names no emotion of the set is left out and named in the load report's warnings (a
  misspelt checkbox shows there), as is a checkbox that says false for an emotion the
  ``emotions`` list names;
- a text attribute whose value is an emotion of the set (a CVAT select or radio attribute,
  e.g. ``"emotion": "Happy"``);
- the annotation's category, when the categories are emotions of the set and there is no
  ``person`` category (boxes labelled by emotion, as Label Studio exports them).

A person with no emotion of the set is counted in the load report; in a single-label set
(``EmotionSet.single_label``: HECO, or a set trained with ``emotion_loss: ce``) every person
must have exactly one.

``valence``, ``arousal``, ``dominance`` (top level or in ``attributes``) are optional; their
range is the set's ``continuous_range`` (e.g. ``[0, 1]`` or ``[1, 9]``), mapped to the records'
1..10 scale (:data:`training.datasets.records.CONTINUOUS_RANGE`). Unknown extra fields are
ignored.

Unlike the public datasets' loaders, nothing is skipped quietly: the lab's own file is refused
with one line naming the file, the annotation (or image) id and what is wrong
(:class:`CocoFormatError`): a JSON that is not COCO, duplicate ids, an annotation on an image
id that does not exist, a missing or unreadable image, a box of zero size or outside the image
(more than :data:`BOX_TOLERANCE_PX` past its edge; within it, clipped), an image listed
twice, an annotated size that is not the image's (upright, as EXIF orientation turns it when
the image is read), an emotion name not in the set, a continuous value outside its range, a
split with no people.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from caer_ros.image_file import ImageFileError, image_info
from training.datasets.records import CONTINUOUS_RANGE, ImageRecord, LoadReport, PersonRecord

SPLIT_FILES = {"train": "train.json", "val": "val.json", "test": "test.json"}
OWN_SET = "own"  # the model's name for a set of a lab's own names
CONTINUOUS = ("valence", "arousal", "dominance")
CVAT_ATTRIBUTES = frozenset({"occluded", "rotation", "track_id", "keyframe", "z_order",
                             "outside"})
BOX_TOLERANCE_PX = 1.0  # annotation tools round: a box this far past the edge is clipped


class CocoFormatError(ValueError):
    """A COCO file that cannot be used; the message names the file, the id and the problem."""


@dataclass(frozen=True)
class EmotionSet:
    """The categories a COCO folder is read with: ``name`` is the set's name in the model
    (``emotic``, ``heco`` or :data:`OWN_SET`), ``categories`` its names in channel order,
    ``continuous_range`` the scale of valence/arousal/dominance in the files."""

    name: str
    categories: tuple[str, ...]
    continuous_range: tuple[float, float] = CONTINUOUS_RANGE
    single_label: bool = False  # every person has exactly one of the categories


def is_coco_folder(path: str | Path | None) -> bool:
    """Whether ``path`` is a folder of this format: it holds ``train.json`` (and is no EMOTIC
    folder, which holds ``Annotations/Annotations.mat``)."""
    if path is None:
        return False
    folder = Path(path).expanduser()
    return (folder / SPLIT_FILES["train"]).is_file() and \
        not (folder / "Annotations" / "Annotations.mat").is_file()


def split_file(folder: str | Path, split: str) -> Path:
    """``folder/<split>.json``."""
    if split not in SPLIT_FILES:
        raise CocoFormatError(f"unknown split {split!r}; expected one of "
                              f"{', '.join(SPLIT_FILES)}")
    return Path(folder).expanduser() / SPLIT_FILES[split]


def read_coco(path: Path) -> dict[str, Any]:
    """The JSON document of a COCO file, its structure checked (not the values)."""
    if not path.is_file():
        raise CocoFormatError(f"{path}: no such file (a COCO folder holds train.json, val.json "
                              f"and optionally test.json)")
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise CocoFormatError(f"{path}: not a COCO file (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise CocoFormatError(f"{path}: not a COCO file (not JSON: {err.msg} at line "
                              f"{err.lineno})") from None
    if not isinstance(document, dict):
        raise CocoFormatError(f"{path}: not a COCO file (the top level is not an object)")
    for key in ("images", "annotations"):
        if not isinstance(document.get(key), list):
            raise CocoFormatError(f"{path}: not a COCO file (no {key!r} list)")
    if not isinstance(document.get("categories", []), list):
        raise CocoFormatError(f"{path}: not a COCO file ('categories' is not a list)")
    return document


def load_coco(folder: str | Path, split: str, emotions: EmotionSet
              ) -> tuple[list[ImageRecord], LoadReport]:
    """The records of one split (module docstring); raises :class:`CocoFormatError`."""
    folder = Path(folder).expanduser()
    path = split_file(folder, split)
    document = read_coco(path)
    report = LoadReport(f"{path}")
    people_category, emotion_categories = _categories(document["categories"], emotions)
    images: dict[Any, ImageRecord] = {}
    files: dict[Path, Any] = {}
    for entry in document["images"]:
        record = _image(path, folder, entry, split, emotions)
        key = _id(entry)
        if key in images:
            raise CocoFormatError(f"{path}: image {key}: duplicate image id")
        twice = files.get(record.path.resolve())
        if twice is not None:
            raise CocoFormatError(f"{path}: image {key}: {record.path} is listed twice (also "
                                  f"as image {twice})")
        files[record.path.resolve()] = key
        images[key] = record
    seen: set[Any] = set()
    for entry in document["annotations"]:
        if not isinstance(entry, dict) or "id" not in entry:
            raise CocoFormatError(f"{path}: an annotation without an id: {_short(entry)}")
        key = _id(entry)
        where = f"{path}: annotation {key}"
        if key in seen:
            raise CocoFormatError(f"{where}: duplicate annotation id")
        seen.add(key)
        image_id = entry.get("image_id")
        if isinstance(image_id, bool) or image_id not in images:
            hint = " (the images' ids are numbers)" if isinstance(image_id, str) and \
                any(str(k) == image_id for k in images) else ""
            raise CocoFormatError(f"{where}: image id {image_id!r} does not exist in the "
                                  f"file's images{hint}")
        category = entry.get("category_id")
        by_category = emotion_categories.get(category) if people_category is None else None
        if people_category is not None and category != people_category:
            report.skip(where, f"not a person (category {category!r})")
            continue
        if people_category is None and emotion_categories and by_category is None:
            report.skip(where, f"not a person (category {category!r} is no emotion of the "
                               f"set {emotions.name})")
            continue
        if entry.get("iscrowd") in (1, True):
            report.skip(where, "a crowd (iscrowd 1), not one person")
            continue
        record = images[entry["image_id"]]
        box = _box(where, entry.get("bbox"), record.width, record.height)
        labels = _emotions(where, entry, emotions, report)
        if by_category is not None:
            labels[emotions.categories.index(by_category)] = 1.0
        _check_count(where, labels, emotions, report)
        continuous = _continuous(where, entry, emotions.continuous_range)
        record.people.append(PersonRecord(box, labels, continuous))
    records = list(images.values())
    report.images = len(records)
    report.people = sum(len(r.people) for r in records)
    if not report.people:
        raise CocoFormatError(f"{path}: no people in the {split} split ({len(records)} images, "
                              f"no person annotation)")
    return records, report


# --------------------------------------------------------------------------- parts


def _id(entry: Any) -> Any:
    key = entry.get("id") if isinstance(entry, dict) else None
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        return repr(key)
    return key


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _categories(categories: list[Any], emotions: EmotionSet) -> tuple[Any, dict[Any, str]]:
    """The id of the category named ``person`` (None: there is none), and the categories
    named after an emotion of the set (id -> emotion), the people of a file without one."""
    person, by_emotion = None, {}
    for entry in categories:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("name", ""))
        if name.strip().casefold() == "person":
            person = entry.get("id")
        elif _name_of(name, emotions.categories) is not None:
            by_emotion[entry.get("id")] = _name_of(name, emotions.categories)
    return person, by_emotion


def _check_count(where: str, labels: np.ndarray, emotions: EmotionSet,
                 report: LoadReport) -> None:
    count = int(labels.sum())
    if emotions.single_label and count != 1:
        raise CocoFormatError(f"{where}: {count} emotions for the single-label set "
                              f"{emotions.name}: a person has exactly one")
    if count == 0:
        report.change(where, f"a person with no emotion of the set {emotions.name}")


def _image(path: Path, folder: Path, entry: Any, split: str, emotions: EmotionSet
           ) -> ImageRecord:
    if not isinstance(entry, dict) or "id" not in entry:
        raise CocoFormatError(f"{path}: an image without an id: {_short(entry)}")
    where = f"{path}: image {_id(entry)}"
    name = entry.get("file_name")
    if not isinstance(name, str) or not name.strip():
        raise CocoFormatError(f"{where}: no file_name")
    candidates = [folder / name, folder / "images" / name]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise CocoFormatError(f"{where}: no such image file {candidates[0]} (file_name is "
                              f"relative to {folder}, or to {folder / 'images'})")
    try:
        info = image_info(found)
    except ImageFileError as err:
        raise CocoFormatError(f"{where}: {found}: {err.detail}") from None
    width, height = _upright(found, info.width, info.height)
    annotated = (entry.get("width"), entry.get("height"))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in annotated) and \
            (round(annotated[0]), round(annotated[1])) != (width, height):
        turned = " upright (EXIF orientation)" if (width, height) != (info.width, info.height) \
            else ""
        raise CocoFormatError(f"{where}: annotated as {annotated[0]}x{annotated[1]}, but "
                              f"{found} is {width}x{height}{turned}: its boxes would not match")
    return ImageRecord(found, width, height, [], split, emotions.name, emotions.categories)


def _upright(path: Path, width: int, height: int) -> tuple[int, int]:
    """The size of the image as it is read (EXIF orientation applied, as
    :func:`caer_ros.image_file.read_image` does): a cheap reduced decode tells whether the
    stored width and height are swapped."""
    if width == height:
        return width, height
    small = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if small is None:
        return width, height
    rows, columns = small.shape[:2]
    swapped = (rows > columns) != (height > width)
    return (height, width) if swapped else (width, height)


def _box(where: str, bbox: Any, width: int, height: int) -> tuple[float, float, float, float]:
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise CocoFormatError(f"{where}: bbox must be 4 numbers [x, y, w, h], got "
                              f"{_short(bbox)}")
    x, y, w, h = values
    if w <= 0 or h <= 0:
        raise CocoFormatError(f"{where}: box of zero size (bbox {values})")
    tolerance = BOX_TOLERANCE_PX
    if x < -tolerance or y < -tolerance or x + w > width + tolerance \
            or y + h > height + tolerance:
        raise CocoFormatError(f"{where}: box {values} ([x, y, w, h]) outside the "
                              f"{width}x{height} image")
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(width)), min(y + h, float(height))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise CocoFormatError(f"{where}: box of zero size inside the image (bbox {values})")
    return x1, y1, x2, y2


def _name_of(text: str, names: Sequence[str]) -> str | None:
    folded = text.strip().casefold()
    return next((n for n in names if n.casefold() == folded), None)


def _emotions(where: str, entry: dict[str, Any], emotions: EmotionSet,
              report: LoadReport) -> np.ndarray:
    names = emotions.categories
    labels = np.zeros(len(names), dtype=np.float32)
    listed = entry.get("emotions")
    if listed is not None:
        if isinstance(listed, str) or not isinstance(listed, list) \
                or not all(isinstance(v, str) for v in listed):
            raise CocoFormatError(f"{where}: 'emotions' must be a list of names, got "
                                  f"{_short(listed)}")
        for value in listed:
            name = _name_of(value, names)
            if name is None:
                raise CocoFormatError(f"{where}: emotion {value!r} is not in the set "
                                      f"{emotions.name} ({', '.join(names)})")
            labels[names.index(name)] = 1.0
    attributes = entry.get("attributes")
    if attributes is None:
        return labels
    if not isinstance(attributes, dict):
        raise CocoFormatError(f"{where}: 'attributes' must be an object, got "
                              f"{_short(attributes)}")
    listed_labels = labels.copy()
    for key, value in attributes.items():
        folded = str(key).strip().casefold()
        if folded in CONTINUOUS or folded in CVAT_ATTRIBUTES:
            continue
        name = _name_of(str(key), names)
        checked = _checkbox(value)
        if checked is None:
            chosen = _name_of(value, names) if isinstance(value, str) else None
            if chosen is not None:  # a select or radio attribute naming the emotion
                labels[names.index(chosen)] = 1.0
            continue  # else a text or number attribute of the lab's: not ours
        if name is None:
            report.change(where, f"attribute {key!r} is not an emotion of the set "
                                 f"{emotions.name}: left out")
            continue
        if checked:
            labels[names.index(name)] = 1.0
        elif listed_labels[names.index(name)]:
            report.change(where, f"attribute {key!r} is false but 'emotions' lists it: "
                                 f"{name} kept")
    return labels


def _checkbox(value: Any) -> bool | None:
    """A checkbox value: true/false, 1/0, or the strings "true"/"false" some tools write."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().casefold() in ("true", "false"):
        return value.strip().casefold() == "true"
    return None


def _continuous(where: str, entry: dict[str, Any], limits: tuple[float, float]) -> np.ndarray:
    attributes = entry.get("attributes") if isinstance(entry.get("attributes"), dict) else {}
    by_name = {str(k).strip().casefold(): v for k, v in attributes.items()}
    low, high = limits
    out = np.full(3, np.nan, dtype=np.float32)
    for i, name in enumerate(CONTINUOUS):
        value = entry.get(name, by_name.get(name))
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            raise CocoFormatError(f"{where}: {name} must be a number, got {_short(value)}")
        if not low <= number <= high:
            raise CocoFormatError(f"{where}: {name} {number:g} outside its range "
                                  f"{low:g}..{high:g} (data.continuous_range)")
        scale_low, scale_high = CONTINUOUS_RANGE
        out[i] = scale_low + (scale_high - scale_low) * (number - low) / (high - low)
    return out
