"""Predictor (caer_ros/inference/predictor.py): torch vs ONNX Runtime, boxes in image pixels,
provider choice, model file errors. Real model files written by the code, real ONNX Runtime."""

from __future__ import annotations

import dataclasses
import io
import logging
import warnings

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from skimage import data

from caer_ros.inference import onnx_metadata
from caer_ros.inference.decode import find_people
from caer_ros.inference.onnx_friendly import (
    OnnxChannelPool,
    channel_max,
    onnx_friendly,
)
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.runners import choose_providers, default_providers
from caer_ros.labels import EMOTIC
from caer_ros.model import ModelFileError, load_model_file
from caer_ros.model.attention import ChannelPool


@pytest.fixture(scope="module")
def predictors(small_model_files):
    pt, onnx_path = small_model_files
    return Predictor.from_file(pt), Predictor.from_file(onnx_path)


def photo(width: int, height: int) -> np.ndarray:
    """The astronaut photo (BGR), resized to ``width`` x ``height``."""
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)


LANDSCAPE = (640, 480)  # fills the 128x96 network input exactly
PORTRAIT = (375, 500)  # letterboxed: scale 0.192, 72 columns and two 28-column bands


# --------------------------------------------------------------------------- torch vs ORT


def test_attributes(predictors):
    torch_p, ort_p = predictors
    for p in predictors:
        assert p.categories == EMOTIC and p.category_set == "emotic"
        assert p.emotion_thresholds.shape == (26,) and p.emotion_thresholds.dtype == np.float32
        assert p.detection_threshold == pytest.approx(0.3)
        assert p.has_continuous is True
        assert p.input_size == (96, 128)
        assert p.stride == 2 and p.settings.fuse_scales and not p.settings.flip_test
    assert torch_p.backend == "torch:cpu"
    assert ort_p.backend == "onnxruntime:CPUExecutionProvider"
    assert ort_p.settings == torch_p.settings


@pytest.mark.parametrize("size", [LANDSCAPE, PORTRAIT])
def test_onnx_runtime_maps_equal_torch_maps(predictors, size):
    image = photo(*size)
    (torch_maps, torch_box), (ort_maps, ort_box) = (p.forward_maps(image) for p in predictors)
    assert torch_box == ort_box
    pairs = [(torch_maps.heatmap, ort_maps.heatmap), (torch_maps.size, ort_maps.size),
             (torch_maps.continuous_sums, ort_maps.continuous_sums)]
    assert set(torch_maps.emotion_sums) == set(ort_maps.emotion_sums) == {"emotic", "heco"}
    pairs += [(torch_maps.emotion_sums[k], ort_maps.emotion_sums[k]) for k in ("emotic", "heco")]
    for expected, got in pairs:
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert torch_maps.heatmap.std() > 0.02  # the maps are not flat: the comparison means something


def test_onnx_runtime_detections_equal_torch_detections(predictors):
    image = photo(*LANDSCAPE)
    torch_det, ort_det = (p.predict(image, detection_threshold=0.0, max_people=10)
                          for p in predictors)
    assert len(torch_det) == len(ort_det) == 10
    assert np.diff(torch_det.detection_scores).max() < -1e-5  # distinct scores: a stable order
    np.testing.assert_allclose(ort_det.boxes, torch_det.boxes, atol=1e-2)
    np.testing.assert_allclose(ort_det.detection_scores, torch_det.detection_scores, atol=1e-5)
    np.testing.assert_allclose(ort_det.scores, torch_det.scores, atol=1e-4)
    np.testing.assert_allclose(ort_det.continuous, torch_det.continuous, atol=1e-4)
    np.testing.assert_allclose(ort_det.set_scores["heco"], torch_det.set_scores["heco"],
                               atol=1e-4)


