"""BENet's test path, piece by piece (issue 27): the short-side input size and the centre warp
(``inference/preprocess.py``), input-resolution peaks with whole-pixel boxes and the bilinear
reading at a peak (``inference/decode.py``), the predictor whose input follows the frame, its
ONNX export with a dynamic height and width, and frames it cannot take.

The whole path against the authors' own outputs: ``test_pipeline_reference.py``.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.small_model import write_small_model

from caer_ros.inference import cli
from caer_ros.inference.decode import (
    SummedMaps,
    find_people,
    pixel_boxes,
    point_values,
)
from caer_ros.inference.graph import prefix_rows
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.preprocess import (
    MAX_INPUT_SIDE,
    FrameSizeError,
    center_warp,
    short_side_size,
)
from caer_ros.model import InferenceSettings

# --------------------------------------------------------------------------- input size


@pytest.mark.parametrize(("width", "height", "expected"), [
    (600, 400, (512, 768)),  # the reference's coffee: 768x512 (W x H)
    (1280, 720, (512, 960)),
    (451, 300, (512, 832)),
    (640, 480, (512, 704)),  # a 4:3 camera
    (512, 512, (512, 512)),
    (1024, 512, (512, 1024)),  # an exact multiple stays
    (400, 600, (768, 512)),  # portrait: the width is the short side
    (1, 1, (512, 512)),
])
def test_short_side_size(width, height, expected):
    assert short_side_size(height, width) == expected


def test_short_side_size_other_settings_and_limits():
    assert short_side_size(480, 640, 256, 32) == (256, 352)  # 341.3 -> 352
    with pytest.raises(FrameSizeError, match=r"frame 10000x10 \(w x h\) is too elongated.*"
                                             r"512000 px long, over the 4096 px limit"):
        short_side_size(10, 10000)
    with pytest.raises(FrameSizeError, match="no pixels"):
        short_side_size(0, 640)
    width = MAX_INPUT_SIDE  # 8:1 is the widest a 512 short side allows
    assert short_side_size(512, width) == (512, MAX_INPUT_SIDE)
    with pytest.raises(FrameSizeError):
        short_side_size(512, width + 1)


# --------------------------------------------------------------------------- centre warp


@pytest.mark.parametrize(("height", "width"), [(400, 600), (300, 451), (481, 641), (640, 480)])
def test_center_warp_is_the_authors_affine_map(height, width):
    rng = np.random.default_rng(height)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    size = short_side_size(height, width)
    canvas, placement = center_warp(image, size, rgb=True)
    assert canvas.shape == (*size, 3)
    # The reference's matrix (pipeline reference, step 2), in OpenCV's pixel-centre coordinates.
    scale = min(size) / min(height, width)
    cx, cy = np.floor(width / 2 + 0.5), np.floor(height / 2 + 0.5)
    matrix = np.array([[scale, 0, size[1] / 2 - scale * cx], [0, scale, size[0] / 2 - scale * cy]])
    expected = cv2.warpAffine(image, matrix, (size[1], size[0]), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    np.testing.assert_array_equal(canvas, expected)
    # The placement in our convention (pixel k covers [k, k + 1)): pixel centres map onto the
    # warp's pixel centres, and the frame's outline onto the black border's edge.
    x = np.array([0.5, width - 0.5])
    np.testing.assert_allclose(placement.to_input(np.array([*x, *x])[[0, 0, 1, 1]])[[0, 2]],
                               scale * (x - 0.5 - cx) + size[1] / 2 + 0.5)
    box = placement.to_input(np.array([0.0, 0.0, width, height]))
    inside = canvas[int(np.ceil(box[1])) + 1:int(box[3]) - 1,
                    int(np.ceil(box[0])) + 1:int(box[2]) - 1]
    assert inside.size and placement.to_original(box, clip=False) == pytest.approx(
        [0, 0, width, height])
    if box[0] >= 2:  # a black border left of the frame (the long side was rounded up)
        assert (canvas[:, :int(box[0]) - 1] == 0).all()


def test_a_bright_pixel_lands_where_the_placement_says():
    image = np.zeros((300, 451, 3), np.uint8)
    image[120, 200] = 255  # pixel (row 120, column 200): centre (200.5, 120.5) in our terms
    canvas, placement = center_warp(image, short_side_size(300, 451))
    gray = canvas[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:gray.shape[0], :gray.shape[1]]
    centroid = ((xs + 0.5) * gray).sum() / gray.sum(), ((ys + 0.5) * gray).sum() / gray.sum()
    mapped = placement.to_input(np.array([200.5, 120.5, 200.5, 120.5]))[:2]
    # (a half-pixel slip of either convention would move it by 0.5 or 0.85 px)
    np.testing.assert_allclose(centroid, mapped, atol=0.15)


# --------------------------------------------------------------------------- decode


def test_point_values_are_the_bilinear_upsampling_at_the_pixel():
    rng = np.random.default_rng(1)
    maps = torch.from_numpy(rng.random((1, 5, 16, 24), dtype=np.float32))
    for stride in (2, 4):
        upsampled = F.interpolate(maps, scale_factor=stride, mode="bilinear",
                                  align_corners=False)[0].numpy()
        sums = prefix_rows(maps)[0].numpy()
        height, width = upsampled.shape[1:]
        # every border pixel, and random points inside pixels (fractions floor to the pixel)
        xs = np.concatenate([np.arange(width), rng.uniform(0, width, 200), np.zeros(height)])
        ys = np.concatenate([np.zeros(width), rng.uniform(0, height, 200), np.arange(height)])
        got = point_values(sums, xs, ys, stride)
        expected = upsampled[:, np.floor(ys).astype(int), np.floor(xs).astype(int)].T
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_pixel_boxes_truncate_toward_zero_in_pixel_centre_coordinates():
    size = np.zeros((2, 40, 60), np.float32)
    size[:, 3, 10] = (57.4, 70.6)  # w, h at (row 3, column 10)
    size[:, 30, 50] = (-4.0, 3.0)  # a negative width counts as 0
    boxes = pixel_boxes(size, np.array([3, 30]), np.array([10, 50]))
    # trunc(10 - 28.7) = -18, trunc(3 - 35.3) = -32, trunc(38.7) = 38, trunc(38.3) = 38; + 0.5
    np.testing.assert_array_equal(boxes[0], [-17.5, -31.5, 38.5, 38.5])
    np.testing.assert_array_equal(boxes[1], [50.5, 28.5, 50.5, 31.5])  # 28.5, 31.5 -> 28, 31


def test_find_people_at_input_resolution_reads_scores_at_the_peak():
    rng = np.random.default_rng(2)
    height, width = 32, 48
    heat = np.full((1, 1, height, width), 0.01, np.float32)
    heat[0, 0, 9, 20] = 0.9
    heat[0, 0, 25, 7] = 0.7
    size = np.full((1, 2, height, width), 10.0, np.float32)
    emotions = torch.from_numpy(rng.random((1, 3, height // 2, width // 2), dtype=np.float32))
    maps = SummedMaps.from_outputs({"heatmap": heat, "size": size,
                                    "emotion_sums.emotic": prefix_rows(emotions).numpy()},
                                   stride=1, emotion_stride=2)
    settings = InferenceSettings(peak_resolution="input", extraction="center", peak_kernel=5,
                                 detection_threshold=0.5)
    (people,) = find_people(maps, settings)
    np.testing.assert_array_equal(people.boxes, [[15.5, 4.5, 25.5, 14.5], [2.5, 20.5, 12.5, 30.5]])
    up = F.interpolate(emotions, scale_factor=2, mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(people.scores, [up[:, 9, 20].numpy(), up[:, 25, 7].numpy()],
                               atol=1e-6)
    with pytest.raises(ValueError, match="input-resolution heatmap"):
        find_people(SummedMaps(2, heat, size, {}), settings)


# --------------------------------------------------------------------------- predictor


SHORT = {"resize": "short_side", "short_side": 96, "size_divisor": 32, "fuse_upsample": "logits",
         "peak_resolution": "input", "extraction": "center", "peak_kernel": 5, "flip_test": True,
         "fuse_sizes": "mean"}


@pytest.fixture(scope="module")
def short_side_files(tmp_path_factory):
    """The small test model with BENet's test path (short side 96), and its ONNX export."""
    from caer_ros.inference.export import export_with_summary

    folder = tmp_path_factory.mktemp("short_side")
    pt = write_small_model(folder / "short.pt", settings=SHORT, attention=False)
    summary = export_with_summary(pt, folder / "short.onnx")  # verified at two sizes
    assert summary.max_difference is not None and summary.max_difference < 1e-3
    return pt, folder / "short.onnx"


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), np.uint8),
                       (width, height), interpolation=cv2.INTER_CUBIC)
    return image


