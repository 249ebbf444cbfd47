"""Synthetic CAER scenes (:mod:`training.datasets.synthetic`) written as a lab's own COCO folder
(:mod:`training.datasets.coco`): the data of the own-data tests and of the fine-tuning
benchmark.

    python -m training.datasets.synthetic_coco --out DIR --images N --seed S [--size 128]
        [--spelling emotions|cvat] [--negatives K] [--emotions own|emotic] [--test-images M]

writes ``DIR/train.json``, ``DIR/val.json``, ``DIR/test.json`` (70/15/15) and the images under
``DIR/images/`` (``file_name`` ``images/own_NNNNN.jpg``). ``--negatives K`` adds K scenes
without people (a background only) to the training split. ``--test-images M`` (the fine-tuning
benchmark's held-out test set): the N scenes are split into train and val only (85/15, val at
least one) and the test split is M further scenes from a random stream of their own
(``images/own_test_NNNNN.jpg``), so the test set can be larger than a lab-sized set's 15%.

The lab's own emotion set, :data:`OWN_EMOTIONS`, is derived from the scene rules
(:func:`own_labels`): three names EMOTIC also has, with EMOTIC's rules for them (Happiness:
smile; Sadness: frown, not at a party; Surprise: open mouth, not at night), and one EMOTIC has
not: Calm (arms down, whatever the context), so a model fine-tuned from an EMOTIC one starts
three of its four emotion maps from that model and learns one anew. ``--emotions emotic``
writes the EMOTIC categories instead.

Two spellings of a person's emotions, as annotation tools export them: ``emotions`` (a list of
names) with top-level ``valence``/``arousal``/``dominance``, or ``cvat`` (CVAT's COCO 1.0:
``attributes`` with one checkbox per emotion, CVAT's ``occluded`` and ``rotation``, and the
continuous values among them), both on the 1..10 scale.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from caer_ros.labels import EMOTIC
from training.datasets.synthetic import (
    CONTEXTS,
    SceneTruth,
    _split_names,
    draw_context,
    render_scene,
)

OWN_EMOTIONS = ("Happiness", "Sadness", "Surprise", "Calm")
SPELLINGS = ("emotions", "cvat")
PERSON_CATEGORY = {"id": 1, "name": "person", "supercategory": ""}


def own_labels(face: str, pose: str, context: str) -> tuple[str, ...]:
    """The person's names of :data:`OWN_EMOTIONS` (module docstring), in the set's order."""
    rules = {
        "Happiness": face == "smile",
        "Sadness": face == "frown" and context != "party",
        "Surprise": face == "open" and context != "night",
        "Calm": pose == "down",
    }
    return tuple(name for name in OWN_EMOTIONS if rules[name])


def _annotation(key: int, image_id: int, person: Any, labels: tuple[str, ...],
                emotions: tuple[str, ...], spelling: str) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in person.box)
    entry: dict[str, Any] = {"id": key, "image_id": image_id, "category_id": 1,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                             "segmentation": [], "iscrowd": 0}
    continuous = dict(zip(("valence", "arousal", "dominance"),
                          (float(v) for v in person.continuous), strict=True))
    if spelling == "emotions":
        entry.update(emotions=list(labels), **continuous)
    else:
        entry["attributes"] = {"occluded": False, "rotation": 0.0,
                               **{name: name in labels for name in emotions}, **continuous}
    return entry


def write_coco_split(path: Path, scenes: list[SceneTruth], image_folder: str,
                     labels_of: Callable[[str, str, str], tuple[str, ...]],
                     emotions: tuple[str, ...], spelling: str = "emotions") -> None:
    """One split's COCO file for ``scenes`` (their images in ``image_folder`` relative to the
    file's folder)."""
    if spelling not in SPELLINGS:
        raise ValueError(f"spelling must be one of {', '.join(SPELLINGS)}, got {spelling!r}")
    images, annotations = [], []
    for image_id, scene in enumerate(scenes, start=1):
        images.append({"id": image_id, "file_name": f"{image_folder}/{scene.filename}",
                       "width": scene.width, "height": scene.height})
        for person in scene.people:
            annotations.append(_annotation(len(annotations) + 1, image_id, person,
                                           labels_of(person.face, person.pose, scene.context),
                                           emotions, spelling))
    document = {"info": {"description": "caer_ros synthetic CAER scenes"}, "licenses": [],
                "images": images, "annotations": annotations,
                "categories": [PERSON_CATEGORY]}
    path.write_text(json.dumps(document, indent=1))


