"""Teacher classifiers, their files, train_teacher and teachers as frozen feature extractors
(training/teachers/models.py, training/train_teacher.py; KA paper 2.3 and 3.1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from caer_ros.labels import HECO
from caer_ros.model import (
    HRNet,
    ModelConfig,
    ModelFileError,
    backbone_preset,
    build_model,
    save_model_file,
)
from training import train_teacher
from training.data.batches import Failed
from training.datasets.teacher_data import LabelledImage
from training.teachers.models import (
    ClassifierConfig,
    HRNetFeatures,
    Teacher,
    TeacherHead,
    build_classifier,
    load_classifier,
    load_pretrained,
    load_teacher,
    save_classifier,
)

CPU_WIDTHS = (16, 32, 64, 128)  # hrnet_cpu's branches


def small_config(**changes) -> ClassifierConfig:
    values = {"backbone": "hrnet_cpu", "classes": ("red", "green", "blue"),
              "input_size": (64, 64), "head_width": 8, "final_channels": 32}
    return ClassifierConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    model = build_classifier(small_config(), seed=1)
    path = tmp_path_factory.mktemp("teacher") / "fer.pt"
    save_classifier(path, model, {"name": "fer", "trained": True})
    return path, model


# --------------------------------------------------------------------------------------------
# The classifier and its file


def test_classifier_forward_shapes():
    model = build_classifier(small_config(), seed=0).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 96))
    assert logits.shape == (2, 3)
    assert model.head.final_layer[0].out_channels == 32
    assert model.head.classifier.in_features == 32


def test_paper_head_reduces_2048_to_1024():
    """HRNet-W32's branches into the paper's head: Bottlenecks to 128/256/512/1024 channels,
    then the second-to-last layer with 1024 channels (HRNet: 2048), then the classifier."""
    head = TeacherHead([32, 64, 128, 256], num_classes=8)
    assert [m[0].out_channels for m in head.incre_modules] == [128, 256, 512, 1024]
    assert tuple(head.final_layer[0].weight.shape) == (1024, 1024, 1, 1)
    assert tuple(head.classifier.weight.shape) == (8, 1024)
    assert ClassifierConfig(classes=("a", "b")).final_channels == 1024


def test_classifier_config_validation():
    with pytest.raises(ValueError, match="input_size"):
        small_config(input_size=(60, 64))
    with pytest.raises(ValueError, match="classes"):
        small_config(classes=("a", "a"))
    with pytest.raises(ValueError, match="unknown backbone preset"):
        small_config(backbone="resnet")
    config = small_config(backbone=backbone_preset("hrnet_cpu"))
    assert ClassifierConfig.from_dict(config.to_dict()) == config


def test_save_load_round_trip(classifier_file):
    path, model = classifier_file
    loaded, meta = load_classifier(path)
    assert loaded.config == model.config
    assert meta["name"] == "fer" and meta["trained"] is True
    assert not loaded.training
    own, other = model.state_dict(), loaded.state_dict()
    assert own.keys() == other.keys()
    assert all(torch.equal(own[k], other[k]) for k in own)
    images = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    data = torch.load(path, weights_only=True)
    assert data["format"] == "caer_ros.teacher" and data["version"] == 1
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def test_classifier_file_errors(tmp_path, classifier_file):
    with pytest.raises(ModelFileError, match="absent.pt: no such file"):
        load_classifier(tmp_path / "absent.pt")
    torch.save({"format": "something"}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="foreign.pt: not a teacher classifier file"):
        load_classifier(tmp_path / "foreign.pt")
    data = torch.load(classifier_file[0], weights_only=True)
    data["config"]["head_width"] = 4
    torch.save(data, tmp_path / "mismatch.pt")
    with pytest.raises(ModelFileError, match="mismatch.pt: state_dict does not match"):
        load_classifier(tmp_path / "mismatch.pt")
    (tmp_path / "cut.pt").write_bytes(classifier_file[0].read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="cut.pt: not a readable PyTorch file"):
        load_classifier(tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="plain data"):
        save_classifier(tmp_path / "x.pt", classifier_file[1], {"bad": object()})


def test_load_pretrained_backbone_and_head_by_official_names(tmp_path):
    source = build_classifier(small_config(final_channels=16), seed=5)
    official = {f"module.{k}": v for k, v in source.backbone.state_dict().items()}
    official.update({f"module.{k}": v for k, v in source.head.state_dict().items()})
    torch.save({"state_dict": official}, tmp_path / "imagenet.pth")
    model = build_classifier(small_config(), seed=6)
    report = load_pretrained(model, tmp_path / "imagenet.pth")
    assert report.backbone == len(source.backbone.state_dict())
    loaded = model.backbone.state_dict()
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(loaded[key], value)
    head = model.head.state_dict()
    assert torch.equal(head["incre_modules.0.0.conv1.weight"],
                       source.head.state_dict()["incre_modules.0.0.conv1.weight"])
    assert head["final_layer.0.weight"].shape[0] == 32  # resized layer: not loaded
    assert report.head == sum(1 for k in head if k.startswith(("incre_", "downsamp_")))


# --------------------------------------------------------------------------------------------
# Teachers


def tiny_feature_net() -> nn.Module:
    """A non-HRNet teacher for the python: spec: stride 8, 5 channels, raw 0..1 input."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 5, 3, stride=4, padding=1), nn.ReLU())
    net.input_mean, net.input_std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return net


