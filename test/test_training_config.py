"""training.config: YAML + key=value overrides into checked dataclasses; shipped configs load."""

from __future__ import annotations

from pathlib import Path

import pytest

from caer_ros.labels import EMOTIC, HECO
from training.config import ConfigError, apply_override, config_from_dict, load_config

CONFIG_DIR = Path(__file__).parent.parent / "training" / "configs"
# teacher_*.yaml are python -m training.train_teacher configs (training.train_teacher)
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("teacher_"))
TEACHER_CONFIGS = sorted(CONFIG_DIR.glob("teacher_*.yaml"))


def test_defaults_are_benet():
    config = config_from_dict({})
    assert config.optim.name == "adam" and config.optim.lr == 1e-3
    assert config.tasks == ("bu", "det", "pc", "bg")
    assert config.pre_transforms == {"raw": 0.25, "random_mask": 0.25, "extract_subject": 0.25,
                                     "mask_all": 0.25}
    assert config.routes["extract_subject"] == ("pc",) and config.routes["mask_all"] == ("bg",)
    assert config.model.categories == {"emotic": EMOTIC}
    assert config.model.person_centric and config.model.background


def test_overrides_are_yaml_and_dotted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  backbone: hrnet_w18_small\noptim:\n  lr: 1e-4\nepochs: 3\n")
    config = load_config(path, ["epochs=5", "optim.lr=2e-3", "model.input_size=[128, 256]",
                                "tasks=[bu, det]"], data_root=tmp_path)
    assert config.epochs == 5 and config.optim.lr == 2e-3
    assert config.model.input_size == (128, 256)
    assert config.data.root == str(tmp_path)
    # person_centric / background follow the tasks unless set
    assert not config.model.person_centric and not config.model.background
    # extract_subject and mask_all train nothing enabled: never drawn
    assert config.effective_pre_transforms() == {"raw": 0.25, "random_mask": 0.25,
                                                 "extract_subject": 0.0, "mask_all": 0.0}


def test_two_category_sets():
    config = config_from_dict({"model": {"categories": ["emotic", "heco"]},
                               "data": {"train": ["emotic", "heco"]}})
    assert config.model.categories == {"emotic": EMOTIC, "heco": HECO}
    assert config.loss_of("heco") == "focal"


@pytest.mark.parametrize("raw, words", [
    ({"epoch": 3}, ["unknown config keys", "epoch"]),
    ({"tasks": ["bu", "faces"]}, ["tasks", "faces"]),
    ({"tasks": []}, ["tasks"]),
    ({"optim": {"lr": -1}}, ["optim.lr"]),
    ({"optim": {"name": "rmsprop"}}, ["optim.name"]),
    ({"optim": {"betas": 1}}, ["optim", "betas"]),
    ({"batch_size": 0}, ["batch_size"]),
    ({"pre_transforms": {"cutout": 0.5}}, ["cutout"]),
    ({"pre_transforms": {"raw": -0.1}}, ["pre_transforms.raw"]),
    ({"routes": {"raw": ["det", "heads"]}}, ["routes.raw", "heads"]),
    ({"tasks": ["pc"], "pre_transforms": {"extract_subject": 0}}, ["no pre-transform"]),
    ({"model": {"person_centric": False}}, ["pc", "person_centric"]),
    ({"data": {"train": ["emotic", "heco"]}}, ["heco", "category"]),
    ({"emotion_loss": {"emotic": "hinge"}}, ["emotion_loss.emotic"]),
    ({"emotion_loss": {"heco": "ce"}}, ["heco"]),
    ({"model": {"input_size": [100, 100]}}, ["model", "input_size"]),
    ({"model": {"categories": ["emotic", "affect"]}}, ["model.categories", "affect"]),
    ({"augment": {"flip_p": 2}}, ["augment", "flip_p"]),
    ({"device": "tpu"}, ["device"]),
    ({"budget_minutes": 0}, ["budget_minutes"]),
])
def test_bad_configs_name_the_field(raw, words):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    for word in words:
        assert word in str(info.value)


def test_bad_override_and_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        apply_override({}, "epochs")
    with pytest.raises(ConfigError, match="not a section"):
        apply_override({"epochs": 3}, "epochs.x=1")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path):
    config = load_config(path, data_root="/data")
    assert config.to_dict()["model"]["categories"]


@pytest.mark.parametrize("path", TEACHER_CONFIGS, ids=[p.stem for p in TEACHER_CONFIGS])
def test_shipped_teacher_configs_load(path):
    from training.train_teacher import load_teacher_config

    assert load_teacher_config(path, [], "/data").epochs >= 1
