"""A lab's own data (issue 28): the COCO folder format (both emotion spellings), the emotion
set of the config, fine-tuning from a model file, evaluation, and every bad input refused with
one line naming the file, the id and the problem, with nothing written to the run folder.

Data: synthetic CAER scenes written as COCO folders (training.datasets.synthetic_coco), the
real loader, the real trainer (a few steps of the small CPU network) and the real evaluator.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from caer_ros.inference.predictor import Predictor
from caer_ros.model.checkpoint import read_model_file
from caer_ros.model.config import ModelConfig
from caer_ros.model.network import build_model
from training.config import ConfigError, load_config
from training.datasets.coco import CocoFormatError, EmotionSet, is_coco_folder, load_coco
from training.datasets.synthetic_coco import OWN_EMOTIONS, generate_coco
from training.evaluation import evaluate as evaluation
from training.finetune import load_init_model
from training.train import main as train_main

FINETUNE = Path(__file__).resolve().parents[1] / "training" / "configs" / "finetune_coco.yaml"
SMALL = ["model.backbone=hrnet_cpu", "model.input_size=[96,96]", "model.half_resolution=false",
         "model.head_layout=shared", "model.head_blocks=1", "workers=0", "val_every=1",
         "batch_size=4", "calibrate=false"]
OWN = EmotionSet("own", OWN_EMOTIONS)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The same scenes in both spellings (and two scenes without people in train)."""
    root = tmp_path_factory.mktemp("own_data")
    made = {}
    for spelling in ("emotions", "cvat"):
        made[spelling] = root / spelling
        generate_coco(made[spelling], images=14, seed=5, size=96, spelling=spelling,
                      negatives=2)
    return made


@pytest.fixture
def folder(folders, tmp_path):
    """A copy of the emotions-spelling folder a test may change."""
    copy = tmp_path / "own"
    shutil.copytree(folders["emotions"], copy)
    return copy


def _edit(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


# --------------------------------------------------------------------------- the format


def test_both_spellings_read_the_same_people(folders):
    assert is_coco_folder(folders["emotions"])
    assert not is_coco_folder(folders["emotions"] / "images")
    for split in ("train", "val", "test"):
        listed, _ = load_coco(folders["emotions"], split, OWN)
        checked, report = load_coco(folders["cvat"], split, OWN)
        assert [r.path.name for r in listed] == [r.path.name for r in checked]
        for a, b in zip(listed, checked, strict=True):
            assert a.categories == OWN_EMOTIONS and a.category_set == "own"
            assert len(a.people) == len(b.people)
            for p, q in zip(a.people, b.people, strict=True):
                assert p.box == pytest.approx(q.box)
                assert np.array_equal(p.categories, q.categories)
                assert np.allclose(p.continuous, q.continuous)
        # CVAT's occluded and rotation are not emotions; people with none of the four are
        # counted (a frown at a party with arms up: no emotion of this set)
        assert all("a person with no emotion of the set own" in line
                   for line in report.warnings()), report.warnings()
    train, _ = load_coco(folders["emotions"], "train", OWN)
    assert sum(not r.people for r in train) == 2  # negatives are valid images
    labelled = [p for r in train for p in r.people]
    assert all(np.isfinite(p.continuous).all() and 1 <= p.continuous.min() for p in labelled)
    assert {OWN_EMOTIONS[i] for p in labelled for i in p.category_indices} == set(OWN_EMOTIONS)


def test_the_cvat_export_of_a_labelled_frame_reads_as_drawn(tmp_path):
    """A hand-written CVAT COCO 1.0 export: checkbox attributes, an extra category, a text
    attribute, a misspelt checkbox (left out and named), continuous values on 0..1."""
    import cv2

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "frame_000000.jpg"), np.zeros((60, 80, 3), np.uint8))
    document = {
        "licenses": [], "info": {},
        "categories": [{"id": 1, "name": "robot"}, {"id": 2, "name": "person"}],
        "images": [{"id": 7, "file_name": "frame_000000.jpg", "width": 80, "height": 60}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 2, "bbox": [10.0, 5.0, 20.0, 40.0],
             "iscrowd": 0, "attributes": {"occluded": False, "Happy": True, "sad": False,
                                          "Hapy": True, "note": "by the door",
                                          "valence": 0.75}},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [50.0, 5.0, 10.0, 10.0]},
            {"id": 3, "image_id": 7, "category_id": 2, "bbox": [79.5, 0.0, 1.0, 61.0],
             "emotions": ["SAD "], "arousal": 0.0},
        ]}
    (tmp_path / "train.json").write_text(json.dumps(document))
    records, report = load_coco(tmp_path, "train", EmotionSet("own", ("Happy", "Sad"),
                                                               (0.0, 1.0)))
    (record,) = records
    happy, sad = record.people
    assert happy.box == (10.0, 5.0, 30.0, 45.0) and list(happy.categories) == [1.0, 0.0]
    assert happy.continuous[0] == pytest.approx(1 + 9 * 0.75) and np.isnan(happy.continuous[1])
    assert sad.box == (79.5, 0.0, 80.0, 60.0)  # within 1 px of the edge: clipped
    assert list(sad.categories) == [0.0, 1.0] and sad.continuous[1] == pytest.approx(1.0)
    assert report.people == 2 and len(report.skipped) == 1  # the robot
    assert any("'Hapy' is not an emotion" in line for line in report.warnings())


