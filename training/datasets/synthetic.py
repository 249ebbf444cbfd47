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

Two pools. ``python -m training.datasets.synthetic --pools --out DIR --images N --seed S
[--shift 1.0] [--test-images M]`` (:func:`generate_pools`) writes, for a multitask benchmark, two
pools of ``N`` different scenes each (independent random streams, so no image is shared) and two
test sets of ``M`` scenes (default ``max(3, N // 4)``) from two further streams:

- EMOTIC-style pool, no style, EMOTIC labels only: ``DIR/Annotations/Annotations.mat``
  (train/val/test 70/15/15) and ``DIR/emotic/synthetic/images/emotic_NNNNN.jpg``;
- HECO-style pool, HECO labels only: ``DIR/HECO_Labels.csv`` and
  ``DIR/heco/images/heco_NNNNN.jpg``, each image through :func:`apply_style` with ``shift``;
- cross-domain test sets ``DIR/cross/emotic_style/`` (no style) and ``DIR/cross/heco_style/``
  (the same ``shift``), each in the ``--heco`` layout above with both label sets for every
  person and every image in ``test`` (``train`` and ``val`` are empty).

The style (:func:`apply_style`) is a fixed global photometric change: a warm sepia-leaning channel
mix, lower contrast, a brightness lift and a vignette, blended in by ``shift`` in [0, 1]. It moves
every image's colour statistics (a domain shift a network sees in pooled features) and keeps the
shapes that carry the labels. ``--shift 0`` is the no-shift control: the HECO-style pool and test
set are drawn from the same streams (the same scenes and labels) but left unstyled, so the pools
differ only in their scenes and label sets, not in style.
"""

from __future__ import annotations

import argparse
import csv
import numbers
from collections.abc import Sequence
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

# HECO-style photometric change (apply_style). Sepia channel mix in BGR order: row = output
# channel (B, G, R), column = input channel (B, G, R).
_SEPIA_BGR = np.array(
    [[0.131, 0.534, 0.272], [0.168, 0.686, 0.349], [0.189, 0.769, 0.393]], dtype=np.float32
)
STYLE_MIX = 0.45  # share of the sepia mix in the colour
STYLE_CONTRAST = 0.75  # contrast around mid-grey (1 unchanged)
STYLE_LIFT = 30.0  # brightness added after the contrast change
STYLE_VIGNETTE = 0.2  # darkening at the corners (0 none)

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


def _checked_shift(shift: float) -> float:
    """``shift`` as a float; a ValueError unless it is a number in [0, 1]."""
    if isinstance(shift, bool) or not isinstance(shift, numbers.Real):
        raise ValueError(f"style shift must be a number in [0, 1], got {shift!r}")
    value = float(shift)
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ValueError(f"style shift must be in [0, 1] (0 no style, 1 full), got {shift!r}")
    return value


def _vignette(height: int, width: int) -> np.ndarray:
    """Brightness factor (H, W, 1): 1 at the centre falling to ``1 - STYLE_VIGNETTE`` at corners."""
    y = (np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1
    x = (np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1
    r2 = (y[:, None] ** 2 + x[None, :] ** 2) / 2
    return (1 - STYLE_VIGNETTE * r2)[..., None]


def apply_style(image: np.ndarray, shift: float) -> np.ndarray:
    """The HECO-style photometric change of a BGR uint8 image, blended by ``shift`` in [0, 1].

    The full style (``shift`` 1) mixes the colour channels towards sepia (:data:`STYLE_MIX`),
    lowers the contrast around mid-grey and lifts the brightness (:data:`STYLE_CONTRAST`,
    :data:`STYLE_LIFT`) and darkens the corners (:data:`STYLE_VIGNETTE`): a warm, flat, washed-out
    look that moves every image's mean colour, while shapes (people, faces, poses) and the
    contexts' relative colours stay. ``shift`` blends linearly between the image and that;
    0 returns an unchanged copy. Deterministic: no randomness.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"apply_style needs a BGR uint8 image, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            "apply_style needs a BGR uint8 image of shape (H, W, 3), "
            f"got {image.dtype} of shape {image.shape}"
        )
    shift = _checked_shift(shift)
    if shift == 0.0:
        return image.copy()
    x = image.astype(np.float32)
    mix = (1 - STYLE_MIX) * np.eye(3, dtype=np.float32) + STYLE_MIX * _SEPIA_BGR
    styled = x @ mix.T
    styled = STYLE_CONTRAST * (styled - 128.0) + 128.0 + STYLE_LIFT
    styled *= _vignette(*image.shape[:2])
    out = x + shift * (np.clip(styled, 0, 255) - x)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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


# An empty split in Annotations.mat: 0x0 struct array with the fields emotic_entry writes.
_ENTRY_FIELDS = ("filename", "folder", "image_size", "original_database", "person")
_EMPTY_SPLIT = np.zeros((0, 0), dtype=[(k, object) for k in _ENTRY_FIELDS])


def write_annotations(path: Path, splits: dict[str, list[dict]]) -> None:
    """Write per-image entries (:func:`emotic_entry` dicts) as EMOTIC's ``Annotations.mat``.

    An empty split is written as a 0x0 struct array with the entry fields (MATLAB's empty
    struct), which the EMOTIC loader reads as no images.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    variables = {k: _struct_array(v) if v else _EMPTY_SPLIT for k, v in splits.items()}
    scipy.io.savemat(str(path), variables)


def _split_names(images: int) -> list[str]:
    """The split of each of ``images`` scenes: train, val, test in order, 70/15/15, none empty."""
    if images < 3:
        raise ValueError(f"need at least 3 images (one per split), got {images}")
    n_val = max(1, round(SPLIT_FRACTIONS[1][1] * images))
    n_test = max(1, round(SPLIT_FRACTIONS[2][1] * images))
    return ["train"] * (images - n_val - n_test) + ["val"] * n_val + ["test"] * n_test


def _draw_scenes(
    rng: np.random.Generator,
    splits: list[str],
    size: int,
    image_dirs: list[Path],
    prefix: str,
    shift: float = 0.0,
    desc: str = "synthetic scenes",
) -> dict[str, list[SceneTruth]]:
    """Draw one scene per entry of ``splits`` from ``rng``; ``shift`` > 0: :func:`apply_style`.

    Each image is written as ``<prefix>_NNNNN.jpg`` into every folder of ``image_dirs`` (the same
    file in each); returns the scenes per split, in the order of first appearance in ``splits``.
    """
    truth: dict[str, list[SceneTruth]] = {name: [] for name in dict.fromkeys(splits)}
    for d in image_dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(splits)), desc=desc, unit="img"):
        image, people, context = render_scene(rng, size)
        if shift:
            image = apply_style(image, shift)
        filename = f"{prefix}_{i:05d}.jpg"
        for d in image_dirs:
            cv2.imwrite(str(d / filename), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        truth[splits[i]].append(SceneTruth(filename, size, size, context, people))
    return truth


def write_emotic_labels(out: Path, truth: dict[str, list[SceneTruth]]) -> None:
    """``out/Annotations/Annotations.mat`` for the scenes per split (train: one annotator), each
    person labelled with its ``categories``."""
    write_annotations(
        out / "Annotations" / "Annotations.mat",
        {k: [emotic_entry(s, k != "train") for s in v] for k, v in truth.items()},
    )


def _write_heco_labels(path: Path, scenes: list[SceneTruth]) -> None:
    """``HECO_Labels.csv``: one row per person (:data:`HECO_COLUMNS`)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HECO_COLUMNS)
        for scene in scenes:
            for p in scene.people:
                v, a, d = p.continuous
                writer.writerow([scene.filename, *p.box, p.heco_category, v, a, d, d, a])


