"""Variants of the synthetic CAER set (:mod:`training.datasets.synthetic`) that compared runs
train on: masked copies of a set, and the teachers' sets of knowledge amalgamation.

Masked copies (the learnability benchmark's arms, ``benchmarks/bench_learn.py``), built by
:func:`make_variants` from the generator's ground truth, every image masked by
:func:`masked_image` with the letterbox pad colour (:data:`PAD_RGB`), the annotations as they
are:

- ``context``: every person's box filled (:func:`box_mask`), only the scene is left;
- ``person``: only the people, their stick figures redrawn from the ground truth on a plain
  canvas (:func:`people_alone`);
- ``person_box``: everything outside the boxes filled (a third of each box still shows the
  scene).

The teachers' sets (the KA benchmark, ``benchmarks/bench_amalgamation.py``), written by
:func:`make_teacher_data` from scenes of separate random streams (never a student's images),
JPEG-encoded like the generator's (:func:`jpeg`):

- ``face`` (the FER teacher's role): whole scenes in the EMOTIC format (train / val / test
  70/15/15) where each person is annotated by a **head box** (a square around the head,
  :func:`head_box`) labelled with the emotion its face alone shows (:data:`FER`: smile ->
  Happiness, frown -> Sadness, open -> Surprise); and ``face_crops``, the squares of
  :data:`FACE_CROP` px of the student's input around those head boxes (:func:`crop`),
  folder-per-class ``smile`` / ``frown`` / ``open`` (the face set's train and val splits);
- ``context`` (the VEA teacher's role, the scene's mood), folder-per-class
  (``root/<train|val>/<class>/*.png``, 85/15 by scene): the background alone
  (:func:`~training.datasets.synthetic.draw_context` on an empty canvas), ``party`` /
  ``night`` / ``park``;
- ``generic`` (the ImageNet checkpoint's role): whole scenes labelled with the number of
  people in them (:data:`COUNTS`): visual knowledge of these images with no emotion in its
  labels.

:func:`relabelled` gives a set's records the one-hot of one factor of the ground truth (face
or context) in place of their emotions: what a teacher's features are probed on.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import cv2
import numpy as np

from caer_ros.inference.preprocess import PAD_RGB
from training.datasets.emotic import ANNOTATIONS
from training.datasets.records import ImageRecord
from training.datasets.synthetic import (
    CONTEXTS,
    FACES,
    FOLDER,
    SceneTruth,
    draw_context,
    draw_person,
    generate,
    render_scene,
    write_emotic_labels,
)

#: What a masked copy keeps (:func:`masked_image`).
MASKS = ("context", "person", "person_box")
COUNTS = ("one", "two", "three", "four")  # render_scene draws 1-4 people
FER = {"smile": "Happiness", "frown": "Sadness", "open": "Surprise"}  # the face set's labels
#: The folder-per-class teacher sets and their classes.
TEACHER_CLASSES = {"context": CONTEXTS, "generic": COUNTS, "face_crops": FACES}
FACE_CROP = 32  # face-crop side in student-input pixels (the face-crop classifier's input)
HEAD_CENTRE, HEAD_HALF = 0.35, 0.35  # head square: centre and half side, figure scales
TEACHER_VAL = 0.15  # share of the teacher scenes in the teachers' validation sets
JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95]  # as the generator writes the student's images


# --------------------------------------------------------------------------- masked copies


def box_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) bool: the pixels any box touches (columns ``floor(x1) .. ceil(x2) - 1``, rows
    likewise, clipped), the rule of the training pre-transforms, so a box is masked whole."""
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, c1 = max(0, math.floor(x1)), min(width, math.ceil(x2))
        r0, r1 = max(0, math.floor(y1)), min(height, math.ceil(y2))
        mask[r0:r1, c0:c1] = True
    return mask


def figure_scale() -> float:
    """Box height of a stick figure of scale 1 (the generator's own drawing, measured)."""
    _, top, _, bottom = draw_person(np.zeros((1, 1, 3), np.uint8), 0.0, 0.0, 1.0, "smile", "up",
                                    (0, 0, 0))
    return bottom - top


