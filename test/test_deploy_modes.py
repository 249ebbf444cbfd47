"""The CPU deployment settings: int8 export (``python -m caer_ros.export --int8``) and the fast
head mode (``fuse_scales`` off: the 1/2-resolution branches not computed)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.small_model import small_model

from caer_ros.inference.boxes import iou_matrix
from caer_ros.inference.export import main
from caer_ros.inference.graph import InferenceGraph, activate, column_sums, output_names
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.quantize import (
    CalibrationError,
    ProgressLines,
    calibration_set,
    float_nodes,
)
from caer_ros.model import InferenceSettings, read_model_file
from training.datasets.emotic import load_emotic

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


# --------------------------------------------------------------------------- progress


def _wait_for(condition, seconds: float = 20.0) -> None:
    """Until ``condition()`` holds (a busy machine may be slow to wake a thread)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_progress_lines_say_a_long_step_is_still_running():
    """While a step runs longer than the interval without a line, a line says it is still
    running (with its time so far); any line resets the wait; after the ``with`` nothing more
    is said. Without a callback nothing runs at all."""
    lines: list[str] = []

    def beats() -> list[str]:
        return [line for line in lines if line.startswith("preparing: still running (")]

    with ProgressLines(lines.append, interval=0.05) as say:
        say.step("preparing")
        _wait_for(lambda: len(beats()) >= 2)
        say("a line of its own")
        said = len(lines)
    time.sleep(0.1)
    assert lines[0] == "preparing" and "a line of its own" in lines
    assert len(beats()) >= 2 and len(lines) == said  # nothing after the with
    quiet = ProgressLines(None, interval=0.01)
    with quiet:
        quiet.step("preparing")
        quiet("nothing")
        assert "progress-lines" not in {t.name for t in threading.enumerate()}