def declared_feature_net() -> nn.Module:
    net = nn.Conv2d(3, 6, 2, stride=2)
    net.channels, net.stride, net.name = 6, 2, "declared"
    return net


def not_a_module():
    return "nope"


def assert_frozen(teacher: Teacher) -> None:
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters())


def test_teacher_from_classifier_file(classifier_file):
    path, model = classifier_file
    teacher = load_teacher(path)
    assert isinstance(teacher, Teacher) and teacher.name == "fer"
    assert (teacher.channels, teacher.stride) == (sum(CPU_WIDTHS), 4)
    assert_frozen(teacher)
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        features = teacher(images)
        assert features.shape == (2, sum(CPU_WIDTHS), 16, 24)
        assert features.min() >= 0  # ReLU outputs: the masked KA losses rely on it
        mean = torch.tensor(model.config.input_mean).view(1, 3, 1, 1)
        std = torch.tensor(model.config.input_std).view(1, 3, 1, 1)
        branches = model.eval().backbone((images - mean) / std)
    assert torch.allclose(features[:, :CPU_WIDTHS[0]], branches[0])
    lowest = F.interpolate(branches[3], size=(16, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(features[:, -CPU_WIDTHS[-1]:], lowest)
    with pytest.raises(ValueError, match="needs H and W multiples of 32, got 64x80"):
        teacher(torch.rand(1, 3, 64, 80))
    quarter = load_teacher(str(path), features="quarter")
    assert (quarter.channels, quarter.stride) == (CPU_WIDTHS[0], 4)
    with torch.no_grad():
        assert torch.allclose(quarter(images), branches[0])


def test_teacher_from_benet_model_file(tmp_path):
    config = ModelConfig(backbone="hrnet_cpu", categories={"heco": HECO}, input_size=(64, 64),
                         head_blocks=0, half_resolution=False, person_centric=False,
                         background=False)
    model = build_model(config, seed=2)
    path = save_model_file(tmp_path / "detector.pt", model)
    teacher = load_teacher(path)
    assert teacher.name == "detector"
    assert (teacher.channels, teacher.stride) == (sum(CPU_WIDTHS), 4)
    assert_frozen(teacher)
    with torch.no_grad():
        assert teacher(torch.rand(1, 3, 64, 64)).shape == (1, sum(CPU_WIDTHS), 16, 16)


def test_teacher_from_official_checkpoint(tmp_path):
    backbone = HRNet(backbone_preset("hrnet_cpu"))
    for p in backbone.parameters():
        nn.init.normal_(p, std=0.1)
    state = {f"module.{k}": v for k, v in backbone.state_dict().items()}
    state["module.classifier.weight"] = torch.zeros(10, 32)  # a head the teacher ignores
    torch.save({"state_dict": state}, tmp_path / "hrnet_cpu_imagenet.pth")
    teacher = load_teacher(f"hrnet_cpu:{tmp_path / 'hrnet_cpu_imagenet.pth'}")
    assert teacher.name == "hrnet_cpu:hrnet_cpu_imagenet"
    assert (teacher.channels, teacher.stride) == (sum(CPU_WIDTHS), 4)
    assert_frozen(teacher)
    loaded = teacher.extractor.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in backbone.state_dict().items())
    # W32's HRNetV2 representation: 32 + 64 + 128 + 256 channels at stride 4
    w32 = HRNetFeatures(HRNet(backbone_preset("hrnet_w32")))
    assert (w32.channels, w32.stride) == (480, 4)

    del state[next(k for k in state if ".fuse_layers.1." in k)]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ModelFileError, match="partial.pth: 1 hrnet_cpu backbone tensors are not"):
        load_teacher(f"hrnet_cpu:{tmp_path / 'partial.pth'}")
    with pytest.raises(ModelFileError, match="shape mismatch"):
        load_teacher(f"hrnet_w18_small:{tmp_path / 'hrnet_cpu_imagenet.pth'}")


