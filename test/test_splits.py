"""The one definition of a dataset's splits (training.datasets.splits.load_split): training,
the evaluator and the benchmarks read it, so HECO's test images never appear in a training
split of the same HECO layout (issue 30)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import config_from_dict
from training.data.batches import config_heco, config_split
from training.datasets.heco import load_heco
from training.datasets.splits import HecoSplit, load_split
from training.evaluation.evaluate import evaluation_split
from training.experiments import split_records

TINY = {"backbone": "hrnet_w18_small", "input_size": [64, 64], "head_blocks": 0,
        "classifier_channels": 32, "categories": ["emotic", "heco"]}


def _config(root: Path, **data):
    return config_from_dict({"model": dict(TINY), "workers": 0,
                             "data": {"root": str(root), "train": ["emotic", "heco"],
                                      "val": ["emotic", "heco"], **data}})


def _heco_paths(records) -> set[Path]:
    return {Path(r.path).resolve() for r in records if r.category_set == "heco"}


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_heco_test_images_never_appear_in_the_training_split(synthetic_dataset, seed):
    """What training reads (config_split) and what the evaluator and the benchmarks test on
    (evaluation_split, split_records with the config's HECO layout, load_split) are disjoint
    parts of the HECO images, all of them together."""
    config = _config(synthetic_dataset, heco_seed=seed)
    train = _heco_paths(config_split(config, "train")[0])
    val = _heco_paths(config_split(config, "val")[0])
    heco = config_heco(config)
    assert heco == HecoSplit(synthetic_dataset / "HECO_Labels.csv",
                             synthetic_dataset / "heco" / "images", seed, "partition")
    test = _heco_paths(load_split(synthetic_dataset, "heco", "test", heco)[0])
    assert test and train and not test & train and not test & val and not train & val
    everything = _heco_paths(load_heco(heco.labels, heco.images)[0])
    assert train | val | test == everything
    # the evaluator, with the seed the model was trained with, and the benchmarks' reading
    assert _heco_paths(evaluation_split(synthetic_dataset, "heco", "test", seed)[0]) == test
    assert _heco_paths(split_records(synthetic_dataset, "heco", "test", heco=heco)) == test
    assert _heco_paths(load_split(synthetic_dataset, "heco", "train", heco)[0]) == train


def test_heco_all_trains_on_everything_and_tests_on_nothing(synthetic_dataset):
    """heco_split: all puts every HECO image in train: no val or test image is left, so no
    test split of that layout holds a training image."""
    config = _config(synthetic_dataset, heco_split="all")
    heco = config_heco(config)
    train = _heco_paths(config_split(config, "train")[0])
    assert train == _heco_paths(load_heco(heco.labels, heco.images)[0])
    assert load_split(synthetic_dataset, "heco", "test", heco)[0] == []
    assert load_split(synthetic_dataset, "heco", "val", heco)[0] == []


def test_emotic_splits_are_its_own(synthetic_dataset):
    parts = {split: {r.path for r in load_split(synthetic_dataset, "emotic", split)[0]}
             for split in ("train", "val", "test")}
    assert all(parts.values())
    assert not parts["train"] & parts["test"] and not parts["train"] & parts["val"]
    config = _config(synthetic_dataset, train=["emotic"], val=["emotic"])
    assert {r.path for r in config_split(config, "train")[0]} == parts["train"]


def test_unknown_dataset_split_or_a_coco_folder_without_categories(synthetic_dataset):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_split(synthetic_dataset, "affectnet", "test")
    with pytest.raises(ValueError, match="unknown split"):
        load_split(synthetic_dataset, "emotic", "holdout")
    with pytest.raises(ValueError, match="category set"):
        load_split(synthetic_dataset, "coco", "test")
    with pytest.raises(ValueError, match="HECO split"):
        HecoSplit(Path("a.csv"), Path("images"), split="some")
