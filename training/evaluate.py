"""Evaluation of a model file on EMOTIC or HECO: ER mAP, PD AP and OER (DESIGN.md "Metrics").

    python -m training.evaluate --model M.pt|M.onnx --data DIR [--dataset emotic|heco]
        [--split test|val|train] [--backend auto|torch|onnxruntime] [--device cpu|cuda]
        [--detection-threshold 0.01] [--limit N] [--seed 0] [--images DIR] [--json PATH]

One pass over the split's images; per image the model runs twice through the
:class:`~caer_ros.inference.predictor.Predictor` (the same code path as the node and
``caer-infer``):

- :meth:`~caer_ros.inference.predictor.Predictor.read_boxes` with the annotated boxes: the emotion
  scores of every annotated person, for the ER mAP (BENet section 4.2, KA paper section 4.2);
- :meth:`~caer_ros.inference.predictor.Predictor.predict`: the detected people, for the
  person-detection AP (COCO AP@[.50:.95], pycocotools) and OER.

The metrics themselves are :mod:`training.metrics`. Scores are taken from the model's category
set that matches the data's (``emotic`` or ``heco``), which need not be the model's primary set.

Scale: every metric in :class:`EvaluationResult` and in the JSON file is x100 (0..100), as the
papers report them; the JSON says so with ``"scale": 100``. A category without any positive
person in the evaluated images has no AP (NaN in the result, ``null`` in the JSON) and is left
out of the ER mAP and of every OER mAP (the rule of :func:`training.metrics.er_map`).

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

Errors with the input (model file, annotations, images, category sets) print one line
``error: ...`` naming the file and exit with status 1.
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

import cv2
import numpy as np
from tqdm import tqdm

from caer_ros.atomic_file import atomic_write
from caer_ros.inference.predictor import Predictor
from caer_ros.labels import category_set
from caer_ros.model.checkpoint import ModelFileError
from training import metrics
from training.datasets.emotic import EmoticFormatError, load_emotic
from training.datasets.heco import HecoFormatError, heco_partition, load_heco
from training.datasets.records import ImageRecord, LoadReport
from training.multitask import ccc

LOG = logging.getLogger(__name__)

#: Every metric of an :class:`EvaluationResult` is this times the 0..1 value of
#: :mod:`training.metrics`.
SCALE = 100
#: Default minimum detection score of :func:`evaluate` (see the module docstring).
DETECTION_THRESHOLD = 0.01
DATASETS = ("emotic", "heco")
SPLITS = ("test", "val", "train")
HECO_LABELS = "HECO_Labels.csv"
HECO_IMAGE_DIRS = (Path("heco") / "images", Path("images"), Path("."))


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
                "ccc_mean": _finite(float(np.mean(list(self.ccc.values()))))}),
            **metadata,
        }


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


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- data


def load_split(data: str | Path, dataset: str = "emotic", split: str = "test", seed: int = 0,
               images_dir: str | Path | None = None) -> tuple[list[ImageRecord], LoadReport]:
    """The records of one split of EMOTIC (``data`` holds ``Annotations/Annotations.mat``) or
    HECO (``data`` holds ``HECO_Labels.csv``; images and split as in the module docstring).

    Raises:
        EvaluationError: unknown dataset or split, missing files (loader errors, which name the
            file and record, pass through as EmoticFormatError / HecoFormatError).
    """
    data = Path(data)
    if dataset not in DATASETS:
        raise EvaluationError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not data.is_dir():
        raise EvaluationError(f"{data}: no such data directory")
    if dataset == "emotic":
        try:
            return load_emotic(data, split)
        except FileNotFoundError as error:
            raise EvaluationError(str(error)) from None
    labels = data / HECO_LABELS
    if not labels.is_file():
        raise EvaluationError(f"HECO labels not found: {labels}")
    if images_dir is None:
        images_dir = next((data / d for d in HECO_IMAGE_DIRS if (data / d).is_dir()), data)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise EvaluationError(f"{images_dir}: no such image directory")
    records, report = load_heco(labels, images_dir)
    return heco_partition(records, seed)[split], report


def read_image(path: str | Path) -> np.ndarray:
    """(h, w, 3) uint8 BGR; :class:`EvaluationError` naming ``path`` when it cannot be read."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise EvaluationError(f"{path}: image not found") from None
    except OSError as error:
        raise EvaluationError(f"{path}: image cannot be read ({error.strerror or error})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise EvaluationError(f"{path}: not an image OpenCV can decode (unsupported format, "
                              f"truncated or corrupted)")
    return image


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
    if tuple(model_sets[wanted]) != category_set(wanted):
        raise EvaluationError(f"{predictor.path}: the model's {wanted!r} categories differ from "
                              f"the dataset's (names or order)")
    return wanted


# --------------------------------------------------------------------------- evaluation


def evaluate(predictor: Predictor, records: Sequence[ImageRecord],
             detection_threshold: float = DETECTION_THRESHOLD,
             progress: bool = True) -> EvaluationResult:
    """ER mAP, per-category AP, PD AP and OER of ``predictor`` on ``records`` (x100).

    ``predictor`` is a :class:`~caer_ros.inference.predictor.Predictor` or any object with its
    ``predict(image, detection_threshold=...)``, ``read_boxes(image, boxes)`` (both returning
    :class:`~caer_ros.inference.decode.Detections` with ``set_scores``), ``config.categories``
    and ``path``. Scores come from the model's set that matches the records'
    (:func:`evaluated_set`).

    - ER mAP: :func:`training.metrics.er_map` over every annotated person of every image, the
      scores read with the annotated boxes. A category with no positive person has AP NaN and is
      left out of the mean.
    - PD AP: :func:`training.metrics.pd_ap` on the detections at ``detection_threshold`` and
      over; images without annotated people still count (their detections are false positives).
    - OER: :func:`training.metrics.oer` on the same detections.

    Raises:
        EvaluationError: no records, an unreadable image (named), no annotated person, no
            category with a positive, or a category-set mismatch.
    """
    if not records:
        raise EvaluationError("no images to evaluate")
    set_name = evaluated_set(predictor, records)
    categories = category_set(set_name)
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
        if len(boxes):
            read = predictor.read_boxes(image, boxes)
            read_scores.append(np.asarray(read.set_scores[set_name], dtype=np.float64))
            labels.append(person_labels)
            if getattr(read, "continuous", None) is not None:
                continuous_read.append(np.asarray(read.continuous, np.float64)[:, :3])
                continuous_truth.append(np.array([p.continuous for p in record.people],
                                                 np.float64).reshape(-1, 3))
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

    try:
        er, per_category = metrics.er_map(np.concatenate(read_scores), np.concatenate(labels))
        pd = metrics.pd_ap(detections, truths)
        oer_mean, oer_at = metrics.oer(detections, truths)
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
    )