def test_teacher_from_python_factory():
    teacher = load_teacher("python:test_teachers:tiny_feature_net")
    assert teacher.name == "tiny_feature_net"
    assert (teacher.channels, teacher.stride) == (5, 8)  # measured on a probe image
    assert_frozen(teacher)
    images = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        out = teacher(images)
        assert out.shape == (2, 5, 4, 6)
        assert torch.equal(out, teacher.extractor(images))  # mean 0, std 1: images as they are
    declared = load_teacher("python:test_teachers:declared_feature_net")
    assert (declared.name, declared.channels, declared.stride) == ("declared", 6, 2)
    with torch.no_grad():  # the module decides which sizes it takes
        assert teacher(torch.rand(1, 3, 30, 32)).shape == (1, 5, 4, 4)


def test_teacher_stays_frozen_in_training(classifier_file):
    """A student-side module trains on the teacher's output: the teacher's parameters get no
    gradient and do not move, its BatchNorm statistics neither, even after parent.train()."""
    teacher = load_teacher(classifier_file[0])
    parent = nn.Module()
    parent.teacher = teacher
    parent.adapter = nn.Conv2d(teacher.channels, 4, 1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.Adam(parent.parameters(), lr=0.1)
    parent.train()
    assert not teacher.training
    for _ in range(2):
        loss = parent.adapter(teacher(torch.rand(2, 3, 64, 64))).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert parent.adapter.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included


def test_load_teacher_errors(tmp_path):
    with pytest.raises(ModelFileError, match="absent.pt: no such file"):
        load_teacher(tmp_path / "absent.pt")
    with pytest.raises(ModelFileError, match="unknown teacher spec form 'resnet:'"):
        load_teacher("resnet:weights.pth")
    with pytest.raises(ModelFileError, match="empty teacher spec"):
        load_teacher(" ")
    with pytest.raises(ModelFileError, match="cannot import 'no_such_module_xyz'"):
        load_teacher("python:no_such_module_xyz:f")
    with pytest.raises(ModelFileError, match="has no 'missing'"):
        load_teacher("python:test_teachers:missing")
    with pytest.raises(ModelFileError, match="returned a str, not a torch.nn.Module"):
        load_teacher("python:test_teachers:not_a_module")
    torch.save(HRNet(backbone_preset("hrnet_cpu")).state_dict(), tmp_path / "plain.pth")
    with pytest.raises(ModelFileError, match="write PRESET:.*plain.pth"):
        load_teacher(tmp_path / "plain.pth")
    with pytest.raises(ModelFileError, match="absent.pth: no such file"):
        load_teacher(f"hrnet_w32:{tmp_path / 'absent.pth'}")
    with pytest.raises(ValueError, match="features must be one of"):
        load_teacher(tmp_path / "plain.pth", features="all")


# --------------------------------------------------------------------------------------------
# train_teacher

COLOURS = {"red": (0, 0, 255), "green": (0, 200, 0), "blue": (255, 0, 0)}  # BGR


def write_squares(root: Path, split: str, per_class: int, seed: int) -> None:
    """Coloured squares on a grey background, one folder per colour (non-square images)."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = np.full((48, 64, 3), 128, np.uint8)
            x, y = (int(v) for v in rng.integers(0, 24, size=2))
            side = int(rng.integers(16, 24))
            image[y:y + side, x:x + side] = colour
            cv2.imwrite(str(root / split / name / f"{i}.png"), image)


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    root = tmp_path_factory.mktemp("squares")
    write_squares(root, "train", 8, seed=0)  # 24 train, 9 val images
    write_squares(root, "val", 3, seed=1)
    return root


def write_config(path: Path, **changes) -> Path:
    values = {"name": "squares", "backbone": "hrnet_cpu", "input_size": [64, 64],
              "head_width": 8, "final_channels": 32, "data": {"kind": "folder"},
              "augment": {"enabled": True, "perspective_p": 0.3, "perspective_scale": 0.1},
              "epochs": 2, "batch_size": 4, "lr": 1.0e-3, "workers": 0, "device": "cpu"}
    values.update(changes)
    path.write_text(json.dumps(values))  # JSON is YAML
    return path


def test_train_teacher_run(tmp_path, squares, capsys):
    config = write_config(tmp_path / "teacher.yaml")
    out = tmp_path / "run"
    assert train_teacher.main(["--config", str(config), "--data", str(squares), "--out",
                               str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 2: train loss" in printed and "macro F1" in printed
    assert "folder (" in printed and "24 images (blue 8, green 8, red 8)" in printed
    for name in ("best.pt", "final.pt", "history.json", "config.yaml"):
        assert (out / name).is_file()
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for record in history:
        assert set(record["val"]) >= {"loss", "accuracy", "macro_f1", "f1"}
        assert 0 <= record["val"]["accuracy"] <= 1 and 0 <= record["val"]["macro_f1"] <= 1
        assert list(record["val"]["f1"]) == ["blue", "green", "red"]
        assert record["steps"] == 6
    assert history[1]["train"]["loss"] < history[0]["train"]["loss"]
    best, meta = load_classifier(out / "best.pt")
    assert best.config.classes == ("blue", "green", "red")  # the sorted folder names
    assert meta["kind"] == "best" and meta["name"] == "squares"
    assert meta["val_macro_f1"] == max(h["val"]["macro_f1"] for h in history)
    _, final_meta = load_classifier(out / "final.pt")
    assert final_meta["epoch"] == 2 and final_meta["stopped_by_budget"] is False
    teacher = load_teacher(out / "final.pt")
    assert teacher.name == "squares" and teacher.channels == sum(CPU_WIDTHS)


def test_dataset_crops_face_and_letterboxes(tmp_path):
    image = np.full((40, 80, 3), (255, 0, 0), np.uint8)  # blue (BGR)
    image[10:30, 20:40] = (0, 0, 255)  # a red face
    cv2.imwrite(str(tmp_path / "face.png"), image)
    record = LabelledImage(tmp_path / "face.png", 1, box=(20.0, 10.0, 40.0, 30.0))
    config = train_teacher.config_from_dict({"input_size": [32, 32], "augment": False,
                                             "data": {"kind": "affectnet"}})
    dataset = train_teacher.TeacherDataset([record], config, train=True)
    canvas = dataset.image(0, 0)
    assert canvas.shape == (32, 32, 3)
    assert (canvas[2:-2, 2:-2] == (255, 0, 0)).all()  # RGB red everywhere: the crop
    uncropped = train_teacher.config_from_dict({"input_size": [32, 32], "augment": False,
                                                "data": {"kind": "affectnet",
                                                         "crop_face": False}})
    canvas = train_teacher.TeacherDataset([record], uncropped, train=False).image(0, 0)
    assert tuple(canvas[0, 0]) == (124, 116, 104)  # letterbox border: the ImageNet mean
    assert tuple(canvas[16, 2]) == (0, 0, 255)  # the blue background
    made = dataset[(0, 0)]
    assert not isinstance(made, Failed)  # no error
    item, label = made
    assert item.shape == (3, 32, 32) and item.dtype == np.float32 and label == 1


@pytest.mark.parametrize(("args", "message"), [
    (["epochs=0"], "epochs must be an integer >= 1, got 0"),
    (["optim.lr=1"], "unknown config keys \\['optim'\\]"),
    (["data.kind=imagenet"], "data.kind must be one of"),
    (["input_size=[60,60]"], "input_size must be"),
    (["backbone=resnet50"], "backbone must be one of the presets"),
    (["augment.flip=0.5"], "unknown augment keys \\['flip'\\]"),
])
def test_cli_config_errors(tmp_path, squares, capsys, args, message):
    config = write_config(tmp_path / "teacher.yaml")
    code = train_teacher.main(["--config", str(config), "--data", str(squares), *args])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("training.train_teacher: error: ")
    assert str(config) in err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_cli_data_errors(tmp_path, squares, capsys):
    config = write_config(tmp_path / "teacher.yaml")
    run = ["--config", str(config), "--no-progress", "--out", str(tmp_path / "run")]
    assert train_teacher.main(run) == 1
    assert "no data folder: pass --data DIR" in capsys.readouterr().err
    assert train_teacher.main([*run, "--data", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: no such data folder" in capsys.readouterr().err
    assert train_teacher.main([*run, "--data", str(tmp_path)]) == 1  # no train/ inside
    assert f"{tmp_path / 'train'}: no such folder" in capsys.readouterr().err
    assert train_teacher.main(["--config", str(tmp_path / "absent.yaml")]) == 1
    assert "absent.yaml: cannot read the config" in capsys.readouterr().err
    (tmp_path / "list.yaml").write_text("- 1\n")
    assert train_teacher.main(["--config", str(tmp_path / "list.yaml")]) == 1
    assert "list.yaml: the config must be a mapping" in capsys.readouterr().err


def test_cli_broken_image_and_missing_images(tmp_path, capsys):
    root = tmp_path / "data"
    write_squares(root, "train", 2, seed=0)
    write_squares(root, "val", 1, seed=1)
    broken = root / "train" / "green" / "1.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    config = write_config(tmp_path / "teacher.yaml", epochs=1, batch_size=6)
    run = ["--config", str(config), "--data", str(root), "--no-progress", "--out",
           str(tmp_path / "run")]
    assert train_teacher.main(run) == 1
    err = capsys.readouterr().err
    assert f"{broken}: cannot read the image" in err and len(err.strip().splitlines()) == 1

    affectnet = tmp_path / "affectnet"
    (affectnet / "Manually_Annotated_Images").mkdir(parents=True)
    row = "1/a.png,0,0,4,4,1;1,1,0.1,0.2\n"
    (affectnet / "training.csv").write_text(row)
    (affectnet / "validation.csv").write_text(row)
    assert train_teacher.main(["--data", str(affectnet), "data.kind=affectnet",
                               "backbone=hrnet_cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "1 train images are missing, e.g." in err and "a.png" in err
    assert "data.allow_missing: true" in err


def test_cli_budget_stops_early(tmp_path, squares, capsys):
    config = write_config(tmp_path / "teacher.yaml", epochs=5, budget_minutes=1e-6)
    out = tmp_path / "run"
    assert train_teacher.main(["--config", str(config), "--data", str(squares), "--out",
                               str(out), "--no-progress"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and history[0]["steps"] == 1  # the epoch in progress, validated
    _, meta = load_classifier(out / "final.pt")
    assert meta["stopped_by_budget"] is True and (out / "best.pt").is_file()


def test_teacher_training_resumes_exactly_and_leaves_a_finished_run_alone(tmp_path, squares,
                                                                         capsys):
    """Teacher training runs the one training loop: stopped by max_steps in the middle of an
    epoch and continued by the same command with the limit raised, it ends with the weights
    of an uninterrupted run, bit for bit; run again, the finished run is left alone."""
    config = write_config(tmp_path / "teacher.yaml")
    base = ["--config", str(config), "--data", str(squares), "--no-progress"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train_teacher.main([*base, "--out", str(whole)]) == 0
    assert train_teacher.main([*base, "--out", str(parts), "max_steps=4"]) == 0
    assert json.loads((parts / "history.json").read_text())[-1]["steps"] == 4  # of 6
    assert train_teacher.main([*base, "--out", str(parts), "max_steps=null"]) == 0
    printed = capsys.readouterr().out
    assert "resuming" in printed and "epoch 1, step 4" in printed
    one, _ = load_classifier(whole / "final.pt")  # (best.pt may differ: the stop validated)
    two, meta = load_classifier(parts / "final.pt")
    for key, value in one.state_dict().items():
        assert torch.equal(value, two.state_dict()[key]), key
    assert meta["epoch"] == 2 and meta["steps"] == 12
    stamp = (parts / "final.pt").stat().st_mtime_ns
    assert train_teacher.main([*base, "--out", str(parts), "max_steps=null"]) == 0
    assert "is a finished run (2 of 2 epochs done)" in capsys.readouterr().out
    assert (parts / "final.pt").stat().st_mtime_ns == stamp
    assert train_teacher.main([*base, "--out", str(parts), "lr=1e-2"]) == 1
    assert "different config (lr differ)" in capsys.readouterr().err


def test_two_processes_take_the_teacher_step_of_one(tmp_path, squares):
    """torchrun with 2 CPU processes (gloo): each takes half of the global batch, BatchNorm is
    synchronised and the logged values are the global batch's, so the first step's loss and
    accuracy equal the 1-process run's (computed before any update, float tolerance); the
    files are written once."""
    import os
    import subprocess
    import sys

    from conftest import REPO
    from training.config import ConfigError
    from training.distributed import DistributedContext

    config = write_config(tmp_path / "teacher.yaml", epochs=1, max_steps=1)
    args = ["-m", "training.train_teacher", "--config", str(config), "--data", str(squares),
            "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = {"one": [sys.executable, *args],
            "two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--standalone", *args]}
    for name, command in runs.items():
        done = subprocess.run([*command, "--out", str(tmp_path / name)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        if name == "two":
            assert done.stdout.count("done: ") == 1  # process 0 only
    one, two = (json.loads((tmp_path / n / "history.json").read_text())[0]
                for n in ("one", "two"))
    assert one["steps"] == two["steps"] == 1
    assert two["train"]["loss"] == pytest.approx(one["train"]["loss"], rel=1e-5)
    assert two["train"]["accuracy"] == pytest.approx(one["train"]["accuracy"], abs=1e-6)
    odd = train_teacher.load_teacher_config(config, ["batch_size=3"], squares)
    with pytest.raises(ConfigError, match=r"batch_size \(3\) must be a multiple of the "
                                          r"number of processes \(2\)"):
        train_teacher.TeacherJob(odd, DistributedContext(rank=0, world=2))


def test_load_teacher_split_resolves_dataset_layouts(tmp_path):
    """AffectNet and EmoSet configs find their files under --data; val uses train's classes."""
    affectnet = tmp_path / "AffectNet"
    for i in range(3):
        image = affectnet / "Manually_Annotated_Images" / "7" / f"{i}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    landmarks = ";".join(["0"] * 136)
    (affectnet / "training.csv").write_text(
        "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
        f"expression,valence,arousal\n7/0.png,0,0,4,4,{landmarks},1,0.5,0.5\n"
        f"7/1.png,0,0,4,4,{landmarks},0,0,0\n")
    (affectnet / "validation.csv").write_text(f"7/2.png,1,1,4,4,{landmarks},1,0.2,0.1\n")
    config = train_teacher.config_from_dict({"data": {"kind": "affectnet", "root": str(affectnet)},
                                             "classes": ["happy", "neutral"]})
    train, report = train_teacher.load_teacher_split(config, "train")
    val, _ = train_teacher.load_teacher_split(config, "val", report.classes)
    assert report.classes == ("Happy", "Neutral")
    assert [(r.path.name, r.label, r.box) for r in train] == [("0.png", 0, (0, 0, 4, 4)),
                                                               ("1.png", 1, (0, 0, 4, 4))]
    assert [(r.path.name, r.label, r.box) for r in val] == [("2.png", 0, (1, 1, 5, 5))]

    emoset = tmp_path / "EmoSet-118K"
    for split, emotions in (("train", ["awe", "fear"]), ("val", ["fear"])):
        entries = []
        for i, emotion in enumerate(emotions):
            image = emoset / "image" / emotion / f"{split}{i}.jpg"
            image.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
            entries.append([emotion, f"image/{emotion}/{split}{i}.jpg", "annotation/x.json"])
        (emoset / f"{split}.json").write_text(json.dumps(entries))
    config = train_teacher.config_from_dict({"data": {"kind": "emoset", "root": str(emoset)}})
    train, report = train_teacher.load_teacher_split(config, "train")
    val, _ = train_teacher.load_teacher_split(config, "val", report.classes)
    assert len(report.classes) == 8
    assert [r.label for r in train] == [2, 6] and [r.label for r in val] == [6]
