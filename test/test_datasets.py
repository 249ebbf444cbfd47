"""Tests of training/datasets: EMOTIC and HECO loaders, HECO partition, synthetic scenes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from caer_ros.labels import EMOTIC, HECO
from training.datasets import heco_partition, load_emotic, load_heco
from training.datasets.emotic import EmoticFormatError
from training.datasets.records import ImageRecord, PersonRecord, multi_hot
from training.datasets.synthetic import (
    CONTEXTS,
    FACES,
    POSES,
    PersonTruth,
    SceneTruth,
    emotic_entry,
    generate,
    heco_label,
    person_labels,
    write_annotations,
)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    truth = generate(out, images=12, seed=7, size=128, heco=True)
    return out, truth


def _person(box=(10.0, 10.0, 40.0, 60.0)) -> PersonTruth:
    labels = person_labels("smile", "up", "party")
    return PersonTruth(box, "smile", "up", labels, "Excitement", (9, 9, 6))


def _write(root: Path, people: list[PersonTruth], split: str = "train", drop: str = "") -> Path:
    scene = SceneTruth("a.jpg", 100, 80, "party", people)
    entry = emotic_entry(scene, combined=split != "train")
    entry.pop(drop, None)
    path = root / "Annotations" / "Annotations.mat"
    write_annotations(path, {split: [entry]})
    return path


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_emotic_loads_what_the_generator_wrote(synthetic, split):
    out, truth = synthetic
    records, report = load_emotic(out, split)
    assert len(records) == len(truth[split]) > 0
    assert report.skipped == [] and report.images == len(records)
    for record, scene in zip(records, truth[split], strict=True):
        assert record.path == out / "emotic" / "synthetic" / "images" / scene.filename
        assert record.path.is_file()
        assert (record.width, record.height, record.split) == (128, 128, split)
        assert len(record.people) == len(scene.people)
        for person, expected in zip(record.people, scene.people, strict=True):
            want = tuple(min(max(v, 0.0), 128.0) for v in expected.box)
            assert person.box == pytest.approx(want)
            assert [EMOTIC[i] for i in person.category_indices] == sorted(
                expected.categories, key=EMOTIC.index
            )
            np.testing.assert_array_equal(person.continuous, expected.continuous)


def test_synthetic_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", images=4, seed=3, size=64)
    b = generate(tmp_path / "b", images=4, seed=3, size=64)
    assert a == b
    name = "emotic/synthetic/images/synthetic_00000.jpg"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_emotic_skips_unusable_boxes_and_clips(tmp_path):
    people = [
        _person((-5.0, -5.0, 30.0, 200.0)),  # clipped to the 100x80 image
        _person((np.nan, 1.0, 20.0, 20.0)),
        _person((150.0, 10.0, 180.0, 40.0)),  # right of the image
        _person((10.0, 10.0, 10.0, 40.0)),  # zero width
    ]
    _write(tmp_path, people, split="val")
    records, report = load_emotic(tmp_path, "val")
    assert [p.box for p in records[0].people] == [(0.0, 0.0, 30.0, 80.0)]
    assert report.skipped_by_reason() == {
        "non-finite box": 1,
        "outside the image": 1,
        "zero area": 1,
    }
    assert all("Annotations.mat" in s.where and "image 0" in s.where for s in report.skipped)
    assert "person 1" in report.skipped[0].where


def test_emotic_missing_field_names_file_and_record(tmp_path):
    _write(tmp_path, [_person()], drop="person")
    with pytest.raises(EmoticFormatError, match=r"Annotations\.mat.*'train'.*image 0.*'person'"):
        load_emotic(tmp_path, "train")


def test_emotic_missing_variable(tmp_path):
    _write(tmp_path, [_person()], split="train")
    with pytest.raises(EmoticFormatError, match=r"Annotations\.mat: variable 'test' missing"):
        load_emotic(tmp_path, "test")


def test_emotic_unknown_category_is_an_error(tmp_path):
    person = _person()
    person.categories = ("Happiness", "Joy")
    _write(tmp_path, [person])
    with pytest.raises(EmoticFormatError, match=r"'train', image 0.*person 0.*'Joy'"):
        load_emotic(tmp_path, "train")


def test_heco_loads_the_generated_csv(synthetic):
    out, truth = synthetic
    records, report = load_heco(out / "HECO_Labels.csv", out / "heco" / "images")
    scenes = [s for split in truth.values() for s in split]
    assert len(records) == len(scenes) and report.skipped == [] and report.mapped == []
    for record, scene in zip(records, scenes, strict=True):
        assert (record.width, record.height) == (128, 128)
        assert [HECO[p.category_indices[0]] for p in record.people] == [
            p.heco_category for p in scene.people
        ]


def _heco_csv(path: Path, categories: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Image", "xmin", "ymin", "xmax", "ymax", "Category", "Valence",
                         "Arousal", "Dominance", "Self-assurance", "Catharsis"])  # fmt: skip
        for c in categories:
            writer.writerow(["synthetic_00000.jpg", 1, 2, 30, 40, c, 5, 5, 5, 5, 5])
    return path


def test_heco_misspelled_category_is_mapped_and_an_unknown_one_skipped(synthetic, tmp_path):
    """One bad label must not block HECO (the real file has "Happinesst"): an unambiguous
    misspelling is mapped and reported with its row, an unknown value skips its row, counted."""
    out, _ = synthetic
    csv_path = _heco_csv(tmp_path / "labels.csv", ["Anger", "Hapiness", "Happinesst", "Blah"])
    records, report = load_heco(csv_path, out / "heco" / "images")
    assert [HECO[p.category_indices[0]] for p in records[0].people] == [
        "Anger", "Happiness", "Happiness"]
    assert len(report.mapped) == 2
    assert "row 3" in report.mapped[0] and "'Hapiness' -> 'Happiness'" in report.mapped[0]
    assert report.skipped_by_reason() == {"unknown category 'Blah'": 1}
    assert "row 5" in report.skipped[0].where
    assert "mapped 2 category values" in report.summary()
    assert "skipped 1 people (1 unknown category 'Blah')" in report.summary()
    assert any("row 5" in line and "Blah" in line for line in report.warnings())


def test_heco_case_difference_is_mapped_and_reported(synthetic, tmp_path):
    out, _ = synthetic
    csv_path = _heco_csv(tmp_path / "labels.csv", ["Anger", " happiness "])
    records, report = load_heco(csv_path, out / "heco" / "images")
    assert [HECO[p.category_indices[0]] for p in records[0].people] == ["Anger", "Happiness"]
    assert len(report.mapped) == 1 and "row 3" in report.mapped[0]


def _records(n_single: int, n_multi: int) -> list[ImageRecord]:
    person = PersonRecord((0.0, 0.0, 1.0, 1.0), multi_hot([0], 8), np.full(3, 5.0, np.float32))
    return [
        ImageRecord(
            Path(f"{i:04d}.jpg"), 10, 10, [person] * (1 if i < n_single else 2), "all", "heco"
        )  # fmt: skip
        for i in range(n_single + n_multi)
    ]


def test_heco_partition_is_70_10_20_per_group_and_seeded():
    records = _records(100, 50)
    parts = heco_partition(records, seed=1)
    for name, (single, multi) in {"train": (70, 35), "val": (10, 5), "test": (20, 10)}.items():
        assert sum(len(r.people) == 1 for r in parts[name]) == single
        assert sum(len(r.people) == 2 for r in parts[name]) == multi
        assert {r.split for r in parts[name]} == {name}
    paths = {k: [r.path for r in v] for k, v in parts.items()}
    again = heco_partition(list(reversed(records)), seed=1)
    assert {k: [r.path for r in v] for k, v in again.items()} == paths
    other = heco_partition(records, seed=2)
    assert {k: [r.path for r in v] for k, v in other.items()} != paths
    assert sorted(p for v in paths.values() for p in v) == [r.path for r in records]


def test_labels_depend_on_context():
    # The same person (face and pose) in a different context gets different labels.
    for face in FACES:
        for pose in POSES:
            labels = {person_labels(face, pose, c) for c in CONTEXTS}
            heco = {heco_label(face, pose, c) for c in CONTEXTS}
            assert len(labels) > 1 or len(heco) > 1, (face, pose)
    assert person_labels("open", "up", "party") != person_labels("open", "up", "night")


def test_labels_depend_on_face_and_pose():
    for context in CONTEXTS:
        for pose in POSES:
            assert len({person_labels(f, pose, context) for f in FACES}) == len(FACES)
        for face in FACES:
            assert len({person_labels(face, p, context) for p in POSES}) == len(POSES)


def test_every_label_is_a_known_category():
    for c in CONTEXTS:
        for f in FACES:
            for p in POSES:
                assert set(person_labels(f, p, c)) <= set(EMOTIC)
                assert heco_label(f, p, c) in HECO
