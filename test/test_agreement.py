"""training.evaluation.agreement and ``python -m training.evaluate --against``: a student scored
against its teacher on unlabelled frames.

Real components throughout: the small seeded models of ``helpers/small_model.py`` (untrained,
their final layers redrawn so that they find "people" with spread scores: 32, the ``top_k``, in
a noise image at the deployed detection threshold 0.3) and small frame folders (noise images, a
short video) read by :mod:`training.datasets.frames`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.clips import write_clip
from helpers.small_model import write_small_model

from caer_ros.inference.predictor import Predictor
from caer_ros.labels import EMOTIC, HECO
from training.datasets.frames import collect_frames
from training.evaluation import agreement as agreement_module
from training.evaluation import evaluate as evaluate_module
from training.evaluation import metrics
from training.evaluation.agreement import (
    AgreementError,
    agreement,
    format_agreement,
    teacher_labels,
)
from training.evaluation.evaluate import main, parse_args

IMAGES = 3


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """A folder of three 96x128 colour-noise PNGs (colour noise: a model's output changes when
    the channels are swapped)."""
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for n in range(IMAGES):
        cv2.imwrite(str(folder / f"frame{n}.png"),
                    rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    return folder


@pytest.fixture(scope="module")
def pool(frames):
    return collect_frames([frames])


@pytest.fixture(scope="module")
def other_pt(tmp_path_factory) -> Path:
    """A second small model (another seed): another "student" of the same categories."""
    return write_small_model(tmp_path_factory.mktemp("other") / "other.pt", seed=1)


@pytest.fixture(scope="module")
def heco_pt(tmp_path_factory) -> Path:
    """A small model with the HECO set alone (single-label)."""
    return write_small_model(tmp_path_factory.mktemp("heco") / "heco.pt", seed=2,
                             categories={"heco": HECO})


@pytest.fixture(scope="module")
def teacher(small_model_pt) -> Predictor:
    return Predictor.from_file(small_model_pt)


@pytest.fixture(scope="module")
def student(other_pt) -> Predictor:
    return Predictor.from_file(other_pt)


# --------------------------------------------------------------------------- the figures


def test_a_model_agrees_fully_with_itself(teacher, pool):
    result = agreement(teacher, teacher, pool, progress=False)
    assert result.frames == IMAGES
    assert result.teacher_people == result.student_people == 32 * IMAGES  # top_k in each
    assert result.pd_ap == pytest.approx(100.0)
    assert result.er_map == pytest.approx(100.0)
    assert result.score_mae == 0.0 and result.continuous_mae == 0.0
    defined = [ap for ap in result.per_category_ap.values() if math.isfinite(ap)]
    assert defined and defined == pytest.approx([100.0] * len(defined))
    assert list(result.per_category_ap) == list(EMOTIC)
    assert (result.category_set, result.single_label) == ("emotic", False)
    assert (result.detection_threshold, result.teacher_detection_threshold) == (0.01, 0.3)
    assert result.emotion_thresholds == tuple(teacher.emotion_thresholds.tolist())


def test_another_model_agrees_less_and_the_figures_are_the_metrics(teacher, student, frames):
    """Against the metrics computed by hand on the two predictors' outputs for one image read
    as BGR by OpenCV (so the pool's RGB frames must reach the predictors as BGR)."""
    path = frames / "frame0.png"
    result = agreement(student, teacher, collect_frames([path]), progress=False)

    image = cv2.imread(str(path))
    taught = teacher.predict(image)
    found, read = student.predict_and_read(image, taught.boxes, detection_threshold=0.01)
    labels = taught.scores >= teacher.emotion_thresholds
    er, per_category = metrics.er_map(read.scores, labels)
    assert result.er_map == pytest.approx(100 * er) and result.er_map < 100
    np.testing.assert_allclose(list(result.per_category_ap.values()), 100 * per_category)
    pd = metrics.pd_ap([metrics.ImageDetections(found.boxes, found.detection_scores)],
                       [taught.boxes])
    assert result.pd_ap == pytest.approx(100 * pd) and result.pd_ap < 50
    assert result.score_mae == pytest.approx(100 * np.abs(read.scores - taught.scores).mean())
    assert result.score_mae > 5
    assert result.continuous_mae == pytest.approx(
        100 * np.abs(read.continuous - taught.continuous).mean())
    assert result.teacher_people == len(taught)
    assert result.student_people == int((found.detection_scores >= 0.3).sum())


def test_the_student_is_read_in_the_teachers_set_when_it_is_not_its_first(teacher, pool,
                                                                         tmp_path):
    both = write_small_model(tmp_path / "heco_first.pt",
                             categories={"heco": HECO, "emotic": EMOTIC})
    result = agreement(Predictor.from_file(both), teacher, pool, progress=False)
    assert result.category_set == "emotic" and list(result.per_category_ap) == list(EMOTIC)
    assert 0 <= result.er_map <= 100 and result.score_mae > 0


def test_a_teacher_that_finds_nobody_leaves_the_figures_undefined(small_model_pt, student,
                                                                  pool):
    blind = Predictor.from_file(small_model_pt, changes={"detection_threshold": 0.99})
    result = agreement(student, blind, pool, progress=False)
    assert (result.frames, result.teacher_people, result.student_people) == (IMAGES, 0, 0)
    for value in (result.pd_ap, result.er_map, result.score_mae, result.continuous_mae,
                  *result.per_category_ap.values()):
        assert math.isnan(value)
    document = result.to_json()
    assert json.dumps(document, allow_nan=False)
    assert document["pd_ap"] is document["er_map"] is document["score_mae"] is None
    assert "the teacher found nobody" in format_agreement(result)


def test_single_label_sets_take_the_teachers_top_category(heco_pt, pool):
    """A model against itself: the same people and scores, but an ER mAP below 100, as the
    top category of one person can score lower than a category that is not another's top."""
    heco = Predictor.from_file(heco_pt)
    result = agreement(heco, heco, pool, progress=False)
    assert result.single_label and result.category_set == "heco"
    assert result.pd_ap == pytest.approx(100.0)
    assert result.score_mae == 0.0 and result.continuous_mae == 0.0
    scores = np.concatenate([heco.predict(cv2.imread(ref.source)).scores for ref in pool])
    top = np.eye(len(HECO))[scores.argmax(axis=1)]
    assert result.er_map == pytest.approx(100 * metrics.er_map(scores, top)[0])

    scores = np.array([[0.2, 0.9, 0.1], [0.6, 0.3, 0.7]])  # thresholds unused when single
    np.testing.assert_array_equal(teacher_labels(scores, np.full(3, 0.95), True),
                                  [[0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(teacher_labels(scores, np.array([0.2, 0.5, 0.7]), False),
                                  [[1, 1, 0], [1, 0, 1]])


def test_category_sets_must_match(teacher, heco_pt, pool, small_model_pt):
    with pytest.raises(AgreementError) as error:
        agreement(Predictor.from_file(heco_pt), teacher, pool, progress=False)
    assert str(heco_pt) in str(error.value) and str(small_model_pt) in str(error.value)


def test_the_scale_and_threshold_are_the_evaluators():
    assert agreement_module.SCALE == evaluate_module.SCALE
    assert agreement_module.DETECTION_THRESHOLD == evaluate_module.DETECTION_THRESHOLD


# --------------------------------------------------------------------------- command line


def test_cli_writes_the_json(small_model_pt, other_pt, frames, tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", 20)  # 2 s at 10/s: 4 frames at 2/s
    out = tmp_path / "results" / "agreement.json"
    code = main(["--model", str(other_pt), "--against", str(small_model_pt),
                 "--images", str(frames), str(clip), "--json", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "PD AP" in captured.out and "ER mAP" in captured.out and "score MAE" in captured.out
    assert "3 images and 1 videos" in captured.err
    assert [p.name for p in out.parent.iterdir()] == ["agreement.json"]  # no temporary file
    result = json.loads(out.read_text())
    video_frames = len(collect_frames([clip]))
    assert video_frames >= 2
    assert result["frames"] == IMAGES + video_frames
    assert result["teacher_people"] == 32 * result["frames"]
    assert result["scale"] == 100 and result["category_set"] == "emotic"
    assert result["categories"] == list(EMOTIC) == list(result["per_category_ap"])
    for key in ("pd_ap", "er_map", "score_mae", "continuous_mae"):
        assert isinstance(result[key], float) and 0 <= result[key] <= 100, key
    defined = [v for v in result["per_category_ap"].values() if v is not None]
    assert result["er_map"] == pytest.approx(np.mean(defined))
    assert (result["model"], result["against"]) == (str(other_pt), str(small_model_pt))
    assert result["inputs"] == [str(frames), str(clip)]
    assert (result["frame_rate"], result["max_frames"]) == (2.0, None)
    assert result["detection_threshold"] == 0.01
    assert result["teacher_detection_threshold"] == 0.3
    assert len(result["teacher_emotion_thresholds"]) == len(EMOTIC)
    assert not result["single_label"]

    code = main(["--model", str(small_model_pt), "--against", str(small_model_pt),
                 "--images", str(frames), "--max-frames", "2", "--json", str(out),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["frames"] == 2 and result["max_frames"] == 2
    assert (result["pd_ap"], result["score_mae"]) == (pytest.approx(100.0), 0.0)


def _fails(argv, capsys, out: Path, *named) -> str:
    assert main([*map(str, argv), "--json", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for name in named:
        assert str(name) in lines[0], lines[0]
    assert not out.exists()
    return lines[0]


def test_cli_errors(small_model_pt, heco_pt, frames, tmp_path, capsys):
    out = tmp_path / "out.json"
    model = ["--model", small_model_pt]
    missing = tmp_path / "missing.pt"
    _fails([*model, "--against", missing, "--images", frames], capsys, out, missing)
    not_a_model = tmp_path / "teacher.pt"
    not_a_model.write_text("not a model")
    _fails([*model, "--against", not_a_model, "--images", frames], capsys, out, not_a_model)
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails([*model, "--against", small_model_pt, "--images", empty], capsys, out, empty)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    _fails([*model, "--against", small_model_pt, "--images", frames, broken], capsys, out,
           broken)
    line = _fails(["--model", heco_pt, "--against", small_model_pt, "--images", frames],
                  capsys, out, heco_pt, small_model_pt)
    assert "emotic" in line


@pytest.mark.parametrize("argv", [
    ["--against", "t.pt"],  # no --images
    ["--against", "t.pt", "--data", "d"],  # both modes
    [],  # neither
    ["--against", "t.pt", "--images", "f", "--split", "val"],
    ["--against", "t.pt", "--images", "f", "--limit", "3"],
    ["--against", "t.pt", "--images", "f", "--frame-rate", "0"],
    ["--against", "t.pt", "--images", "f", "--max-frames", "0"],
    ["--data", "d", "--images", "a", "b"],  # one HECO image directory
    ["--data", "d", "--max-frames", "3"],
])
def test_cli_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--model", "m.pt", *argv])
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_heco_images_stay_one_directory(tmp_path):
    args = parse_args(["--model", "m.pt", "--data", str(tmp_path), "--images", "heco/images"])
    assert args.images == Path("heco/images")
    assert (args.split, args.seed, args.dataset) == ("test", 0, "emotic")
    args = parse_args(["--model", "m.pt", "--data", str(tmp_path)])
    assert args.images is None
