"""Loaders of the teachers' datasets (training/datasets/teacher_data.py) on tiny fake datasets
written in AffectNet's, EmoSet's and the folder-per-class layouts."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.datasets.teacher_data import (
    AFFECTNET_COLUMNS,
    AFFECTNET_EXPRESSIONS,
    EMOSET_EMOTIONS,
    TeacherDataError,
    folder_classes,
    load_affectnet,
    load_emoset,
    load_folder,
)


def write_png(path: Path, colour=(0, 0, 255), size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size, 3), colour, np.uint8))
    return path


# --------------------------------------------------------------------------------------------
# AffectNet


def affectnet_row(name: str, expression, box=(1, 2, 4, 5), valence=0.5, arousal=-0.25):
    landmarks = ";".join(["1.0"] * 136)
    return [name, *box, landmarks, expression, valence, arousal]


def write_affectnet(root: Path, rows: list[list], header: bool = True, name="training.csv"):
    with open(root / name, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(AFFECTNET_COLUMNS)
        writer.writerows(rows)
    return root / name


@pytest.fixture
def affectnet(tmp_path):
    images = tmp_path / "Manually_Annotated_Images"
    for i in range(8):
        write_png(images / "1" / f"img{i}.png")
    rows = [affectnet_row(f"1/img{i}.png", code) for i, code in enumerate([0, 1, 7, 8, 9, 10])]
    rows.append(affectnet_row("1/absent.png", 3))
    rows.append(affectnet_row("1/img6.png", 2, valence=-2, arousal=-2))
    return tmp_path, rows


def test_affectnet_records_exclusions_and_report(affectnet):
    root, rows = affectnet
    csv_path = write_affectnet(root, rows)
    records, report = load_affectnet(csv_path, root / "Manually_Annotated_Images")
    assert [r.label for r in records] == [0, 1, 7, 2]
    assert [r.path.name for r in records] == ["img0.png", "img1.png", "img2.png", "img6.png"]
    first = records[0]
    assert first.box == (1.0, 2.0, 5.0, 7.0)  # x, y, x + w, y + h
    assert (first.valence, first.arousal) == (0.5, -0.25)
    assert math.isnan(records[3].valence) and math.isnan(records[3].arousal)  # AffectNet's -2
    reasons = report.skipped_by_reason()
    assert reasons == {"expression 8 (None)": 1, "expression 9 (Uncertain)": 1,
                       "expression 10 (Non-Face)": 1, "image file missing": 1}
    assert report.missing_images() and "absent.png" in report.missing_images()[0]
    assert "line 8" in report.missing_images()[0]  # spreadsheet line: header is line 1
    assert report.classes == AFFECTNET_EXPRESSIONS
    assert report.counts == [1, 1, 1, 0, 0, 0, 0, 1] and report.images == 4
    assert "4 images" in report.summary() and "skipped 4" in report.summary()


def test_affectnet_without_header_like_validation_csv(affectnet):
    root, rows = affectnet
    with_header, _ = load_affectnet(write_affectnet(root, rows), root / "Manually_Annotated_Images")
    csv_path = write_affectnet(root, rows, header=False, name="validation.csv")
    without, report = load_affectnet(csv_path, root / "Manually_Annotated_Images")
    assert without == with_header
    assert "line 7" in report.missing_images()[0]


def test_affectnet_classes_subset_and_no_boxes(affectnet):
    root, rows = affectnet
    csv_path = write_affectnet(root, rows)
    records, report = load_affectnet(csv_path, root / "Manually_Annotated_Images",
                                     classes=["happy", "Neutral"], face_boxes=False)
    assert [(r.path.name, r.label) for r in records] == [("img0.png", 1), ("img1.png", 0)]
    assert all(r.box is None for r in records)
    assert report.classes == ("Happy", "Neutral")
    assert report.skipped_by_reason()["class not selected"] == 3  # Contempt, Surprise, Sad
    with pytest.raises(TeacherDataError, match="unknown class 'Joy'"):
        load_affectnet(csv_path, root, classes=["Joy", "Happy"])


def test_affectnet_invalid_box_is_skipped(tmp_path):
    write_png(tmp_path / "a.png")
    csv_path = write_affectnet(tmp_path, [affectnet_row("a.png", 1, box=(0, 0, 0, 5))])
    records, report = load_affectnet(csv_path, tmp_path)
    assert records == [] and report.skipped_by_reason() == {"invalid face box": 1}


@pytest.mark.parametrize(("row", "message"), [
    (affectnet_row("a.png", "happy"), r"line 2 \(a.png\): expression 'happy' is not a code"),
    (affectnet_row("a.png", 11), "expression '11' is not a code 0..10"),
    (affectnet_row("a.png", 1, valence="high"), "valence 'high' is not a number"),
    (affectnet_row("a.png", 1, box=("x", 0, 1, 1)), "face_x 'x' is not a number"),
    (["a.png", 1, 2], "line 2: 3 columns"),
])
def test_affectnet_malformed_rows_name_file_and_line(tmp_path, row, message):
    write_png(tmp_path / "a.png")
    csv_path = write_affectnet(tmp_path, [row])
    with pytest.raises(TeacherDataError, match=message) as info:
        load_affectnet(csv_path, tmp_path)
    assert str(csv_path) in str(info.value)


def test_affectnet_missing_file_and_columns(tmp_path):
    with pytest.raises(TeacherDataError, match="training.csv: no such file"):
        load_affectnet(tmp_path / "training.csv", tmp_path)
    (tmp_path / "bad.csv").write_text("subDirectory_filePath,expression\na.png,1\n")
    with pytest.raises(TeacherDataError, match="bad.csv: missing columns face_x"):
        load_affectnet(tmp_path / "bad.csv", tmp_path)
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(TeacherDataError, match="empty.csv: empty file"):
        load_affectnet(tmp_path / "empty.csv", tmp_path)


# --------------------------------------------------------------------------------------------
# EmoSet


def write_emoset(root: Path, entries, name: str = "train.json") -> Path:
    (root / name).write_text(json.dumps(entries))
    return root / name


def emoset_entry(root: Path, emotion: str, i: int, annotation: dict | None = None) -> list:
    image = f"image/{emotion}/{emotion}_{i:05d}.jpg"
    note = f"annotation/{emotion}/{emotion}_{i:05d}.json"
    write_png(root / image)
    if annotation is not None:
        (root / note).parent.mkdir(parents=True, exist_ok=True)
        (root / note).write_text(json.dumps(annotation))
    return [emotion, image, note]


def test_emoset_records(tmp_path):
    entries = [emoset_entry(tmp_path, e, i, {"emotion": e, "scene": "x"})
               for i, e in enumerate(["awe", "sadness", "amusement"])]
    entries.append(["fear", "image/fear/none.jpg", "annotation/fear/none.json"])
    records, report = load_emoset(write_emoset(tmp_path, entries), read_annotations=True)
    assert [r.label for r in records] == [EMOSET_EMOTIONS.index(e)
                                          for e in ("awe", "sadness", "amusement")]
    assert records[0].path == tmp_path / "image/awe/awe_00000.jpg"
    assert records[0].box is None
    assert report.skipped_by_reason() == {"image file missing": 1}
    assert "entry 3" in report.skipped[0].where


def test_emoset_root_classes_and_annotations(tmp_path):
    data = tmp_path / "EmoSet-118K"
    entries = [emoset_entry(data, "anger", 0, {"emotion": "anger"}),
               emoset_entry(data, "Fear", 1), emoset_entry(data, "awe", 2)]
    split = write_emoset(tmp_path, entries, "val.json")  # split file outside the root
    records, report = load_emoset(split, root=data, classes=["fear", "anger"])
    assert [(r.path.name, r.label) for r in records] == [("anger_00000.jpg", 1),
                                                         ("Fear_00001.jpg", 0)]
    assert report.skipped_by_reason() == {"class not selected": 1}
    # with read_annotations, the entry without an annotation file is skipped
    records, report = load_emoset(split, root=data, read_annotations=True)
    assert len(records) == 1 and report.skipped_by_reason() == {"annotation file missing": 2}


@pytest.mark.parametrize(("entries", "message"), [
    ({"train": []}, "must be a list of \\[emotion, image_path, annotation_path\\] entries"),
    ([["awe", "a.jpg", "a.json"], ["awe", "b.jpg"]], "entry 1: \\['awe', 'b.jpg'\\] is not"),
    ([["awe", "a.jpg", 3]], "entry 0: .* is not \\[emotion"),
    ([["awe", "a.jpg", "a.json"], ["joy", "b.jpg", "b.json"]], "entry 1: unknown emotion 'joy'"),
])
def test_emoset_malformed_split_names_file_and_entry(tmp_path, entries, message):
    split = write_emoset(tmp_path, entries)
    with pytest.raises(TeacherDataError, match=message) as info:
        load_emoset(split, check_files=False)
    assert str(split) in str(info.value)


def test_emoset_bad_files(tmp_path):
    with pytest.raises(TeacherDataError, match="train.json: no such file"):
        load_emoset(tmp_path / "train.json")
    (tmp_path / "train.json").write_text("[[")
    with pytest.raises(TeacherDataError, match="train.json: not valid JSON"):
        load_emoset(tmp_path / "train.json")
    entry = emoset_entry(tmp_path, "awe", 0, {"emotion": "fear"})
    split = write_emoset(tmp_path, [entry])
    with pytest.raises(TeacherDataError, match="awe_00000.json: emotion 'fear' does not match"):
        load_emoset(split, read_annotations=True)
    (tmp_path / entry[2]).write_text("[1]")
    with pytest.raises(TeacherDataError, match="must be a mapping with an 'emotion'"):
        load_emoset(split, read_annotations=True)


# --------------------------------------------------------------------------------------------
# Folder per class


@pytest.fixture
def folder(tmp_path):
    split = tmp_path / "train"
    for name in ("b_sad", "a_happy"):
        for i in range(2):
            write_png(split / name / f"{i}.png")
    write_png(split / "a_happy" / "x.jpg")
    (split / "a_happy" / "notes.txt").write_text("not an image")
    (split / "stray.png").write_bytes(b"")
    (split / ".hidden").mkdir()
    write_png(split / ".hidden" / "0.png")
    return split


def test_folder_sorted_classes(folder):
    assert folder_classes(folder) == ("a_happy", "b_sad")
    records, report = load_folder(folder)
    assert [(r.path.parent.name, r.path.name, r.label) for r in records] == [
        ("a_happy", "0.png", 0), ("a_happy", "1.png", 0), ("a_happy", "x.jpg", 0),
        ("b_sad", "0.png", 1), ("b_sad", "1.png", 1)]
    assert report.counts == [3, 2]
    assert report.skipped_by_reason() == {"not an image file": 1, "not in a class folder": 1}


def test_folder_given_classes(folder):
    records, report = load_folder(folder, classes=["b_sad", "c_absent"])
    assert [r.label for r in records] == [0, 0]
    assert report.counts == [2, 0]
    assert report.skipped_by_reason()["class not selected"] == 4
    with pytest.raises(TeacherDataError, match="distinct folder names"):
        load_folder(folder, classes=["b_sad", "b_sad"])


def test_folder_errors(tmp_path):
    with pytest.raises(TeacherDataError, match="val: no such folder"):
        load_folder(tmp_path / "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherDataError, match="empty: no class folders"):
        load_folder(tmp_path / "empty")
