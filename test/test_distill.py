"""Label-free distillation (training/distill.py): the command end to end on real images and a
real video, with a real teacher file, resume, the placebo's targets, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.clips import write_clip
from helpers.small_model import write_small_model

from caer_ros.inference.predictor import Predictor
from caer_ros.labels import EMOTIC
from caer_ros.model import ModelConfig, build_model, save_model_file
from training.distill import DistillJob, Targets, load_distill_config, main
from training.distributed import DistributedContext

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """The small test model (peaks, spread scores: as a trained model's) as the teacher."""
    return write_small_model(tmp_path_factory.mktemp("teacher") / "teacher.pt",
                             attention=False)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """A robot's recordings: a folder of synthetic scenes and a real video."""
    from training.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("recordings")
    generate(root / "scenes", images=10, seed=5, size=96)
    write_clip(root / "walk.mp4", frames=30)
    return [root / "scenes" / "emotic", root / "walk.mp4"]


def _run(argv: list[str]) -> int:
    return main([*argv, "--no-progress"])


def test_distill_end_to_end_then_resume(teacher, recordings, tmp_path, capsys):
    """No label is read; the student file is a normal model file with the teacher's sets and
    deployed settings, it loads in the node's predictor, and its loss fell. Running the same
    command again leaves the finished run alone."""
    out = tmp_path / "run"
    argv = ["--teacher", str(teacher), "--images", *map(str, recordings), "--out", str(out),
            "student=student_small", "max_steps=24", "batch_size=4", "workers=0", "lr=0.004",
            "val_fraction=0.3", "frame_rate=5", "augment=false"]
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    assert "frames:" in printed and "from 10 images and 1 videos" in printed
    for name in ("best.pt", "final.pt", "history.json", "config.yaml", "last.ckpt"):
        assert (out / name).exists(), name
    student = Predictor.from_file(out / "final.pt")
    source = Predictor.from_file(teacher)
    assert student.config.categories == source.config.categories
    assert student.config.continuous and student.config.is_student
    assert student.settings.detection_threshold == source.settings.detection_threshold
    assert student.settings.emotion_thresholds == source.settings.emotion_thresholds
    assert student.meta["distilled_from"] == str(teacher)
    history = json.loads((out / "history.json").read_text())
    losses = [r["val"]["total"] for r in history]
    assert losses[-1] < 0.8 * losses[0], losses  # it learnt the teacher's maps
    detections = student.predict(np.zeros((90, 120, 3), np.uint8))
    assert detections.scores.shape[1] == len(EMOTIC)

    assert _run(argv) == 0  # finished: left alone
    assert "finished run" in capsys.readouterr().out


def test_placebo_targets_are_another_images(teacher, recordings):
    """``placebo``: image i learns the teacher's maps of the image before it in the batch."""
    source = Predictor.from_file(teacher)
    student = ModelConfig.student("student_small", source.config)
    canvases = np.stack([cv2.resize(cv2.imread(str(p)), (128, 96))[:, :, ::-1]
                         for p in sorted(recordings[0].rglob("*.jpg"))[:3]])
    real = Targets(source, student)(canvases)[0]
    placebo = Targets(source, student, placebo=True)(canvases)[0]
    for i in range(3):
        assert torch.equal(placebo.heatmap[i], real.heatmap[i - 1])
        assert torch.equal(placebo.emotions["emotic"][i], real.emotions["emotic"][i - 1])
    assert not torch.equal(real.heatmap[0], real.heatmap[1])


def test_onnx_teacher_gives_the_torch_teachers_targets(small_model_files, recordings):
    pt, onnx = small_model_files
    student = ModelConfig.student("student_small", Predictor.from_file(pt).config)
    canvases = np.stack([cv2.resize(cv2.imread(str(p)), (128, 96))[:, :, ::-1]
                         for p in sorted(recordings[0].rglob("*.jpg"))[:2]])
    a = Targets(Predictor.from_file(pt), student)(canvases)[0]
    b = Targets(Predictor.from_file(onnx), student)(canvases)[0]
    torch.testing.assert_close(a.heatmap, b.heatmap, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.emotions["heco"], b.emotions["heco"], atol=1e-4, rtol=0)


def test_student_file_with_other_categories_is_refused(teacher, recordings, tmp_path, capsys):
    other = ModelConfig.student("student_small", ModelConfig(
        backbone="hrnet_cpu", categories={"own": ("Calm", "Joy")}, input_size=(96, 128)))
    path = save_model_file(tmp_path / "other.pt", build_model(other))
    out = tmp_path / "run"
    assert _run(["--teacher", str(teacher), "--images", str(recordings[0]), "--out", str(out),
                 f"student={path}"]) == 1
    error = capsys.readouterr().err
    assert "cannot match the teacher's" in error and str(path) in error
    assert not out.exists()


@pytest.mark.parametrize("case", ["empty", "not_images", "broken_video", "teacher_not_model",
                                  "missing_teacher", "bad_key", "bad_preset"])
def test_bad_input_is_one_line_and_nothing_written(case, teacher, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    model = str(teacher)
    extra: list[str] = []
    if case == "not_images":
        (images / "notes.txt").write_text("hello")
    elif case == "broken_video":
        (images / "cam.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    elif case != "empty":
        cv2.imwrite(str(images / "a.jpg"), np.zeros((48, 64, 3), np.uint8))
        cv2.imwrite(str(images / "b.jpg"), np.zeros((48, 64, 3), np.uint8))
    if case == "teacher_not_model":
        model = str(tmp_path / "teacher.pt")
        Path(model).write_text("not a model")
    elif case == "missing_teacher":
        model = str(tmp_path / "nothing.pt")
    elif case == "bad_key":
        extra = ["weights.heatmapp=2"]
    elif case == "bad_preset":
        extra = ["student=student_huge"]
    out = tmp_path / "run"
    assert _run(["--teacher", model, "--images", str(images), "--out", str(out), *extra]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("training.distill: error:") and "\n" not in error, error
    expected = {"empty": "no images or videos", "not_images": "no images or videos",
                "broken_video": "cam.mp4", "teacher_not_model": "teacher.pt",
                "missing_teacher": "no such file", "bad_key": "heatmapp",
                "bad_preset": "student_huge"}[case]
    assert expected in error, error
    assert not out.exists()


def test_overrides_after_images_and_config_checks():
    from training.distill import parse_args

    args = parse_args(["--teacher", "t.pt", "--images", "a", "b", "max_steps=5", "lr=0.01"])
    assert args.images == ["a", "b"] and args.overrides == ["max_steps=5", "lr=0.01"]
    config = load_distill_config(None, ["placebo=true", "batch_size=4"], teacher="t.pt",
                                 images=["a"])
    assert config.placebo and config.images == ("a",)
    with pytest.raises(ValueError, match="placebo needs batch_size >= 2"):
        load_distill_config(None, ["placebo=true", "batch_size=1"], teacher="t.pt",
                            images=["a"])
    with pytest.raises(ValueError, match="val_fraction"):
        load_distill_config(None, ["val_fraction=1.5"], teacher="t.pt", images=["a"])
    for bad, name in (("weights.region=everywhere", "weights.region"),
                      ("weights.temperature=0.5", "weights.temperature"),
                      ("bn_momentum=0", "bn_momentum")):
        with pytest.raises(ValueError, match=name):
            load_distill_config(None, [bad], teacher="t.pt", images=["a"])
    tuned = load_distill_config(None, ["weights.region=centre", "weights.temperature=2",
                                       "bn_momentum=0.1"], teacher="t.pt", images=["a"])
    assert (tuned.weights.region, tuned.weights.temperature, tuned.bn_momentum) == \
        ("centre", 2, 0.1)


def test_student_settings_override_what_it_inherits(teacher, recordings, tmp_path):
    """The student takes the teacher's thresholds and score reading, is letterboxed at its own
    input size, and ``student_settings`` may change any of it."""
    out = tmp_path / "run"
    assert _run(["--teacher", str(teacher), "--images", str(recordings[0]), "--out", str(out),
                 "student=student_small", "max_steps=1", "batch_size=2", "workers=0",
                 "input_size=[64,96]", "student_settings={detection_threshold: 0.42}"]) == 0
    student, source = Predictor.from_file(out / "final.pt"), Predictor.from_file(teacher)
    assert student.settings.detection_threshold == 0.42
    assert student.settings.extraction == source.settings.extraction
    assert student.settings.resize == "letterbox" and student.config.input_size == (64, 96)
    assert not student.settings.flip_test


def test_fixed_size_onnx_teacher_needs_its_input_size(small_model_files, recordings, tmp_path,
                                                      capsys):
    _, onnx = small_model_files
    out = tmp_path / "run"
    assert _run(["--teacher", str(onnx), "--images", str(recordings[0]), "--out", str(out),
                 "input_size=[64,64]"]) == 1
    error = capsys.readouterr().err
    assert "exported for 96x128 inputs" in error and "input_size=[96,128]" in error
    assert not out.exists()


def test_job_does_not_touch_the_run_folder_on_bad_frames(teacher, tmp_path):
    config = load_distill_config(None, [], teacher=str(teacher),
                                 images=[str(tmp_path / "missing")], out=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="missing"):
        DistillJob(config, DistributedContext(), progress=False)
    assert not (tmp_path / "r").exists()


def test_distill_module_runs_as_a_command(teacher, tmp_path):
    """``python -m training.distill`` prints its usage and fails cleanly without input."""
    result = subprocess.run([sys.executable, "-m", "training.distill", "--teacher",
                             str(teacher)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "images must be one or more" in result.stderr