def people_alone(scene: SceneTruth, image: np.ndarray, fill_bgr: np.ndarray) -> np.ndarray:
    """The scene's stick figures redrawn on a plain ``fill_bgr`` canvas, from the generator's
    ground truth (box -> centre, top and scale; face; pose) and each shirt colour read back
    from ``image`` (median of the lower torso, where no arm passes): the people exactly as
    drawn, their anti-aliased edges blended with the fill instead of the scene."""
    canvas = np.empty_like(image)
    canvas[:] = fill_bgr
    unit = figure_scale()
    for person in scene.people:
        x1, y1, x2, y2 = person.box
        scale, centre = (y2 - y1) / unit, (x1 + x2) / 2
        rows = slice(int(round(y1 + 1.3 * scale)), int(round(y1 + 1.55 * scale)) + 1)
        cols = slice(int(round(centre - 0.2 * scale)), int(round(centre + 0.2 * scale)) + 1)
        shirt = np.median(image[rows, cols].reshape(-1, 3), axis=0)
        draw_person(canvas, centre, y1, scale, person.face, person.pose,
                    tuple(int(c) for c in shirt))
    return canvas


def masked_image(keep: str, scene: SceneTruth, image: np.ndarray) -> np.ndarray:
    """``image`` with only what ``keep`` (:data:`MASKS`) keeps, the rest in the pad colour."""
    fill_bgr = np.array(PAD_RGB[::-1], dtype=np.uint8)
    if keep == "person":
        return people_alone(scene, image, fill_bgr)
    boxes = np.array([p.box for p in scene.people], dtype=np.float64).reshape(-1, 4)
    inside = box_mask(boxes, scene.height, scene.width)
    out = image.copy()
    out[inside if keep == "context" else ~inside] = fill_bgr
    return out


def masked_copy(source: Path, target: Path, truth: dict[str, list[SceneTruth]],
                keep: str) -> None:
    """Copy the synthetic set ``source`` to ``target`` with every image masked
    (:func:`masked_image`); the annotations are copied unchanged."""
    (target / ANNOTATIONS).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / ANNOTATIONS, target / ANNOTATIONS)
    (target / "emotic" / FOLDER).mkdir(parents=True, exist_ok=True)
    for scene in (s for split in truth.values() for s in split):
        image = cv2.imread(str(source / "emotic" / FOLDER / scene.filename), cv2.IMREAD_COLOR)
        cv2.imwrite(str(target / "emotic" / FOLDER / scene.filename),
                    masked_image(keep, scene, image), JPEG)


def make_variants(folder: Path, images: int, seed: int, size: int,
                  variants: dict[str, str]) -> dict[str, Path]:
    """A synthetic set of ``images`` scenes of ``size`` px (``seed``) in ``folder/full`` and, for
    each ``name: keep`` of ``variants``, its masked copy (:func:`masked_copy`) in
    ``folder/<name>``, every folder emptied first: name -> data folder (``full`` included)."""
    roots = {name: folder / name for name in ("full", *variants)}
    for root in roots.values():
        if root.exists():
            shutil.rmtree(root)
    truth = generate(roots["full"], images, seed, size)
    for name, keep in variants.items():
        if name != "full":
            masked_copy(roots["full"], roots[name], truth, keep)
    return roots


# --------------------------------------------------------------------------- teachers' sets


def jpeg(image: np.ndarray) -> np.ndarray:
    """``image`` after a JPEG round trip at the student images' quality."""
    return cv2.imdecode(cv2.imencode(".jpg", image, JPEG)[1], cv2.IMREAD_COLOR)


def head_box(box: tuple[float, float, float, float], unit: float
             ) -> tuple[float, float, float, float]:
    """The square around the head of the figure in ``box`` (``unit``: the box height of a
    figure of scale 1): :func:`~training.datasets.synthetic.draw_person` draws the head as a
    circle of radius 0.3 s centred 0.35 s below the figure's top; the square's half side is
    :data:`HEAD_HALF` s."""
    x1, y1, x2, y2 = box
    s = (y2 - y1) / unit
    cx, cy = (x1 + x2) / 2, y1 + HEAD_CENTRE * s
    return (cx - HEAD_HALF * s, cy - HEAD_HALF * s, cx + HEAD_HALF * s, cy + HEAD_HALF * s)


def crop(image: np.ndarray, centre: tuple[float, float], side: int) -> np.ndarray:
    """The ``side`` x ``side`` square of ``image`` centred on ``centre`` (x, y), the pad colour
    where it leaves the image."""
    c0, r0 = int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2))
    padded = cv2.copyMakeBorder(image, side, side, side, side, cv2.BORDER_CONSTANT,
                                value=tuple(int(c) for c in PAD_RGB[::-1]))
    return padded[r0 + side:r0 + 2 * side, c0 + side:c0 + 2 * side]


