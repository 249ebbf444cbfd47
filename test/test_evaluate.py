"""training.evaluation.evaluate: the command line, the wiring of the metrics, F1 and the ABAW score,
both backends, bad input.

Real components throughout: the small seeded model of ``helpers/small_model.py`` (EMOTIC + HECO
category sets, 96x128 input) and a synthetic dataset in EMOTIC's and HECO's on-disk formats.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from helpers.small_model import write_small_model

from caer_ros.inference.decode import Detections
from caer_ros.inference.predictor import Predictor
from caer_ros.labels import EMOTIC, HECO
from caer_ros.model.config import ModelConfig
from training.datasets.emotic import load_emotic
from training.datasets.synthetic import generate
from training.evaluation import metrics
from training.evaluation.evaluate import (
    EvaluationError,
    emotion_thresholds,
    evaluate,
    evaluation_split,
    format_summary,
    main,
)

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = [f"{0.5 + 0.05 * i:.2f}" for i in range(10)]
METRICS = ("er_map", "per_category_ap", "pd_ap", "oer_per_threshold", "oer_map")
F1_KEYS = {True: {"macro_f1", "accuracy"}, False: {"mean_f1", "f1_thresholds"}}  # single_label


def _check_f1_keys(result: dict, single_label: bool, parts: set[str]) -> None:
    """The F1 / ABAW keys of a JSON result: those of its kind only, the score the parts' sum."""
    assert result["single_label"] is single_label
    assert F1_KEYS[single_label] <= set(result)
    assert not F1_KEYS[not single_label] & set(result)
    assert list(result["per_category_f1"]) == result["categories"]
    assert set(result["abaw_parts"]) == parts
    assert result["abaw_score"] == pytest.approx(sum(result["abaw_parts"].values()))
    f1 = "macro_f1" if single_label else "mean_f1"
    assert result["abaw_parts"][f1] == result[f1] and _in_range(result[f1])
    if "ccc_mean" in parts:
        assert result["abaw_parts"]["ccc_mean"] == pytest.approx(100 * result["ccc_mean"])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """10 synthetic images (train 6, val 2, test 2) in EMOTIC's format, plus HECO's CSV."""
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, images=10, seed=3, size=160, heco=True)
    return root


@pytest.fixture(scope="module")
def records(data):
    records, _ = load_emotic(data, "train")
    assert len(records) == 6 and sum(len(r.people) for r in records) >= 6
    return records


@pytest.fixture(scope="module")
def torch_predictor(small_model_files) -> Predictor:
    return Predictor.from_file(small_model_files[0])


@pytest.fixture(scope="module")
def torch_result(torch_predictor, records):
    return evaluate(torch_predictor, records, detection_threshold=0.05, progress=False)


def _in_range(value) -> bool:
    return value is None or 0.0 <= value <= 100.0


# --------------------------------------------------------------------------- command line


