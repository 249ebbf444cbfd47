"""A small synthetic CAER dataset written in EMOTIC's (and HECO's) on-disk format.

``python -m training.datasets.synthetic --out DIR --images N --seed S [--heco] [--size 256]``
writes ``DIR/Annotations/Annotations.mat`` (``train``/``val``/``test``, 70/15/15, val and test with
two annotators and the ``combined_*`` fields, like EMOTIC) and the images under
``DIR/emotic/synthetic/images/``; with ``--heco`` also ``DIR/HECO_Labels.csv`` and the same images
under ``DIR/heco/images/``. The same seed gives the same files.

Scenes. Each image has one *context* and 1-4 people. A person is a stick figure (head, torso, legs,
arms) drawn with cv2; its box covers the whole figure and has the same shape for every pose.

- Context (background): ``party`` (orange, balloons), ``night`` (dark blue, moon and stars),
  ``park`` (green grass, blue sky, trees).
- Face: ``smile`` (mouth curved up), ``frown`` (mouth curved down), ``open`` (round open mouth).
- Body pose: ``up`` (both arms raised), ``down`` (arms hanging), ``crossed`` (arms crossed).

EMOTIC categories (:func:`person_labels`), a person gets every one whose rule holds:

==============  ==========================================
Happiness       face smile
Sadness         face frown and context not party
Annoyance       face frown and (pose crossed or context party)
Surprise        face open and context not night
Fear            face open and context night
Excitement      pose up and context party
Confidence      pose crossed
Peace           pose down and context park
Disconnection   pose down and context night
==============  ==========================================

HECO category (:func:`heco_label`), one per person: open -> Fear at night, else Surprise; frown ->
Anger when crossed, else Disgust at a party, else Sadness; smile -> Excitement when pose up at a
party, else Peace in the park, else Happiness.

Continuous (:func:`person_continuous`, integers clipped to 1..10), sums of per-factor offsets:
valence ``5 + face(smile +3, frown -3) + context(party +1, night -1)``; arousal
``5 + face(open +2, smile +1, frown -1) + pose(up +2, down -2) + context(party +1, park -1)``;
dominance ``5 + pose(crossed +3, up +1, down -2) + face(frown -1, open -1)``.

Several labels need the context (Sadness/Annoyance, Surprise/Fear, Excitement, Peace,
Disconnection), others the face or the pose, so a model that sees only the person or only the
background cannot reach full marks. :func:`generate` returns the ground truth it wrote
(:class:`SceneTruth`) so tests can compare a loader's output against it.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

CONTEXTS = ("party", "night", "park")
FACES = ("smile", "frown", "open")
POSES = ("up", "down", "crossed")
FOLDER = "synthetic/images"
SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.15), ("test", 0.15))
HECO_COLUMNS = (
    "Image", "xmin", "ymin", "xmax", "ymax", "Category",
    "Valence", "Arousal", "Dominance", "Self-assurance", "Catharsis",
)  # fmt: skip

# Person layout in units of the figure scale s: x relative to the centre, y down from the top.
_HALF_WIDTH, _HEIGHT = 0.65, 2.4


def person_labels(face: str, pose: str, context: str) -> tuple[str, ...]:
    """EMOTIC category names of a person (the table in the module docstring), sorted."""
    rules = {
        "Happiness": face == "smile",
        "Sadness": face == "frown" and context != "party",
        "Annoyance": face == "frown" and (pose == "crossed" or context == "party"),
        "Surprise": face == "open" and context != "night",
        "Fear": face == "open" and context == "night",
        "Excitement": pose == "up" and context == "party",
        "Confidence": pose == "crossed",
        "Peace": pose == "down" and context == "park",
        "Disconnection": pose == "down" and context == "night",
    }
    return tuple(sorted(name for name, holds in rules.items() if holds))


def heco_label(face: str, pose: str, context: str) -> str:
    """The one HECO category of a person (module docstring)."""
    if face == "open":
        return "Fear" if context == "night" else "Surprise"
    if face == "frown":
        if pose == "crossed":
            return "Anger"
        return "Disgust" if context == "party" else "Sadness"
    if pose == "up" and context == "party":
        return "Excitement"
    return "Peace" if context == "park" else "Happiness"


def person_continuous(face: str, pose: str, context: str) -> tuple[int, int, int]:
    """Valence, arousal, dominance (1..10) of a person (module docstring)."""
    valence = 5 + {"smile": 3, "frown": -3}.get(face, 0) + {"party": 1, "night": -1}.get(context, 0)
    arousal = (
        5
        + {"open": 2, "smile": 1, "frown": -1}[face]
        + {"up": 2, "down": -2}.get(pose, 0)
        + {"party": 1, "park": -1}.get(context, 0)
    )
    dominance = 5 + {"crossed": 3, "up": 1, "down": -2}[pose] + {"smile": 0}.get(face, -1)
    return tuple(int(np.clip(v, 1, 10)) for v in (valence, arousal, dominance))


@dataclass
class PersonTruth:
    """What the generator drew for one person and the labels it derived."""

    box: tuple[float, float, float, float]
    face: str
    pose: str
    categories: tuple[str, ...]
    heco_category: str
    continuous: tuple[int, int, int]


@dataclass
class SceneTruth:
    """One generated image: file, size, context and people."""

    filename: str
    width: int
    height: int
    context: str
    people: list[PersonTruth] = field(default_factory=list)


def _pt(cx: float, top: float, s: float, x: float, y: float) -> tuple[int, int]:
    return int(round(cx + x * s)), int(round(top + y * s))


def draw_context(image: np.ndarray, context: str, rng: np.random.Generator) -> None:
    """Fill ``image`` (BGR) with the context's background and objects."""
    h, w = image.shape[:2]
    if context == "party":
        image[:] = (40, 140, 250)
        for _ in range(int(rng.integers(3, 7))):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h // 3 + 1))
            r = max(2, w // 30)
            colour = [(200, 60, 230), (60, 220, 60), (230, 60, 60)][int(rng.integers(0, 3))]
            cv2.line(image, (x, y + r), (x, y + 4 * r), (80, 80, 80), 1)
            cv2.circle(image, (x, y), r, colour, -1, cv2.LINE_AA)
    elif context == "night":
        image[:] = (70, 25, 15)
        for _ in range(int(rng.integers(10, 25))):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h // 2 + 1))
            cv2.circle(image, (x, y), 1, (230, 230, 230), -1)
        cv2.circle(image, (int(w * 0.85), int(h * 0.12)), max(3, w // 16), (200, 240, 245), -1)
    else:
        image[:] = (235, 200, 130)
        image[h // 2 :] = (60, 170, 70)
        for _ in range(int(rng.integers(1, 4))):
            x = int(rng.integers(0, w))
            r = max(3, w // 18)
            trunk = ((x - r // 4, h // 2 - 2 * r), (x + r // 4, h // 2))
            cv2.rectangle(image, *trunk, (30, 60, 100), -1)
            cv2.circle(image, (x, h // 2 - 2 * r), r, (40, 120, 40), -1, cv2.LINE_AA)


def draw_person(
    image: np.ndarray, cx: float, top: float, s: float, face: str, pose: str, shirt: tuple
) -> tuple[float, float, float, float]:
    """Draw a stick figure of scale ``s`` (pixels per unit); returns its box ``x1, y1, x2, y2``."""
    skin, dark = (150, 190, 235), (30, 30, 30)
    t = max(1, int(round(0.12 * s)))

    def p(x: float, y: float) -> tuple[int, int]:
        return _pt(cx, top, s, x, y)

    for side in (-1, 1):
        cv2.line(image, p(side * 0.15, 1.6), p(side * 0.3, _HEIGHT), dark, t, cv2.LINE_AA)
    cv2.rectangle(image, p(-0.3, 0.75), p(0.3, 1.65), shirt, -1)
    hands = {
        "up": ((-0.35, 0.8, -0.6, 0.02), (0.35, 0.8, 0.6, 0.02)),
        "down": ((-0.35, 0.8, -0.55, 1.5), (0.35, 0.8, 0.55, 1.5)),
        "crossed": ((-0.35, 0.8, 0.3, 1.15), (0.35, 0.8, -0.3, 1.15)),
    }[pose]
    for x1, y1, x2, y2 in hands:
        cv2.line(image, p(x1, y1), p(x2, y2), skin, t, cv2.LINE_AA)
    centre, radius = p(0, 0.35), max(2, int(round(0.3 * s)))
    cv2.circle(image, centre, radius, skin, -1, cv2.LINE_AA)
    for side in (-1, 1):
        cv2.circle(image, p(side * 0.11, 0.27), max(1, int(round(0.05 * s))), dark, -1)
    axes = (max(1, int(round(0.14 * s))), max(1, int(round(0.08 * s))))
    thickness = max(1, int(round(0.05 * s)))
    if face == "smile":
        cv2.ellipse(image, p(0, 0.42), axes, 0, 0, 180, dark, thickness, cv2.LINE_AA)
    elif face == "frown":
        cv2.ellipse(image, p(0, 0.52), axes, 0, 180, 360, dark, thickness, cv2.LINE_AA)
    else:
        cv2.circle(image, p(0, 0.47), max(1, int(round(0.08 * s))), dark, -1, cv2.LINE_AA)
    x1, y1 = cx - _HALF_WIDTH * s, top
    return (round(x1, 2), round(y1, 2), round(cx + _HALF_WIDTH * s, 2), round(top + _HEIGHT * s, 2))


def render_scene(
    rng: np.random.Generator, size: int, context: str | None = None, people: int | None = None
) -> tuple[np.ndarray, list[PersonTruth], str]:
    """Draw one scene of ``size`` x ``size``; factors not given are drawn from ``rng``."""
    context = context or str(rng.choice(CONTEXTS))
    n = people or int(rng.integers(1, 5))
    image = np.zeros((size, size, 3), np.uint8)
    draw_context(image, context, rng)
    column = size / n
    truth = []
    for i in range(n):
        s = float(min(column / (2 * _HALF_WIDTH + 0.2), size * rng.uniform(0.09, 0.15)))
        cx = (i + 0.5) * column + rng.uniform(-0.1, 0.1) * (column - 2 * _HALF_WIDTH * s)
        top = rng.uniform(0.05 * size, max(0.05 * size, size - _HEIGHT * s - 2))
        face, pose = str(rng.choice(FACES)), str(rng.choice(POSES))
        shirt = tuple(int(c) for c in rng.integers(40, 256, size=3))
        box = draw_person(image, cx, top, s, face, pose, shirt)
        truth.append(
            PersonTruth(
                box,
                face,
                pose,
                person_labels(face, pose, context),
                heco_label(face, pose, context),
                person_continuous(face, pose, context),
            )
        )
    return image, truth, context


def _cell(names: tuple[str, ...] | list[str]) -> np.ndarray:
    cell = np.empty((1, len(names)), dtype=object)
    for i, name in enumerate(names):
        cell[0, i] = name
    return cell


def _struct_array(rows: list[dict]) -> np.ndarray:
    """A 1xN MATLAB struct array from dicts with the same keys."""
    keys = list(rows[0]) if rows else []
    array = np.zeros((1, len(rows)), dtype=[(k, object) for k in keys])
    for i, row in enumerate(rows):
        for k in keys:
            array[0, i][k] = row[k]
    return array


def _continuous(values: tuple[int, int, int]) -> dict:
    return {"valence": float(values[0]), "arousal": float(values[1]), "dominance": float(values[2])}


def emotic_person(person: PersonTruth, combined: bool) -> dict:
    """The EMOTIC ``person`` struct fields for one person (train: one annotator; else two)."""
    x1, y1, x2, y2 = person.box
    row = {
        "body_bbox": np.array([[x1, y1, x2, y2]], dtype=np.float64),
        "head_bbox": np.array([[x1, y1, x2, y1 + (y2 - y1) * 0.27]], dtype=np.float64),
        "gender": "Female",
        "age": "Adult",
    }
    categories = {"worker_id": "synthetic", "categories": _cell(person.categories)}
    if not combined:
        row["annotations_categories"] = categories
        row["annotations_continuous"] = _continuous(person.continuous)
        return row
    row["annotations_categories"] = _struct_array([categories, dict(categories)])
    row["annotations_continuous"] = _struct_array([_continuous(person.continuous)] * 2)
    row["combined_categories"] = _cell(person.categories)
    row["combined_continuous"] = _continuous(person.continuous)
    return row


def emotic_entry(scene: SceneTruth, combined: bool) -> dict:
    """The EMOTIC per-image struct fields for one scene."""
    return {
        "filename": scene.filename,
        "folder": FOLDER,
        "image_size": {"n_col": float(scene.width), "n_row": float(scene.height)},
        "original_database": {"name": "synthetic", "info": "caer_ros synthetic scenes"},
        "person": _struct_array([emotic_person(p, combined) for p in scene.people]),
    }


def write_annotations(path: Path, splits: dict[str, list[dict]]) -> None:
    """Write per-image entries (:func:`emotic_entry` dicts) as EMOTIC's ``Annotations.mat``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {k: _struct_array(v) for k, v in splits.items()})


def generate(
    out: str | Path, images: int, seed: int, size: int = 256, heco: bool = False
) -> dict[str, list[SceneTruth]]:
    """Write the dataset under ``out`` and return the ground truth per split."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_val = max(1, round(SPLIT_FRACTIONS[1][1] * images))
    n_test = max(1, round(SPLIT_FRACTIONS[2][1] * images))
    if images < 3:
        raise ValueError("need at least 3 images (one per split)")
    split_of = ["train"] * (images - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
    truth: dict[str, list[SceneTruth]] = {"train": [], "val": [], "test": []}
    image_dirs = [out / "emotic" / FOLDER] + ([out / "heco" / "images"] if heco else [])
    for d in image_dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(images), desc="synthetic scenes", unit="img"):
        image, people, context = render_scene(rng, size)
        filename = f"synthetic_{i:05d}.jpg"
        for d in image_dirs:
            cv2.imwrite(str(d / filename), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        truth[split_of[i]].append(SceneTruth(filename, size, size, context, people))
    write_annotations(
        out / "Annotations" / "Annotations.mat",
        {k: [emotic_entry(s, k != "train") for s in v] for k, v in truth.items()},
    )
    if heco:
        with open(out / "HECO_Labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(HECO_COLUMNS)
            for scene in (s for split in truth.values() for s in split):
                for p in scene.people:
                    v, a, d = p.continuous
                    writer.writerow([scene.filename, *p.box, p.heco_category, v, a, d, d, a])
    return truth


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--images", type=int, default=100, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--heco", action="store_true", help="also write HECO_Labels.csv")
    args = parser.parse_args(argv)
    truth = generate(args.out, args.images, args.seed, args.size, args.heco)
    counts = ", ".join(f"{k} {len(v)}" for k, v in truth.items())
    print(f"wrote {args.images} images to {args.out} ({counts})")


if __name__ == "__main__":
    main()