@pytest.mark.parametrize(("height", "width", "size"), [(120, 160, (96, 128)), (160, 90, (192, 96)),
                                                       (1, 1, (96, 96))])
def test_torch_and_onnx_runtime_agree_at_each_frame_size(short_side_files, height, width, size):
    pt, onnx_path = short_side_files
    image = _scene(height, width)
    found = []
    for path in (pt, onnx_path):
        predictor = Predictor.from_file(path)
        people = predictor.predict(image, detection_threshold=0.0, max_people=8)
        assert predictor.input_size == size
        # A 1x1 frame is answered with nobody: the authors' warp puts its one pixel left of
        # and above the input (cx = cy = 1), so every box found lies outside the frame.
        assert len(people) >= 1 if height > 1 else len(people) == 0
        assert (people.boxes[:, [0, 2]] >= 0).all() and (people.boxes[:, [0, 2]] <= width).all()
        assert (people.boxes[:, [1, 3]] >= 0).all() and (people.boxes[:, [1, 3]] <= height).all()
        found.append(people)
    torch_people, ort_people = found
    np.testing.assert_allclose(ort_people.boxes, torch_people.boxes, atol=1e-3)
    np.testing.assert_allclose(ort_people.scores, torch_people.scores, atol=1e-4)


def test_frame_sizes_may_change_every_frame_and_batches_may_mix_them(short_side_files):
    predictor = Predictor.from_file(short_side_files[0])
    frames = [_scene(h, w, seed=n) for n, (h, w) in enumerate(
        [(120, 160), (90, 160), (120, 160), (160, 120), (100, 100), (240, 320)])]
    alone = [predictor.predict(f, detection_threshold=0.0, max_people=5) for f in frames]
    together = predictor.predict_batch(frames, detection_threshold=0.0, max_people=5)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert predictor.input_size_for(240, 320) == (96, 128)
    with pytest.raises(FrameSizeError, match="10000x10"):
        predictor.predict(np.zeros((10, 10000, 3), np.uint8))