def format_summary(result: EvaluationResult) -> str:
    """A plain-text table of ``result`` (x100, like the papers' tables)."""

    def number(value: float) -> str:
        return f"{value:6.2f}" if math.isfinite(value) else "     -"

    width = max(len(name) for name in result.per_category_ap)
    lines = [
        f"{result.images} images, {result.people} people, category set {result.category_set}, "
        f"detection threshold {result.detection_threshold:g} (metrics x{SCALE})",
        f"  ER mAP (ground-truth boxes)     {number(result.er_map)}",
        f"  PD AP  (COCO AP@[.50:.95])      {number(result.pd_ap)}",
        f"  OER mAP (mean over IoU .50:.95) {number(result.oer_map)}",
        "",
        "OER per IoU threshold",
        "  " + " ".join(f"{t:>6}" for t in result.oer_per_threshold),
        "  " + " ".join(number(v) for v in result.oer_per_threshold.values()),
        "",
        "ER AP per category (- : no positive person, not in the mean)",
    ]
    lines += [f"  {name:<{width}} {number(ap)}" for name, ap in result.per_category_ap.items()]
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
                                     epilog="See the module docstring of training/evaluate.py.")
    parser.add_argument("--model", required=True, help="model file: .pt (torch) or .onnx")
    parser.add_argument("--data", required=True, type=Path,
                        help="dataset directory (EMOTIC: holds Annotations/Annotations.mat and "
                             "emotic/; HECO: holds HECO_Labels.csv)")
    parser.add_argument("--dataset", choices=DATASETS, default="emotic",
                        help="dataset format (default emotic)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="default test")
    parser.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "onnx"),
                        default="auto", help="default auto: from the model file's suffix")
    parser.add_argument("--device", default="cpu",
                        help="torch device, or for onnxruntime cpu or cuda (default cpu)")
    parser.add_argument("--detection-threshold", type=float, default=DETECTION_THRESHOLD,
                        help=f"minimum detection score for PD AP and OER (default "
                             f"{DETECTION_THRESHOLD}: low, so the AP curves are complete)")
    parser.add_argument("--limit", type=int, help="evaluate only the split's first N images")
    parser.add_argument("--seed", type=int, default=0,
                        help="HECO partition seed (the one used for training; default 0)")
    parser.add_argument("--images", type=Path,
                        help="HECO image directory (default: DIR/heco/images, DIR/images or DIR)")
    parser.add_argument("--json", type=Path, help="also write the results here (atomically)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 0.0 <= args.detection_threshold <= 1.0:
        parser.error(f"--detection-threshold must be in [0, 1], got {args.detection_threshold}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    return args


def open_predictor(model: str | Path, backend: str = "auto", device: str = "cpu") -> Predictor:
    """``Predictor.from_file`` with ``backend`` auto/torch/onnxruntime (``onnx`` too); every
    problem is a one-line :class:`ModelFileError` or :class:`EvaluationError` naming ``model``."""
    chosen = {"auto": None, "onnx": "onnxruntime"}.get(backend, backend)
    try:
        return Predictor.from_file(model, backend=chosen, device=device)
    except ModelFileError:
        raise
    except ValueError as error:  # bad backend or device, settings fixed in an ONNX graph
        raise EvaluationError(f"{model}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    try:
        predictor = open_predictor(args.model, args.backend, args.device)
        records, report = load_split(args.data, args.dataset, args.split, args.seed, args.images)
        print(report.summary(), file=sys.stderr)
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
    except (ModelFileError, EvaluationError, EmoticFormatError, HecoFormatError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. the JSON file cannot be written, a directory unreadable
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    return 0


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
