"""What needs people to be found, with the fixture model (test/data/fixture_model/: a small
model trained on synthetic CAER scenes by test/helpers/make_fixture_model.py; its README says
how and what it reaches): people in ``caer-infer``'s output where the scene has them, and a
track id that stays with each person walking slowly across a real video file.

The network is the real one (the committed weights, the torch backend, the node's predictor
and tracker through ``caer-infer``); the scenes are drawn by the synthetic generator with
random streams the fixture was not trained on. An untrained model of the same config finds no
one: both tests of behaviour fail with it (checked once; the fixture's README).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.make_fixture_model import FIGURES, MODEL, SCENE_SIZE

from caer_ros.inference.boxes import iou_matrix
from caer_ros.inference.cli import main
from training.datasets.synthetic import draw_context, draw_person, render_scene

MATCH_IOU = 0.5  # a found person is a drawn one when their boxes overlap at least this much
SCENE_SEED = 20261208  # a stream apart from the fixture's scenes (seed 0)

# The video: 160 x 96 frames (5:3, letterboxed into the model's 128 x 128 as a camera's
# frames are), a park, two people (figure scale 22 px: boxes of 29 x 53 px) that never
# overlap; each walks 1 px a frame (0.8 px in the network's input), the first right, the
# second left, 40 frames at 10 frames/s.
VIDEO_SIZE = (160, 96)  # width, height
FRAMES = 40
FPS = 10.0
WALKERS = (  # (first centre x, px per frame, top, scale, face, pose, shirt BGR)
    (24.0, 1.0, 22.0, 22.0, "smile", "down", (40, 40, 200)),
    (136.0, -1.0, 26.0, 22.0, "frown", "crossed", (200, 120, 40)),
)


@pytest.fixture(scope="module")
def model() -> Path:
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} is missing: python test/helpers/make_fixture_model.py makes it")
    return MODEL


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread while a test runs (restored after): the model is tiny, and two threads
    on two cores that other work also uses were measured 20x slower (OpenMP's waits)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_fixture_is_the_file_its_note_describes(model):
    figures = json.loads(FIGURES.read_text())
    assert hashlib.sha256(model.read_bytes()).hexdigest() == figures["sha256"]
    assert model.stat().st_size == figures["model_bytes"] <= 5_000_000
    readme = (model.parent / "README.md").read_text()
    assert figures["command"] in readme and figures["date"] in readme
    for key in ("pd_ap", "er_map"):
        assert str(figures["test"][key]) in readme


# --------------------------------------------------------------------------- images


def scenes(count: int, seed: int = SCENE_SEED):
    """``count`` synthetic scenes (image, true boxes), 1-4 people each, never trained on."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        image, people, _context = render_scene(rng, SCENE_SIZE)
        yield image, np.array([p.box for p in people], dtype=np.float64)


def matched(found: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each true box, the index of the found box overlapping it most (-1 below
    :data:`MATCH_IOU`), and that overlap."""
    if not len(found):
        return np.full(len(truth), -1), np.zeros(len(truth))
    iou = iou_matrix(truth, found)
    best = iou.argmax(axis=1)
    overlap = iou[np.arange(len(truth)), best]
    return np.where(overlap >= MATCH_IOU, best, -1), overlap


def check_people_in_caer_infer_images(model_file: Path, folder: Path) -> None:
    truth = {}
    for n, (image, boxes) in enumerate(scenes(6)):
        cv2.imwrite(str(folder / f"scene_{n}.png"), image)
        truth[f"scene_{n}"] = boxes
    out = folder / "out"
    assert main([str(folder), "--model", str(model_file), "--out", str(out)]) == 0
    for name, boxes in truth.items():
        people = json.loads((out / f"{name}.json").read_text())["people"]
        found = np.array([p["box"] for p in people], dtype=np.float64).reshape(-1, 4)
        index, overlap = matched(found, boxes)
        assert (index >= 0).all(), f"{name}: drawn people {boxes.tolist()} not all found: " \
                                   f"{found.tolist()} (best IoU {overlap.round(2).tolist()})"
        assert len(set(index.tolist())) == len(boxes)  # one found person per drawn one
        extra = [p for i, p in enumerate(people) if i not in set(index.tolist())]
        assert all(p["detection_score"] < 0.5 for p in extra), f"{name}: {extra}"


def test_caer_infer_finds_the_people_drawn_in_synthetic_scenes(model, tmp_path):
    check_people_in_caer_infer_images(model, tmp_path)


# --------------------------------------------------------------------------- video


def walker_boxes(frame: int) -> list[tuple[float, float, float, float]]:
    """The people's true boxes in ``frame`` (drawn on a scratch canvas: the generator's own
    box)."""
    scratch = np.zeros((VIDEO_SIZE[1], VIDEO_SIZE[0], 3), np.uint8)
    return [draw_person(scratch, x + step * frame, top, s, face, pose, shirt)
            for x, step, top, s, face, pose, shirt in WALKERS]


def write_walk(path: Path) -> list[np.ndarray]:
    """The walk as a real video file (mp4v through OpenCV's FFmpeg); each frame's true boxes."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, VIDEO_SIZE)
    assert writer.isOpened()
    background = np.zeros((VIDEO_SIZE[1], VIDEO_SIZE[0], 3), np.uint8)
    draw_context(background, "park", np.random.default_rng(3))
    truth = []
    for frame in range(FRAMES):
        image = background.copy()
        for x, step, top, s, face, pose, shirt in WALKERS:
            draw_person(image, x + step * frame, top, s, face, pose, shirt)
        writer.write(image)
        truth.append(np.array(walker_boxes(frame), dtype=np.float64))
    writer.release()
    return truth


def check_track_ids_follow_walkers(model_file: Path, folder: Path) -> None:
    video = folder / "walk.mp4"
    truth = write_walk(video)
    out = folder / "out"
    assert main([str(video), "--model", str(model_file), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in (out / "walk.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    ids: list[list[str]] = [[] for _ in WALKERS]  # each walker's id in each frame found
    for line, boxes in zip(lines, truth, strict=True):
        people = line["people"]
        found = np.array([p["box"] for p in people], dtype=np.float64).reshape(-1, 4)
        index, _ = matched(found, boxes)
        for walker, i in enumerate(index):
            if i >= 0:
                ids[walker].append(people[i]["id"])
    for walker, seen in enumerate(ids):
        assert len(seen) >= 0.9 * FRAMES, f"walker {walker} found in {len(seen)} frames"
        assert len(set(seen)) == 1, f"walker {walker} changed ids: {seen}"
    assert ids[0][0] != ids[1][0]
    # each person moved more than a box width: the id went along, not stayed at a place
    first, last = truth[0], truth[-1]
    assert (iou_matrix(first, last).diagonal() == 0).all()


def test_a_track_id_stays_with_each_person_walking_across_a_video(model, tmp_path):
    check_track_ids_follow_walkers(model, tmp_path)
