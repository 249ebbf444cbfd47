"""The fine-tuning benchmark's building blocks (issue 28): the shuffled-label placebo data
(training.experiments), the own COCO folder's separate test split
(training.datasets.synthetic_coco, test_images) and a from-scratch config built like the
fine-tuning one (same_start)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from caer_ros.model.network import build_model
from conftest import REPO
from training.config import load_config
from training.datasets.coco import EmotionSet, load_coco
from training.datasets.emotic import load_emotic
from training.datasets.synthetic import generate
from training.datasets.synthetic_coco import OWN_EMOTIONS, generate_coco
from training.experiments import (
    chance_er_map,
    changed_fraction,
    same_start,
    shuffled_label_copy,
    split_records,
)
from training.train import Trainer

CONFIGS = REPO / "training" / "configs"
SMALL = ["model.input_size=[64,64]", "batch_size=4", "calibrate=false"]


@pytest.fixture(scope="module")
def pretrain(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    truth = generate(root / "real", 40, seed=3, size=64)
    shuffled = shuffled_label_copy(root / "real", root / "shuffled", truth, seed=0)
    return root, truth, shuffled


def _labels(records):
    return [tuple(p.categories) for r in records for p in r.people]


def test_shuffled_copy_permutes_labels_keeps_boxes_and_test(pretrain):
    root, truth, shuffled = pretrain
    for split in ("train", "val", "test"):
        real, _ = load_emotic(root / "real", split)
        copy, _ = load_emotic(root / "shuffled", split)
        assert [r.path.name for r in real] == [r.path.name for r in copy]
        assert [p.box for r in real for p in r.people] == [p.box for r in copy for p in r.people]
        # the same labels, person for person (test) or as a multiset (train, val)
        if split == "test":
            assert _labels(real) == _labels(copy)
        else:
            assert Counter(_labels(real)) == Counter(_labels(copy))
    assert _labels(load_emotic(root / "real", "train")[0]) != \
        _labels(load_emotic(root / "shuffled", "train")[0])
    assert 0.3 < changed_fraction(truth, shuffled) <= 1.0
    assert changed_fraction(truth, shuffled, "test") == 0.0
    # the faces and poses drawn stay with their boxes: only the labels moved
    assert [(p.face, p.pose) for s in truth["train"] for p in s.people] == \
        [(p.face, p.pose) for s in shuffled["train"] for p in s.people]
    images = sorted((root / "shuffled" / "emotic" / "synthetic" / "images").iterdir())
    assert len(images) == 40
    assert images[0].read_bytes() == \
        (root / "real" / "emotic" / "synthetic" / "images" / images[0].name).read_bytes()


def test_own_set_with_a_test_split_of_its_own(tmp_path):
    truth = generate_coco(tmp_path / "own", images=20, seed=1, size=64, test_images=9)
    assert {k: len(v) for k, v in truth.items()} == {"train": 17, "val": 3, "test": 9}
    names = {split: {s.filename for s in scenes} for split, scenes in truth.items()}
    assert all(n.startswith("own_test_") for n in names["test"])
    assert not names["test"] & (names["train"] | names["val"])
    records, _ = load_coco(tmp_path / "own", "test", EmotionSet("own", OWN_EMOTIONS))
    assert len(records) == 9
    assert split_records(tmp_path / "own", "coco", "test", EmotionSet("own", OWN_EMOTIONS))
    # without test_images: 70/15/15 of the scenes, as before
    plain = generate_coco(tmp_path / "plain", images=20, seed=1, size=64)
    assert {k: len(v) for k, v in plain.items()} == {"train": 14, "val": 3, "test": 3}
    assert chance_er_map(records) == pytest.approx(chance_er_map(records))
    with pytest.raises(ValueError):
        generate_coco(tmp_path / "bad", images=20, seed=1, size=64, test_images=0)


def test_same_start_builds_scratch_like_init_from(pretrain, tmp_path):
    """A config given same_start(file) has the model and inference settings init_from gives:
    only init_from itself differs, and the models built from both have the same tensors."""
    root, _, _ = pretrain
    base = load_config(CONFIGS / "bench_learn.yaml",
                       [*SMALL, f"out={tmp_path / 'base'}", "max_steps=1",
                        "inference.extraction=center"], root / "real")
    Trainer(base, restart=True, progress=False).run()
    model_file = tmp_path / "base" / "final.pt"
    own = tmp_path / "own"
    generate_coco(own, images=10, seed=2, size=64, test_images=3)
    common = [*same_start(model_file), f"data.emotions={json.dumps(list(OWN_EMOTIONS))}",
              "workers=0"]
    finetune = load_config(CONFIGS / "finetune_coco.yaml", [*common, f"init_from={model_file}"],
                           own)
    scratch = load_config(CONFIGS / "finetune_coco.yaml", common, own)
    assert finetune.model == scratch.model
    assert finetune.inference == scratch.inference
    assert scratch.inference.extraction == "center"
    assert scratch.model.categories == {"own": OWN_EMOTIONS}
    a, b = build_model(finetune.model).state_dict(), build_model(scratch.model).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    differ = {k for k in finetune.to_dict() if finetune.to_dict()[k] != scratch.to_dict()[k]}
    assert differ == {"init_from"}
    assert np.isfinite(chance_er_map(split_records(own, "coco", "test",
                                                   EmotionSet("own", OWN_EMOTIONS))))


def test_split_images_folder_holds_the_split_alone(synthetic_dataset, tmp_path):
    """bench_deploy calibrates int8 on this folder of the training split (issue 30, item 3):
    none of the test images it scores the drop on are in it."""
    from caer_ros.inference.quantize import calibration_set
    from training.experiments import split_images_folder

    folder = split_images_folder(synthetic_dataset, "train", tmp_path / "calibration")
    train = {Path(r.path).resolve() for r in load_emotic(synthetic_dataset, "train")[0]}
    test = {Path(r.path).resolve() for r in load_emotic(synthetic_dataset, "test")[0]}
    linked = {p.resolve() for p in folder.iterdir()}
    assert linked == train and not linked & test
    chosen = calibration_set(folder, count=100)
    assert {p.resolve() for p in chosen.paths} <= train
