"""ModelConfig / BackboneConfig / InferenceSettings: plain-data round trips and validation."""

from __future__ import annotations

import json

import pytest

from caer_ros.labels import EMOTIC, HECO
from caer_ros.model import InferenceSettings, ModelConfig
from caer_ros.model.config import BACKBONE_PRESETS, BackboneConfig, StageConfig, backbone_preset

PLAIN = (type(None), bool, int, float, str)


def assert_plain(value):
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for item in value.values():
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert isinstance(value, PLAIN), type(value)


def test_presets_are_data():
    assert set(BACKBONE_PRESETS) == {"hrnet_w32", "benet", "hrnet_w18_small", "hrnet_cpu"}
    w32, benet = backbone_preset("hrnet_w32"), backbone_preset("benet")
    assert [s.num_modules for s in w32.stages] == [1, 4, 3]
    assert [s.num_modules for s in benet.stages] == [2, 2, 2]
    assert benet.stage4.num_blocks == (3, 3, 3, 3) and w32.stage4.num_blocks == (4, 4, 4, 4)
    assert w32.attention is None and benet.attention is not None
    small = backbone_preset("hrnet_w18_small")
    assert small.stage1_blocks == 2 and small.stage4.num_channels == (18, 36, 72, 144)


def test_cpu_preset_builds_a_small_benet():
    """hrnet_cpu (the learnability benchmark's backbone) builds, runs at 128x128 and is
    several times smaller than hrnet_w18_small."""
    import torch

    from caer_ros.model import build_model, parameter_counts

    cpu = backbone_preset("hrnet_cpu")
    assert [s.num_modules for s in cpu.stages] == [1, 1, 1] and cpu.stage1_blocks == 1
    assert cpu.stage4.num_channels == (16, 32, 64, 128) and cpu.attention is None
    config = ModelConfig(backbone="hrnet_cpu", input_size=(128, 128), head_blocks=1,
                         half_resolution=False, person_centric=False, background=False)
    model = build_model(config, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128))
    assert out.quarter.emotions["emotic"].shape == (1, 26, 32, 32) and out.half is None
    small = build_model(ModelConfig(backbone="hrnet_w18_small", input_size=(128, 128),
                                    head_blocks=1, half_resolution=False,
                                    person_centric=False, background=False), seed=0)
    assert parameter_counts(model).total * 3 < parameter_counts(small).total


def test_model_config_round_trips_through_plain_data():
    config = ModelConfig(backbone="hrnet_w32", categories={"heco": HECO, "emotic": EMOTIC},
                         continuous=True, input_size=(384, 512), attention=True,
                         head_blocks=2, half_resolution=False, background=False)
    data = config.to_dict()
    assert_plain(data)
    again = ModelConfig.from_dict(json.loads(json.dumps(data)))
    assert again == config
    assert again.primary_set == "heco"
    assert list(again.categories) == ["heco", "emotic"]
    assert again.backbone_config().attention is not None


def test_explicit_backbone_round_trips():
    layout = BackboneConfig(stage2=StageConfig(1, (1, 1), (8, 16)),
                            stage3=StageConfig(1, (1, 1, 1), (8, 16, 32)),
                            stage4=StageConfig(1, (1, 1, 1, 1), (8, 16, 32, 64), "bottleneck"),
                            stage1_blocks=1)
    config = ModelConfig(backbone=layout)
    data = config.to_dict()
    assert_plain(data)
    assert ModelConfig.from_dict(data).backbone_config() == layout
    assert config.backbone_name == "custom"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"backbone": "resnet50"}, "unknown backbone preset 'resnet50'; known presets: benet, "
                                   "hrnet_cpu, hrnet_w18_small, hrnet_w32"),
        ({"input_size": (500, 512)}, "multiples of 32"),
        ({"input_size": 512}, "input_size"),
        ({"categories": {}}, "non-empty"),
        ({"categories": {"Emotic": EMOTIC}}, "lower-case"),
        ({"categories": {"continuous": EMOTIC}}, "reserved"),
        ({"categories": {"emotic": ("Anger", "Anger")}}, "duplicate"),
        ({"categories": {"emotic": "Anger"}}, "list of names"),
        ({"head_blocks": -1}, "head_blocks"),
        ({"head_channels": 0}, "head_channels"),
        ({"continuous": "yes"}, "continuous must be a bool"),
        ({"input_std": (0.2, 0.0, 0.2)}, "input_std must be positive"),
    ],
)
def test_model_config_validation(changes, message):
    with pytest.raises(ValueError) as error:
        ModelConfig(**changes)
    assert message in str(error.value)


def test_from_dict_names_unknown_and_missing_keys():
    data = ModelConfig().to_dict()
    with pytest.raises(ValueError, match=r"unknown model config key\(s\) \['colour'\]"):
        ModelConfig.from_dict({**data, "colour": "red"})
    stage = backbone_preset("benet").stage2.to_dict()
    del stage["num_channels"]
    with pytest.raises(ValueError, match="incomplete stage config"):
        StageConfig.from_dict(stage)
    with pytest.raises(ValueError, match="unknown block type 'wide'"):
        StageConfig(1, (1,), (8,), block="wide")
    with pytest.raises(ValueError, match="one entry per branch"):
        StageConfig(1, (1, 1), (8,))


def test_inference_settings_defaults_and_round_trip():
    config = ModelConfig(categories={"emotic": EMOTIC, "heco": HECO})
    settings = InferenceSettings.for_model(config, extraction="center")
    assert settings.detection_threshold == 0.3
    assert settings.emotion_thresholds == {"emotic": (0.5,) * 26, "heco": (0.5,) * 8}
    assert (settings.extraction, settings.peak_kernel, settings.top_k) == ("center", 3, 32)
    assert settings.fuse_scales is True and settings.flip_test is False
    data = settings.to_dict()
    assert_plain(data)
    assert InferenceSettings.from_dict(data) == settings


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"detection_threshold": 1.5}, "detection_threshold must be a number in [0, 1]"),
        ({"emotion_thresholds": {"emotic": [0.5] * 25 + [-0.1]}}, "in [0, 1]"),
        ({"extraction": "peak"}, "extraction must be one of box_mean, center"),
        ({"peak_kernel": 4}, "peak_kernel"),
        ({"top_k": 0}, "top_k"),
        ({"emotion_thresholds": {"emotic": [0.5] * 3}}, "has 3 values for 26 categories"),
        ({"emotion_thresholds": {"heco": [0.5] * 8}}, "differ from the model's category sets"),
    ],
)
def test_inference_settings_validation(changes, message):
    config = ModelConfig()
    with pytest.raises(ValueError) as error:
        settings = InferenceSettings(**changes)
        settings.check_against(config)
    assert message in str(error.value)


def test_inference_settings_reject_unknown_keys():
    with pytest.raises(ValueError, match="unknown inference setting"):
        InferenceSettings.from_dict({"detection_threshold": 0.2, "nms": True})
