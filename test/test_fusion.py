"""BU+PC fusion at inference (caer_ros/inference/fusion.py, the ``fusion`` setting): fused
scores are the mean of the bottom-up scores and the person-centric head on hand-made crops;
torch and ONNX Runtime agree; settings validation; zero people, border and tiny boxes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from helpers.small_model import write_small_model
from skimage import data

from caer_ros.inference import onnx_metadata
from caer_ros.inference.cli import main as infer_main
from caer_ros.inference.decode import labels_over_threshold
from caer_ros.inference.export import export_onnx, export_with_summary
from caer_ros.inference.export import main as export_main
from caer_ros.inference.fusion import crop_batch, subject_crop
from caer_ros.inference.graph import PC_SCORES, InferenceGraph, output_names
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.preprocess import preprocess
from caer_ros.model import InferenceSettings, load_model_file, read_model_file, save_model_file
from training.data.transforms import Sample, extract_subject

SETS = ("emotic", "heco")
PEOPLE = {"detection_threshold": 0.0, "max_people": 5}  # a handful of people on any image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fusion")


@pytest.fixture(scope="module")
def fusion_model(model_dir):
    """The small test model (person-centric head, no attention: quicker) with fusion mean."""
    return write_small_model(model_dir / "fusion.pt", attention=False,
                             settings={"fusion": "mean"})


@pytest.fixture(scope="module")
def predictors(fusion_model):
    """(fused, bottom-up only) torch predictors of the same model."""
    return Predictor.from_file(fusion_model), Predictor.from_file(fusion_model, fusion="none")


@pytest.fixture(scope="module")
def network(fusion_model):
    model, _ = load_model_file(fusion_model)
    return model.eval()


def photo(width: int, height: int) -> np.ndarray:
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)


def hand_crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """ExtractSubject's rule, written out: clip, 10 % margin, clip, round outward."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = np.clip(np.asarray(box, np.float64), 0, [w, h, w, h])
    mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    return image[max(0, math.floor(y1 - my)):min(h, math.ceil(y2 + my)),
                 max(0, math.floor(x1 - mx)):min(w, math.ceil(x2 + mx))]


