"""Per-category emotion thresholds chosen on labelled images, written into a model file.

A person's ``labels`` (what the node publishes, highest first) are the categories scoring at or
above their threshold. EMOTIC's categories are very unbalanced, so one 0.5 for all gives almost
no labels for the rare ones and too many for the frequent ones. After training, each category's
threshold is set to the score that maximises its F1 on the given records, with the scores read
at the ground-truth boxes (as for ER mAP) on the images as they are (no augmentation). A
category with no positive person in the records keeps the default 0.5.

The trainer (:mod:`training.train`) calibrates on its *training* split: the project's rule is
that thresholds are fitted on training data, while the validation split chooses between runs
and checkpoints (``best.pt``), and the test split only scores.

:func:`best_f1_thresholds` is the rule; :func:`calibrate_model_file` applies it to a model file
(rewritten atomically; ``meta["calibration"]`` records, per set, the people read, each F1 and,
where given, the split's name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from caer_ros.inference.predictor import Predictor
from caer_ros.model.checkpoint import load_model_file, save_model_file
from caer_ros.model.inference_settings import DEFAULT_EMOTION_THRESHOLD
from training.data.batches import read_rgb
from training.datasets.records import ImageRecord


def best_f1_thresholds(scores: np.ndarray, labels: np.ndarray,
                       default: float = DEFAULT_EMOTION_THRESHOLD
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per column of (N, E) ``scores`` and 0/1 ``labels``: the threshold ``t`` maximising the F1
    of ``score >= t`` (candidates: the scores of the positives; ties go to the higher
    threshold) and that F1. Columns without positives get ``default`` and F1 NaN."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels) > 0.5
    count, width = scores.shape
    thresholds = np.full(width, default, np.float64)
    f1 = np.full(width, np.nan)
    for e in range(width):
        positives = int(labels[:, e].sum())
        if positives == 0 or count == 0:
            continue
        order = np.argsort(-scores[:, e], kind="stable")
        s, y = scores[order, e], labels[order, e]
        true_pos = np.cumsum(y)  # predicting the first k+1 (score >= s[k]) as positive
        predicted = np.arange(1, count + 1)
        last_of_tie = np.r_[s[1:] != s[:-1], True]  # ">= s[k]" takes every equal score
        candidates = np.flatnonzero(last_of_tie & y)  # thresholds at a positive's score
        if not len(candidates):
            candidates = np.flatnonzero(last_of_tie)
        values = 2 * true_pos[candidates] / (predicted[candidates] + positives)
        best = candidates[len(values) - 1 - np.argmax(values[::-1])]  # highest among the best
        thresholds[e] = s[best]
        f1[e] = values[candidates.tolist().index(best)]
    return thresholds.clip(0.0, 1.0), f1


def read_with_boxes(predictor: Predictor, records: Sequence[ImageRecord], set_name: str,
                    width: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(N, E) scores of ``set_name`` read at every annotated person's box, and their labels."""
    scores, labels = [], []
    for record in tqdm([r for r in records if r.category_set == set_name and r.people],
                       desc=f"calibrating {set_name}", unit="img", disable=not progress):
        image = read_rgb(record.path)[:, :, ::-1]  # the predictor takes BGR, as from a camera
        boxes = np.array([p.box for p in record.people], np.float64)
        people = predictor.read_boxes(np.ascontiguousarray(image), boxes)
        scores.append(people.set_scores[set_name])
        labels.append(np.stack([p.categories for p in record.people]))
    if not scores:
        return np.zeros((0, width)), np.zeros((0, width))
    return np.concatenate(scores), np.concatenate(labels)


def calibrate_model_file(path: str | Path, records: Sequence[ImageRecord],
                         progress: bool = True, split: str | None = None
                         ) -> dict[str, list[float]]:
    """Set the thresholds of every category set present in ``records`` (see the module
    docstring) in the model file at ``path``; returns the new thresholds per set. ``split``:
    the records' split name, recorded in ``meta["calibration"]``."""
    path = Path(path)
    model, info = load_model_file(path)
    predictor = Predictor.from_file(path, backend="torch")
    thresholds = dict(info.inference.emotion_thresholds)
    report: dict[str, dict[str, object]] = {}
    for set_name in info.config.categories:
        scores, labels = read_with_boxes(predictor, records, set_name,
                                         len(info.config.categories[set_name]), progress)
        if not len(scores):
            continue
        values, f1 = best_f1_thresholds(scores, labels)
        thresholds[set_name] = tuple(float(v) for v in values)
        report[set_name] = {"people": len(scores),
                            "f1": [None if np.isnan(v) else round(float(v), 4) for v in f1]}
        if split is not None:
            report[set_name]["split"] = split
    settings = dataclasses.replace(info.inference, emotion_thresholds=thresholds)
    save_model_file(path, model, settings, meta={**info.meta, "calibration": report})
    return {k: list(v) for k, v in thresholds.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.evaluation.calibrate --model M.pt --data ROOT [--dataset emotic]
    [--split train]``: set a model file's thresholds from one split of a labelled dataset (the
    evaluator's layouts: EMOTIC, HECO or a lab's COCO folder). Bad input: one line, exit 1,
    the file untouched."""
    import argparse
    import sys

    from caer_ros.model.checkpoint import ModelFileError
    from training.evaluation.evaluate import EvaluationError, coco_emotions, evaluation_split

    parser = argparse.ArgumentParser(prog="python -m training.evaluation.calibrate",
                                     description="Set a model file's emotion thresholds from "
                                     "one split of a labelled dataset.")
    parser.add_argument("--model", required=True, help="caer_ros model file (.pt), rewritten")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--dataset", default="emotic", choices=("emotic", "heco", "coco"))
    parser.add_argument("--split", default="train", choices=("train", "val", "test"),
                        help="the split fitted on (default train: the project's rule)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        emotions = None
        if args.dataset == "coco":
            emotions = coco_emotions(Predictor.from_file(Path(args.model), backend="torch"),
                                     None)
        records = evaluation_split(args.data, args.dataset, args.split, emotions=emotions)[0]
        if not records:
            raise EvaluationError(f"{args.data}: its {args.split} split has no images")
        thresholds = calibrate_model_file(args.model, records, not args.quiet, args.split)
    except (ModelFileError, EvaluationError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, values in thresholds.items():
        print(f"{name}: {len(values)} thresholds set on {len(records)} {args.split} images",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
