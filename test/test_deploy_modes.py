"""The CPU deployment settings: int8 export (``python -m caer_ros.export --int8``) and the fast
head mode (``fuse_scales`` off: the 1/2-resolution branches not computed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.small_model import small_model

from caer_ros.inference.boxes import iou_matrix
from caer_ros.inference.export import export_with_summary, main
from caer_ros.inference.graph import InferenceGraph, activate, column_sums, output_names
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.quantize import CalibrationError, calibration_set, float_nodes
from caer_ros.model import InferenceSettings, read_model_file
from training.config import load_config
from training.datasets.emotic import load_emotic
from training.datasets.synthetic import generate
from training.train import Trainer

ROOT = Path(__file__).parent.parent
BENCH_LEARN = ROOT / "training" / "configs" / "bench_learn.yaml"
# Emotion probabilities of int8 vs float32 (see test_int8_finds_the_same_people...).
SCORE_TOLERANCE = 0.05
DETECTION_MARGIN = 0.05


# --------------------------------------------------------------------------- fast head mode


def test_fast_mode_equals_the_quarter_branch_of_the_full_model():
    model = small_model()
    fast = InferenceGraph(model, InferenceSettings.for_model(model.config, fuse_scales=False))
    images = torch.randn(2, 3, *model.config.input_size, generator=torch.Generator().manual_seed(4))
    computed = []
    hooks = [stack.deconv.register_forward_hook(lambda *_: computed.append(1))
             for stack in model.detection.stacks.values()]
    with torch.inference_mode():
        got = fast.outputs(images)
        assert computed == []  # the 1/2 branches did not run
        full = model(images, classifiers=False)
        assert full.half is not None and computed  # ... and do run in the full model
        expected = column_sums(activate(full.quarter))
    for hook in hooks:
        hook.remove()
    assert list(got) == output_names(model.config, fast.settings)
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    assert fast.stride == 4


def test_fast_mode_export_has_no_half_resolution_branch(int8_pair, tmp_path):
    import onnx

    model, full = int8_pair[:2]
    summary = export_with_summary(model, tmp_path / "fast.onnx", fuse_scales=False)
    operators = {node.op_type for node in onnx.load(summary.path).graph.node}
    assert "ConvTranspose" not in operators and summary.stride == 4
    assert "ConvTranspose" in {node.op_type for node in onnx.load(str(full)).graph.node}


# --------------------------------------------------------------------------- calibration set


def test_bad_calibration_sets_are_named(tmp_path, small_model_pt):
    with pytest.raises(CalibrationError, match="no such file or folder"):
        calibration_set(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(CalibrationError, match="has no image files"):
        calibration_set(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    (broken / "b.png").write_bytes(b"not a png")
    with pytest.raises(CalibrationError, match=r"none of its 2 image files can be read.*a\.jpg"):
        calibration_set(broken)
    with pytest.raises(CalibrationError, match="positive integer"):
        calibration_set(broken, 0)
    # The command line: one line naming the problem, exit 1 (2 for a missing option), no file.
    out = tmp_path / "q.onnx"
    run = subprocess.run([sys.executable, "-m", "caer_ros.export", "--model", str(small_model_pt),
                          "--out", str(out), "--int8", "--calibration", str(broken)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "none of its 2 image files can be read" in run.stderr and not out.exists()
    with pytest.raises(SystemExit) as stop:
        main(["--model", str(small_model_pt), "--out", str(out), "--int8"])
    assert stop.value.code == 2 and not out.exists()


def test_calibration_takes_readable_images_spread_over_the_set(tmp_path):
    import cv2

    for n in range(10):
        cv2.imwrite(str(tmp_path / f"{n:02d}.png"), np.full((8, 8, 3), n * 20, np.uint8))
    (tmp_path / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    chosen = calibration_set(tmp_path, 4)
    assert [p.name for p in chosen.paths] == ["00.png", "02.png", "05.png", "07.png"]
    assert chosen.candidates == 10 and chosen.layout == "folder" and not chosen.unreadable
    everything = calibration_set(tmp_path, 50)
    assert len(everything.paths) == 9 and len(everything.unreadable) == 1
    assert "03.png" in everything.unreadable[0]


# --------------------------------------------------------------------------- int8


@pytest.fixture(scope="module")
def int8_pair(tmp_path_factory):
    """A tiny BENet with CBAM attention (as ``benet``) and both scales, trained for 40 steps
    (~20 s) on synthetic scenes in the bench_learn setup (enough for heatmap peaks at the people),
    exported in float32 and in int8 calibrated on its dataset (EMOTIC layout)."""
    out = tmp_path_factory.mktemp("int8")
    data = out / "data"
    generate(data, images=40, seed=3, size=64)
    config = load_config(BENCH_LEARN, ["model.input_size=[64,64]", "model.attention=true",
                                       "model.half_resolution=true", "epochs=40",
                                       "val_every=1000", "calibrate=false",
                                       f"out={out / 'run'}"], data)
    Trainer(config, restart=True, progress=False).run()
    model = out / "run" / "final.pt"
    lines: list[str] = []
    fp32 = export_with_summary(model, out / "fp32.onnx")
    int8 = export_with_summary(model, out / "int8.onnx", int8_calibration=data,
                               calibration_images=6, progress=lines.append)
    return model, Path(fp32.path), Path(int8.path), int8, lines, data


def test_int8_export_records_its_calibration(int8_pair):
    model, fp32, int8, summary, lines, data = int8_pair
    assert any(line.startswith("calibrating: image 6/6") for line in lines)
    source_config = read_model_file(model)[0].config
    predictor = Predictor.from_file(int8)
    record = predictor.meta["int8"]
    assert record == summary.int8
    assert record["calibration_images"] == 6 and record["weights"].startswith("int8")
    assert record["calibration_source"] == data.name and record["float32_nodes"] > 0
    assert predictor.config == source_config and predictor.backend.endswith(":int8")
    assert "int8, calibrated on 6 images" in summary.describe()
    assert int8.stat().st_size < 0.6 * fp32.stat().st_size  # int8 weights (+ QDQ nodes)
    assert "int8" not in Predictor.from_file(fp32).meta
    # The metadata is the file's own: ONNX Runtime alone reads it.
    import onnxruntime as ort

    meta = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]) \
        .get_modelmeta().custom_metadata_map
    assert json.loads(meta["caer_ros.meta"])["int8"] == record


def test_int8_keeps_the_post_processing_in_float32(int8_pair):
    import onnx

    int8 = int8_pair[2]
    proto = onnx.load(str(int8))
    produced = {out: node for node in proto.graph.node for out in node.output}
    for output in proto.graph.output:  # every graph output is computed in float32
        node = produced[output.name]
        assert node.op_type not in ("DequantizeLinear", "QuantizeLinear"), output.name
    assert float_nodes(proto)  # the rule finds the post-processing of a quantized graph too
    operators = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators


def test_int8_finds_the_same_people_with_close_scores(int8_pair):
    """int8 against float32 on every synthetic scene (train, val, test: 40 images).

    Tolerance: activations are rounded to 256 levels of each tensor's calibrated range, an
    error of about 0.5 % of the range per layer that partly averages out over the layers;
    through the sigmoid (slope <= 0.25) logit errors of ~0.1-0.2 move probabilities by
    <= 0.05 (:data:`SCORE_TOLERANCE`). People: every person float32 finds clearly above the
    threshold (by :data:`DETECTION_MARGIN`) is found by int8 at the same place (IoU >= 0.5,
    PD AP's own criterion: on 64x64 inputs a box moved by one 2-pixel cell or a size off by
    a pixel already costs 0.1-0.2 of IoU), and int8 finds nobody that float32 scores clearly
    below it.
    """
    _, fp32, int8, _, _, data = int8_pair
    exact, rounded = Predictor.from_file(fp32), Predictor.from_file(int8)
    threshold = 0.3
    records = [r for split in ("train", "val", "test")
               for r in load_emotic(data, split)[0]]
    differences, compared = [], 0
    import cv2

    for record in records:
        image = cv2.imread(str(record.path), cv2.IMREAD_COLOR)
        boxes = np.array([p.box for p in record.people], dtype=np.float64)
        a, b = exact.read_boxes(image, boxes), rounded.read_boxes(image, boxes)
        differences.append(np.abs(a.scores - b.scores).ravel())
        low = exact.predict(image, detection_threshold=threshold - DETECTION_MARGIN)
        high = exact.predict(image, detection_threshold=threshold + DETECTION_MARGIN)
        found = rounded.predict(image, detection_threshold=threshold)
        where = f"{record.path.name}: float32 {high.boxes.round(1)} int8 {found.boxes.round(1)}"
        if len(high):
            assert len(found), where
            assert (iou_matrix(high.boxes, found.boxes).max(axis=1) >= 0.5).all(), where
        if len(found):
            assert len(low) and (iou_matrix(found.boxes, low.boxes).max(axis=1) >= 0.5).all(), \
                where
        compared += len(high)
    differences = np.concatenate(differences)
    assert differences.max() <= SCORE_TOLERANCE
    assert np.median(differences) <= SCORE_TOLERANCE / 5
    assert compared > 0  # people were found and compared