def test_raw_network_outputs_agree_in_onnx_runtime(small_model_files):
    """Every output of the network's flat dict (heads, both scales, classifiers), exported
    with the ONNX-friendly attention, against the original torch model."""
    import onnxruntime as ort

    model, _ = load_model_file(small_model_files[0])

    class Flat(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return tuple(self.net(x).flat().values())

    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = model(x).flat()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Flat(onnx_friendly(model)), (x,), buffer, dynamo=False,
                          opset_version=17, input_names=["x"], output_names=list(expected))
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = dict(zip(expected, session.run(None, {"x": x.numpy()}), strict=True))
    assert {"q.heatmap", "h.size", "q.emotions.heco", "h.continuous", "pc.emotic",
            "bg.heco"} <= set(got)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-3, atol=1e-3,
                                   err_msg=name)


@pytest.mark.parametrize("channels", [1, 7, 18, 32])
def test_onnx_friendly_channel_pool_is_the_same_function(channels):
    original = ChannelPool().eval()
    x = torch.randn(2, channels, 9, 11, generator=torch.Generator().manual_seed(channels))
    torch.testing.assert_close(channel_max(x), x.amax(1, keepdim=True), rtol=0, atol=0)
    torch.testing.assert_close(OnnxChannelPool()(x), original(x))


def test_onnx_friendly_replaces_every_channel_pool_of_a_copy(small_model_files):
    model, _ = load_model_file(small_model_files[0])
    rewritten = onnx_friendly(model)
    before = [type(m) for m in model.modules()]
    after = [type(m) for m in rewritten.modules()]
    assert before.count(ChannelPool) > 20  # the test model has CBAM attention
    assert ChannelPool not in after
    assert after.count(OnnxChannelPool) == before.count(ChannelPool)
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        expected, got = model(x).flat(), rewritten(x).flat()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- image pixels


@pytest.mark.parametrize("size", [LANDSCAPE, PORTRAIT])
def test_boxes_are_in_original_image_pixels(predictors, size):
    image = photo(*size)
    for p in predictors:
        people = p.predict(image, detection_threshold=0.0)
        assert 0 < len(people) <= p.settings.top_k
        width, height = size
        assert (people.boxes[:, [0, 2]] >= 0).all() and (people.boxes[:, [0, 2]] <= width).all()
        assert (people.boxes[:, [1, 3]] >= 0).all() and (people.boxes[:, [1, 3]] <= height).all()
        assert (people.boxes[:, 2] > people.boxes[:, 0]).all()  # every box has an area
        assert (people.boxes[:, 3] > people.boxes[:, 1]).all()
        assert (np.diff(people.detection_scores) <= 0).all()  # highest first
        # The same as decoding the maps by hand, mapping the boxes back and leaving out those
        # with no area in the image (peaks in the letterbox border, negative sizes).
        maps, placement = p.forward_maps(image)
        (raw,) = find_people(maps, p.settings, detection_threshold=0.0)
        mapped = placement.to_original(raw.boxes)
        real = (mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1])
        np.testing.assert_allclose(people.boxes, mapped[real], atol=1e-4)
        np.testing.assert_array_equal(people.detection_scores, raw.detection_scores[real])
        assert (people.boxes[:, 2] - people.boxes[:, 0]).max() > 10  # boxes have a size


@pytest.mark.parametrize("size", [LANDSCAPE, PORTRAIT])
def test_mirrored_image_gives_mirrored_people(small_model_files, size):
    """With the flip test the graph is mirror-symmetric, so the whole chain (letterbox,
    network, cell convention, box reading, mapping back) must give mirrored boxes."""
    base = Predictor.from_file(small_model_files[0])
    p = Predictor.from_file(small_model_files[0],
                            settings=dataclasses.replace(base.settings, flip_test=True))
    image = photo(*size)
    people = p.predict(image, detection_threshold=0.0, max_people=8)
    mirrored = p.predict(np.ascontiguousarray(image[:, ::-1]), detection_threshold=0.0,
                         max_people=8)
    width = size[0]
    np.testing.assert_allclose(mirrored.detection_scores, people.detection_scores, atol=1e-5)
    np.testing.assert_allclose(mirrored.boxes[:, [2, 0]], width - people.boxes[:, [0, 2]],
                               atol=1e-2)
    np.testing.assert_allclose(mirrored.boxes[:, [1, 3]], people.boxes[:, [1, 3]], atol=1e-2)
    np.testing.assert_allclose(mirrored.scores, people.scores, atol=1e-4)


