"""ONNX export (caer_ros/inference/export.py, python -m caer_ros.export): metadata round trip,
checker, command line, no partial files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.small_model import write_small_model

from caer_ros.inference import onnx_metadata
from caer_ros.inference.export import ExportError, export_onnx, export_with_summary, main
from caer_ros.inference.predictor import Predictor
from caer_ros.model import ModelFileError, read_model_file
from conftest import REPO


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    """The small model without attention: a smaller graph, quicker to export."""
    return write_small_model(tmp_path_factory.mktemp("plain") / "plain.pt", attention=False)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "caer_ros.export", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_metadata_round_trip(small_model_files):
    pt, path = small_model_files
    info, _ = read_model_file(pt)
    proto = onnx.load(path)
    props = {entry.key: entry.value for entry in proto.metadata_props}
    assert props[onnx_metadata.FORMAT_KEY] == "caer_ros.onnx"
    assert props[onnx_metadata.VERSION_KEY] == "1"
    read, graph = onnx_metadata.decode(str(path), props)
    assert read.config == info.config
    assert read.config.categories == info.config.categories
    assert read.inference == info.inference
    assert read.meta["seed"] == 0 and read.meta["opset"] == 17
    assert graph.stride == 2 and graph.input == "images"
    assert list(graph.outputs) == [o.name for o in proto.graph.output] == [
        "heatmap", "size", "emotion_sums.emotic", "emotion_sums.heco", "continuous_sums"]
    # The same through ONNX Runtime alone (what the predictor reads).
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == props


def test_exported_file_passes_the_checker(small_model_files):
    proto = onnx.load(small_model_files[1])
    onnx.checker.check_model(proto, full_check=True)
    (images,) = proto.graph.input
    dims = [d.dim_value for d in images.type.tensor_type.shape.dim]
    assert dims == [1, 3, 96, 128]
    assert not any(i.name.startswith("model.") for i in proto.graph.input)  # weights inside
    ops = {node.op_type for node in proto.graph.node}
    assert "CumSum" in ops and "Split" in ops  # prefix sums; the ONNX-friendly attention
    channel_reductions = [node for node in proto.graph.node
                          if node.op_type in ("ReduceMax", "ReduceMean")
                          and any(a.name == "axes" and list(a.ints) == [1]
                                  for a in node.attribute)]
    assert channel_reductions == []


def test_command_line_export(tmp_path, plain_model):
    out = tmp_path / "cli.onnx"
    done = _run("--model", str(plain_model), "--out", str(out), "--input-size", "64", "96",
                "--flip-test", "--dynamic-batch")
    assert done.returncode == 0, done.stderr
    assert "wrote " + str(out) in done.stdout and "matches torch" in done.stdout
    p = Predictor.from_file(out)
    assert p.input_size == (64, 96) and p.settings.flip_test
    assert p.settings.fuse_scales  # kept from the model file
    image = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    batch = p.predict_batch([image, image[::-1]], detection_threshold=0.0, max_people=3)
    assert [len(d) for d in batch] == [3, 3]
    assert ort.InferenceSession(str(out)).get_inputs()[0].shape == ["batch", 3, 64, 96]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cli.onnx"]


def test_command_line_bad_model_path(tmp_path):
    out = tmp_path / "never.onnx"
    missing = tmp_path / "missing.pt"
    done = _run("--model", str(missing), "--out", str(out))
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {missing}: no such file"
    assert list(tmp_path.iterdir()) == []


def test_command_line_errors_leave_no_file(tmp_path, plain_model, capsys):
    out = tmp_path / "never.onnx"
    assert main(["--model", str(plain_model), "--out", str(out), "--input-size", "100", "100",
                 "--no-verify"]) == 1
    error = capsys.readouterr().err
    assert "input_size must be" in error and len(error.strip().splitlines()) == 1
    assert main(["--model", str(plain_model), "--out", str(tmp_path / "no_dir" / "x.onnx"),
                 "--no-verify"]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_failed_conversion_leaves_no_file(tmp_path, plain_model, small_model_files):
    out = tmp_path / "x.onnx"
    with pytest.raises(ExportError, match="torch.onnx.export failed"):
        export_onnx(plain_model, out, opset=99, verify=False)
    with pytest.raises(ModelFileError, match="not a readable PyTorch file|not a PyTorch file"):
        export_onnx(small_model_files[1], out)  # an ONNX file is no model file
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_whole(tmp_path, plain_model):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    summary = export_with_summary(plain_model, out, fuse_scales=False, verify=False)
    assert summary.stride == 4 and summary.max_difference is None and summary.batch == "1"
    described = summary.describe()
    assert "input 1x3x96x128" in described and "stride 4" in described
    assert "not verified" in described
    assert Predictor.from_file(out).stride == 4
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.onnx"]
