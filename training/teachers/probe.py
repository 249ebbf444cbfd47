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
3. a linear classifier (logistic regression, L2, standardised inputs) is fitted on 70% of the
   people and scored on the rest: ``accuracy`` for single-label labels (one class per person),
   ER mAP for multi-label ones, each beside its *chance* level (the most frequent training
   class; constant scores).

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
STEPS = 300


@dataclass
class ProbeResult:
    """A probe's outcome: ``score`` and ``chance`` in 0..1 (``metric``: accuracy or er_map)."""

    name: str
    people: int
    metric: str
    score: float
    chance: float

    @property
    def carries_little(self) -> bool:
        return self.score - self.chance < MARGIN

    def line(self) -> str:
        text = (f"teacher probe {self.name}: {self.metric} {self.score:.3f} on {self.people} "
                f"people (chance {self.chance:.3f})")
        if self.carries_little:
            text += (f"; WARNING: less than {MARGIN:g} above chance - its features carry "
                     f"little about these labels on the student's images")
        return text


def person_features(teacher: Callable[[Tensor], Tensor], records: Sequence[ImageRecord],
                    input_size: tuple[int, int], region: str = "box",
                    read: Callable[[object], np.ndarray] | None = None,
                    device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(P, C) teacher features of every annotated person of ``records`` and their (P, E)
    labels (step 1-2 of the module docstring). ``read(path)`` gives an RGB uint8 image
    (default :func:`training.data.batches.read_rgb`); the teacher runs on ``device``."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(REGIONS)}, got {region!r}")
    if read is None:
        from training.data.batches import read_rgb as read
    features, labels = [], []
    for record in records:
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
    if not features:
        raise ValueError("no annotated person in the probe's images")
    return np.stack(features), np.stack(labels)


def probe(features: np.ndarray, labels: np.ndarray, single_label: bool, name: str = "teacher",
          seed: int = 0) -> ProbeResult:
    """Step 3: fit the linear probe on 70% of the people, score it on the rest."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels, np.float64)
    count = len(features)
    if count < 10:
        raise ValueError(f"the probe needs at least 10 people, got {count}")
    order = np.random.default_rng(seed).permutation(count)
    cut = int(round(TRAIN_FRACTION * count))
    train, test = order[:cut], order[cut:]
    mean, std = features[train].mean(axis=0), features[train].std(axis=0) + 1e-6
    x = torch.from_numpy((features - mean) / std).float()
    y = torch.from_numpy(labels).float()
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(x.shape[1], y.shape[1], generator=generator) * 0.01).requires_grad_()
    bias = torch.zeros(y.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05, weight_decay=1e-3)
    for _ in range(STEPS):
        logits = x[train] @ weight + bias
        loss = torch.nn.functional.cross_entropy(logits, y[train].argmax(dim=1)) \
            if single_label else \
            torch.nn.functional.binary_cross_entropy_with_logits(logits, y[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = (x[test] @ weight + bias).numpy()
    truth = labels[test]
    if single_label:
        majority = np.bincount(labels[train].argmax(axis=1), minlength=labels.shape[1]).argmax()
        score = float(np.mean(scores.argmax(axis=1) == truth.argmax(axis=1)))
        chance = float(np.mean(truth.argmax(axis=1) == majority))
        return ProbeResult(name, count, "accuracy", score, chance)
    score = metrics.er_map(scores, truth)[0]
    chance = metrics.er_map(np.zeros(truth.shape), truth)[0]
    return ProbeResult(name, count, "er_map", score, chance)


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
        features, labels = person_features(teacher, of_set, input_size, region, device=device)
        if len(features) >= 10:
            results.append(probe(features, labels, set_name in SINGLE_LABEL_SETS,
                                 f"{name} ({set_name})"))
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
    from training.data.batches import DataError, load_split
    from training.teachers.models import load_teacher

    try:
        config = load_config(args.config, [], args.data)
        records, _ = load_split(config, args.split)
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