def test_read_boxes_round_trips_through_the_letterbox(predictors):
    image = photo(*PORTRAIT)
    for p in predictors:
        people = p.predict(image, detection_threshold=0.0)
        width, height = PORTRAIT
        inside = (people.boxes[:, 0] > 0) & (people.boxes[:, 2] < width) \
            & (people.boxes[:, 1] > 0) & (people.boxes[:, 3] < height)  # not clipped
        assert inside.sum() >= 3
        again = p.read_boxes(image, people.boxes[inside])
        np.testing.assert_allclose(again.boxes, people.boxes[inside])
        np.testing.assert_allclose(again.scores, people.scores[inside], atol=1e-4)
        np.testing.assert_allclose(again.continuous, people.continuous[inside], atol=1e-4)
        np.testing.assert_allclose(again.detection_scores, people.detection_scores[inside],
                                   atol=1e-5)
        found, read = p.predict_and_read(image, people.boxes[inside], detection_threshold=0.0)
        np.testing.assert_allclose(found.boxes, people.boxes)  # one run gives both readings
        np.testing.assert_allclose(found.scores, people.scores, atol=1e-5)
        np.testing.assert_allclose(read.scores, again.scores, atol=1e-5)
        np.testing.assert_allclose(read.detection_scores, again.detection_scores, atol=1e-5)


def test_predict_batch_equals_predict(predictors):
    images = [photo(*LANDSCAPE), photo(*PORTRAIT)]
    for p in predictors:
        batch = p.predict_batch(images, detection_threshold=0.0, max_people=5)
        for image, got in zip(images, batch, strict=True):
            one = p.predict(image, detection_threshold=0.0, max_people=5)
            np.testing.assert_allclose(got.boxes, one.boxes, atol=1e-3)
            np.testing.assert_allclose(got.scores, one.scores, atol=1e-4)
        assert p.predict_batch([]) == []


def test_threshold_and_max_people(predictors):
    image = photo(*LANDSCAPE)
    for p in predictors:
        all_people = p.predict(image, detection_threshold=0.0)
        cut = float(np.median(all_people.detection_scores))
        above = p.predict(image, detection_threshold=cut)
        assert 0 < len(above) < len(all_people)
        assert (above.detection_scores >= cut).all()
        assert len(p.predict(image, detection_threshold=0.0, max_people=3)) == 3
        assert len(p.predict(image, detection_threshold=1.0)) == 0
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)  # other layouts go through letterbox
        assert len(p.predict(gray, detection_threshold=0.0, max_people=2)) == 2


# --------------------------------------------------------------------------- providers


def test_unavailable_provider_falls_back_to_cpu_with_a_warning(small_model_files, caplog):
    with caplog.at_level(logging.INFO, logger="caer_ros"):
        p = Predictor.from_file(small_model_files[1],
                                providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert p.backend == "onnxruntime:CPUExecutionProvider"
    warnings_ = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("CUDAExecutionProvider" in r.getMessage() and "not available" in r.getMessage()
               for r in warnings_)
    assert any(r.levelno == logging.INFO and "session on CPUExecutionProvider" in r.getMessage()
               for r in caplog.records)
    assert all(r.name == "caer_ros" for r in caplog.records if "ONNX Runtime" in r.getMessage())


def test_choose_providers(caplog):
    available = ["CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"], available) == ["CPUExecutionProvider"]
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="caer_ros"):
        assert choose_providers(["TensorrtExecutionProvider"], available) == \
            ["CPUExecutionProvider"]
    assert "TensorrtExecutionProvider" in caplog.text
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(gpu, gpu, fp16=True) == [
        ("TensorrtExecutionProvider", {"trt_fp16_enable": True}), "CUDAExecutionProvider",
        "CPUExecutionProvider"]
    with pytest.raises(ValueError, match="fp16 with onnxruntime needs the Tensorrt"):
        choose_providers(["CUDAExecutionProvider"], gpu, fp16=True)
    assert default_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}),
                                           "CPUExecutionProvider"]
    with pytest.raises(ValueError, match="device must be"):
        default_providers("tpu")


