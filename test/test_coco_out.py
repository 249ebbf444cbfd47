"""caer-infer --coco-out (caer_ros/inference/coco_out.py, issue 28): the people found as COCO
pre-labels to correct in CVAT, read back by the lab-data loader (training/datasets/coco.py).

Real files throughout: synthetic scenes written as PNGs, a clip written with OpenCV's mp4v
writer and read through FFmpeg, the session's small model (ONNX and .pt)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.clips import SIZE, interrupt_when, read_frames, write_clip

from caer_ros.inference.cli import INTERRUPTED, main
from caer_ros.labels import EMOTIC
from conftest import REPO
from training.datasets.coco import EmotionSet, load_coco
from training.datasets.synthetic import render_scene


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    """Two synthetic scenes of 128 px; the small model finds people in both (checked where
    used: a split without people is refused by the loader)."""
    folder = tmp_path_factory.mktemp("scenes")
    paths = []
    for seed in range(2):
        image, _, _ = render_scene(np.random.default_rng(seed), 128, people=2)
        path = folder / f"scene{seed}.png"
        assert cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def read_coco(path: Path) -> dict:
    """The file, as strict JSON (NaN or Infinity would fail here, as in other tools)."""
    def refuse(constant):
        raise AssertionError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def annotations_of(document: dict, image_id: int) -> list[dict]:
    return [a for a in document["annotations"] if a["image_id"] == image_id]


def check_people(annotations: list[dict], people: list[dict], categories: list[str],
                 tracked: bool = False) -> None:
    """The annotations are caer-infer's JSON people, in order: boxes, labels, scores."""
    assert len(annotations) == len(people)
    for annotation, person in zip(annotations, people, strict=True):
        x, y, w, h = annotation["bbox"]
        assert [x, y, x + w, y + h] == pytest.approx(person["box"], abs=0.01)
        attributes = annotation["attributes"]
        assert {n for n in categories if attributes[n]} == set(person["labels"])
        assert annotation["score"] == person["detection_score"]
        assert annotation["emotion_scores"] == person["scores"]
        if tracked:
            assert attributes["track_id"] == int(person["id"])
        else:
            assert "track_id" not in attributes


def check_records(records, people_per_image: list[list[dict]], categories: list[str]) -> None:
    """What the loader read equals caer-infer's JSON people: boxes and labels."""
    assert len(records) == len(people_per_image)
    for record, people in zip(records, people_per_image, strict=True):
        assert len(record.people) == len(people)
        for read, person in zip(record.people, people, strict=True):
            assert read.box == pytest.approx(person["box"], abs=0.01)
            assert [categories[i] for i in read.category_indices] == sorted(
                person["labels"], key=categories.index)


@pytest.mark.parametrize("model, category_set", [(1, "emotic"), (0, "heco")],
                         ids=["onnx-emotic", "pt-heco"])
