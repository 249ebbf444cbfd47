"""caer_ros.config_data: the one from-dict / to-dict of every config section."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from caer_ros.config_data import ConfigData, from_dict, to_dict
from caer_ros.model.config import BACKBONE_PRESETS, ModelConfig
from caer_ros.model.inference_settings import InferenceSettings
from training.config import AmalgamationConfig, ConfigError, config_from_dict
from training.teachers.models import ClassifierConfig
from training.train_teacher import TeacherTrainConfig
from training.train_teacher import config_from_dict as teacher_config_from_dict


class Oops(ValueError):
    pass


@dataclass(frozen=True)
class Inner(ConfigData):
    config_name: ClassVar[str] = "inner"

    size: tuple[int, int] = (1, 2)
    rate: float = 0.5

    def __post_init__(self) -> None:
        if self.rate > 1:
            raise ValueError(f"rate must be <= 1, got {self.rate}")


@dataclass(frozen=True)
class Outer(ConfigData):
    config_name: ClassVar[str] = "outer"
    config_error: ClassVar[type[Exception]] = Oops

    name: str
    count: int = 1
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    extra: Inner | None = None
    limit: float | None = None
    sets: dict[str, tuple[str, ...]] = field(default_factory=dict)


def test_round_trip_reads_lists_into_tuples_and_sections_into_dataclasses():
    raw = {"name": "a", "count": 3, "flag": True, "inner": {"size": [4, 5], "rate": 1},
           "extra": {"rate": 0.25}, "limit": None, "sets": {"x": ["p", "q"]}}
    made = Outer.from_dict(raw)
    assert made.inner == Inner((4, 5), 1) and made.extra == Inner(rate=0.25)
    assert made.sets == {"x": ("p", "q")}
    assert made.to_dict() == {**raw, "extra": {"size": [1, 2], "rate": 0.25}}
    assert Outer.from_dict(json.loads(json.dumps(made.to_dict()))) == made


@pytest.mark.parametrize(("raw", "message"), [
    ([1], "outer must be a mapping, got list"),
    ({"name": "a", "colour": 1}, "unknown outer keys ['colour']; known: ['count', 'extra', "
                                 "'flag', 'inner', 'limit', 'name', 'sets']"),
    ({}, "incomplete outer: name missing"),
    ({"name": "a", "count": True}, "count must be an integer, got True"),
    ({"name": "a", "count": 1.0}, "count must be an integer, got 1.0"),
    ({"name": "a", "flag": 1}, "flag must be true or false, got 1"),
    ({"name": 5}, "name must be a string, got 5"),
    ({"name": "a", "limit": "x"}, "limit must be a number or null, got 'x'"),
    ({"name": "a", "inner": 3}, "inner must be a mapping, got 3"),
    ({"name": "a", "inner": {"rate": "x"}}, "inner.rate must be a number, got 'x'"),
    ({"name": "a", "inner": {"size": [1, "b"]}}, "inner.size[1] must be an integer, got 'b'"),
    ({"name": "a", "inner": {"depth": 1}}, "unknown inner keys ['depth']"),
    ({"name": "a", "inner": {"rate": 2}}, "inner: rate must be <= 1, got 2"),
    ({"name": "a", "sets": {"x": ["p", 3]}}, "sets.x[1] must be a string, got 3"),
])
def test_errors_name_the_field_and_use_the_section_error_class(raw, message):
    with pytest.raises(Oops) as info:
        Outer.from_dict(raw)
    assert message in str(info.value)


def test_an_error_class_passed_in_wins_and_a_path_prefixes_the_fields():
    with pytest.raises(KeyError, match="top.inner.rate must be a number"):
        from_dict(Outer, {"name": "a", "inner": {"rate": "x"}}, path="top.", error=KeyError)


def test_every_config_section_round_trips_through_plain_data():
    model = ModelConfig(backbone=BACKBONE_PRESETS["hrnet_cpu"], input_size=(128, 96))
    sections = [model, InferenceSettings.for_model(model, extraction="center"),
                AmalgamationConfig(teachers=("a.pt", "b.pt")),
                ClassifierConfig(backbone="hrnet_cpu", classes=("a", "b")),
                teacher_config_from_dict({"input_size": [64, 64], "classes": ["a", "b"],
                                          "augment": False})]
    for section in sections:
        plain = json.loads(json.dumps(to_dict(section)))  # plain data only
        assert type(section).from_dict(plain) == section
    train = config_from_dict({"model": {"categories": ["emotic", "heco"]},
                              "data": {"train": ["emotic", "heco"]},
                              "distill": {"teacher": "t.pt"}, "epochs": 3,
                              "amalgamation": {"teachers": ["t.pt"]}})
    assert config_from_dict(json.loads(json.dumps(train.to_dict()))) == train
    assert isinstance(train.inference, InferenceSettings)
    assert train.inference.extraction == "center"
    assert isinstance(TeacherTrainConfig().to_dict()["data"], dict)


def test_training_sections_raise_config_errors_naming_the_path():
    with pytest.raises(ConfigError, match=r"optim\.lr must be a number, got 'x'"):
        config_from_dict({"optim": {"lr": "x"}})
    with pytest.raises(ConfigError, match=r"data\.heco_csv must be a string, got 5"):
        config_from_dict({"data": {"heco_csv": 5}})
    with pytest.raises(ConfigError, match=r"incomplete amalgamation: amalgamation\.teachers"):
        config_from_dict({"amalgamation": {}})
