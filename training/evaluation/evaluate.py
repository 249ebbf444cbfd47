"""Evaluation of a model file on EMOTIC, HECO or a lab's own COCO folder: ER mAP, PD AP, OER
(DESIGN.md "Metrics"), F1 and the ABAW-style combined score; or, with ``--against``, a
student's agreement with its teacher on unlabelled frames.

    python -m training.evaluate --model M.pt|M.onnx --data DIR [--dataset emotic|heco|coco]
        [--split test|val|train] [--backend auto|torch|onnxruntime] [--device cpu|cuda]
        [--detection-threshold 0.01] [--limit N] [--seed 0] [--images DIR] [--json PATH]
    python -m training.evaluate --model STUDENT.pt --against TEACHER.pt --images PATH [PATH ...]
        [--frame-rate 2] [--max-frames N] [--backend ...] [--device ...] [--json PATH]

Agreement (``--against``, :mod:`training.evaluation.agreement`): the teacher's people and
labels (at its own detection and emotion thresholds) are the ground truth of the student's
PD AP and ER mAP, with the mean absolute difference of their scores, on the frames of
``--images`` (image folders, images, videos at ``--frame-rate``:
:func:`training.datasets.frames.collect_frames`). The inference-setting options are the
student's; the teacher runs with its file's settings, its backend from its suffix. The rest of
this docstring is about ``--data``.

One pass over the split's images; per image one network run through the
:class:`~caer_ros.inference.predictor.Predictor` (the same code path as the node and
``caer-infer``), :meth:`~caer_ros.inference.predictor.Predictor.predict_and_read`, gives two
readings:

- the people at the annotated boxes: the emotion scores of every annotated person, for the
  ER mAP (BENet section 4.2, KA paper section 4.2);
- the detected people, for the person-detection AP (COCO AP@[.50:.95], pycocotools) and OER.

The metrics themselves are :mod:`training.evaluation.metrics`. Scores are taken from the
model's category set that matches the data's (``emotic`` or ``heco``), which need not be the
model's primary set.

F1 (the ABAW challenges' classification metrics, ``papers/abaw-multitask-kd-task-discriminator.txt``
section V.B), on the scores read with the annotated boxes:

- single-label sets (HECO, :data:`caer_ros.labels.SINGLE_LABEL_SETS`):
  ``macro_f1`` (:func:`training.evaluation.metrics.macro_f1`, the prediction is the highest-scoring
  category) and ``accuracy``;
- multi-label sets (EMOTIC): ``mean_f1`` (:func:`training.evaluation.metrics.mean_f1_multilabel`),
  each
  category predicted at the model's emotion threshold for it (the model file's inference
  settings, the thresholds the node uses for a person's ``labels``).

The JSON says which with ``single_label``.

ABAW score: as ABAW's multi-task metric is the sum of its tasks' metrics, ``abaw_score`` is the
sum of the parts that apply here: the mean CCC of valence, arousal and dominance (a model with a
continuous head on data with continuous labels) plus ``macro_f1`` or ``mean_f1``. ``abaw_parts``
names the summed parts, each x100 like the score (so the CCC part is 100 x ``ccc_mean``).

Scale: every metric in :class:`EvaluationResult` and in the JSON file is x100 (0..100), as the
papers report them; the JSON says so with ``"scale": 100``. Exceptions: the CCC values ``ccc``
and ``ccc_mean`` are -1..1, as the papers report CCC, and ``abaw_score``, a sum, is up to 200
(down to -100) with its CCC part. A category without any positive
person in the evaluated images has no AP (NaN in the result, ``null`` in the JSON) and is left
out of the ER mAP and of every OER mAP (the rule of :func:`training.evaluation.metrics.er_map`).

Detection threshold: ``--detection-threshold`` defaults to :data:`DETECTION_THRESHOLD` (0.01),
far below a deployed model's, so that low-scoring detections still enter the precision-recall
curves of PD AP (AP is computed over all score thresholds; a high cut-off truncates the curve).
Detections per image stay capped by the model's ``top_k``. OER ignores false positives, so the
low threshold can only help it.

HECO: ``DIR`` holds ``HECO_Labels.csv``; images are in ``--images`` or else the first of
``DIR/heco/images`` (the synthetic generator's layout), ``DIR/images``, ``DIR`` that exists. HECO
has no official split: the split is the KA paper's partition from ``--seed``
(:func:`training.datasets.heco.heco_partition`), which must be the seed the model was trained
with.

A lab's own data (:mod:`training.datasets.coco`): ``DIR`` holds ``train.json``, ``val.json``,
``test.json`` (found so without ``--dataset``); the people's emotions are read with the
model's category set (``--category-set`` for a model with several, else its first), valence,
arousal and dominance on the scale ``--continuous-range LOW HIGH`` (default: the one the
model was trained with, stored in its file, else 1 10). A
single-label set (HECO, or one the model scores with a softmax) is reported with macro F1.

Errors with the input (model files, annotations, images, frames, category sets) print one
line ``error: ...`` naming the file and exit with status 1, with nothing written.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from caer_ros import image_file
from caer_ros.atomic_file import atomic_write
from caer_ros.image_file import ImageFileError
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.setting_args import add_setting_arguments, setting_changes
from caer_ros.labels import category_set
from caer_ros.model.checkpoint import ModelFileError
from training.datasets.coco import CocoFormatError, EmotionSet, is_coco_folder
from training.datasets.emotic import EmoticFormatError
from training.datasets.frames import FrameError, collect_frames
from training.datasets.heco import HecoFormatError
from training.datasets.records import ImageRecord, LoadReport
from training.datasets.splits import DATASETS, SPLITS, HecoSplit, load_split
from training.evaluation import metrics
from training.evaluation.agreement import (
    AgreementError,
    agreement,
    format_agreement,
    shared_category_set,
)
from training.objectives.multitask import ccc

LOG = logging.getLogger(__name__)

#: Every metric of an :class:`EvaluationResult` is this times the 0..1 value of
#: :mod:`training.evaluation.metrics`.
SCALE = 100
#: Default minimum detection score of :func:`evaluate` (see the module docstring).
DETECTION_THRESHOLD = 0.01
#: Default ``--frame-rate`` of ``--against``: video frames taken per second of video.
FRAME_RATE = 2.0


class EvaluationError(ValueError):
    """Evaluation cannot run on this input; the one-line message names the file or the reason."""


@dataclass
class EvaluationResult:
    """The papers' metrics of one model on one set of images, each x100 (:data:`SCALE`).

    ``per_category_ap`` maps every category name of the evaluated set, in the set's order, to its
    AP (NaN when no evaluated person has the category; such categories are left out of every
    mean). ``oer_per_threshold`` maps the IoU thresholds ``"0.50"`` ... ``"0.95"`` to the ER mAP
    at that threshold; ``oer_map`` is their mean.
    """

    er_map: float
    per_category_ap: dict[str, float]
    pd_ap: float
    oer_per_threshold: dict[str, float]
    oer_map: float
    images: int
    people: int
    category_set: str
    detection_threshold: float
    # valence/arousal/dominance CCC (-1..1, not scaled) of a model with a continuous head, read
    # at the annotated boxes against (value - 1) / 9; None without a continuous head or labels
    ccc: dict[str, float] | None = None
    # F1 (module docstring), x100. single_label: every annotated person has exactly one
    # category; then macro_f1 and accuracy are set, else mean_f1 at f1_thresholds (one per
    # category). per_category_f1 is NaN for a category with no true and no predicted person
    # (left out of the mean). None where not computed.
    single_label: bool | None = None
    macro_f1: float | None = None
    accuracy: float | None = None
    mean_f1: float | None = None
    f1_thresholds: tuple[float, ...] | None = None
    per_category_f1: dict[str, float] | None = None

    @property
    def ccc_mean(self) -> float | None:
        """Mean CCC over the continuous dimensions (-1..1), None without CCC."""
        return None if self.ccc is None else float(np.mean(list(self.ccc.values())))

    @property
    def abaw_parts(self) -> dict[str, float]:
        """The parts of :attr:`abaw_score` that apply, x100: ``ccc_mean`` (100 x the mean CCC)
        with CCC, then ``macro_f1`` (single-label) or ``mean_f1`` (multi-label)."""
        parts = {} if self.ccc is None else {"ccc_mean": SCALE * self.ccc_mean}
        for name in ("macro_f1", "mean_f1"):
            if getattr(self, name) is not None:
                parts[name] = getattr(self, name)
        return parts

    @property
    def abaw_score(self) -> float | None:
        """ABAW multi-task style score: the sum of :attr:`abaw_parts` (x100; -100..200 with CCC,
        0..100 without), None when there is no part."""
        parts = self.abaw_parts
        return float(sum(parts.values())) if parts else None

    def to_json(self, **metadata: Any) -> dict[str, Any]:
        """A JSON-ready dict: the metrics (NaN as None), ``"scale": 100``, the counts, and
        ``metadata`` (e.g. model, data, split) added as given."""
        return {
            "scale": SCALE,
            "er_map": _finite(self.er_map),
            "per_category_ap": {name: _finite(v) for name, v in self.per_category_ap.items()},
            "pd_ap": _finite(self.pd_ap),
            "oer_per_threshold": {t: _finite(v) for t, v in self.oer_per_threshold.items()},
            "oer_map": _finite(self.oer_map),
            "images": self.images,
            "people": self.people,
            "category_set": self.category_set,
            "categories": list(self.per_category_ap),
            "detection_threshold": self.detection_threshold,
            **({} if self.ccc is None else {
                "ccc": {k: _finite(v) for k, v in self.ccc.items()},
                "ccc_mean": _finite(self.ccc_mean)}),
            **self._f1_json(),
            **metadata,
        }

    def _f1_json(self) -> dict[str, Any]:
        """The F1 and ABAW keys that apply (module docstring); none before F1 was computed."""
        if self.single_label is None:
            return {}
        document: dict[str, Any] = {"single_label": self.single_label}
        if self.single_label:
            document["macro_f1"] = _finite(self.macro_f1)
            document["accuracy"] = _finite(self.accuracy)
        else:
            document["mean_f1"] = _finite(self.mean_f1)
            document["f1_thresholds"] = list(self.f1_thresholds or ())
        if self.per_category_f1 is not None:
            document["per_category_f1"] = {name: _finite(v)
                                           for name, v in self.per_category_f1.items()}
        score = self.abaw_score
        document["abaw_score"] = None if score is None else _finite(score)
        document["abaw_parts"] = {k: _finite(v) for k, v in self.abaw_parts.items()}
        return document


def _continuous_ccc(read: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, float] | None:
    """CCC per dimension over the people annotated with all three (None if there are none)."""
    if not read:
        return None
    predicted, target = np.concatenate(read), np.concatenate(truth)
    known = np.isfinite(target).all(axis=1)
    if known.sum() < 2:
        return None
    values = ccc(predicted[known], (target[known] - 1.0) / 9.0)
    return dict(zip(("valence", "arousal", "dominance"), (float(v) for v in values),
                    strict=True))


def emotion_thresholds(predictor: Predictor, set_name: str) -> np.ndarray:
    """The model's per-category emotion thresholds for ``set_name``: the inference settings'
    (``predictor.settings.emotion_thresholds``, every set of the model file); for a predictor
    without them its ``emotion_thresholds`` when ``set_name`` is its primary set, else 0.5 for
    every category (the default of the model file's settings)."""
    count = len(predictor.config.categories[set_name]) \
        if set_name in getattr(getattr(predictor, "config", None), "categories", {}) \
        else len(category_set(set_name))
    per_set = getattr(getattr(predictor, "settings", None), "emotion_thresholds", None) or {}
    if set_name in per_set:
        values = per_set[set_name]
    elif (getattr(predictor, "category_set", None) == set_name
          and getattr(predictor, "emotion_thresholds", None) is not None):
        values = predictor.emotion_thresholds
    else:
        values = [0.5] * count
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (count,):
        raise EvaluationError(f"{predictor.path}: {values.size} emotion thresholds for the "
                              f"{count} {set_name!r} categories")
    return values


def _f1(predictor: Predictor, set_name: str, scores: np.ndarray,
        labels: np.ndarray) -> dict[str, Any]:
    """The F1 fields of :class:`EvaluationResult` (x100) from the scores read at the annotated
    boxes and their labels: single-label for a single-label set (:func:`single_label`),
    multi-label otherwise."""
    categories = tuple(predictor.config.categories[set_name])
    if predictor.config.single_label(set_name):
        macro, per_category = metrics.macro_f1(scores, labels)
        fields: dict[str, Any] = {"single_label": True, "macro_f1": SCALE * macro,
                                  "accuracy": SCALE * metrics.accuracy(scores, labels)}
    else:
        thresholds = emotion_thresholds(predictor, set_name)
        mean, per_category = metrics.mean_f1_multilabel(scores, labels, thresholds)
        fields = {"single_label": False, "mean_f1": SCALE * mean,
                  "f1_thresholds": tuple(float(t) for t in thresholds)}
    fields["per_category_f1"] = {name: SCALE * float(v)
                                 for name, v in zip(categories, per_category, strict=True)}
    return fields


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- data


def evaluation_split(data: str | Path, dataset: str = "emotic", split: str = "test",
                     seed: int = 0, images_dir: str | Path | None = None,
                     emotions: EmotionSet | None = None, heco: HecoSplit | None = None
                     ) -> tuple[list[ImageRecord], LoadReport]:
    """The records of one split of EMOTIC (``data`` holds ``Annotations/Annotations.mat``),
    HECO (``data`` holds ``HECO_Labels.csv``; images and split as in the module docstring, or
    as ``heco`` says: a training config's is :func:`training.data.batches.config_heco`) or
    a lab's COCO folder (``data`` holds ``<split>.json``, read with ``emotions``), as
    :func:`training.datasets.splits.load_split` (the split training reads) defines them.

    Problems of single records are counted in the report (:mod:`training.datasets.records`);
    an EMOTIC image of the split that cannot be read is refused instead, as the metrics of part
    of a split are not the split's. (HECO's partition is drawn over the usable images, so an
    unreadable HECO image is counted and left out.)

    Raises:
        EvaluationError: unknown dataset or split, missing files, an unreadable EMOTIC image
            (loader errors, which name the file and record, pass through as
            EmoticFormatError / HecoFormatError).
    """
    data = Path(data)
    if dataset not in DATASETS:
        raise EvaluationError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not data.is_dir():
        raise EvaluationError(f"{data}: no such data directory")
    if dataset == "coco":
        if emotions is None:
            raise EvaluationError("a COCO folder is read with a category set: give emotions")
        return load_split(data, "coco", split, emotions=emotions)
    if dataset == "emotic":
        try:
            records, report = load_split(data, "emotic", split)
        except FileNotFoundError as error:
            raise EvaluationError(str(error)) from None
        if report.skipped_images:  # metrics of part of a test split are not the split's
            first = report.skipped_images[0]
            raise EvaluationError(f"{len(report.skipped_images)} {split} image(s) cannot be used,"
                                  f" e.g. {first.where}: {first.reason}")
        return records, report
    heco = heco or HecoSplit.found(data, images_dir, seed)
    if not heco.labels.is_file():
        raise EvaluationError(f"HECO labels not found: {heco.labels}")
    if not heco.images.is_dir():
        raise EvaluationError(f"{heco.images}: no such image directory")
    return load_split(data, "heco", split, heco=heco)


def read_image(path: str | Path) -> np.ndarray:
    """(h, w, 3) uint8 BGR; :class:`EvaluationError` naming ``path`` when it cannot be read or
    is cut short (:func:`caer_ros.image_file.read_image`, the reader training uses too)."""
    try:
        return image_file.read_image(path)
    except ImageFileError as error:
        raise EvaluationError(str(error)) from None


def evaluated_set(predictor: Predictor, records: Sequence[ImageRecord]) -> str:
    """The model's category set to read for ``records``: the data's own set.

    Raises:
        EvaluationError: the records mix category sets, or the model has no set of that name,
            or its set of that name lists other categories than :mod:`caer_ros.labels`.
    """
    sets = sorted({r.category_set for r in records})
    if len(sets) != 1:
        raise EvaluationError(f"the records mix category sets ({', '.join(sets)}): evaluate one "
                              f"dataset at a time")
    wanted = sets[0]
    model_sets = dict(predictor.config.categories)
    if wanted not in model_sets:
        have = ", ".join(model_sets) or "none"
        raise EvaluationError(f"{predictor.path}: the model's category set(s) ({have}) do not "
                              f"include the data's ({wanted})")
    if tuple(model_sets[wanted]) != tuple(records[0].categories):
        raise EvaluationError(f"{predictor.path}: the model's {wanted!r} categories differ from "
                              f"the dataset's (names or order)")
    return wanted


# --------------------------------------------------------------------------- evaluation


def evaluate(predictor: Predictor, records: Sequence[ImageRecord],
             detection_threshold: float = DETECTION_THRESHOLD,
             progress: bool = True) -> EvaluationResult:
    """ER mAP, per-category AP, PD AP and OER of ``predictor`` on ``records`` (x100).

    ``predictor`` is a :class:`~caer_ros.inference.predictor.Predictor` or any object with its
    ``predict(image, detection_threshold=...)`` and ``predict_and_read(image, boxes,
    detection_threshold=...)`` (the people found and the people at ``boxes``, from one network
    run; :class:`~caer_ros.inference.decode.Detections` with ``set_scores``),
    ``config`` (its :class:`~caer_ros.model.config.ModelConfig`) and ``path``. Scores come
    from the model's set that matches the records' (:func:`evaluated_set`).

    - ER mAP: :func:`training.evaluation.metrics.er_map` over every annotated person of
      every image, the scores read with the annotated boxes. A category with no positive
      person has AP NaN and is left out of the mean.
    - PD AP: :func:`training.evaluation.metrics.pd_ap` on the detections at
      ``detection_threshold`` and over; images without annotated people still count (their
      detections are false positives).
    - OER: :func:`training.evaluation.metrics.oer` on the same detections.
    - F1 and the ABAW score (module docstring): on the scores read with the annotated boxes.

    Raises:
        EvaluationError: no records, an unreadable image (named), no annotated person, no
            category with a positive, or a category-set mismatch.
    """
    if not records:
        raise EvaluationError("no images to evaluate")
    set_name = evaluated_set(predictor, records)
    categories = tuple(predictor.config.categories[set_name])
    read_scores, labels, detections, truths = [], [], [], []
    continuous_read, continuous_truth = [], []
    resized = []
    for record in tqdm(records, desc="evaluate", unit="image", disable=not progress,
                       file=sys.stderr):
        image = read_image(record.path)
        if image.shape[:2] != (record.height, record.width):
            resized.append(record.path)
        boxes = np.array([p.box for p in record.people], dtype=np.float64).reshape(-1, 4)
        person_labels = np.array([p.categories for p in record.people],
                                 dtype=np.float64).reshape(-1, len(categories))
        if len(boxes):  # one network run gives both readings
            found, read = predictor.predict_and_read(image, boxes,
                                                     detection_threshold=detection_threshold)
            read_scores.append(np.asarray(read.set_scores[set_name], dtype=np.float64))
            labels.append(person_labels)
            if getattr(read, "continuous", None) is not None:
                continuous_read.append(np.asarray(read.continuous, np.float64)[:, :3])
                continuous_truth.append(np.array([p.continuous for p in record.people],
                                                 np.float64).reshape(-1, 3))
        else:
            found = predictor.predict(image, detection_threshold=detection_threshold)
        detections.append(metrics.ImageDetections(
            found.boxes, found.detection_scores,
            np.reshape(found.set_scores[set_name], (-1, len(categories)))))
        truths.append(metrics.ImageGroundTruth(boxes, person_labels))
    if resized:
        LOG.warning("%d image(s) differ in size from their annotation (first: %s); their boxes "
                    "are used as annotated", len(resized), resized[0])
    if not labels:
        raise EvaluationError(f"no annotated person in the {len(records)} image(s) evaluated")

    all_scores, all_labels = np.concatenate(read_scores), np.concatenate(labels)
    try:
        er, per_category = metrics.er_map(all_scores, all_labels)
        pd = metrics.pd_ap(detections, truths)
        oer_mean, oer_at = metrics.oer(detections, truths)
        f1 = _f1(predictor, set_name, all_scores, all_labels)
    except ValueError as error:  # e.g. no category with a positive among few people
        raise EvaluationError(f"metrics undefined on these {len(records)} image(s): "
                              f"{error}") from None
    return EvaluationResult(
        ccc=_continuous_ccc(continuous_read, continuous_truth),
        er_map=SCALE * er,
        per_category_ap={name: SCALE * float(ap)
                         for name, ap in zip(categories, per_category, strict=True)},
        pd_ap=SCALE * pd,
        oer_per_threshold={f"{t:.2f}": SCALE * v for t, v in oer_at.items()},
        oer_map=SCALE * oer_mean,
        images=len(records),
        people=sum(len(r.people) for r in records),
        category_set=set_name,
        detection_threshold=float(detection_threshold),
        **f1,
    )


def format_summary(result: EvaluationResult) -> str:
    """A plain-text table of ``result`` (x100, like the papers' tables)."""

    def number(value: float) -> str:
        return f"{value:6.2f}" if math.isfinite(value) else "     -"

    width = max(len(name) for name in result.per_category_ap)
    figures = [
        ("ER mAP (ground-truth boxes)", result.er_map),
        ("PD AP  (COCO AP@[.50:.95])", result.pd_ap),
        ("OER mAP (mean over IoU .50:.95)", result.oer_map),
    ]
    if result.macro_f1 is not None:
        figures += [("macro F1 (single-label, argmax)", result.macro_f1),
                    ("accuracy (single-label, argmax)", result.accuracy)]
    if result.mean_f1 is not None:
        figures.append(("mean F1 (multi-label, model's thresholds)", result.mean_f1))
    if result.abaw_score is not None:
        figures.append((f"ABAW score ({' + '.join(result.abaw_parts)})", result.abaw_score))
    label_width = max(len(label) for label, _ in figures)
    lines = [
        f"{result.images} images, {result.people} people, category set {result.category_set}, "
        f"detection threshold {result.detection_threshold:g} (metrics x{SCALE})",
        *(f"  {label:<{label_width}} {number(value)}" for label, value in figures),
    ]
    lines += [
        "",
        "OER per IoU threshold",
        "  " + " ".join(f"{t:>6}" for t in result.oer_per_threshold),
        "  " + " ".join(number(v) for v in result.oer_per_threshold.values()),
        "",
    ]
    f1 = result.per_category_f1
    if f1 is None:
        lines.append("ER AP per category (- : no positive person, not in the mean)")
        lines += [f"  {name:<{width}} {number(ap)}" for name, ap in result.per_category_ap.items()]
    else:
        lines.append("ER AP and F1 per category (- : AP: no positive person; F1: no true or "
                     "predicted person; not in the mean)")
        lines.append(f"  {'':<{width}} {'AP':>6} {'F1':>6}")
        lines += [f"  {name:<{width}} {number(ap)} {number(f1[name])}"
                  for name, ap in result.per_category_ap.items()]
    if result.ccc is not None:
        lines.append("CCC (-1..1): " + "  ".join(f"{k} {v:.3f}" for k, v in result.ccc.items()))
    return "\n".join(lines)


def write_json(path: str | Path, content: dict[str, Any]) -> None:
    """``content`` as indented JSON in ``path``, written atomically (strict JSON: no NaN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, indent=2, allow_nan=False) + "\n"
    with atomic_write(path) as stream:
        stream.write(text.encode())


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="See the module docstrings of "
                                            "training/evaluation/evaluate.py and agreement.py.")
    parser.add_argument("--model", required=True, help="model file: .pt (torch) or .onnx")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--data", type=Path,
                      help="dataset directory (EMOTIC: holds Annotations/Annotations.mat and "
                           "emotic/; HECO: holds HECO_Labels.csv)")
    mode.add_argument("--against", type=Path, metavar="TEACHER",
                      help="agreement mode: score --model as a student against this teacher "
                           "model file on the unlabelled frames of --images (module "
                           "training/evaluation/agreement.py)")
    parser.add_argument("--dataset", choices=DATASETS,
                        help="dataset format (default: coco for a folder holding train.json, "
                             "else emotic)")
    parser.add_argument("--category-set",
                        help="COCO folder: the model's category set its emotions are read with "
                             "(default: the model's first)")
    parser.add_argument("--continuous-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="COCO folder: the scale of valence, arousal and dominance "
                             "(default: the one the model was trained with, else 1 10)")
    parser.add_argument("--split", choices=SPLITS, help="default test")
    parser.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "onnx"),
                        default="auto", help="default auto: from the model file's suffix "
                                             "(a teacher's backend is always from its suffix)")
    parser.add_argument("--device", default="cpu",
                        help="torch device, or for onnxruntime cpu or cuda (default cpu; the "
                             "teacher's too)")
    parser.add_argument("--detection-threshold", type=float, default=DETECTION_THRESHOLD,
                        help=f"minimum detection score for PD AP and OER (default "
                             f"{DETECTION_THRESHOLD}: low, so the AP curves are complete)")
    parser.add_argument("--limit", type=int, help="evaluate only the split's first N images")
    parser.add_argument("--seed", type=int,
                        help="HECO partition seed (the one used for training; default 0)")
    parser.add_argument("--images", type=Path, nargs="+", metavar="PATH",
                        help="with --data: the HECO image directory (default: DIR/heco/images, "
                             "DIR/images or DIR); with --against: the frames, image folders, "
                             "images and/or videos")
    parser.add_argument("--frame-rate", type=float,
                        help="with --against: video frames taken per second of video "
                             f"(default {FRAME_RATE:g})")
    parser.add_argument("--max-frames", type=int,
                        help="with --against: an evenly spaced subset of this many frames")
    parser.add_argument("--json", type=Path, help="also write the results here (atomically)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_setting_arguments(parser, "; an ONNX file fixes it at export; with --against, the "
                                  "student's only")
    args = parser.parse_args(argv)
    if not 0.0 <= args.detection_threshold <= 1.0:
        parser.error(f"--detection-threshold must be in [0, 1], got {args.detection_threshold}")
    if args.against is not None:
        _check_agreement_args(parser, args)
        return args
    frame_options = [option for option, value in (("--frame-rate", args.frame_rate),
                                                  ("--max-frames", args.max_frames))
                     if value is not None]
    if frame_options:
        parser.error(f"{' and '.join(frame_options)} go with --against, not --data")
    if args.images is not None:
        if len(args.images) > 1:
            parser.error(f"--images takes one HECO image directory with --data, got "
                         f"{len(args.images)} paths")
        args.images = args.images[0]
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    if args.continuous_range is not None and \
            args.continuous_range[0] >= args.continuous_range[1]:
        parser.error(f"--continuous-range: LOW must be below HIGH, got {args.continuous_range}")
    if args.dataset is None:
        args.dataset = "coco" if is_coco_folder(args.data) else "emotic"
    args.split = "test" if args.split is None else args.split
    args.seed = 0 if args.seed is None else args.seed
    return args


def _check_agreement_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--against``'s options: ``--images`` given, no option of ``--data``'s, frame options in
    range (``--frame-rate`` filled in with its default)."""
    if not args.images:
        parser.error("--against needs --images PATH [PATH ...] (image folders, images, videos)")
    given = [option for option, value in (
        ("--dataset", args.dataset), ("--category-set", args.category_set),
        ("--continuous-range", args.continuous_range), ("--split", args.split),
        ("--limit", args.limit), ("--seed", args.seed)) if value is not None]
    if given:
        parser.error(f"{', '.join(given)} go with --data, not --against")
    if args.frame_rate is None:
        args.frame_rate = FRAME_RATE
    if not (math.isfinite(args.frame_rate) and args.frame_rate > 0):
        parser.error(f"--frame-rate must be above 0, got {args.frame_rate}")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f"--max-frames must be >= 1, got {args.max_frames}")


