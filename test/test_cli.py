"""caer-infer (caer_ros/inference/cli.py) on a real photo and a broken file."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from caer_ros.inference.cli import main
from caer_ros.inference.predictor import Predictor
from caer_ros.labels import EMOTIC
from conftest import REPO


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder with the astronaut photo (PNG) and a file that only looks like a JPEG."""
    folder = tmp_path_factory.mktemp("images")
    good = folder / "astronaut.png"
    cv2.imwrite(str(good), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    broken = folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(200))
    return good, broken


def _check_person(person: dict, size: tuple[int, int], continuous: bool) -> None:
    width, height = size
    x1, y1, x2, y2 = person["box"]
    assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
    assert 0 <= person["detection_score"] <= 1
    assert list(person["scores"]) == list(EMOTIC)
    assert all(0 <= v <= 1 for v in person["scores"].values())
    labels = person["labels"]
    assert all(person["scores"][name] >= 0.5 for name in labels)  # the model's thresholds
    assert [person["scores"][n] for n in labels] == sorted(
        (person["scores"][n] for n in labels), reverse=True)
    assert sorted(labels) == sorted(n for n, v in person["scores"].items() if v >= 0.5)
    for name in ("valence", "arousal", "dominance"):
        assert (0 <= person[name] <= 1) if continuous else person[name] is None


def test_json_and_overlay_per_image_and_the_broken_file_named(tmp_path, images,
                                                              small_model_files):
    good, broken = images
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "caer_ros.inference.cli", str(broken), str(good), "--model",
         str(small_model_files[1]), "--out", str(out), "--threshold", "0.2",
         "--max-people", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert f"error: {broken}: not an image" in done.stderr
    assert "1 of 2 image(s) failed" in done.stderr
    assert f"{good}: 4 people" in done.stdout
    assert sorted(f.name for f in out.iterdir()) == ["astronaut.json", "astronaut.png"]

    result = json.loads((out / "astronaut.json").read_text())
    assert result["file"] == str(good)
    assert result["image_size"] == {"width": 512, "height": 512}
    assert result["backend"] == "onnxruntime:CPUExecutionProvider"
    assert result["category_set"] == "emotic"
    people = result["people"]
    assert len(people) == 4
    scores = [p["detection_score"] for p in people]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.2
    for person in people:
        _check_person(person, (512, 512), continuous=True)
    assert any(p["labels"] for p in people)

    # The overlay: the photo with the boxes drawn on it.
    photo = cv2.imread(str(good))
    overlay = cv2.imread(str(out / "astronaut.png"))
    assert overlay.shape == photo.shape
    changed = np.any(overlay != photo, axis=2)
    assert 0.001 < changed.mean() < 0.5
    for person in people:
        x1, y1, x2, y2 = (int(round(v)) for v in person["box"])
        left_edge = changed[max(y1, 0):min(y2, 511) + 1, max(x1 - 2, 0):min(x1 + 3, 512)]
        assert left_edge.mean() > 0.5  # the box's left side is drawn


def test_json_lines_on_stdout_for_a_folder(images, small_model_files, capsys):
    good, broken = images
    assert main([str(good.parent), "--model", str(small_model_files[0]), "--threshold", "0",
                 "--max-people", "3"]) == 1
    captured = capsys.readouterr()
    assert f"error: {broken}:" in captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1  # only the photo: nothing is drawn or written without --out
    result = json.loads(lines[0])
    assert result["backend"] == "torch:cpu" and len(result["people"]) == 3
    for person in result["people"]:
        _check_person(person, (512, 512), continuous=True)
    # The same numbers as the predictor's (rounded for JSON).
    people = Predictor.from_file(small_model_files[0]).predict(
        cv2.imread(str(good)), detection_threshold=0.0, max_people=3)
    np.testing.assert_allclose([p["box"] for p in result["people"]], people.boxes, atol=0.01)
    np.testing.assert_allclose([list(p["scores"].values()) for p in result["people"]],
                               people.scores, atol=1e-4)


def test_every_image_fails_or_the_model_is_bad(tmp_path, images, small_model_files, capsys):
    _, broken = images
    assert main([str(broken), str(tmp_path / "nothing.png"), "--model",
                 str(small_model_files[1])]) == 1
    err = capsys.readouterr().err
    assert "no such file" in err and "2 of 2 image(s) failed" in err
    assert main([str(broken), "--model", str(tmp_path / "missing.onnx")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.onnx'}: no such file"


def test_flip_test_and_scale_fusion_options(images, small_model_files, capsys):
    """--flip-test / --fuse-sizes change the torch model's answer as the Predictor's settings
    do; an ONNX graph has them fixed, so asking otherwise is one clear error."""
    good, _ = images
    pt, onnx_path = small_model_files
    options = ["--flip-test", "--fuse-sizes", "quarter"]
    assert main([str(good), "--model", str(pt), "--threshold", "0", "--max-people", "3",
                 *options]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    people = Predictor.from_file(pt, changes={"flip_test": True, "fuse_sizes": "quarter"}) \
        .predict(cv2.imread(str(good)), detection_threshold=0.0, max_people=3)
    plain = Predictor.from_file(pt).predict(cv2.imread(str(good)), detection_threshold=0.0,
                                            max_people=3)
    np.testing.assert_allclose([p["box"] for p in result["people"]], people.boxes, atol=0.01)
    assert not np.allclose(people.scores, plain.scores, atol=1e-3)
    assert main([str(good), "--model", str(onnx_path), "--flip-test"]) == 2
    err = capsys.readouterr().err
    assert "flip_test" in err and "fixed in the exported graph" in err


def test_category_set_heco_reports_its_scores_with_one_label(images, small_model_files, capsys):
    """``--category-set heco``: HECO's 8 scores, and its labels the top category alone (a
    single-label set); an unknown set is one line, exit 2."""
    from caer_ros.labels import HECO

    good, _ = images
    assert main([str(good), "--model", str(small_model_files[0]), "--threshold", "0",
                 "--max-people", "5", "--category-set", "heco"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["category_set"] == "heco" and len(result["people"]) == 5
    for person in result["people"]:
        assert list(person["scores"]) == list(HECO)
        top = max(person["scores"], key=person["scores"].get)
        assert person["labels"] == [top]
    assert main([str(good), "--model", str(small_model_files[0]), "--category-set", "fer"]) == 2
    assert "no category set 'fer'" in capsys.readouterr().err