def test_caer_infer_on_a_video_of_another_aspect(short_side_files, tmp_path, capsys):
    video = tmp_path / "wide.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (192, 96))
    for n in range(3):
        writer.write(_scene(96, 192, seed=n))
    writer.release()
    bad = tmp_path / "thin.png"
    cv2.imwrite(str(bad), np.zeros((4, 2000, 3), np.uint8))
    code = cli.main([str(video), str(bad), "--model", str(short_side_files[1]),
                     "--threshold", "0", "--max-people", "3"])
    out = capsys.readouterr()
    assert code == 1  # the thin image failed, the video did not
    assert "thin.png: frame 2000x4 (w x h) is too elongated" in out.err
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2]
    for line in lines:
        for person in line["people"]:
            x1, y1, x2, y2 = person["box"]
            assert 0 <= x1 < x2 <= 192 and 0 <= y1 < y2 <= 96


def test_an_onnx_graph_of_fixed_size_refuses_the_short_side_path(tmp_path):
    from caer_ros.inference.export import export_onnx

    pt = write_small_model(tmp_path / "fixed.pt", attention=False)
    onnx_path = export_onnx(pt, tmp_path / "fixed.onnx", verify=False)
    with pytest.raises(ValueError, match="resize are fixed in the exported graph"):
        Predictor.from_file(onnx_path, changes={"resize": "short_side"})


# --------------------------------------------------------------------------- the node


def test_node_takes_odd_and_changing_frame_sizes(short_side_files, tmp_path):
    """A 1x1 frame is answered (nobody), a 10000x10 one is skipped with one line naming its
    size, frames whose size changes every message are each answered with their own header and
    boxes inside the frame; the node lives through all of it."""
    import time

    from helpers.node_probe import image_msg, running_node

    with running_node(tmp_path, "-p", f"model_path:={short_side_files[1]}",
                      "-p", "detection_threshold:=0.0") as (process, probe, log):
        tiny = probe.stamp(image_msg(np.full((1, 1, 3), 200, np.uint8)))
        answer, _ = probe.answer(tiny, 30.0, process)
        assert answer is not None and answer.header == tiny.header, log.read_text()[-3000:]
        assert list(answer.people) == []
        thin = probe.stamp(image_msg(np.zeros((10, 10000, 3), np.uint8)))
        deadline = time.monotonic() + 30.0  # until the node took it (not replaced in its slot)
        while "too elongated" not in log.read_text() and time.monotonic() < deadline:
            probe.publish(thin)
            probe.spin_for(1.0)
        sizes = [(120, 160), (90, 160), (160, 120), (100, 100), (240, 320), (96, 200)]
        for n, (height, width) in enumerate(sizes):
            msg = probe.stamp(image_msg(_scene(height, width, seed=n)))
            answer, _ = probe.answer(msg, 30.0, process)
            assert answer is not None, log.read_text()[-3000:]
            assert answer.header == msg.header and answer.people
            for person in answer.people:
                assert 0 <= person.x_min < person.x_max <= width
                assert 0 <= person.y_min < person.y_max <= height
        assert process.poll() is None
        assert not probe.people[(thin.header.stamp.sec, thin.header.stamp.nanosec)]
        counts = probe.diagnostics_after(time.monotonic())
        assert counts is not None and counts["frames_failed"] == "0", counts
        assert int(counts["frames_bad"]) >= 1, counts
        text = log.read_text()
        assert "skipping bad frame" in text and "frame 10000x10 (w x h) is too elongated" in text
        assert "frame size changed: network input" in text