def open_predictor(model: str | Path, backend: str = "auto", device: str = "cpu",
                   changes: dict[str, Any] | None = None) -> Predictor:
    """``Predictor.from_file`` with ``backend`` auto/torch/onnxruntime (``onnx`` too) and the
    inference settings ``changes``; every problem is a one-line :class:`ModelFileError` or
    :class:`EvaluationError` naming ``model``."""
    chosen = {"auto": None, "onnx": "onnxruntime"}.get(backend, backend)
    try:
        return Predictor.from_file(model, backend=chosen, device=device, changes=changes)
    except ModelFileError:
        raise
    except ValueError as error:  # bad backend or device, settings fixed in an ONNX graph
        raise EvaluationError(f"{model}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    try:
        if args.against is None:
            _evaluate_split(args)
        else:
            _evaluate_agreement(args)
    except (ModelFileError, EvaluationError, AgreementError, FrameError, EmoticFormatError,
            HecoFormatError, CocoFormatError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. the JSON file cannot be written, a directory unreadable
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    return 0


def _evaluate_split(args: argparse.Namespace) -> None:
    """``--data``: the model on a dataset's split (this module's docstring)."""
    predictor = open_predictor(args.model, args.backend, args.device, setting_changes(args))
    records, report = evaluation_split(args.data, args.dataset, args.split, args.seed,
                                       args.images, coco_emotions(predictor, args.category_set,
                                                                  args.continuous_range))
    print(report.summary(), file=sys.stderr)
    for line in report.warnings():
        print(line, file=sys.stderr)
    if args.limit is not None:
        records = records[:args.limit]
    result = evaluate(predictor, records, args.detection_threshold,
                      progress=not args.no_progress)
    print(f"model {args.model} ({predictor.backend}) on {args.data} "
          f"({args.dataset}, {args.split})")
    print(format_summary(result))
    if args.json is not None:
        write_json(args.json, result.to_json(
            model=str(args.model), backend=predictor.backend, data=str(args.data),
            dataset=args.dataset, split=args.split, limit=args.limit,
            seed=args.seed if args.dataset == "heco" else None,
            skipped_people=len(report.skipped)))
        print(f"wrote {args.json}")


def _evaluate_agreement(args: argparse.Namespace) -> None:
    """``--against``: the model as a student against a teacher on unlabelled frames
    (:mod:`training.evaluation.agreement`). The inference-setting options are the student's;
    the teacher runs with its own settings, on the same device."""
    student = open_predictor(args.model, args.backend, args.device, setting_changes(args))
    teacher = open_predictor(args.against, "auto", args.device)
    shared_category_set(student, teacher)  # before the frames are looked for
    pool = collect_frames(args.images, frame_rate=args.frame_rate, max_frames=args.max_frames)
    print(pool.describe(), file=sys.stderr)
    try:
        result = agreement(student, teacher, pool, args.detection_threshold,
                           progress=not args.no_progress)
    finally:
        pool.close()
    print(f"model {args.model} ({student.backend}) against the teacher {args.against} "
          f"({teacher.backend})")
    print(format_agreement(result))
    if args.json is not None:
        write_json(args.json, result.to_json(
            model=str(args.model), backend=student.backend, against=str(args.against),
            teacher_backend=teacher.backend, inputs=[str(path) for path in args.images],
            frame_rate=args.frame_rate, max_frames=args.max_frames))
        print(f"wrote {args.json}")


def coco_emotions(predictor: Predictor, set_name: str | None,
                  continuous_range: Sequence[float] | None = None) -> EmotionSet:
    """The model's category set ``set_name`` (None: its first) as a COCO folder's emotions;
    ``continuous_range`` None: the one the model file says it was trained with, else 1..10."""
    sets = dict(predictor.config.categories)
    name = set_name or next(iter(sets))
    if name not in sets:
        raise EvaluationError(f"{predictor.path}: no category set {name!r} (the model has "
                              f"{', '.join(sets)})")
    if continuous_range is None:  # the scale the model was trained with
        continuous_range = getattr(predictor, "meta", {}).get("continuous_range", (1.0, 10.0))
    low, high = continuous_range
    return EmotionSet(name, tuple(sets[name]), (float(low), float(high)),
                      single_label=predictor.config.single_label(name))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