def generate(
    out: str | Path, images: int, seed: int | Sequence[int], size: int = 256, heco: bool = False
) -> dict[str, list[SceneTruth]]:
    """Write the dataset under ``out`` and return the ground truth per split (``seed``: anything
    ``numpy.random.default_rng`` takes, e.g. ``[seed, 1]`` for a stream apart from ``seed``'s)."""
    out = Path(out)
    splits = _split_names(images)
    image_dirs = [out / "emotic" / FOLDER] + ([out / "heco" / "images"] if heco else [])
    truth = _draw_scenes(np.random.default_rng(seed), splits, size, image_dirs, "synthetic")
    write_emotic_labels(out, truth)
    if heco:
        _write_heco_labels(out / "HECO_Labels.csv", [s for v in truth.values() for s in v])
    return truth


def _write_cross_set(
    root: Path, rng: np.random.Generator, images: int, size: int, name: str, shift: float
) -> dict[str, list[SceneTruth]]:
    """A test-only set with both label sets (``generate(..., heco=True)`` layout) under ``root``.

    Every image is in the ``test`` split of ``Annotations.mat``; ``train`` and ``val`` are empty.
    """
    image_dirs = [root / "emotic" / FOLDER, root / "heco" / "images"]
    test = _draw_scenes(rng, ["test"] * images, size, image_dirs, name, shift, f"cross {name}")
    truth = {"train": [], "val": [], "test": test["test"]}
    write_emotic_labels(root, truth)
    _write_heco_labels(root / "HECO_Labels.csv", truth["test"])
    return truth