def _train_val_names(images: int) -> list[str]:
    """The split of each of ``images`` scenes when the test set is drawn apart: train then
    val, 85/15, neither empty."""
    if images < 2:
        raise ValueError(f"need at least 2 images (train and val), got {images}")
    n_val = min(images - 1, max(1, round(0.15 * images)))
    return ["train"] * (images - n_val) + ["val"] * n_val


def generate_coco(out: str | Path, images: int, seed: int, size: int = 128,
                  spelling: str = "emotions", negatives: int = 0,
                  emotions: str = "own", test_images: int | None = None
                  ) -> dict[str, list[SceneTruth]]:
    """Write the folder (module docstring) and return the scenes per split. ``test_images``
    (None: the test split is 15% of ``images``): ``images`` scenes train and validate, and
    the test split is ``test_images`` scenes of a stream of their own."""
    out = Path(out)
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    if test_images is not None and test_images < 1:
        raise ValueError(f"test_images must be >= 1 or None, got {test_images}")
    rng = np.random.default_rng([seed, 7])
    truth: dict[str, list[SceneTruth]] = {"train": [], "val": [], "test": []}
    splits = _split_names(images) if test_images is None else _train_val_names(images)
    for i, split in enumerate(tqdm(splits, desc="synthetic COCO", unit="img")):
        image, people, context = render_scene(rng, size)
        filename = f"own_{i:05d}.jpg"
        cv2.imwrite(str(folder / filename), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        truth[split].append(SceneTruth(filename, size, size, context, people))
    test_rng = np.random.default_rng([seed, 8])  # apart from the train/val scenes' stream
    for i in tqdm(range(test_images or 0), desc="synthetic COCO test", unit="img"):
        image, people, context = render_scene(test_rng, size)
        filename = f"own_test_{i:05d}.jpg"
        cv2.imwrite(str(folder / filename), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        truth["test"].append(SceneTruth(filename, size, size, context, people))
    for i in range(negatives):
        image = np.zeros((size, size, 3), np.uint8)
        context = str(rng.choice(CONTEXTS))
        draw_context(image, context, rng)
        filename = f"own_negative_{i:05d}.jpg"
        cv2.imwrite(str(folder / filename), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        truth["train"].append(SceneTruth(filename, size, size, context, []))
    if emotions == "own":
        labels_of, names = own_labels, OWN_EMOTIONS
    elif emotions == "emotic":
        from training.datasets.synthetic import person_labels

        labels_of, names = person_labels, EMOTIC
    else:
        raise ValueError(f"emotions must be own or emotic, got {emotions!r}")
    for split, scenes in truth.items():
        write_coco_split(out / f"{split}.json", scenes, "images", labels_of, names, spelling)
    return truth


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--images", type=int, default=100, help="scenes with people")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--spelling", choices=SPELLINGS, default="emotions")
    parser.add_argument("--negatives", type=int, default=0,
                        help="scenes without people added to train")
    parser.add_argument("--emotions", choices=("own", "emotic"), default="own")
    parser.add_argument("--test-images", type=int, default=None,
                        help="test scenes drawn apart (the N scenes: train and val only)")
    args = parser.parse_args(argv)
    least = 3 if args.test_images is None else 2
    if args.images < least or args.negatives < 0:
        parser.error(f"--images must be >= {least} and --negatives >= 0")
    if args.test_images is not None and args.test_images < 1:
        parser.error("--test-images must be >= 1")
    truth = generate_coco(args.out, args.images, args.seed, args.size, args.spelling,
                          args.negatives, args.emotions, args.test_images)
    counts = ", ".join(f"{k} {len(v)}" for k, v in truth.items())
    print(f"wrote {args.out} ({counts}; emotions {args.emotions}, spelling {args.spelling})")


if __name__ == "__main__":
    main()