def test_images_give_the_json_outputs_people_and_the_loader_reads_them_back(
        scenes, small_model_files, tmp_path, capsys, model, category_set):
    """Without --out: the JSON lines on stdout and the COCO file hold the same people; the
    file, named train.json, is a train split the loader reads with the same boxes and labels
    (HECO, a single-label set: the top label alone)."""
    coco = tmp_path / "labels" / "train.json"  # the images are elsewhere: file_name has ../
    model_file = str(small_model_files[model])
    assert main([*map(str, scenes), "--model", model_file, "--max-people", "3",
                 "--category-set", category_set, "--coco-out", str(coco)]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert len(lines) == 2 and all(line["people"] for line in lines)
    assert f"COCO pre-labels: 2 images, {sum(len(x['people']) for x in lines)} people" \
        in captured.err
    categories = list(lines[0]["people"][0]["scores"])
    if category_set == "heco":
        assert all(len(p["labels"]) == 1 for line in lines for p in line["people"])

    document = read_coco(coco)
    assert document["info"]["model"] == model_file
    assert document["info"]["category_set"] == category_set
    assert document["info"]["categories"] == categories
    for image, line, scene in zip(document["images"], lines, scenes, strict=True):
        assert image["file_name"] == os.path.relpath(scene, coco.parent)
        assert image["file_name"].startswith("../")
        assert (image["width"], image["height"]) == (128, 128)
        check_people(annotations_of(document, image["id"]), line["people"], categories)

    records, report = load_coco(coco.parent, "train", EmotionSet(category_set, tuple(categories)))
    assert not report.changed and not report.skipped, report.summary()
    assert [r.path.resolve() for r in records] == [s.resolve() for s in scenes]
    check_records(records, [line["people"] for line in lines], categories)


def test_a_videos_processed_frames_are_written_beside_with_track_ids(small_model_files,
                                                                      tmp_path):
    """With --out and --every 2: the processed frames as JPEGs in train_frames/, file_names
    that resolve, the people of each frame's JSON line with their track ids."""
    clip = write_clip(tmp_path / "walk.mp4", 6)
    out, coco = tmp_path / "out", tmp_path / "labels" / "train.json"
    assert main([str(clip), "--model", str(small_model_files[1]), "--out", str(out),
                 "--every", "2", "--max-people", "2", "--coco-out", str(coco)]) == 0
    lines = [json.loads(line) for line in (out / "walk.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 2, 4]
    assert len(read_frames(out / "walk.mp4")) == 3  # --out's files as without --coco-out

    document = read_coco(coco)
    assert [image["file_name"] for image in document["images"]] == [
        "train_frames/walk_000000.jpg", "train_frames/walk_000002.jpg",
        "train_frames/walk_000004.jpg"]
    assert sorted(p.name for p in (coco.parent / "train_frames").iterdir()) == [
        "walk_000000.jpg", "walk_000002.jpg", "walk_000004.jpg"]
    source = read_frames(clip)
    for image, line in zip(document["images"], lines, strict=True):
        written = cv2.imread(str(coco.parent / image["file_name"]))
        assert written is not None and (image["width"], image["height"]) == SIZE
        assert written.shape == (SIZE[1], SIZE[0], 3)
        # the frame processed, not the annotated one (JPEG: close, not equal)
        assert np.abs(written.astype(int) - source[line["frame"]].astype(int)).mean() < 3
        check_people(annotations_of(document, image["id"]), line["people"], list(EMOTIC),
                     tracked=True)
    ids = [a["attributes"]["track_id"] for a in document["annotations"]]
    assert len(set(ids)) < len(ids)  # the same people over frames

    records, _ = load_coco(coco.parent, "train", EmotionSet("emotic", EMOTIC))
    assert [r.path.name for r in records] == [f"walk_{i:06d}.jpg" for i in (0, 2, 4)]
    check_records(records, [line["people"] for line in lines], list(EMOTIC))


def test_broken_inputs_are_reported_and_left_out(scenes, small_model_files, tmp_path):
    """A broken image and a file that is not a video among good images: both named on
    stderr, exit status 1, the file written with the good images alone."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(200))
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are notes, not a video\n")
    coco = tmp_path / "train.json"
    done = subprocess.run(
        [sys.executable, "-m", "caer_ros.inference.cli", str(scenes[0]), str(broken),
         str(scenes[1]), str(fake), "--model", str(small_model_files[1]), "--max-people", "3",
         "--coco-out", str(coco)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert f"error: {broken}: not an image" in done.stderr
    assert f"error: {fake}: not a video OpenCV (FFmpeg) can read" in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(scenes[0]), str(scenes[1])]
    document = read_coco(coco)
    assert [(coco.parent / i["file_name"]).resolve() for i in document["images"]] == [
        s.resolve() for s in scenes]
    for image, line in zip(document["images"], lines, strict=True):
        check_people(annotations_of(document, image["id"]), line["people"], list(EMOTIC))
    assert not (tmp_path / "train_frames").exists()  # no video frame was processed


def test_the_file_is_json_in_cvats_coco_shape(scenes, small_model_files, tmp_path):
    """The fields CVAT's "COCO 1.0" import reads, with ids from 1, for images and frames."""
    clip = write_clip(tmp_path / "walk.mp4", 3)
    coco = tmp_path / "prelabels.json"
    assert main([str(scenes[0]), str(clip), "--model", str(small_model_files[1]),
                 "--max-people", "2", "--coco-out", str(coco)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prelabels.json", "prelabels_frames",
                                                          "walk.mp4"]  # no temporary file
    document = read_coco(coco)
    assert set(document) == {"info", "licenses", "categories", "images", "annotations"}
    assert document["categories"] == [{"id": 1, "name": "person", "supercategory": ""}]
    assert document["info"]["category_set"] == "emotic"
    assert document["info"]["model"] == str(small_model_files[1])
    images = document["images"]
    assert [i["id"] for i in images] == [1, 2, 3, 4]
    assert [i["file_name"] for i in images] == [
        os.path.relpath(scenes[0], tmp_path), "prelabels_frames/walk_000000.jpg",
        "prelabels_frames/walk_000001.jpg", "prelabels_frames/walk_000002.jpg"]
    assert all(isinstance(i["width"], int) and isinstance(i["height"], int) for i in images)
    annotations = document["annotations"]
    assert [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))
    assert {a["image_id"] for a in annotations} == {1, 2, 3, 4}
    for annotation in annotations:
        assert set(annotation) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd",
                                   "segmentation", "attributes", "score", "emotion_scores"}
        assert annotation["category_id"] == 1 and annotation["iscrowd"] == 0
        assert annotation["segmentation"] == []
        x, y, w, h = annotation["bbox"]
        image = images[annotation["image_id"] - 1]
        assert 0 <= x and 0 <= y and w > 0 and h > 0
        assert x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01
        assert annotation["area"] == pytest.approx(w * h, abs=0.01)
        attributes = annotation["attributes"]
        assert attributes["occluded"] is False
        assert attributes["rotation"] == 0.0 and isinstance(attributes["rotation"], float)
        tracked = annotation["image_id"] > 1  # the video's frames
        assert list(attributes) == ["occluded", "rotation", *EMOTIC,
                                    *(["track_id"] if tracked else [])]
        assert all(isinstance(attributes[n], bool) for n in EMOTIC)
        if tracked:
            assert isinstance(attributes["track_id"], int)
        assert 0 <= annotation["score"] <= 1
        assert list(annotation["emotion_scores"]) == list(EMOTIC)


def test_ctrl_c_writes_the_frames_processed_so_far(small_model_files, tmp_path):
    """SIGINT during a long video: exit status 130 and the file holds every frame processed,
    each with its JPEG and its JSON line (--out)."""
    long = write_clip(tmp_path / "long.mp4", 400)
    out, coco = tmp_path / "out", tmp_path / "labels" / "train.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "caer_ros.inference.cli", str(long), "--model",
         str(small_model_files[1]), "--out", str(out), "--coco-out", str(coco)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    frames = coco.parent / "train_frames"
    code, err = interrupt_when(process, lambda: frames.is_dir()
                               and len(list(frames.iterdir())) >= 3)
    assert code == INTERRUPTED, err[-2000:]
    lines = [json.loads(line) for line in (out / "long.jsonl").read_text().splitlines()]
    assert 3 <= len(lines) < 400
    document = read_coco(coco)
    assert [i["file_name"] for i in document["images"]] == [
        f"train_frames/long_{line['frame']:06d}.jpg" for line in lines]
    assert all((coco.parent / i["file_name"]).is_file() for i in document["images"])
    assert f"COCO pre-labels: {len(lines)} images" in err
