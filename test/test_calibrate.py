"""training.evaluation.calibrate: the F1-best threshold per category, and the model file it
rewrites."""

from __future__ import annotations

import numpy as np
import pytest

from caer_ros.model.checkpoint import read_model_file
from training.datasets.emotic import load_emotic
from training.evaluation.calibrate import best_f1_thresholds, calibrate_model_file


def test_best_f1_threshold_by_hand():
    scores = np.array([[0.9], [0.8], [0.7], [0.4], [0.3]])
    labels = np.array([[1], [0], [1], [0], [1]])
    thresholds, f1 = best_f1_thresholds(scores, labels)
    # t=0.9: P 1, R 1/3, F1 .5; t=0.7: 2 of 3 predicted, R 2/3, F1 2/3; t=0.3: 3/5, F1 .75
    assert thresholds[0] == pytest.approx(0.3) and f1[0] == pytest.approx(0.75)


def test_ties_and_perfect_separation_and_no_positive():
    scores = np.array([[0.9, 0.5, 0.2], [0.8, 0.5, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.4]])
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    thresholds, f1 = best_f1_thresholds(scores, labels)
    assert thresholds[0] == pytest.approx(0.8) and f1[0] == 1.0  # the highest of the best
    # three people tie at 0.5: ">= 0.5" takes all three, 2 of them positive: F1 = 0.8
    assert thresholds[1] == pytest.approx(0.5) and f1[1] == pytest.approx(0.8)
    assert thresholds[2] == 0.5 and np.isnan(f1[2])  # no positive: the default


def test_calibrate_rewrites_the_model_file(small_model_files, synthetic_dataset, tmp_path):
    source, _ = small_model_files
    path = tmp_path / "m.pt"
    path.write_bytes(source.read_bytes())
    records, _ = load_emotic(synthetic_dataset, "val")
    before = read_model_file(path)[0]
    result = calibrate_model_file(path, records, progress=False)
    after = read_model_file(path)[0]
    assert after.inference.emotion_thresholds["emotic"] == tuple(result["emotic"])
    assert after.inference.emotion_thresholds != before.inference.emotion_thresholds
    assert after.inference.emotion_thresholds["heco"] == before.inference.emotion_thresholds[
        "heco"]  # no HECO person in the EMOTIC split: untouched
    assert after.meta["calibration"]["emotic"]["people"] == sum(len(r.people) for r in records)


def test_calibrate_command(small_model_files, synthetic_dataset, tmp_path, capsys):
    """``python -m training.evaluation.calibrate`` (the command the docs give) fits on the
    training split by default and records it; a missing dataset is one line, exit 1, and
    the file is untouched."""
    from training.evaluation.calibrate import main

    source, _ = small_model_files
    path = tmp_path / "m.pt"
    path.write_bytes(source.read_bytes())
    assert main(["--model", str(path), "--data", str(tmp_path / "nothing"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == source.read_bytes()
    assert main(["--model", str(path), "--data", str(synthetic_dataset), "--quiet"]) == 0
    assert "train images" in capsys.readouterr().out
    after = read_model_file(path)[0]
    assert after.meta["calibration"]["emotic"]["split"] == "train"
    train, _ = load_emotic(synthetic_dataset, "train")
    assert after.meta["calibration"]["emotic"]["people"] == sum(len(r.people) for r in train)
