"""Does a teacher know its task where knowledge amalgamation uses it? A linear probe.

Knowledge amalgamation (:mod:`training.objectives.amalgamation`) asks the student to imitate a
teacher's
feature map on the *student's* images. A teacher validated on its own inputs (a face teacher on
face crops) may carry nothing on those images (whole scenes, the faces a few pixels wide): on
the synthetic benchmark a face teacher with validation F1 1.0 on its crops gave 0.34 accuracy
on 3 classes (chance 0.33) when probed on the student's scenes. Imitating it then teaches the
student nothing, whatever the KA losses say.

The probe measures it before KA starts:

1. each image of the student's data is letterboxed to the student's input size exactly as
   training does (RGB in 0..1, what the teachers take) and run through the frozen teacher;
2. each annotated person's feature vector is the mean of the teacher's map inside the person's
   box (``region="box"``) or inside its top quarter, where a standing person's head is
   (``region="head"``), on the teacher's grid (at least one cell);
3. a linear classifier (scikit-learn's logistic regression, L2, standardised inputs, the
   convex L-BFGS solver run to convergence: ``converged`` says whether it got there) is
   fitted on the people of 70% of the *images* and scored on the people of the others
   (scikit-learn's ``GroupShuffleSplit`` by image: the people of one scene share its
   context, so a split by person would let the probe recognise a scene it trained on):
   ``accuracy`` for single-label labels (one class per person), ER mAP for multi-label
   ones (one classifier per category), each beside its *chance* level (accuracy: the better
   of the most frequent training class and a draw from the training classes' shares; ER mAP:
   constant scores).

A probe score less than :data:`MARGIN` above chance gets a warning: the teacher's features
carry little about the labels on these images. ``python -m training.teachers.probe --config
CFG --data DIR --teacher SPEC [--region head] [--images N]`` prints it for any teacher spec
:func:`training.teachers.models.load_teacher` accepts; a KA run prints it for each of its teachers
before training (``amalgamation.probe_images``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from caer_ros.inference.preprocess import letterbox
from training.datasets.records import ImageRecord
from training.evaluation import metrics

MARGIN = 0.1  # a probe score less than this above chance carries little
REGIONS = ("box", "head")
HEAD_FRACTION = 0.25  # the top quarter of a standing person's box holds the head
TRAIN_FRACTION = 0.7
MAX_ITERATIONS = 2000  # L-BFGS iterations; a probe that needs more says it did not converge


@dataclass
class ProbeResult:
    """A probe's outcome: ``score`` and ``chance`` in 0..1 (``metric``: accuracy or er_map)."""

    name: str
    people: int
    metric: str
    score: float
    chance: float
    converged: bool = True

    @property
    def carries_little(self) -> bool:
        return self.score - self.chance < MARGIN

    def line(self) -> str:
        text = (f"teacher probe {self.name}: {self.metric} {self.score:.3f} on {self.people} "
                f"people (chance {self.chance:.3f})")
        if self.carries_little:
            text += (f"; WARNING: less than {MARGIN:g} above chance - its features carry "
                     f"little about these labels on the student's images")
        if not self.converged:
            text += f"; the probe's solver did not converge in {MAX_ITERATIONS} iterations"
        return text


def person_features(teacher: Callable[[Tensor], Tensor], records: Sequence[ImageRecord],
                    input_size: tuple[int, int], region: str = "box",
                    read: Callable[[object], np.ndarray] | None = None,
                    device: str | torch.device = "cpu"
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, C) teacher features of every annotated person of ``records``, their (P, E) labels
    and (P,) the index of each one's image in ``records`` (steps 1-2 of the module docstring;
    the probe splits by image). ``read(path)`` gives an RGB uint8 image (default
    :func:`training.data.batches.read_rgb`); the teacher runs on ``device``."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(REGIONS)}, got {region!r}")
    if read is None:
        from training.data.batches import read_rgb as read
    features, labels, images = [], [], []
    for index, record in enumerate(records):
        if not record.people:
            continue
        canvas, placement = letterbox(read(record.path), input_size, rgb=True)
        rgb = torch.from_numpy(canvas).permute(2, 0, 1)[None].float().to(device) / 255.0
        with torch.no_grad():
            fmap = teacher(rgb)[0].float().cpu()  # (C, h, w)
        boxes = placement.to_input(np.array([p.box for p in record.people], np.float64))
        scale_y, scale_x = fmap.shape[1] / input_size[0], fmap.shape[2] / input_size[1]
        for person, (x1, y1, x2, y2) in zip(record.people, boxes.reshape(-1, 4), strict=True):
            if region == "head":
                y2 = y1 + HEAD_FRACTION * (y2 - y1)
            r0 = min(int(np.floor(y1 * scale_y)), fmap.shape[1] - 1)
            c0 = min(int(np.floor(x1 * scale_x)), fmap.shape[2] - 1)
            r1 = max(int(np.ceil(y2 * scale_y)), r0 + 1)
            c1 = max(int(np.ceil(x2 * scale_x)), c0 + 1)
            features.append(fmap[:, max(r0, 0):r1, max(c0, 0):c1].mean(dim=(1, 2)).numpy())
            labels.append(np.asarray(person.categories, np.float32))
            images.append(index)
    if not features:
        raise ValueError("no annotated person in the probe's images")
    return np.stack(features), np.stack(labels), np.asarray(images)


