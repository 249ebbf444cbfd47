"""``caer-infer --coco-out FILE.json``: the people found, as pre-labels to correct in an
annotation tool instead of drawing every box from zero.

One COCO file for all the inputs of a run, in the shape CVAT imports as "COCO 1.0" and
``training/datasets/coco.py`` reads (a folder's ``train.json``, ``val.json``, ...):

- ``images``: ``id`` (1, 2, ...), ``file_name``, ``width``, ``height``. An image file's
  ``file_name`` is its path relative to FILE.json's folder (``os.path.relpath``; it may start
  with ``../``). The processed frames of a video or camera are written as JPEG files to
  ``<FILE stem>_frames/<name>_<frame index:06d>.jpg`` beside FILE.json (``<name>``: the video's
  stem, or ``camera<N>``) and ``file_name`` points there.
- ``annotations``: one per person: ``id`` (1, 2, ...), ``image_id``, ``category_id`` 1
  (``person``), ``bbox`` ``[x, y, w, h]`` in pixels, ``area``, ``iscrowd`` 0,
  ``segmentation`` ``[]``, ``attributes`` (CVAT's ``occluded`` false and ``rotation`` 0.0, one
  true/false per category of the reported set, true for the person's labels as ``caer-infer``'s
  JSON gives them, and ``track_id`` for a tracked person of a video), and beside them ``score``
  (the detection score) and ``emotion_scores`` {category: score} (extra fields a loader
  ignores).
- ``categories``: ``person`` alone; ``info``: the model and category set used; ``licenses``
  ``[]``.

The people come from :func:`caer_ros.inference.results.people_json` (the dicts ``caer-infer``
prints), so the file's boxes and labels are those of its JSON output. The file is written
atomically (:func:`caer_ros.atomic_file.atomic_write`) by :meth:`CocoWriter.write`, once at the
end of a run (after Ctrl-C too, with what was processed). Valence, arousal and dominance are
left out: the loader would read them on the scale of the lab's data, not the model's 0..1.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from caer_ros.atomic_file import atomic_write

PERSON_CATEGORY = {"id": 1, "name": "person", "supercategory": ""}
JPEG_QUALITY = 95


class CocoOutError(Exception):
    """A frame or the file that cannot be written; the message says which and why."""


def frames_folder(path: Path) -> Path:
    """``<FILE stem>_frames`` beside the COCO file ``path``."""
    return path.parent / f"{path.stem}_frames"


def _round(value: float) -> float:
    return round(float(value), 2)


def annotation(person: dict[str, Any], categories: Sequence[str]) -> dict[str, Any] | None:
    """The COCO annotation (without ``id`` and ``image_id``) of one person of
    :func:`~caer_ros.inference.results.people_json`; None for a box with no width or height
    at two decimals (no annotation tool or loader takes it)."""
    x1, y1, x2, y2 = (float(v) for v in person["box"])
    width, height = _round(x2 - x1), _round(y2 - y1)
    if width <= 0 or height <= 0:
        return None
    labels = set(person["labels"])
    attributes: dict[str, Any] = {"occluded": False, "rotation": 0.0}
    attributes.update({name: name in labels for name in categories})
    if person.get("id") is not None:
        track = str(person["id"])
        attributes["track_id"] = int(track) if track.isdigit() else track
    return {
        "category_id": PERSON_CATEGORY["id"],
        "bbox": [_round(x1), _round(y1), width, height],
        "area": _round(width * height),
        "iscrowd": 0,
        "segmentation": [],
        "attributes": attributes,
        "score": person["detection_score"],
        "emotion_scores": dict(person["scores"]),
    }


class CocoWriter:
    """Collects the images and people of a run; :meth:`write` writes the COCO file.

    Each image is kept with its annotations as one entry (one list append), so a Ctrl-C
    between two steps never leaves an image without its people (which would read as an image
    with nobody in it). Ids are given when the file is written.
    """

    def __init__(self, path: str | os.PathLike, model: str, category_set: str,
                 categories: Sequence[str]) -> None:
        self.path = Path(path)
        self.folder = self.path.parent if str(self.path.parent) else Path(".")
        self.frames = frames_folder(self.path)
        self.model = str(model)
        self.category_set = category_set
        self.categories = tuple(categories)
        self._entries: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []

    @property
    def images(self) -> int:
        return len(self._entries)

    @property
    def people(self) -> int:
        return sum(len(annotations) for _, annotations in self._entries)

    def file_name(self, path: str | os.PathLike) -> str:
        """``path`` relative to the COCO file's folder (``/``-separated)."""
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(self.folder))
        return Path(relative).as_posix()

    def add_image(self, path: str | os.PathLike, width: int, height: int,
                  people: Sequence[dict[str, Any]]) -> None:
        """An image file already on disk and its people (``people_json`` dicts)."""
        image = {"file_name": self.file_name(path), "width": int(width), "height": int(height)}
        found = [a for a in (annotation(p, self.categories) for p in people) if a is not None]
        self._entries.append((image, found))

    def add_frame(self, frame: np.ndarray, name: str, index: int,
                  people: Sequence[dict[str, Any]]) -> Path:
        """A processed frame of a video or camera: written as
        ``<frames folder>/<name>_<index:06d>.jpg``, then added with its people. Raises
        :class:`CocoOutError` when the JPEG cannot be written."""
        path = self.frames / f"{name}_{index:06d}.jpg"
        try:
            self.frames.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CocoOutError(f"cannot create {self.frames}: {error.strerror or error}") \
                from None
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise CocoOutError(f"cannot encode frame {index} as JPEG")
        try:
            path.write_bytes(encoded.tobytes())
        except OSError as error:
            raise CocoOutError(f"cannot write {path}: {error.strerror or error}") from None
        self.add_image(path, frame.shape[1], frame.shape[0], people)
        return path

    def document(self) -> dict[str, Any]:
        """The COCO document of what was added so far (module docstring)."""
        images, annotations = [], []
        for image_id, (image, found) in enumerate(list(self._entries), start=1):
            images.append({"id": image_id, **image})
            for person in found:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    **person})
        now = datetime.datetime.now(datetime.timezone.utc).astimezone()
        return {
            "info": {
                "description": f"caer-infer pre-labels: people of {self.model}, categories "
                               f"{self.category_set}",
                "model": self.model,
                "category_set": self.category_set,
                "categories": list(self.categories),
                "date_created": now.isoformat(timespec="seconds"),
            },
            "licenses": [],
            "categories": [dict(PERSON_CATEGORY)],
            "images": images,
            "annotations": annotations,
        }

    def write(self) -> Path:
        """Write the file atomically; raises :class:`CocoOutError`."""
        text = json.dumps(self.document(), indent=1, ensure_ascii=False) + "\n"
        try:
            with atomic_write(self.path) as stream:
                stream.write(text.encode("utf-8"))
        except OSError as error:
            raise CocoOutError(f"cannot write {self.path}: {error.strerror or error}") \
                from None
        return self.path