def test_int8_export_keeps_the_dynamic_input(short_side_files, tmp_path):
    """The int8 export of a short-side model takes any input size too (calibrated at the
    model's ``input_size``, each image placed as the predictor places it)."""
    from caer_ros.inference.export import export_with_summary

    images = tmp_path / "calibration"
    images.mkdir()
    for n, (height, width) in enumerate([(120, 160), (90, 160), (160, 120)]):
        cv2.imwrite(str(images / f"{n}.png"), _scene(height, width, seed=n))
    summary = export_with_summary(short_side_files[0], tmp_path / "int8.onnx",
                                  int8_calibration=images, calibration_images=2, verify=False)
    assert summary.int8 is not None and summary.int8["calibration_images"] == 2
    predictor = Predictor.from_file(tmp_path / "int8.onnx")
    reference = Predictor.from_file(short_side_files[1])
    assert predictor.backend.endswith(":int8")
    for height, width in [(120, 160), (160, 90)]:
        image = _scene(height, width, seed=7)
        got = predictor.predict(image, detection_threshold=0.0, max_people=3)
        assert predictor.input_size == reference.input_size_for(height, width)
        assert len(got) == 3
        assert (got.boxes[:, 2] <= width).all() and (got.boxes[:, 3] <= height).all()
        (int8_maps, _), (float_maps, _) = (p.forward_maps(image) for p in (predictor, reference))
        difference = np.abs(int8_maps.heatmap - float_maps.heatmap).max()
        print(f"{height}x{width}: max |int8 - float32| heatmap {difference:.3f}")
        assert difference < 0.1  # int8 differs a little, everywhere on the map


def test_training_evaluate_runs_the_short_side_path(short_side_files, tmp_path):
    """The evaluator reads a short-side model through the same predictor: each test image at
    its own input size, annotated boxes read at their centres."""
    from training.datasets.emotic import load_emotic
    from training.datasets.synthetic import generate
    from training.evaluation.evaluate import evaluate

    generate(tmp_path, images=6, seed=5, size=160, heco=False)
    records, _ = load_emotic(tmp_path, "train")
    predictor = Predictor.from_file(short_side_files[0])
    result = evaluate(predictor, records, detection_threshold=0.05, progress=False)
    last = cv2.imread(str(records[-1].path))
    assert predictor.input_size == short_side_size(*last.shape[:2], 96, 32)
    assert result.people == sum(len(r.people) for r in records)
    for key in ("er_map", "pd_ap", "oer_map"):
        value = getattr(result, key)
        assert np.isnan(value) or 0.0 <= value <= 100.0, (key, value)


def test_command_line_options_choose_the_path(short_side_files, tmp_path, capsys):
    """``--resize``, ``--peak-resolution`` and ``--fuse-upsample`` on caer-infer (a model
    file's settings replaced) and on the export (fixed in the graph it writes)."""
    from caer_ros.inference import export

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), _scene(120, 200, seed=3))
    answers = {}
    for name, options in {"file": [], "letterbox": ["--resize", "letterbox"],
                          "map": ["--peak-resolution", "map", "--fuse-upsample",
                                  "probabilities"]}.items():
        assert cli.main([str(image), "--model", str(short_side_files[0]), "--threshold", "0",
                         "--max-people", "4", *options]) == 0
        answers[name] = json.loads(capsys.readouterr().out)["people"]
    boxes = {name: np.array([p["box"] for p in people]) for name, people in answers.items()}
    assert all(len(b) == 4 for b in boxes.values())
    assert not np.allclose(boxes["file"], boxes["letterbox"])  # another input, other people
    assert not np.allclose(boxes["file"], boxes["map"])  # peaks on the 1/2 grid, other boxes
    out = tmp_path / "letterbox.onnx"
    assert export.main(["--model", str(short_side_files[0]), "--out", str(out),
                        "--resize", "letterbox", "--no-verify"]) == 0
    assert "input 1x3x96x128" in capsys.readouterr().out
    predictor = Predictor.from_file(out)
    assert predictor.settings.resize == "letterbox"
    predictor.predict(_scene(120, 200))
    assert predictor.input_size == (96, 128)