def test_cli_writes_the_json(data, small_model_files, tmp_path):
    out = tmp_path / "results" / "test.json"
    run = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--model", str(small_model_files[0]),
         "--data", str(data), "--json", str(out), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "ER mAP" in run.stdout and "PD AP" in run.stdout and "OER" in run.stdout
    result = json.loads(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["test.json"]  # no temporary file left

    assert set(METRICS) <= set(result)
    assert result["scale"] == 100
    assert list(result["per_category_ap"]) == list(EMOTIC) == result["categories"]
    assert list(result["oer_per_threshold"]) == THRESHOLDS
    for key in ("er_map", "pd_ap", "oer_map"):
        assert isinstance(result[key], float) and _in_range(result[key])
    assert all(_in_range(v) for v in result["per_category_ap"].values())
    assert all(_in_range(v) for v in result["oer_per_threshold"].values())
    assert result["oer_map"] == pytest.approx(np.mean(list(result["oer_per_threshold"].values())))
    defined = [v for v in result["per_category_ap"].values() if v is not None]
    assert result["er_map"] == pytest.approx(np.mean(defined))
    assert None in result["per_category_ap"].values()  # the synthetic set uses 9 of 26

    test_records, _ = load_emotic(data, "test")
    assert result["images"] == len(test_records)
    assert result["people"] == sum(len(r.people) for r in test_records)
    assert (result["split"], result["dataset"], result["category_set"]) == ("test", "emotic",
                                                                            "emotic")
    assert result["model"] == str(small_model_files[0])

    # EMOTIC is multi-label: mean F1 at the model's thresholds; the small model has a
    # continuous head, so the ABAW score adds its mean CCC.
    _check_f1_keys(result, single_label=False, parts={"ccc_mean", "mean_f1"})
    assert len(result["f1_thresholds"]) == len(EMOTIC)
    assert "mean F1" in run.stdout and "ABAW score (ccc_mean + mean_f1)" in run.stdout


def test_cli_heco_reads_the_models_heco_set(data, small_model_files, tmp_path, capsys):
    """The small model's primary set is EMOTIC; on HECO data its HECO set is evaluated."""
    out = tmp_path / "heco.json"
    code = main(["--model", str(small_model_files[0]), "--data", str(data), "--dataset", "heco",
                 "--split", "train", "--limit", "3", "--json", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["category_set"] == "heco"
    assert list(result["per_category_ap"]) == list(HECO)
    assert result["images"] == 3
    assert result["seed"] == 0
    assert list(result["oer_per_threshold"]) == THRESHOLDS
    _check_f1_keys(result, single_label=True, parts={"ccc_mean", "macro_f1"})
    assert "macro F1" in capsys.readouterr().out


# --------------------------------------------------------------------------- wiring


def test_evaluate_equals_the_metrics_on_the_predictors_outputs(torch_predictor, records,
                                                               torch_result):
    result = torch_result

    read, labels, detections, truths = [], [], [], []
    for record in records:
        image = cv2.imread(str(record.path))
        boxes = np.array([p.box for p in record.people])
        truth = np.array([p.categories for p in record.people])
        read.append(torch_predictor.read_boxes(image, boxes).set_scores["emotic"])
        labels.append(truth)
        found = torch_predictor.predict(image, detection_threshold=0.05)
        detections.append((found.boxes, found.detection_scores, found.set_scores["emotic"]))
        truths.append((boxes, truth))
    er, per_category = metrics.er_map(np.concatenate(read), np.concatenate(labels))
    oer, oer_at = metrics.oer(detections, truths)
    thresholds = torch_predictor.settings.emotion_thresholds["emotic"]
    mean_f1, per_category_f1 = metrics.mean_f1_multilabel(
        np.concatenate(read), np.concatenate(labels), thresholds)

    assert result.er_map == pytest.approx(100 * er)
    np.testing.assert_allclose(list(result.per_category_ap.values()), 100 * per_category)
    assert result.pd_ap == pytest.approx(100 * metrics.pd_ap(detections, truths))
    assert result.oer_map == pytest.approx(100 * oer)
    assert list(result.oer_per_threshold.values()) == pytest.approx(
        [100 * v for v in oer_at.values()])
    assert (result.images, result.people) == (len(records), sum(len(r.people) for r in records))
    assert result.single_label is False and result.macro_f1 is None
    assert result.mean_f1 == pytest.approx(100 * mean_f1)
    np.testing.assert_allclose(list(result.per_category_f1.values()), 100 * per_category_f1)
    assert result.f1_thresholds == pytest.approx(thresholds)


def test_emotion_thresholds_of_every_set(torch_predictor):
    """The evaluated set's own thresholds, also for the model's non-primary set (HECO here)."""
    settings = torch_predictor.settings.emotion_thresholds
    np.testing.assert_allclose(emotion_thresholds(torch_predictor, "emotic"),
                               torch_predictor.emotion_thresholds)  # the primary set
    np.testing.assert_allclose(emotion_thresholds(torch_predictor, "heco"), settings["heco"])
    bare = SimpleNamespace(path="bare.pt")  # no settings: the model files' default
    np.testing.assert_array_equal(emotion_thresholds(bare, "heco"), [0.5] * len(HECO))


class OraclePredictor:
    """Returns each image's annotated people as its detections, with their labels as emotion
    scores in the records' set (EMOTIC: the model's non-primary set); the other set gets noise.
    ``input_frame`` gives the detected boxes in a 128-pixel network input's frame instead of the
    image's (160). ``continuous``: a continuous head reading the annotated values exactly."""

    def __init__(self, records, input_frame: bool = False, continuous: bool = False) -> None:
        self.by_image = {self._key(cv2.imread(str(r.path))): r for r in records}
        self.config = ModelConfig(categories={"heco": HECO, "emotic": EMOTIC})
        self.path = "oracle.pt"
        self.input_frame = input_frame
        self.continuous = continuous
        self.rng = np.random.default_rng(0)

    @staticmethod
    def _key(image) -> str:
        return hashlib.sha1(image.tobytes()).hexdigest()

    def _people(self, image, boxes) -> Detections:
        record = self.by_image[self._key(image)]
        labels = np.array([p.categories for p in record.people], dtype=np.float32)
        other = "emotic" if record.category_set == "heco" else "heco"
        noise = self.rng.random((len(boxes), len(self.config.categories[other])))
        set_scores = {other: noise.astype(np.float32), record.category_set: labels}
        continuous = (np.array([p.continuous for p in record.people], np.float32) - 1) / 9
        return Detections(boxes=np.asarray(boxes, dtype=np.float32),
                          detection_scores=np.ones(len(boxes), np.float32),
                          scores=set_scores["heco"], category_set="heco", set_scores=set_scores,
                          continuous=continuous if self.continuous else None)

    def read_boxes(self, image, boxes):
        return self._people(image, boxes)

    def predict_and_read(self, image, boxes, detection_threshold=None):
        read = self.read_boxes(image, boxes)
        return self.predict(image, detection_threshold), read

    def predict(self, image, detection_threshold=None):
        boxes = np.array([p.box for p in self.by_image[self._key(image)].people])
        if self.input_frame:
            boxes = boxes * 128 / 160
        return self._people(image, boxes)


def test_an_oracle_scores_100_everywhere(records):
    result = evaluate(OraclePredictor(records), records, progress=False)
    assert result.category_set == "emotic"
    assert result.er_map == pytest.approx(100.0)
    assert result.pd_ap == pytest.approx(100.0)
    assert result.oer_map == pytest.approx(100.0)
    assert list(result.oer_per_threshold.values()) == pytest.approx([100.0] * 10)
    present = {i for r in records for p in r.people for i in p.category_indices}
    for index, (name, ap) in enumerate(result.per_category_ap.items()):
        assert name == EMOTIC[index]
        assert ap == pytest.approx(100.0) if index in present else math.isnan(ap)
    # Multi-label: the 0/1 scores at the default 0.5 thresholds are exactly the labels.
    assert result.single_label is False
    assert result.mean_f1 == pytest.approx(100.0)
    assert result.f1_thresholds == (0.5,) * len(EMOTIC)
    assert result.abaw_parts == {"mean_f1": result.mean_f1}  # no continuous head
    assert result.abaw_score == pytest.approx(100.0)
    for index, f1 in enumerate(result.per_category_f1.values()):
        assert f1 == pytest.approx(100.0) if index in present else math.isnan(f1)


def test_a_heco_oracle_gets_full_f1_on_every_present_class_and_the_abaw_score(data):
    """HECO is single-label: macro F1 and accuracy. The macro F1 averages all 8 classes, as
    ABAW does: an oracle gets 100 on every class present in the data and 0 (its F1 undefined,
    reported NaN) on the others. With an exact continuous head the ABAW score is
    100 x mean CCC (1) + macro F1."""
    heco, _ = evaluation_split(data, "heco", "train")
    result = evaluate(OraclePredictor(heco, continuous=True), heco, progress=False)
    present = {i for r in heco for p in r.people for i in p.category_indices}
    assert 1 < len(present) < 8  # some HECO classes are missing from this small set
    macro = 100.0 * len(present) / 8
    assert result.category_set == "heco" and result.single_label is True
    assert result.macro_f1 == pytest.approx(macro)
    assert result.accuracy == pytest.approx(100.0)
    assert result.mean_f1 is None and result.f1_thresholds is None
    assert result.ccc == pytest.approx({"valence": 1.0, "arousal": 1.0, "dominance": 1.0})
    assert result.abaw_parts == pytest.approx({"ccc_mean": 100.0, "macro_f1": macro})
    assert result.abaw_score == pytest.approx(100.0 + macro)
    for index, f1 in enumerate(result.per_category_f1.values()):
        assert f1 == pytest.approx(100.0) if index in present else math.isnan(f1)

    document = json.loads(json.dumps(result.to_json(), allow_nan=False))
    _check_f1_keys(document, single_label=True, parts={"ccc_mean", "macro_f1"})
    assert document["abaw_score"] == pytest.approx(100.0 + macro)
    assert document["ccc_mean"] == pytest.approx(1.0)  # CCC itself stays -1..1
    rows = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1]
            for line in format_summary(result).splitlines() if line.startswith("  ")}
    assert rows["macro F1 (single-label, argmax)"] == f"{macro:.2f}"
    assert rows["accuracy (single-label, argmax)"] == "100.00"
    assert rows["ABAW score (ccc_mean + macro_f1)"] == f"{100.0 + macro:.2f}"


def test_boxes_in_the_wrong_frame_lose_detection_ap(records):
    result = evaluate(OraclePredictor(records, input_frame=True), records, progress=False)
    assert result.er_map == pytest.approx(100.0)  # read with the annotated boxes
    assert result.pd_ap < 50.0
    assert result.oer_map < 100.0


def test_an_image_of_another_size_than_annotated_is_reported(records, caplog):
    changed = [dataclasses.replace(records[0], width=records[0].width + 1), *records[1:]]
    result = evaluate(OraclePredictor(records), changed, progress=False)
    assert result.er_map == pytest.approx(100.0)
    assert f"1 image(s) differ in size from their annotation (first: {records[0].path})" \
        in caplog.text


def test_onnx_matches_torch(small_model_files, records, torch_result):
    onnx = Predictor.from_file(small_model_files[1])
    assert onnx.backend.startswith("onnxruntime")
    got = evaluate(onnx, records, detection_threshold=0.05, progress=False)
    want = torch_result
    for key in ("er_map", "pd_ap", "oer_map"):
        assert getattr(got, key) == pytest.approx(getattr(want, key), abs=0.5), key
    np.testing.assert_allclose(list(got.per_category_ap.values()),
                               list(want.per_category_ap.values()), atol=0.5)


# --------------------------------------------------------------------------- bad input


def _fails(argv, capsys, *named) -> str:
    assert main([*map(str, argv), "--no-progress"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for name in named:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def test_missing_model(data, tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    _fails(["--model", missing, "--data", data], capsys, missing)


def test_missing_annotations(small_model_files, tmp_path, capsys):
    _fails(["--model", small_model_files[0], "--data", tmp_path], capsys,
           tmp_path / "Annotations" / "Annotations.mat")
    _fails(["--model", small_model_files[0], "--data", tmp_path, "--dataset", "heco"], capsys,
           tmp_path / "HECO_Labels.csv")


def test_malformed_annotations(small_model_files, tmp_path, capsys):
    (tmp_path / "Annotations").mkdir()
    broken = tmp_path / "Annotations" / "Annotations.mat"
    broken.write_bytes(b"not a MATLAB file")
    _fails(["--model", small_model_files[0], "--data", tmp_path], capsys, broken)


def test_category_set_mismatch(data, tmp_path, capsys):
    heco_only = write_small_model(tmp_path / "heco.pt", categories={"heco": HECO})
    line = _fails(["--model", heco_only, "--data", data], capsys, heco_only)
    assert "heco" in line and "emotic" in line


def test_unreadable_image(data, small_model_files, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    records, _ = evaluation_split(copy, "emotic", "test")
    broken = records[0].path  # the first image: nothing runs before the error
    broken.write_bytes(b"\xff\xd8 truncated")
    _fails(["--model", small_model_files[0], "--data", copy], capsys, broken)
    broken.unlink()
    _fails(["--model", small_model_files[0], "--data", copy], capsys, broken)


def test_no_images(torch_predictor):
    with pytest.raises(EvaluationError, match="no images"):
        evaluate(torch_predictor, [], progress=False)


def test_continuous_head_gets_ccc(torch_predictor, records, torch_result):
    """The small model has a continuous head: CCC per dimension against (value - 1) / 9, equal
    to training.objectives.multitask.ccc on what the predictor reads at the annotated boxes."""
    from training.objectives.multitask import ccc

    assert set(torch_result.ccc) == {"valence", "arousal", "dominance"}
    read, truth = [], []
    for record in records:
        image = cv2.imread(str(record.path))
        boxes = np.array([p.box for p in record.people], np.float64)
        read.append(torch_predictor.read_boxes(image, boxes).continuous)
        truth.append(np.array([p.continuous for p in record.people]))
    expected = ccc(np.concatenate(read), (np.concatenate(truth) - 1) / 9)
    np.testing.assert_allclose(list(torch_result.ccc.values()), expected, rtol=1e-5,
                               atol=1e-6)
    document = torch_result.to_json()
    assert document["ccc_mean"] == pytest.approx(float(np.mean(expected)), abs=1e-6)