def person_centric(network, image: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
    """The person-centric probabilities of each box's crop, straight from BENet."""
    config = network.config
    crops = np.concatenate([preprocess(hand_crop(image, box), config.input_size,
                                       mean=config.input_mean, std=config.input_std)[0]
                            for box in boxes])
    with torch.no_grad():
        logits = network(torch.from_numpy(crops)).person_centric
    return {name: logits[name].sigmoid().numpy() for name in SETS}


def labels(scores: np.ndarray, thresholds: np.ndarray) -> list[list[int]]:
    return [sorted(np.flatnonzero(row >= thresholds), key=lambda j: (-row[j], j))
            for row in scores]


# --------------------------------------------------------------------------- the mean


@pytest.mark.parametrize("size", [(640, 480), (375, 500)])
def test_fused_scores_are_the_mean_of_both_heads(predictors, network, size):
    fused_p, plain_p = predictors
    image = photo(*size)
    fused, plain = fused_p.predict(image, **PEOPLE), plain_p.predict(image, **PEOPLE)
    assert len(fused) == len(plain) > 0
    np.testing.assert_array_equal(fused.boxes, plain.boxes)
    np.testing.assert_array_equal(fused.detection_scores, plain.detection_scores)
    np.testing.assert_array_equal(fused.continuous, plain.continuous)  # bottom-up's alone
    pc = person_centric(network, image, fused.boxes)
    for name in SETS:
        expected = (plain.set_scores[name] + pc[name]) / 2
        np.testing.assert_allclose(fused.set_scores[name], expected, atol=1e-5)
        assert fused.set_scores[name].dtype == np.float32
        assert np.abs(pc[name] - plain.set_scores[name]).max() > 0.05  # the heads differ
    np.testing.assert_array_equal(fused.scores, fused.set_scores["emotic"])
    thresholds = fused_p.emotion_thresholds
    got = labels_over_threshold(fused.scores, fused_p.categories, thresholds)
    expected = (plain.scores + pc["emotic"]) / 2
    assert got == [[fused_p.categories[j] for j in row] for row in labels(expected, thresholds)]


def test_predict_batch_and_read_boxes_fuse_too(predictors, network):
    fused_p, plain_p = predictors
    images = [photo(640, 480), photo(375, 500)]
    batch = fused_p.predict_batch(images, **PEOPLE)
    for image, got in zip(images, batch, strict=True):
        one = fused_p.predict(image, **PEOPLE)
        np.testing.assert_allclose(got.boxes, one.boxes, atol=1e-3)  # batch 2 vs 1: float noise
        for name in SETS:
            np.testing.assert_allclose(got.set_scores[name], one.set_scores[name], atol=1e-4)
    image = images[1]
    h, w = image.shape[:2]
    boxes = np.array([[40.0, 60.0, 200.0, 380.0], [0.0, 0.0, 12.5, 30.0],
                      [w - 30.0, h - 40.0, w + 25.0, h + 10.0]])  # inside, corner, past the edge
    fused, plain = fused_p.read_boxes(image, boxes), plain_p.read_boxes(image, boxes)
    np.testing.assert_array_equal(fused.boxes, boxes.astype(np.float32))
    pc = person_centric(network, image, boxes)
    for name in SETS:
        np.testing.assert_allclose(fused.set_scores[name],
                                   (plain.set_scores[name] + pc[name]) / 2, atol=1e-5)
    # the evaluator's one-run reading: the same people and the same box readings, fused
    found, read = fused_p.predict_and_read(image, boxes, **PEOPLE)
    one = fused_p.predict(image, **PEOPLE)
    np.testing.assert_allclose(found.boxes, one.boxes, atol=1e-3)
    np.testing.assert_array_equal(read.boxes, fused.boxes)
    for name in SETS:
        np.testing.assert_allclose(found.set_scores[name], one.set_scores[name], atol=1e-4)
        np.testing.assert_allclose(read.set_scores[name], fused.set_scores[name], atol=1e-4)


def test_crops_follow_extract_subject():
    """The inference crop is exactly training's ExtractSubject crop (BENet 3.3)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    for _ in range(50):
        x1, x2 = np.sort(rng.uniform(-10, 93, 2))
        y1, y2 = np.sort(rng.uniform(-10, 71, 2))
        box = np.array([[x1, y1, x2, y2]], np.float32)
        clipped = np.clip(box[0], 0, [83, 61, 83, 61])
        if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
            continue
        sample = Sample(image, box, np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32))
        subject = extract_subject(sample, np.random.default_rng(1))
        r0, r1, c0, c1 = subject_crop(box[0], 61, 83)
        np.testing.assert_array_equal(image[r0:r1, c0:c1], subject.image)


def test_degenerate_boxes_get_one_pixel():
    assert subject_crop([50, 20, 50, 20], 100, 200) == (20, 21, 50, 51)  # a point
    assert subject_crop([300, 150, 310, 160], 100, 200) == (99, 100, 199, 200)  # outside
    assert subject_crop([-30, -5, -10, -1], 100, 200) == (0, 1, 0, 1)
    assert subject_crop([10, 30, 5, 40], 100, 200) == (29, 41, 10, 11)  # x2 < x1
    assert subject_crop([0, 0, 200, 100], 100, 200) == (0, 100, 0, 200)  # whole image
    image = np.full((100, 200, 3), 7, np.uint8)
    crops = crop_batch(image, np.array([[50, 20, 50, 20], [300, 150, 310, 160.0]]), (96, 128))
    assert crops.shape == (2, 3, 96, 128) and np.isfinite(crops).all()


def test_border_and_tiny_boxes(predictors):
    fused_p, _ = predictors
    image = photo(375, 500)
    boxes = np.array([[0, 0, 0.4, 0.3], [374.5, 499.5, 375, 500], [120, 80, 120, 80],
                      [-50, -50, -10, -10], [370, 0, 420, 40]])
    got = fused_p.read_boxes(image, boxes)
    assert len(got) == 5
    for name in SETS:
        values = got.set_scores[name]
        assert values.shape == (5, len(fused_p.config.categories[name]))
        assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()


# --------------------------------------------------------------------------- zero people


def test_zero_people_needs_no_second_run(predictors, monkeypatch):
    fused_p, _ = predictors
    runs: list[int] = []
    run = fused_p._runner.run
    monkeypatch.setattr(fused_p._runner, "run", lambda batch: runs.append(len(batch)) or run(batch))
    image = photo(640, 480)
    empty = fused_p.predict(image, detection_threshold=1.0)
    assert len(empty) == 0 and empty.scores.shape == (0, 26)
    assert runs == [1]
    assert [len(d) for d in fused_p.predict_batch([image, image], detection_threshold=1.0)] \
        == [0, 0]
    assert len(fused_p.read_boxes(image, np.zeros((0, 4)))) == 0
    assert runs == [1, 2, 1]
    found = fused_p.predict(image, detection_threshold=0.0, max_people=3)
    assert runs[3:] == [1, 3]  # the frame, then its three crops as one batch
    assert len(found) == 3
    found, read = fused_p.predict_and_read(image, np.array([[10.0, 10.0, 100.0, 200.0]]),
                                           detection_threshold=0.0, max_people=3)
    assert runs[5:] == [1, 4]  # the evaluator's reading: one frame run, one run of 3 + 1 crops
    assert (len(found), len(read)) == (3, 1)


# --------------------------------------------------------------------------- ONNX Runtime


@pytest.fixture(scope="module")
def onnx_fusion(fusion_model, model_dir):
    return export_onnx(fusion_model, model_dir / "fusion.onnx")  # batch 1: crops in chunks


def test_onnx_runtime_fuses_like_torch(predictors, onnx_fusion):
    torch_p, _ = predictors
    ort_p = Predictor.from_file(onnx_fusion)
    assert ort_p.settings.fusion == "mean" and ort_p._runner.fixed_batch == 1
    assert [n for n in ort_p._runner.output_names if n.startswith(PC_SCORES)] == \
        ["pc_scores.emotic", "pc_scores.heco"]
    images = [photo(640, 480), photo(375, 500)]
    for image in images:
        expected, got = torch_p.predict(image, **PEOPLE), ort_p.predict(image, **PEOPLE)
        assert len(got) == len(expected) > 1
        np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-3)
        for name in SETS:
            np.testing.assert_allclose(got.set_scores[name], expected.set_scores[name],
                                       atol=1e-4)
    for expected, got in zip(torch_p.predict_batch(images, **PEOPLE),
                             ort_p.predict_batch(images, **PEOPLE), strict=True):
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-4)


def test_dynamic_batch_export_runs_all_crops_at_once(predictors, fusion_model, tmp_path):
    torch_p, _ = predictors
    summary = export_with_summary(fusion_model, tmp_path / "dyn.onnx", dynamic_batch=True,
                                  verify=False)  # the comparison below checks it
    assert summary.batch == "B" and "fusion mean" in summary.describe()
    ort_p = Predictor.from_file(summary.path)
    assert ort_p._runner.fixed_batch is None
    image = photo(640, 480)
    expected, got = torch_p.predict(image, **PEOPLE), ort_p.predict(image, **PEOPLE)
    assert len(got) == len(expected) > 1
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-4)


# --------------------------------------------------------------------------- settings


def test_setting_is_validated_and_stored(fusion_model):
    with pytest.raises(ValueError, match=r"fusion must be one of none, mean, got 'max'"):
        InferenceSettings(fusion="max")
    with pytest.raises(ValueError, match="fusion must be one of"):
        InferenceSettings(fusion=True)
    assert InferenceSettings().fusion == "none"
    old = InferenceSettings().to_dict()
    del old["fusion"]  # a file written before the setting existed
    assert InferenceSettings.from_dict(old).fusion == "none"
    info, _ = read_model_file(fusion_model)
    assert info.inference.fusion == "mean" and info.inference.to_dict()["fusion"] == "mean"


def test_mean_needs_a_person_centric_head(model_dir, capsys):
    path = write_small_model(model_dir / "no_pc.pt", attention=False, person_centric=False)
    model, info = load_model_file(path)
    with pytest.raises(ValueError, match="needs the person-centric head"):
        InferenceSettings.for_model(info.config, fusion="mean")
    with pytest.raises(ValueError, match="needs the person-centric head"):
        Predictor.from_file(path, fusion="mean")
    with pytest.raises(ValueError, match="needs the person-centric head"):
        InferenceGraph(model, InferenceSettings(fusion="mean"))
    with pytest.raises(ValueError, match="needs the person-centric head"):
        export_onnx(path, model_dir / "no_pc.onnx", fusion="mean", verify=False)
    assert not (model_dir / "no_pc.onnx").exists()
    mean = InferenceSettings(emotion_thresholds=info.inference.emotion_thresholds,
                             fusion="mean")
    with pytest.raises(ValueError, match="needs the person-centric head"):
        save_model_file(model_dir / "bad.pt", model, mean)
    assert not (model_dir / "bad.pt").exists()
    assert len(Predictor.from_file(path).predict(photo(640, 480), **PEOPLE)) > 0  # none is fine
    image = model_dir / "photo.png"
    cv2.imwrite(str(image), photo(160, 120))
    capsys.readouterr()
    assert infer_main([str(image), "--model", str(path), "--fusion", "mean"]) == 2
    assert "needs the person-centric head" in capsys.readouterr().err
    assert export_main(["--model", str(path), "--out", str(model_dir / "no_pc.onnx"),
                        "--fusion", "mean"]) == 1
    assert "needs the person-centric head" in capsys.readouterr().err
    assert infer_main([str(image), "--model", str(path), "--fusion", "none"]) == 0


def test_onnx_without_fusion_refuses_mean(small_model_files):
    _, onnx_path = small_model_files
    plain = Predictor.from_file(onnx_path)
    assert plain.settings.fusion == "none"
    assert not any(n.startswith(PC_SCORES) for n in plain._runner.output_names)
    with pytest.raises(ValueError, match="fusion are fixed in the exported graph"):
        Predictor.from_file(onnx_path, fusion="mean")
    with pytest.raises(ValueError, match="fusion are fixed in the exported graph"):
        Predictor.from_file(onnx_path, settings=InferenceSettings.for_model(
            plain.config, fusion="mean"))


def test_graph_outputs_follow_the_setting(network):
    config = network.config
    none = output_names(config, InferenceSettings())
    assert none == output_names(config) and not any(n.startswith(PC_SCORES) for n in none)
    mean = output_names(config, InferenceSettings(fusion="mean"))
    assert mean == none + ["pc_scores.emotic", "pc_scores.heco"]
    graph = InferenceGraph(network, InferenceSettings(fusion="mean", flip_test=True))
    images = torch.randn(2, 3, *config.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = graph.outputs(images)
        pc = network(images).person_centric
        mirrored = network(images.flip(-1)).person_centric
    for name in SETS:  # flip test: averaged with the mirrored image's
        expected = (pc[name].sigmoid() + mirrored[name].sigmoid()) / 2
        assert outputs[PC_SCORES + name].shape == expected.shape
        torch.testing.assert_close(outputs[PC_SCORES + name], expected, atol=1e-5, rtol=0)
    recorded = onnx_metadata.graph_info(config, InferenceSettings(fusion="mean")).outputs
    assert list(recorded) == mean