def _tiny_graph(size: tuple[int, int]) -> bytes:
    """A two-convolution ONNX graph on the model input (then a sigmoid): ONNX Runtime quantizes
    it in a second, where a caer_ros model takes minutes."""
    from onnx import TensorProto, helper, numpy_helper

    from caer_ros.inference.onnx_metadata import INPUT_NAME

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
               for name, shape in (("w1", (8, 3, 3, 3)), ("w2", (4, 8, 1, 1)))]
    nodes = [helper.make_node("Conv", [INPUT_NAME, "w1"], ["c1"], name="conv1",
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Sigmoid", ["c2"], ["scores"], name="sigmoid")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                                      [1, 3, *size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4, *size])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_int8_quantization_reports_its_progress(tmp_path, capsys, monkeypatch):
    """The quantization says every step and every calibration image as it goes, and a step that
    runs long says so while it runs (for ``benet`` at 512x512 the steps take minutes on 2
    cores). Here ONNX Runtime's graph preparation is held up for a moment and the interval
    shortened. Without a progress callback nothing is printed."""
    import cv2
    import onnxruntime.quantization.shape_inference as shape_inference

    import caer_ros.inference.quantize as quantize
    from caer_ros.model.config import ModelConfig

    for n in range(2):
        cv2.imwrite(str(tmp_path / f"{n}.png"), np.full((24, 32, 3), 60 + n * 90, np.uint8))
    real = shape_inference.quant_pre_process
    lines: list[str] = []

    def slow(*args, **kwargs):  # runs until the step has been said to be still running
        _wait_for(lambda: any("still running" in line for line in lines))
        return real(*args, **kwargs)

    monkeypatch.setattr(shape_inference, "quant_pre_process", slow)
    monkeypatch.setattr(quantize, "HEARTBEAT_SECONDS", 0.05)
    config = ModelConfig(input_size=(32, 32))
    calibration = calibration_set(tmp_path, 2)
    proto, kept = quantize.quantize(_tiny_graph((32, 32)), config, calibration, lines.append)
    assert kept == 2 and any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    order = ["preparing the graph for quantization",
             "preparing the graph for quantization: still running (",
             "graph prepared (", "calibrating: image 1/2 (", "calibrating: image 2/2 (",
             "calibration images done (", "quantized ("]
    found = [next((i for i, line in enumerate(lines) if line.startswith(start)), None)
             for start in order]
    assert None not in found and found == sorted(found), lines
    capsys.readouterr()
    quantize.quantize(_tiny_graph((32, 32)), config, calibration)  # no callback: quiet
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- int8


@pytest.fixture(scope="module")
def deploy_quick(tmp_path_factory):
    """``benchmarks/bench_deploy.py --quick``: a tiny BENet with CBAM attention (as ``benet``)
    and both scales, trained for 40 steps on synthetic scenes in the bench_learn setup (enough
    for heatmap peaks at the people), exported as every setting (int8 calibrated on its
    dataset, EMOTIC layout), each evaluated. Its files serve the int8 tests below."""
    out = tmp_path_factory.mktemp("deploy")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_deploy.py"), "--quick",
                          "--no-progress", "--out", str(out), "--json", str(out / "deploy.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads((out / "deploy.json").read_text())
    return out, figures, run.stdout


def test_bench_deploy_quick_gives_every_figure(deploy_quick):
    _, figures, stdout = deploy_quick
    for key in ("int8_speedup", "fast_speedup", "best_speedup", "int8_er_drop", "int8_pd_drop",
                "best_er_drop", "best_pd_drop", "ceiling_gflops", "ceiling_fraction",
                "ort_speedup", "targets_met"):
        assert key in figures, key
    assert set(figures["speed"]) == set(figures["quality"]["rows"]) == {
        "torch_eager", "ort_fp32", "ort_int8", "fast", "int8_fast"}
    assert figures["ceiling_gflops"] > 0
    for profile in figures["ort_profile"].values():
        assert profile["by_op"] and 0 < profile["attention_share"] < 1
    assert "calibrating: image 6/6" in stdout and "int8, calibrated on 6 images" in stdout
    assert "setting" in stdout and "int8_fast" in stdout.splitlines()[-1]


def test_fast_mode_export_has_no_half_resolution_branch(deploy_quick):
    import onnx

    out = deploy_quick[0]
    operators = {name: {node.op_type for node in onnx.load(str(out / f"{name}.onnx")).graph.node}
                 for name in ("fast", "ort_fp32")}
    assert "ConvTranspose" not in operators["fast"]
    assert "ConvTranspose" in operators["ort_fp32"]


def test_int8_export_records_its_calibration(deploy_quick):
    out = deploy_quick[0]
    fp32, int8 = out / "ort_fp32.onnx", out / "ort_int8.onnx"
    source_config = read_model_file(out / "runs" / "full" / "final.pt")[0].config
    predictor = Predictor.from_file(int8)
    record = predictor.meta["int8"]
    assert record["calibration_images"] == 6 and record["weights"].startswith("int8")
    # calibrated on the training split alone (issue 30, item 3), not the test it is scored on
    assert record["calibration_source"] == "calibration_train" and record["float32_nodes"] > 0
    assert predictor.config == source_config and predictor.backend.endswith(":int8")
    assert int8.stat().st_size < 0.6 * fp32.stat().st_size  # int8 weights (+ QDQ nodes)
    assert "int8" not in Predictor.from_file(fp32).meta
    # The metadata is the file's own: ONNX Runtime alone reads it.
    import onnxruntime as ort

    meta = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]) \
        .get_modelmeta().custom_metadata_map
    assert json.loads(meta["caer_ros.meta"])["int8"] == record


def test_int8_keeps_the_post_processing_in_float32(deploy_quick):
    import onnx

    proto = onnx.load(str(deploy_quick[0] / "ort_int8.onnx"))
    produced = {out: node for node in proto.graph.node for out in node.output}
    for output in proto.graph.output:  # every graph output is computed in float32
        node = produced[output.name]
        assert node.op_type not in ("DequantizeLinear", "QuantizeLinear"), output.name
    assert float_nodes(proto)  # the rule finds the post-processing of a quantized graph too
    operators = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators


def test_int8_finds_the_same_people_with_close_scores(deploy_quick):
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
    out = deploy_quick[0]
    data = out / "data" / "full"
    exact = Predictor.from_file(out / "ort_fp32.onnx")
    rounded = Predictor.from_file(out / "ort_int8.onnx")
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


def test_int8_export_runs_in_the_node_and_caer_infer(deploy_quick, tmp_path):
    """The int8 file is an ordinary export: emotion_node (real rclpy, generated messages) and
    caer-infer load it by path and give the predictor's people."""
    import os
    import random
    import signal

    import cv2
    from helpers.node_probe import NodeProbe, image_msg, start_node, stop_node

    from caer_ros.inference import cli

    out = deploy_quick[0]
    model = out / "ort_int8.onnx"
    predictor = Predictor.from_file(model)
    records = load_emotic(out / "data" / "full", "test")[0]
    images = {r.path: cv2.imread(str(r.path), cv2.IMREAD_COLOR) for r in records}
    path, frame = max(images.items(), key=lambda item: len(predictor.predict(item[1])))
    expected = predictor.predict(frame)
    assert len(expected), "nobody found on any test scene: the checks would be void"

    assert cli.main([str(path), "--model", str(model), "--out", str(tmp_path / "infer")]) == 0
    written = json.loads(next((tmp_path / "infer").glob("*.json")).read_text())
    assert len(written["people"]) == len(expected)

    domain = random.SystemRandom().randint(1, 100)
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "node.log"
    process = start_node(env, log, "-p", f"model_path:={model}",
                         "-p", "qos_reliability:=reliable")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        probe = NodeProbe(domain, reliable=True)
    try:
        assert probe.wait_for_node(process, "raw", 60.0), log.read_text()
        msg = probe.stamp(image_msg(frame), frame_id="camera")
        answer, _ = probe.answer(msg, 60.0, process)
        assert answer is not None, log.read_text()[-3000:]
        assert answer.header == msg.header
        assert len(answer.people) == len(expected)
        got = np.array([[p.x_min, p.y_min, p.x_max, p.y_max] for p in answer.people])
        np.testing.assert_allclose(got, expected.boxes, atol=1e-3)
        np.testing.assert_allclose([p.scores for p in answer.people], expected.scores,
                                   atol=1e-5)
    finally:
        probe.close()
        stop_node(process, signal.SIGINT)