def _one_image(folder: Path, size=(80, 60), exif_orientation: int | None = None) -> str:
    """An image file in ``folder/images`` (stored ``size`` w x h; optionally an EXIF
    orientation, written with Pillow); returns its file_name."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (90, 120, 30))
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[0x0112] = exif_orientation
    image.save(folder / "images" / "frame.jpg", exif=exif.tobytes())
    return "frame.jpg"


def test_other_tools_spellings_read_as_emotions(tmp_path):
    """Checkboxes as 1/0, a select attribute naming the emotion, and boxes whose category is
    the emotion (Label Studio: no person category); a person with no emotion is counted."""
    name = _one_image(tmp_path)
    document = {
        "images": [{"id": 1, "file_name": name, "width": 80, "height": 60}],
        "categories": [{"id": 3, "name": "Sad"}, {"id": 4, "name": "happy"},
                       {"id": 5, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 1, 10, 10],
             "attributes": {"Happy": 1}},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [40, 1, 10, 10],
             "attributes": {"emotion": "HAPPY", "Sad": 0}},
            {"id": 4, "image_id": 1, "category_id": 5, "bbox": [60, 1, 10, 10]},
        ]}
    (tmp_path / "train.json").write_text(json.dumps(document))
    (record,) = load_coco(tmp_path, "train", EmotionSet("own", ("Happy", "Sad")))[0]
    assert [list(p.categories) for p in record.people] == [[1, 0], [1, 1], [1, 1]]
    document["categories"] = [{"id": 3, "name": "person"}, {"id": 4, "name": "x"}]
    (tmp_path / "train.json").write_text(json.dumps(document))
    records, report = load_coco(tmp_path, "train", EmotionSet("own", ("Happy", "Sad")))
    assert [list(p.categories) for p in records[0].people] == [[1, 0], [1, 0]]
    assert not any("no emotion" in line for line in report.warnings())
    document["annotations"][1]["attributes"] = {}
    (tmp_path / "train.json").write_text(json.dumps(document))
    _, report = load_coco(tmp_path, "train", EmotionSet("own", ("Happy", "Sad")))
    assert any("annotation 2: a person with no emotion" in line for line in report.warnings())
    with pytest.raises(CocoFormatError, match="annotation 2: 0 emotions for the single-label"):
        load_coco(tmp_path, "train", EmotionSet("own", ("Happy", "Sad"), single_label=True))


def test_an_exif_rotated_photo_is_read_upright(tmp_path):
    """A phone photo stored 80x60 with EXIF orientation 6 reads 60x80 (as the trainer and
    caer-infer decode it): boxes annotated upright fit; a size annotated otherwise is refused
    naming both."""
    name = _one_image(tmp_path, exif_orientation=6)
    document = {"images": [{"id": 1, "file_name": name, "width": 60, "height": 80}],
                "annotations": [{"id": 1, "image_id": 1, "bbox": [5, 50, 40, 29],
                                 "emotions": ["Sad"]}], "categories": []}
    (tmp_path / "train.json").write_text(json.dumps(document))
    (record,) = load_coco(tmp_path, "train", EmotionSet("own", ("Happy", "Sad")))[0]
    assert (record.width, record.height) == (60, 80)
    assert record.people[0].box == (5.0, 50.0, 45.0, 79.0)
    document["images"][0].update(width=80, height=60)
    (tmp_path / "train.json").write_text(json.dumps(document))
    with pytest.raises(CocoFormatError, match=r"image 1: annotated as 80x60, but .* is 60x80 "
                                              r"upright"):
        load_coco(tmp_path, "train", EmotionSet("own", ("Happy", "Sad")))


BAD = {
    "not JSON": (lambda p: p.write_text("{images: ["), "not JSON"),
    "not COCO": (lambda p: p.write_text(json.dumps({"images": []})), "no 'annotations' list"),
    "missing image": (lambda p: _edit(p, lambda d: d["images"][0].update(
        file_name="images/gone.jpg")), "image 1: no such image file"),
    "box outside": (lambda p: _edit(p, lambda d: d["annotations"][0].update(
        bbox=[90.0, 10.0, 30.0, 30.0])), "annotation 1: box [90.0, 10.0, 30.0, 30.0]"),
    "zero box": (lambda p: _edit(p, lambda d: d["annotations"][0].update(
        bbox=[10.0, 10.0, 0.0, 30.0])), "annotation 1: box of zero size"),
    "unknown emotion": (lambda p: _edit(p, lambda d: d["annotations"][1].update(
        emotions=["Hungry"])), "annotation 2: emotion 'Hungry' is not in the set own"),
    "no such image id": (lambda p: _edit(p, lambda d: d["annotations"][2].update(
        image_id=999)), "annotation 3: image id 999 does not exist"),
    "duplicate annotation": (lambda p: _edit(p, lambda d: d["annotations"][1].update(
        id=d["annotations"][0]["id"])), "annotation 1: duplicate annotation id"),
    "duplicate image": (lambda p: _edit(p, lambda d: d["images"][1].update(
        id=d["images"][0]["id"])), "image 1: duplicate image id"),
    "continuous range": (lambda p: _edit(p, lambda d: d["annotations"][0].update(
        valence=11)), "annotation 1: valence 11 outside its range 1..10"),
    "no people": (lambda p: _edit(p, lambda d: d.update(annotations=[])), "no people"),
    "image twice": (lambda p: _edit(p, lambda d: d["images"][1].update(
        file_name=d["images"][0]["file_name"])), "image 2: "),
    "string image id": (lambda p: _edit(p, lambda d: d["annotations"][0].update(
        image_id="1")), "image id '1' does not exist in the file's images (the images' ids "),
    "size annotated wrong": (lambda p: _edit(p, lambda d: d["images"][0].update(width=50)),
                             "image 1: annotated as 50x96, but"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_naming_file_id_and_problem(folder, case):
    spoil, expected = BAD[case]
    path = folder / "train.json"
    spoil(path)
    with pytest.raises(CocoFormatError) as caught:
        load_coco(folder, "train", OWN)
    message = str(caught.value)
    assert str(path) in message and expected in message, message
    assert "\n" not in message


def test_training_refuses_bad_data_with_one_line_and_writes_nothing(folder, tmp_path, capsys):
    _edit(folder / "val.json", lambda d: d["annotations"][0].update(emotions=["Hungry"]))
    out = tmp_path / "run"
    code = train_main(["--config", str(FINETUNE), "--data", str(folder), "--out", str(out),
                       "--no-progress", f"data.emotions={list(OWN_EMOTIONS)}", *SMALL])
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 1 and len(error) == 1
    assert "val.json: annotation 1: emotion 'Hungry'" in error[0]
    assert not out.exists()


# --------------------------------------------------------------------------- the config


def test_the_emotion_set_is_the_configs(folders):
    data = folders["emotions"]
    own = load_config(FINETUNE, ["data.emotions=[Happy, Sad, Neutral, Surprised]"], data)
    assert own.model.categories == {"own": ("Happy", "Sad", "Neutral", "Surprised")}
    assert own.data.train == own.data.val == ("coco",)  # found by its train.json
    assert load_config(None, ["data.emotions=heco"], data).model.categories.keys() == {"heco"}
    assert load_config(None, [], data).model.categories.keys() == {"emotic"}
    again = load_config(None, [f"{k}={json.dumps(v)}" for k, v in
                               (("data", own.data.to_dict()),
                                ("model", {"categories": own.model.categories}))])
    assert again.model.categories == own.model.categories  # a run folder's config reloads
    bad = {"data.emotions=[Happy, happy]": "names Happy, happy twice",
           "data.emotions=3": "data.emotions must be",
           "model.categories=[emotic]": "disagree",
           "init_from=missing.pt": "init_from: missing.pt: no such file"}
    for override, expected in bad.items():
        extra = [] if override.startswith("data.") else ["data.emotions=[Happy]"]
        with pytest.raises(ConfigError, match=expected):
            load_config(None, [override, *extra], data)


# --------------------------------------------------------------------------- fine-tuning


def _small(categories: dict[str, tuple[str, ...]], layout: str = "shared") -> torch.nn.Module:
    config = ModelConfig(backbone="hrnet_cpu", categories=categories, input_size=(64, 64),
                         head_layout=layout, head_blocks=1, half_resolution=True,
                         person_centric=True, background=True)
    return build_model(config, seed=1)


@pytest.mark.parametrize("layout", ["shared", "benet"])
def test_init_model_loads_matching_categories_and_leaves_new_ones(tmp_path, layout):
    from caer_ros.model.checkpoint import save_model_file
    from caer_ros.model.inference_settings import InferenceSettings

    source = _small({"emotic": ("Anger", "Happiness", "Sadness", "Peace")}, layout)
    path = tmp_path / "source.pt"
    save_model_file(path, source, InferenceSettings.for_model(source.config))
    target = _small({"own": ("happiness", "Calm", "Sadness")}, layout)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_init_model(target, path)
    assert report.categories == {"own.happiness": "emotic.Happiness", "own.Calm": "new",
                                 "own.Sadness": "emotic.Sadness"}
    loaded, new = target.state_dict(), source.state_dict()
    for key in new:
        if key.startswith(("backbone.", "detection.")):
            assert torch.equal(loaded[key], new[key]), key
    final = {"shared": "emotion.quarter_outputs.{}.3.weight",
             "benet": "emotion.stacks.{}.quarter_outputs.{}.3.weight"}[layout]
    own_key, emotic_key = final.format("own", "own"), final.format("emotic", "emotic")
    if layout == "shared":  # the last layer's rows follow the names
        assert torch.equal(loaded[own_key][0], new[emotic_key][1])
        assert torch.equal(loaded[own_key][2], new[emotic_key][2])
        assert torch.equal(loaded[own_key][1], fresh[own_key][1])  # Calm: as built
        assert own_key in report.loaded
    else:  # BENet's layers are as wide as the set: new
        assert own_key in report.new
    for head in ("person_centric", "background"):
        rows = [k for k in loaded if k.startswith(f"{head}.classifiers.own")
                and loaded[k].shape[0] == 3 and k.endswith("weight")]
        assert rows and torch.equal(loaded[rows[-1]][2], new[rows[-1].replace("own", "emotic")][2])
    assert "summary" not in report.summary() and "loaded" in report.summary()


@pytest.fixture(scope="module")
def trained(folders, tmp_path_factory):
    """A model trained from scratch on the CVAT-spelling folder (a few steps)."""
    out = tmp_path_factory.mktemp("scratch") / "run"
    code = train_main(["--config", str(FINETUNE), "--data", str(folders["cvat"]), "--out",
                       str(out), "--no-progress", f"data.emotions={list(OWN_EMOTIONS)}",
                       "max_steps=3", *SMALL])
    assert code == 0
    return out / "best.pt"


def test_a_model_trained_on_own_data_reports_its_names(trained, folders, tmp_path, capsys):
    info, _ = read_model_file(trained)
    assert info.config.categories == {"own": OWN_EMOTIONS}
    predictor = Predictor.from_file(trained)
    assert predictor.categories == OWN_EMOTIONS and predictor.category_set == "own"
    report = tmp_path / "eval.json"
    code = evaluation.main(["--model", str(trained), "--data", str(folders["emotions"]),
                            "--split", "test", "--no-progress", "--json", str(report)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(report.read_text())
    assert result["dataset"] == "coco" and result["category_set"] == "own"
    assert set(result["per_category_ap"]) == set(OWN_EMOTIONS)
    assert result.get("ccc") is None or set(result["ccc"]) == {"valence", "arousal", "dominance"}


def test_finetuning_loads_what_fits_and_freezes_the_backbone_first(trained, folders, tmp_path,
                                                                   capsys):
    out = tmp_path / "finetuned"
    code = train_main(["--config", str(FINETUNE), "--data", str(folders["emotions"]), "--out",
                       str(out), "--no-progress",
                       "data.emotions=[Calm, Happiness, Sadness, Surprise, Joy]",
                       f"init_from={trained}", "max_steps=2", "freeze_backbone_steps=2",
                       "workers=0", "batch_size=4", "calibrate=false", "val_every=1"])
    printed, errors = capsys.readouterr()
    assert code == 0, errors
    assert "init_from" in printed and "loaded" in printed
    assert "own.Calm <- own.Calm, own.Happiness <- own.Happiness" in printed
    assert "own.Joy <- new" in printed
    before = read_model_file(trained)[1]
    after = read_model_file(out / "final.pt")[1]
    backbone = [k for k in after if k.startswith("backbone.") and "num_batches" not in k]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    heads = [k for k in after if k.startswith("detection.") and k.endswith("weight")]
    assert any(not torch.equal(before[k], after[k]) for k in heads)
    info, _ = read_model_file(out / "final.pt")
    assert info.config.categories == {"own": ("Calm", "Happiness", "Sadness", "Surprise",
                                              "Joy")}
    with pytest.raises(ConfigError, match="give one"):
        load_config(FINETUNE, [f"init_from={trained}", "init_backbone=x.pth"],
                    folders["emotions"])
    assert info.config.backbone == "hrnet_cpu"  # the architecture came from the file