def probe(features: np.ndarray, labels: np.ndarray, single_label: bool, name: str = "teacher",
          seed: int = 0, images: np.ndarray | None = None) -> ProbeResult:
    """Step 3: fit the linear probe on the people of 70% of the images (``images``: each
    person's image; None: every person an image of its own), score it on the others."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit

    features = np.asarray(features, np.float64)
    labels = np.asarray(labels, np.float64)
    count = len(features)
    if count < 10:
        raise ValueError(f"the probe needs at least 10 people, got {count}")
    groups = np.arange(count) if images is None else np.asarray(images)
    if len(set(groups.tolist())) < 2:
        raise ValueError("the probe needs people of at least 2 images")
    split = GroupShuffleSplit(n_splits=1, train_size=TRAIN_FRACTION, random_state=seed)
    train, test = next(split.split(features, groups=groups))
    mean, std = features[train].mean(axis=0), features[train].std(axis=0) + 1e-6
    x = (features - mean) / std
    converged = True

    def fitted(target: np.ndarray) -> LogisticRegression:
        nonlocal converged
        model = LogisticRegression(C=1.0, max_iter=MAX_ITERATIONS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x[train], target)
        converged = converged and bool(np.all(model.n_iter_ < MAX_ITERATIONS))
        return model

    truth = labels[test]
    if single_label:
        classes = labels.argmax(axis=1)
        shares = np.bincount(classes[train], minlength=labels.shape[1]) / len(train)
        tested = np.bincount(truth.argmax(axis=1), minlength=labels.shape[1]) / len(test)
        # the better of two guesses that see no features: the majority class, and a draw
        # from the training classes' shares (a few test images can miss the majority)
        chance = float(max(tested[shares.argmax()], shares @ tested))
        if len(set(classes[train].tolist())) < 2:  # one class to learn: the guess alone
            return ProbeResult(name, count, "accuracy", chance, chance, converged)
        predicted = fitted(classes[train]).predict(x[test])
        score = float(np.mean(predicted == truth.argmax(axis=1)))
        return ProbeResult(name, count, "accuracy", score, chance, converged)
    scores = np.zeros(truth.shape)
    for column in range(labels.shape[1]):  # one classifier per category
        target = labels[train, column] > 0.5
        if target.all() or not target.any():
            scores[:, column] = float(target.mean())  # constant in training: constant scores
        else:
            scores[:, column] = fitted(target).decision_function(x[test])
    score = metrics.er_map(scores, truth)[0]
    chance = metrics.er_map(np.zeros(truth.shape), truth)[0]
    return ProbeResult(name, count, "er_map", score, chance, converged)


def probe_teacher(teacher: Callable[[Tensor], Tensor], records: Sequence[ImageRecord],
                  input_size: tuple[int, int], name: str = "teacher", region: str = "box",
                  images: int | None = None, device: str | torch.device = "cpu"
                  ) -> list[ProbeResult]:
    """The probe of ``teacher`` on ``records`` (of each category set, its first ``images``
    images), one result per set with at least 10 annotated people."""
    from caer_ros.labels import SINGLE_LABEL_SETS

    results = []
    for set_name in dict.fromkeys(r.category_set for r in records):
        of_set = [r for r in records if r.category_set == set_name]
        of_set = of_set[:images] if images else of_set
        features, labels, images_of = person_features(teacher, of_set, input_size, region,
                                                      device=device)
        if len(features) >= 10:
            results.append(probe(features, labels, set_name in SINGLE_LABEL_SETS,
                                 f"{name} ({set_name})", images=images_of))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, action="append",
                        help="teacher spec (as in amalgamation.teachers); repeatable")
    parser.add_argument("--config", help="the student's training config (input size, data)")
    parser.add_argument("--data", help="data folder (as for training.train)")
    parser.add_argument("--split", default="train", choices=("train", "val"))
    parser.add_argument("--region", default="box", choices=REGIONS)
    parser.add_argument("--images", type=int, default=200, help="images probed (0: all)")
    args = parser.parse_args(argv)
    from training.config import ConfigError, load_config
    from training.data.batches import DataError, config_split
    from training.teachers.models import load_teacher

    try:
        config = load_config(args.config, [], args.data)
        records, _ = config_split(config, args.split)
        for spec in args.teacher:
            teacher = load_teacher(spec, torch.device("cpu"))
            for result in probe_teacher(teacher, records, config.model.input_size, spec,
                                        args.region, args.images or None):
                print(result.line(), flush=True)
    except (ConfigError, DataError, OSError, ValueError) as error:
        print(f"teacher_probe: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
