"""Bad training data and run folders: every problem is a counted skip with a warning naming the
file, split, record and reason, or one line and a non-zero exit; nothing is lost or mixed.

Data is made by the synthetic generator and corrupted here, one case per test."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from caer_ros.atomic_file import atomic_write, remove_stale_temp_files
from caer_ros.image_file import ImageFileError, image_info, read_image
from training.config import load_config
from training.data.batches import CaerDataset, DataError, epoch_batches, loader, read_rgb
from training.datasets import load_emotic, load_heco
from training.datasets.heco import HecoFormatError
from training.datasets.synthetic import emotic_entry, generate, write_annotations
from training.evaluation import evaluate as evaluate_cli
from training.run_folder import RunFolderBusy, RunFolderLock
from training.train import main as train_main

ROOT = Path(__file__).parent.parent
SMOKE = ROOT / "training" / "configs" / "synthetic_smoke.yaml"
TINY = ["model.input_size=[64,64]", "model.head_blocks=0", "model.classifier_channels=32",
        "workers=0", "batch_size=4", "calibrate=false"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """12 synthetic scenes of 96 px (8 train, 2 val, 2 test) and their truth."""
    root = tmp_path_factory.mktemp("clean")
    truth = generate(root, images=12, seed=3, size=96, heco=True)
    return root, truth


def copy_of(generated, tmp_path: Path, change=None) -> Path:
    """A copy of the generated set; ``change(entries)`` edits the EMOTIC annotation entries
    (``{split: [emotic_entry dict, ...]}``) before they are written."""
    root, truth = generated
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    if change is not None:
        entries = {k: [emotic_entry(s, k != "train") for s in v] for k, v in truth.items()}
        change(entries)
        write_annotations(copy / "Annotations" / "Annotations.mat", entries)
    return copy


def image_of(data: Path, truth, split: str, index: int) -> Path:
    return data / "emotic" / "synthetic" / "images" / truth[split][index].filename


def first_person(entries, split: str, index: int = 0) -> np.void:
    return entries[split][index]["person"][0, 0]


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ----------------------------------------------------------------------------- files


def test_written_files_get_the_mode_open_gives(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.bin") as stream:
            stream.write(b"x")
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        with atomic_write(tmp_path / "private.bin") as stream:
            stream.write(b"x")
        assert (tmp_path / "private.bin").stat().st_mode & 0o777 == 0o600
        (tmp_path / "new.bin").chmod(0o640)  # replacing a file keeps its mode, as open() does
        with atomic_write(tmp_path / "new.bin") as stream:
            stream.write(b"y")
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    # the repro: a model file from the model CLI is readable by others under umask 022
    out = tmp_path / "m.pt"
    subprocess.run([sys.executable, "-m", "caer_ros.model", "--preset", "hrnet_cpu",
                    "--categories", "emotic", "--input-size", "128", "--out", str(out)],
                   env=env(), check=True, capture_output=True, timeout=300,
                   preexec_fn=lambda: os.umask(0o022))
    assert out.stat().st_mode & 0o777 == 0o644


def test_temp_files_of_killed_writes_are_removed(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = tmp_path / f".model.pt.{ended.pid}.abcd1234.tmp"  # its writer is gone
    live = tmp_path / f".model.pt.{os.getpid()}.efgh5678.tmp"  # a write in progress
    old_style = tmp_path / ".model.pt.ijkl9012.tmp"  # written before names had the pid
    other = tmp_path / f".other.pt.{ended.pid}.mnop3456.tmp"
    for path in (stale, live, old_style, other):
        path.write_bytes(b"half")
    with atomic_write(tmp_path / "model.pt") as stream:
        stream.write(b"whole")
    assert not stale.exists()  # the next write of the same file removes it
    assert live.exists() and old_style.exists() and other.exists()
    assert sorted(p.name for p in remove_stale_temp_files(tmp_path)) == [other.name]
    # the folder's owner (a training holding its lock) removes every temporary file in it
    lock = RunFolderLock(tmp_path)
    assert sorted(p.name for p in lock.acquire()) == sorted([live.name, old_style.name])
    lock.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "model.pt"]


def test_a_run_folder_in_use_is_refused(generated, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from training.run_folder import RunFolderLock
            lock = RunFolderLock({str(out)!r})
            lock.acquire()
            print("held", flush=True)
            time.sleep(120)""")],
        env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["--config", str(SMOKE), "--data", str(generated[0]), "--out", str(out),
                "--no-progress", "epochs=1", *TINY]
        assert train_main(args) == 1
        err = capsys.readouterr().err
        assert f"{out} is in use by process {holder.pid}" in err
        assert len(err.strip().splitlines()) == 1
        with pytest.raises(RunFolderBusy, match=str(holder.pid)):
            RunFolderLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "last.ckpt").exists()  # the refused run wrote nothing
    RunFolderLock(out).acquire()  # a dead holder leaves the folder free


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_a_finished_run_is_left_alone(generated, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--config", str(SMOKE), "--data", str(generated[0]), "--out", str(out),
            "--no-progress", "epochs=2", *TINY]
    assert train_main([*args, "budget_minutes=0.0001"]) == 0  # one step, then out of time
    before = _files(out)
    assert len(json.loads(before["history.json"])) == 1
    capsys.readouterr()
    assert train_main([*args, "budget_minutes=0.0001"]) == 0  # the same command: nothing
    said = capsys.readouterr().out  # trained, nothing rewritten
    assert f"{out} is a finished run" in said and "budget is used" in said
    assert _files(out) == before
    assert train_main([*args, "budget_minutes=null"]) == 0  # no budget: it continues
    assert "resuming" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 1, 2] and history[0]["steps"] == 1
    before = _files(out)
    assert train_main([*args, "budget_minutes=null"]) == 0
    assert "2 of 2 epochs done" in capsys.readouterr().out
    assert _files(out) == before