def make_teacher_data(root: Path, scenes: int, seed: int, size: int, input_side: int
                      ) -> dict[str, dict[str, object]]:
    """Write the face, face-crop, context and generic sets under ``root/<teacher>`` (module
    docstring) from ``scenes`` scenes of ``size`` px each, drawn from ``default_rng([seed, 1])``
    (the face set and its crops) and ``default_rng([seed, 2])`` (the others);
    ``input_side``: the student's input side. Returns per teacher its folder and image
    counts."""
    truth = generate(root / "face", scenes, [seed, 1], size)
    unit = figure_scale()
    write_emotic_labels(root / "face", {
        split: [dataclasses.replace(scene, people=[
            dataclasses.replace(person, box=head_box(person.box, unit),
                                categories=(FER[person.face],))
            for person in scene.people]) for scene in scenes_of]
        for split, scenes_of in truth.items()})
    face_counts = {split: {name: sum(p.face == face for s in of for p in s.people)
                           for face, name in FER.items()} for split, of in truth.items()}
    side = max(1, round(FACE_CROP * size / input_side))  # FACE_CROP px once letterboxed
    crop_counts = {split: dict.fromkeys(FACES, 0) for split in ("train", "val")}
    for split in crop_counts:
        for label in FACES:
            (root / "face_crops" / split / label).mkdir(parents=True, exist_ok=True)
        for scene in truth[split]:
            image = cv2.imread(str(root / "face" / "emotic" / FOLDER / scene.filename))
            for j, person in enumerate(scene.people):
                x1, y1, x2, y2 = head_box(person.box, unit)
                window = crop(image, ((x1 + x2) / 2, (y1 + y2) / 2), side)
                if side != FACE_CROP:
                    window = cv2.resize(window, (FACE_CROP, FACE_CROP),
                                        interpolation=cv2.INTER_AREA)
                cv2.imwrite(str(root / "face_crops" / split / person.face /
                                f"{Path(scene.filename).stem}_{j}.png"), window)
                crop_counts[split][person.face] += 1
    rng = np.random.default_rng([seed, 2])
    counts = {name: {split: dict.fromkeys(classes, 0) for split in ("train", "val")}
              for name, classes in TEACHER_CLASSES.items()}
    for name, classes in TEACHER_CLASSES.items():
        for split in ("train", "val"):
            for label in classes:
                (root / name / split / label).mkdir(parents=True, exist_ok=True)
    first_val = scenes - max(1, round(TEACHER_VAL * scenes))

    def write(name: str, split: str, label: str, stem: str, image: np.ndarray) -> None:
        cv2.imwrite(str(root / name / split / label / f"{stem}.png"), image)
        counts[name][split][label] += 1

    for i in range(scenes):
        split = "train" if i < first_val else "val"
        image, people, context = render_scene(rng, size)
        write("generic", split, COUNTS[len(people) - 1], f"{i:05d}", jpeg(image))
        background = np.zeros((size, size, 3), np.uint8)
        draw_context(background, context, rng)
        write("context", split, context, f"{i:05d}", jpeg(background))
    return {"face": {"root": str(root / "face"), "images": face_counts},
            "face_crops": {"root": str(root / "face_crops"), "images": crop_counts},
            **{name: {"root": str(root / name), "images": counts[name]} for name in counts}}


def relabelled(records: list[ImageRecord], truth: list[SceneTruth], factor: str
               ) -> list[ImageRecord]:
    """``records`` with each person's labels replaced by the one-hot of its ``factor`` (``face``
    or ``context``) from the generator's ``truth``, matched by file name and box."""
    by_name = {scene.filename: scene for scene in truth}
    classes = FACES if factor == "face" else CONTEXTS
    out = []
    for record in records:
        scene = by_name[record.path.name]
        people = []
        for person in record.people:
            drawn = min(scene.people, key=lambda p: float(np.abs(np.subtract(p.box,
                                                                             person.box)).sum()))
            value = drawn.face if factor == "face" else scene.context
            onehot = np.eye(len(classes), dtype=np.float32)[classes.index(value)]
            people.append(dataclasses.replace(person, categories=onehot))
        out.append(dataclasses.replace(record, people=people))
    return out
