"""python -m training.train end to end: model files, exact resume after SIGKILL, DDP = 1 process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from caer_ros.inference.predictor import Predictor
from caer_ros.model.checkpoint import read_model_file
from caer_ros.model.config import ModelConfig
from caer_ros.model.network import build_model
from training.config import load_config
from training.train import Trainer, biases_before_batchnorm, main

ROOT = Path(__file__).parent.parent
SMOKE = ROOT / "training" / "configs" / "synthetic_smoke.yaml"
TINY = ["model.input_size=[64,64]", "model.head_blocks=0", "model.classifier_channels=32",
        "workers=0"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_best_by_metric_keeps_the_best_validation_metric(synthetic_dataset, tmp_path,
                                                         monkeypatch):
    """best_by: metric keeps the model of the validation with the highest mean task metric,
    whatever the losses say; the loss rule stays the default; metric needs the bu task."""
    import training.train as train_module
    from training.config import ConfigError

    scripted = iter([{"emotic": 0.3}, {"emotic": 0.6}, {"emotic": 0.4}])
    monkeypatch.setattr(train_module.TaskMetrics, "result", lambda self: next(scripted))
    out = tmp_path / "run"
    config = load_config(SMOKE, [*TINY, "tasks=[bu,det]", "batch_size=8", "epochs=3",
                                 "calibrate=false", "best_by=metric", f"out={out}"],
                         synthetic_dataset)
    history = Trainer(config, progress=False).run()
    assert [h["val_metrics"]["emotic"] for h in history] == [0.3, 0.6, 0.4]
    meta = read_model_file(out / "best.pt")[0].meta
    assert meta["epoch"] == 2 and meta["val_metric"] == pytest.approx(0.6)
    assert load_config(SMOKE, TINY).best_by == "loss"
    with pytest.raises(ConfigError, match="best_by: metric needs the bu task"):
        load_config(SMOKE, [*TINY, "best_by=metric", "tasks=[det]"])
    with pytest.raises(ConfigError, match="best_by must be loss or metric"):
        load_config(SMOKE, [*TINY, "best_by=lowest"])


def test_train_writes_usable_model_files(synthetic_dataset, tmp_path):
    out = tmp_path / "run"
    code = main(["--config", str(SMOKE), "--data", str(synthetic_dataset), "--out", str(out),
                 "--no-progress", "epochs=2", "batch_size=4", *TINY])
    assert code == 0
    for name in ("best.pt", "final.pt", "last.ckpt", "history.json", "config.yaml"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["val"]["total"]) for h in history)
    assert set(history[0]["train"]) >= {"total", "det.q", "bu.q.emotic", "pc.emotic", "bg.emotic"}
    info = read_model_file(out / "final.pt")[0]
    assert info.meta["trained"] and info.meta["kind"] == "final"
    assert read_model_file(out / "best.pt")[0].meta["val_loss"] == min(
        h["val"]["total"] for h in history)
    # the file is a model the node and caer-infer accept, and training changed it
    predictor = Predictor.from_file(out / "final.pt", backend="torch")
    image = np.full((96, 96, 3), 90, np.uint8)
    predictor.predict(image)
    fresh = build_model(info.config, seed=0).state_dict()
    trained = weights(out / "final.pt")
    assert any(not torch.equal(fresh[k], trained[k]) for k in fresh)
    # biases that BatchNorm cancels are left out of the optimiser (see biases_before_batchnorm)
    model = build_model(info.config, seed=0)
    names = {id(p): n for n, p in model.named_parameters()}
    for p in biases_before_batchnorm(model):
        assert torch.equal(trained[names[id(p)]], fresh[names[id(p)]])


def test_thresholds_are_calibrated_on_the_training_split(synthetic_dataset, tmp_path,
                                                         monkeypatch):
    """The project's rule: thresholds are fitted on training data (its images as they are, no
    augmentation), the validation split picks best.pt. The trainer's wrap-up calibrates its
    model files on the training split's records, not validation's (8 and 2 images here).
    (Untrained: the wrap-up is all this tests; a run's end calls it after final.pt.)"""
    import training.train as train_module

    calls = []
    real = train_module.calibrate_model_file

    def recorded(path, records, progress=True, split=None):
        calls.append((Path(path).name, list(records)))
        return real(path, records, progress, split=split)

    monkeypatch.setattr(train_module, "calibrate_model_file", recorded)
    out = tmp_path / "run"
    config = load_config(SMOKE, [*TINY, "tasks=[bu,det]", f"out={out}"], synthetic_dataset)
    trainer = Trainer(config, progress=False)
    try:
        trainer.save_model("final.pt", {"kind": "final"})
        trainer.finish()
    finally:
        trainer.close()
    train_paths = {r.path for r in trainer.train_records}
    assert train_paths.isdisjoint(r.path for r in trainer.val_records)
    assert [name for name, _ in calls] == ["final.pt"]  # best.pt is calibrated alike
    assert {r.path for r in calls[0][1]} == train_paths
    calibration = read_model_file(out / "final.pt")[0].meta["calibration"]["emotic"]
    assert calibration["split"] == "train"
    assert calibration["people"] == sum(len(r.people) for r in trainer.train_records)


KILL_DURING_WRITE = """
import io, os, signal, sys, torch
import training.train as train
real, calls = torch.save, [0]
def save(obj, stream, *args, **kwargs):
    calls[0] += 1
    if calls[0] == {write}:
        buffer = io.BytesIO()
        real(obj, buffer)
        stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # killed halfway through writing last.ckpt
    return real(obj, stream, *args, **kwargs)
torch.save = save
sys.exit(train.main(sys.argv[1:]))
"""


def test_resume_after_kill_is_exact(synthetic_dataset, tmp_path):
    """Killed with SIGKILL mid-run, halfway through writing its training state, the same
    command removes the half-written file, resumes from the previous state and ends with the
    weights of an uninterrupted run, bit for bit."""
    args = ["--config", str(SMOKE), "--data", str(synthetic_dataset), "--no-progress",
            "epochs=3", "batch_size=4", "checkpoint_every=1", "val_every=3", "calibrate=false",
            *TINY]
    whole = tmp_path / "whole"  # uninterrupted, beside the killed run (one thread each)
    run = subprocess.Popen([sys.executable, "-m", "training.train", *args, "--out", str(whole)],
                           env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    cut = tmp_path / "cut"  # the 4th write of last.ckpt: mid-epoch 2 (2 steps per epoch)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_WRITE.format(write=4), *args, "--out", str(cut)],
        env=env(), capture_output=True, text=True, timeout=600)
    _, whole_err = run.communicate(timeout=600)
    assert run.returncode == 0, whole_err[-2000:]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (cut / "final.pt").exists()
    left = list(cut.glob(".last.ckpt.*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size > 0  # the half-written state
    assert torch.load(cut / "last.ckpt", weights_only=True)["state"]["global_step"] == 3

    resumed = subprocess.run([sys.executable, "-m", "training.train", *args, "--out", str(cut)],
                             env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    assert "removed 1 temporary file(s) left by an interrupted write" in resumed.stderr
    assert not list(cut.glob(".*.tmp"))
    for name in ("best.pt", "final.pt", "last.ckpt"):
        torch.load(cut / name, weights_only=True)
    a, b = weights(whole / "final.pt"), weights(cut / "final.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_refuses_a_different_config(synthetic_dataset, tmp_path, capsys):
    args = ["--config", str(SMOKE), "--data", str(synthetic_dataset), "--out", str(tmp_path),
            "--no-progress", "epochs=1", "batch_size=8", "calibrate=false", *TINY]
    assert main(args) == 0
    assert main([*args, "optim.lr=0.01"]) == 1
    assert "different config" in capsys.readouterr().err
    assert main([*args, "optim.lr=0.01", "--restart"]) == 0


def test_a_state_written_before_inference_was_a_section_still_resumes(synthetic_dataset,
                                                                        tmp_path, capsys):
    """last.ckpt configs used to hold ``inference`` as its overrides only; such a state resumes
    (its overrides resolved for the model), and one whose overrides differ is refused."""
    args = ["--config", str(SMOKE), "--data", str(synthetic_dataset), "--out", str(tmp_path),
            "--no-progress", "epochs=3", "batch_size=8", "calibrate=false", *TINY]
    assert main([*args, "max_steps=1"]) == 0
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    for old, resumes in (({"extraction": "center"}, True), ({"extraction": "box_mean"}, False)):
        torch.save({**state, "config": {**state["config"], "inference": old}},
                   tmp_path / "last.ckpt")
        capsys.readouterr()
        assert main([*args, "max_steps=2"]) == (0 if resumes else 1)
        printed = capsys.readouterr()
        assert ("resuming" in printed.out) is resumes
        assert ("different config (inference differ)" in printed.err) is not resumes
        if resumes:
            state = torch.load(tmp_path / "last.ckpt", weights_only=True)
            assert state["state"]["global_step"] == 2


def test_budget_stops_training(synthetic_dataset, tmp_path):
    config = load_config(SMOKE, [*TINY, "epochs=50", "batch_size=4", "budget_minutes=0.0001",
                                 "calibrate=false", f"out={tmp_path}"], synthetic_dataset)
    history = Trainer(config, restart=True, progress=False).run()
    assert len(history) == 1 and history[0]["steps"] == 1
    assert read_model_file(tmp_path / "final.pt")[0].meta["stopped_by_budget"] is True


def test_cli_errors_are_one_line(synthetic_dataset, tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml"), "--data", str(tmp_path)]) == 1
    assert "nope.yaml" in capsys.readouterr().err
    assert main(["--config", str(SMOKE), "--data", str(tmp_path / "empty"), *TINY]) == 1
    assert "Annotations" in capsys.readouterr().err
    assert main(["--config", str(SMOKE), "epochs=0"]) == 1
    assert "epochs" in capsys.readouterr().err


def test_two_processes_train_like_one(synthetic_dataset, tmp_path):
    """torchrun with 2 CPU processes (gloo) and the same global batch gives the 1-process step:
    BatchNorm statistics are synchronised and every loss is normalised over the global batch.
    One SGD step so float-order differences are not amplified by many steps."""
    args = ["--config", str(SMOKE), "--data", str(synthetic_dataset), "--no-progress",
            "epochs=1", "batch_size=8", "optim.name=sgd", "optim.lr=0.01", "optim.momentum=0",
            "calibrate=false", *TINY]
    single = subprocess.run([sys.executable, "-m", "training.train", *args,
                             "--out", str(tmp_path / "one")],
                            env=env(), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                             "2", "--standalone", "-m", "training.train", *args,
                             "--out", str(tmp_path / "two")],
                            env=env(), capture_output=True, text=True, timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = weights(tmp_path / "one" / "final.pt"), weights(tmp_path / "two" / "final.pt")
    info = read_model_file(tmp_path / "one" / "final.pt")[0]
    start = build_model(ModelConfig.from_dict(info.config.to_dict()), seed=0).state_dict()
    params = [k for k in one if one[k].is_floating_point()]
    moved = torch.cat([(one[k].float() - start[k].float()).flatten() for k in params])
    apart = torch.cat([(one[k].float() - two[k].float()).flatten() for k in params])
    assert moved.norm() > 0
    assert apart.norm() / moved.norm() < 1e-3, float(apart.norm() / moved.norm())


@pytest.mark.parametrize("name", ["best.pt"])
def test_history_and_files_are_not_written_half(synthetic_dataset, tmp_path, name):
    """Every file the trainer writes goes through atomic_write: no temporary is left behind."""
    assert main(["--config", str(SMOKE), "--data", str(synthetic_dataset), "--out",
                 str(tmp_path), "--no-progress", "epochs=1", "batch_size=8", *TINY]) == 0
    assert (tmp_path / name).exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_box_mean_reading_adds_the_variance_term(synthetic_dataset, tmp_path):
    """KA 2.1: ``bu_reading: box_mean`` trains the in-box mean with the variance term (eq. 3)
    and writes model files that read the box mean."""
    out = tmp_path / "run"
    config = load_config(SMOKE, [*TINY, "tasks=[bu,det]", "bu_reading=box_mean", "epochs=1",
                                 "batch_size=4", "calibrate=false", f"out={out}"],
                         synthetic_dataset)
    assert config.inference.extraction == "box_mean"
    history = Trainer(config, progress=False).run()
    assert {"bu.q.emotic", "var.q.emotic"} <= set(history[0]["train"])
    assert np.isfinite(history[0]["val"]["var.q.emotic"])
    assert read_model_file(out / "final.pt")[0].inference.extraction == "box_mean"


def test_init_backbone_starts_from_another_models_backbone(synthetic_dataset, tmp_path):
    """Fine-tuning (KA paper, F-T): ``init_backbone`` loads a weights file's backbone into the
    student before training; a bad file is a clear error."""
    from caer_ros.model.checkpoint import save_model_file
    from caer_ros.model.inference_settings import InferenceSettings

    source_config = load_config(SMOKE, TINY).model
    source = build_model(source_config, seed=11)
    path = save_model_file(tmp_path / "source.pt", source,
                           InferenceSettings.for_model(source_config))
    config = load_config(SMOKE, [*TINY, f"init_backbone={path}", f"out={tmp_path / 'run'}"],
                         synthetic_dataset)
    trainer = Trainer(config, progress=False)
    loaded = trainer.model.backbone.state_dict()
    for name, value in source.backbone.state_dict().items():
        assert torch.equal(loaded[name], value), name
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    code = main(["--config", str(SMOKE), "--data", str(synthetic_dataset), "--out",
                 str(tmp_path / "run2"), "--no-progress", *TINY, f"init_backbone={broken}"])
    assert code == 1