# ----------------------------------------------------------------------------- images


def test_one_reader_refuses_images_cut_short(generated, tmp_path):
    root, truth = generated
    image = image_of(root, truth, "train", 0)
    assert image_info(image).width == 96 and read_image(image, rgb=True).shape == (96, 96, 3)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(image.read_bytes()[:-300])  # header whole, image data cut short
    for read in (image_info, read_image):
        with pytest.raises(ImageFileError, match=r"cut.jpg: .*cut short.*truncated"):
            read(cut)
    with pytest.raises(DataError, match=r"cut.jpg: cannot read the image"):
        read_rgb(cut)  # training's reader
    with pytest.raises(evaluate_cli.EvaluationError, match=r"cut.jpg"):
        evaluate_cli.read_image(cut)  # the evaluator's
    header = tmp_path / "header.jpg"
    header.write_bytes(image.read_bytes()[:60])  # cut inside its header (was struct.error)
    with pytest.raises(ImageFileError, match=r"header.jpg: .*cut short in its header"):
        image_info(header)


def test_truncated_jpeg_is_skipped_with_a_warning_and_refused_by_the_evaluator(
        generated, tmp_path, capsys):
    data = copy_of(generated, tmp_path)
    broken = image_of(data, generated[1], "train", 2)
    truncate(broken)
    records, report = load_emotic(data, "train")
    assert broken not in [r.path for r in records]
    assert len(report.skipped_images) == 1 and str(broken) in report.skipped_images[0].where
    assert "'train', image 2" in report.skipped_images[0].where
    assert "skipped 1 images" in report.summary()
    assert any(str(broken) in w and "cut short" in w for w in report.warnings())
    # the test split's own broken image stops the evaluator (part of a split is not the split)
    broken_test = image_of(data, generated[1], "test", 0)
    truncate(broken_test)
    with pytest.raises(evaluate_cli.EvaluationError, match=str(broken_test)):
        evaluate_cli.evaluation_split(data, "emotic", "test")


def test_person_without_category_is_skipped_and_counted(generated, tmp_path):
    def change(entries):
        person = first_person(entries, "train", 1)
        person["annotations_categories"]["categories"] = np.empty((1, 0), dtype=object)
        first_person(entries, "val", 0)["combined_categories"] = np.empty((1, 0), dtype=object)

    data = copy_of(generated, tmp_path, change)
    records, report = load_emotic(data, "train")
    assert report.skipped_by_reason() == {"no category": 1}
    assert "'train', image 1" in report.skipped[0].where
    assert "person 0" in report.skipped[0].where
    assert load_emotic(data, "val")[1].skipped_by_reason() == {"no category": 1}