def test_fp16_on_the_cpu_is_refused(small_model_files):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Predictor.from_file(small_model_files[0], fp16=True)


def test_graph_settings_of_an_onnx_file_are_fixed(small_model_files, predictors):
    flip = dataclasses.replace(predictors[1].settings, flip_test=True)
    with pytest.raises(ValueError, match="flip_test are fixed in the exported graph"):
        Predictor.from_file(small_model_files[1], settings=flip)
    lower = dataclasses.replace(predictors[1].settings, detection_threshold=0.1, top_k=4)
    p = Predictor.from_file(small_model_files[1], settings=lower)  # run-time settings: fine
    assert p.detection_threshold == pytest.approx(0.1)
    assert len(p.predict(photo(*LANDSCAPE))) == 4


# --------------------------------------------------------------------------- bad files


def _tiny_onnx(metadata: dict[str, str] | None = None) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 96, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 96, 128])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def _bad_files(tmp_path, small_model_files):
    info = load_model_file(small_model_files[0])[1]
    good = onnx_metadata.encode(info.config, info.inference)
    newer = {**good, onnx_metadata.VERSION_KEY: "99"}
    files = {
        "missing.pt": None,
        "random.pt": np.random.default_rng(0).bytes(3000),
        "truncated.pt": small_model_files[0].read_bytes()[:5000],
        "missing.onnx": None,
        "random.onnx": np.random.default_rng(1).bytes(3000),
        "truncated.onnx": small_model_files[1].read_bytes()[:5000],
        "foreign.onnx": _tiny_onnx(),
        "newer.onnx": _tiny_onnx(newer),
        "mismatch.onnx": _tiny_onnx(good),  # our metadata on another graph
        "model.bin": b"x",
    }
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state_dict.pt")
    paths = [tmp_path / "state_dict.pt"]
    for name, content in files.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        paths.append(path)
    return paths


def test_bad_model_files_raise_one_error_naming_the_file(tmp_path, small_model_files):
    reasons = {}
    for path in _bad_files(tmp_path, small_model_files):
        with pytest.raises(ModelFileError) as caught:
            Predictor.from_file(path)
        message = str(caught.value)
        assert message.startswith(str(path)), message
        assert "\n" not in message and len(message) < 400, message
        reasons[path.name] = message[len(str(path)):]
    assert "no such file" in reasons["missing.pt"] and "no such file" in reasons["missing.onnx"]
    assert "not an ONNX model" in reasons["random.onnx"]
    assert "without caer_ros metadata" in reasons["foreign.onnx"]
    assert "newer than the supported" in reasons["newer.onnx"]
    assert "does not match" in reasons["mismatch.onnx"]
    assert "plain state_dict" in reasons["state_dict.pt"]
    assert "unknown model file type '.bin'" in reasons["model.bin"]


def test_backend_and_file_type_must_agree(small_model_files):
    with pytest.raises(ModelFileError, match="needs the onnxruntime backend"):
        Predictor.from_file(small_model_files[1], backend="torch")
    with pytest.raises(ModelFileError, match="needs the torch backend"):
        Predictor.from_file(small_model_files[0], backend="onnxruntime")
    with pytest.raises(ValueError, match="backend must be one of"):
        Predictor.from_file(small_model_files[0], backend="tensorflow")


def test_onnx_metadata_must_describe_the_graph(tmp_path, small_model_files):
    proto = onnx.load(small_model_files[1])
    for entry in proto.metadata_props:
        if entry.key == onnx_metadata.CATEGORIES_KEY:
            entry.value = '{"emotic": ["Anger"]}'
    path = tmp_path / "edited.onnx"
    onnx.save(proto, path)
    with pytest.raises(ModelFileError, match="disagrees with the config's categories"):
        Predictor.from_file(path)