def generate_pools(
    out: str | Path,
    images: int,
    seed: int,
    size: int = 256,
    shift: float = 1.0,
    test_images: int | None = None,
) -> dict[str, dict[str, list[SceneTruth]]]:
    """Write two disjoint pools and two cross-domain test sets under ``out`` ("Two pools" above).

    ``images`` scenes per pool, ``test_images`` (default ``max(3, images // 4)``) per cross set;
    ``shift`` in [0, 1] is the HECO-style strength (:func:`apply_style`). Returns the ground truth
    per set: ``emotic`` (train/val/test), ``heco`` (all), ``cross_emotic_style`` and
    ``cross_heco_style`` (test; train and val empty).
    """
    out = Path(out)
    shift = _checked_shift(shift)
    if test_images is None:
        test_images = max(3, images // 4)
    if test_images < 1:
        raise ValueError(f"need at least 1 cross-domain test image, got {test_images}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    splits = _split_names(images)
    truth: dict[str, dict[str, list[SceneTruth]]] = {}
    emotic_dirs = [out / "emotic" / FOLDER]
    rng = np.random.default_rng(seed)
    truth["emotic"] = _draw_scenes(rng, splits, size, emotic_dirs, "emotic", 0.0, "emotic pool")
    write_emotic_labels(out, truth["emotic"])
    rng, heco_dirs = np.random.default_rng([seed, 1]), [out / "heco" / "images"]
    heco = _draw_scenes(rng, ["all"] * images, size, heco_dirs, "heco", shift, "heco pool")
    _write_heco_labels(out / "HECO_Labels.csv", heco["all"])
    truth["heco"] = heco
    for stream, name, style in ((2, "emotic_style", 0.0), (3, "heco_style", shift)):
        rng = np.random.default_rng([seed, stream])
        truth[f"cross_{name}"] = _write_cross_set(
            out / "cross" / name, rng, test_images, size, name, style
        )
    return truth


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--images", type=int, default=100, help="number of images (per pool)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--heco", action="store_true", help="also write HECO_Labels.csv")
    parser.add_argument(
        "--pools", action="store_true",
        help="write two disjoint pools (EMOTIC-style, HECO-style) and cross-domain test sets",
    )  # fmt: skip
    parser.add_argument(
        "--shift", type=float, default=None,
        help="HECO-style strength in [0, 1] with --pools (default 1.0; 0: no-shift control)",
    )  # fmt: skip
    parser.add_argument(
        "--test-images", type=int, default=None,
        help="images per cross-domain test set with --pools (default max(3, images // 4))",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.pools:
        pool_only = {"--shift": args.shift, "--test-images": args.test_images}
        given = [flag for flag, value in pool_only.items() if value is not None]
        if given:
            parser.error(f"{' and '.join(given)} can only be used with --pools")
        truth = generate(args.out, args.images, args.seed, args.size, args.heco)
        counts = ", ".join(f"{k} {len(v)}" for k, v in truth.items())
        print(f"wrote {args.images} images to {args.out} ({counts})")
        return
    if args.heco:
        parser.error("--heco does not apply with --pools (the pools always write both label sets)")
    shift = 1.0 if args.shift is None else args.shift
    try:
        pools = generate_pools(args.out, args.images, args.seed, args.size, shift, args.test_images)
    except ValueError as error:
        parser.error(str(error))
    summary = "; ".join(
        f"{name} " + ", ".join(f"{k} {len(v)}" for k, v in splits.items() if v)
        for name, splits in pools.items()
    )
    print(f"wrote pools to {args.out} with style shift {shift} ({summary})")


if __name__ == "__main__":
    main()