def test_bad_image_size_and_box_values_are_counted_not_tracebacks(generated, tmp_path, capsys):
    def change(entries):
        entries["test"][0]["image_size"] = {"n_col": float("nan"), "n_row": 96.0}
        entries["test"][1]["image_size"] = {"n_col": 200.0, "n_row": 150.0}  # not the file's
        first_person(entries, "test", 1)["body_bbox"] = "ten, ten, forty, sixty"

    data = copy_of(generated, tmp_path, change)
    records, report = load_emotic(data, "test")
    assert [(r.width, r.height) for r in records] == [(96, 96), (96, 96)]
    assert report.skipped_by_reason() == {"not a box": 1}
    changed = {c.reason: c.where for c in report.changed}
    assert "'test', image 0" in changed["image_size not a positive number: the file's size is used"]
    mismatch = changed["image size differs from its annotation: the file's is used, boxes as "
                       "annotated"]
    assert "'test', image 1" in mismatch and "annotated 200x150, file 96x96" in mismatch


def test_evaluator_gives_warnings_not_tracebacks(generated, small_model_files, tmp_path,
                                                 capsys):
    def change(entries):
        entries["test"][0]["image_size"] = {"n_col": float("nan"), "n_row": float("nan")}
        first_person(entries, "test", 1)["body_bbox"] = "not numbers"

    data = copy_of(generated, tmp_path, change)
    code = evaluate_cli.main(["--model", str(small_model_files[0]), "--data", str(data),
                              "--no-progress"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == 0, err
    assert "warning: skipped person:" in err and "not a box" in err
    assert "warning: changed:" in err and "image_size not a positive number" in err


def test_no_usable_person_is_an_error_not_a_zero_loss(generated, tmp_path, capsys):
    def change(entries):
        for entry in entries["val"]:
            for person in entry["person"].ravel():
                person["body_bbox"] = np.full((1, 4), np.nan)

    data = copy_of(generated, tmp_path, change)
    args = ["--config", str(SMOKE), "--data", str(data), "--out", str(tmp_path / "run"),
            "--no-progress", "epochs=1", *TINY]
    assert train_main(args) == 1
    err = capsys.readouterr().err
    assert "no usable person in the val split" in err and "non-finite box" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "final.pt").exists()


def test_training_names_what_it_skipped(generated, tmp_path, capsys):
    """One run through the trainer with several bad records: it trains on the rest and its
    warnings name each file, split, record and reason."""
    def change(entries):
        first_person(entries, "train", 1)["annotations_categories"]["categories"] = \
            np.empty((1, 0), dtype=object)
        entries["train"][3]["image_size"] = {"n_col": 120.0, "n_row": 96.0}

    data = copy_of(generated, tmp_path, change)
    broken = image_of(data, generated[1], "train", 2)
    truncate(broken)
    args = ["--config", str(SMOKE), "--data", str(data), "--out", str(tmp_path / "run"),
            "--no-progress", "epochs=1", *TINY]
    assert train_main(args) == 0
    captured = capsys.readouterr()
    assert "7 images" in captured.out and "skipped 1 images" in captured.out
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert any(str(broken) in w and "'train', image 2" in w and "cut short" in w
               for w in warnings)
    assert any("'train', image 1" in w and "person 0" in w and "no category" in w
               for w in warnings)
    assert any("'train', image 3" in w and "differs from its annotation" in w
               for w in warnings)


def test_worker_errors_arrive_as_one_line(generated, tmp_path):
    data = copy_of(generated, tmp_path)
    config = load_config(SMOKE, [*TINY, "workers=1"], data)
    records, _ = load_emotic(data, "train")
    dataset = CaerDataset(records, config, train=True)
    truncate(records[0].path)  # changed on disk after loading
    batches = epoch_batches(len(dataset), 8, 0, 0, shuffle=False)
    with pytest.raises(DataError) as caught:
        list(loader(dataset, batches, workers=1))
    message = str(caught.value)
    assert message.startswith(f"{records[0].path}: cannot read the image")
    assert "\n" not in message and "DataLoader worker" not in message
    assert "Traceback" not in message


# ----------------------------------------------------------------------------- HECO


def _heco_rows(path: Path, rows: list[list[object]], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(["Image", "xmin", "ymin", "xmax", "ymax", "Category", "Valence",
                         "Arousal", "Dominance", "Self-assurance", "Catharsis"])
        writer.writerows(rows)
    return path


def test_heco_csv_that_is_not_utf8_names_the_file(generated, small_model_files, tmp_path,
                                                 capsys):
    data = copy_of(generated, tmp_path)
    labels = _heco_rows(data / "HECO_Labels.csv",
                        [["synthetic_00000.jpg", 1, 2, 30, 40, "Anger", 5, 5, 5, 5, 5],
                         ["synthetic_00001.jpg", 1, 2, 30, 40, "Surprisé", 5, 5, 5, 5, 5]],
                        encoding="latin-1")
    with pytest.raises(HecoFormatError, match=r"HECO_Labels.csv: not UTF-8 text"):
        load_heco(labels, data / "heco" / "images")
    code = evaluate_cli.main(["--model", str(small_model_files[0]), "--data", str(data),
                              "--dataset", "heco", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [f"error: {labels}: not UTF-8 text (byte "
                                        f"{labels.read_bytes().index(b'Surpris') + 7}: invalid "
                                        f"continuation byte); save it as UTF-8"]


def test_heco_bad_rows_and_images_are_skipped_and_counted(generated, tmp_path):
    data = copy_of(generated, tmp_path)
    images = data / "heco" / "images"
    cut = images / "synthetic_00003.jpg"
    cut.write_bytes(cut.read_bytes()[:60])  # header cut short: was a struct.error
    labels = _heco_rows(tmp_path / "labels.csv", [
        ["synthetic_00000.jpg", 1, 2, 30, 40, "Anger", 5, 5, 5, 5, 5],
        ["synthetic_00000.jpg", 1, 2, 30, 40, "Fear", 0, 11, "x", 5, 5],  # out of 1..10
        ["synthetic_00000.jpg", 1, 2, 30],  # short row: was "unknown category ''"
        ["synthetic_00000.jpg", 1, 2, 30, 40, "", 5, 5, 5, 5, 5],  # no category
        ["synthetic_00000.jpg", "a", 2, 30, 40, "Anger", 5, 5, 5, 5, 5],  # not a box
        ["synthetic_00003.jpg", 1, 2, 30, 40, "Anger", 5, 5, 5, 5, 5],
    ])
    records, report = load_heco(labels, images)
    assert [len(r.people) for r in records] == [2]
    np.testing.assert_array_equal(records[0].people[1].continuous, [np.nan] * 3)
    assert report.skipped_by_reason() == {
        "short row (4 of 11 columns)": 1, "no category": 1, "not a box": 1,
        "in a skipped image": 1}
    assert [c.reason for c in report.changed] == [
        "continuous value outside 1..10 left out", "continuous value outside 1..10 left out",
        "continuous value that is not a number left out"]
    assert "row 3" in report.changed[0].where
    assert len(report.skipped_images) == 1 and "cut short in its header" in \
        report.skipped_images[0].reason
    assert "row 7" in report.skipped_images[0].where
    summary = report.summary()
    assert "skipped 1 images" in summary and "skipped 4 people" in summary
    assert "2 continuous value outside 1..10 left out" in summary


def test_trainer_reads_every_record_through_the_validator(generated, tmp_path):
    """EMOTIC train + HECO in one run: the HECO rows go through the same validator (a label
    that is an unambiguous misspelling is mapped, not fatal)."""
    data = copy_of(generated, tmp_path)
    with open(data / "HECO_Labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][5] = "Happinesst"  # the real file's misspelling
    with open(data / "HECO_Labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    records, report = load_heco(data / "HECO_Labels.csv", data / "heco" / "images")
    assert len(report.mapped) == 1 and "'Happinesst' -> 'Happiness'" in report.mapped[0]
    assert sum(len(r.people) for r in records) == len(rows) - 1
