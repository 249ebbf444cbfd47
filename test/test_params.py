"""Node parameters: validation, defaults, and config/emotion.yaml agreeing with the node."""

from __future__ import annotations

import array
import math
from dataclasses import fields

import numpy as np
import pytest
import yaml

from caer_ros.ros import params as node_params
from caer_ros.ros.params import DYNAMIC, NodeParams, ParamsError, check, emotion_thresholds
from conftest import REPO

CONFIG = REPO / "config" / "emotion.yaml"
CATEGORIES = ("Anger", "Happiness", "Sadness")


def _yaml_params() -> dict:
    return yaml.safe_load(CONFIG.read_text())["emotion_node"]["ros__parameters"]


def test_yaml_values_equal_the_node_defaults():
    assert _yaml_params() == node_params.defaults()


def test_yaml_documents_every_parameter():
    lines = CONFIG.read_text().splitlines()
    for name in node_params.defaults():
        (index,) = [i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:")]
        assert lines[index - 1].strip().startswith("#"), f"{name} has no comment above it"


def test_yaml_defaults_are_the_project_defaults():
    values = _yaml_params()
    assert values["backend"] == "auto"  # by the model file's type
    assert values["model_path"] == "models/emotion.onnx"
    assert values["qos_reliability"] == "best_effort"
    assert values["autostart"] is True  # a plain node unless asked: as before lifecycle


def test_defaults_validate():
    p = NodeParams()
    assert p.providers == () and p.emotion_threshold == ()
    assert NodeParams.from_values(node_params.defaults()) == p


def test_node_declares_exactly_the_yaml_values(ros_env):
    """A real rclpy node named emotion_node, started with --params-file, as the launch file does.

    rcl reads an empty YAML list as "not set" (None): the parameters treat it as empty.
    """
    import rclpy

    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(CONFIG)], context=context)
    try:
        node = rclpy.create_node("emotion_node", context=context)
        declared = node_params.declare(node)
        assert set(declared) == {f.name for f in fields(NodeParams)}
        normalised = {k: [] if v is None else (list(v) if isinstance(v, array.array) else v)
                      for k, v in declared.items()}
        assert normalised == _yaml_params()
        assert NodeParams.from_values(declared) == NodeParams()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_when_each_parameter_may_change():
    """[runtime] ones always; autostart never; the others only while unconfigured (configure
    reads them): the rule the node's set-parameters callback applies (change_error)."""
    from caer_ros.ros.params import START_ONLY, change_error

    changes = {"detection_threshold": 0.4, "emotion_threshold": [0.2, 0.3, 0.4],
               "max_people": 3, "smoothing": 0.5, "max_rate_hz": 2.0,
               "single_label_threshold": True}
    assert set(changes) == DYNAMIC and START_ONLY == {"autostart"}
    for name, value in changes.items():
        assert change_error(name, value, configured=True) is None, name
        assert change_error(name, value, configured=False) is None, name
    static = {"model_path": "/m/other.onnx", "backend": "torch", "image_transport": "compressed",
              "qos_reliability": "reliable", "tracking": False, "category_set": "heco"}
    for name, value in static.items():
        error = change_error(name, value, configured=True)
        assert error.startswith(f"{name}: read-only while the node is configured"), error
        assert "cleanup" in error
        assert change_error(name, value, configured=False) is None, name
    for configured in (True, False):
        assert "read-only" in change_error("autostart", False, configured)
        # A bad value is refused with its own message in any state.
        assert change_error("model_path", "", configured).startswith("model_path: must be")
        assert change_error("max_people", 0, configured).startswith("max_people: must be")


def test_node_refuses_changing_autostart(ros_env):
    """Declared read-only on a real node: ROS refuses it before any callback; the others are
    left to the node's callback (test above; the node: test/test_lifecycle_node.py)."""
    import rclpy
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        node = rclpy.create_node("emotion_node", context=context)
        node_params.declare(node)
        (result,) = node.set_parameters([Parameter("autostart", value=False)])
        assert not result.successful and "read-only" in result.reason
        (result,) = node.set_parameters([Parameter("model_path", value="/m/other.onnx")])
        assert result.successful
        assert node_params.read(node)["model_path"] == "/m/other.onnx"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


BAD_VALUES = [
    ("model_path", ""), ("model_path", "   "), ("model_path", 3),
    ("backend", "tensorflow"), ("backend", None),
    ("device", "gpu"), ("device", "cuda:x"), ("device", "CUDA"),
    ("providers", ["CUDA"]), ("providers", ["CudaExecutionProvider"]), ("providers", [1]),
    ("fp16", "yes"), ("fp16", 1),
    ("detection_threshold", 1.5), ("detection_threshold", -0.5), ("detection_threshold", True),
    ("detection_threshold", "0.3"), ("detection_threshold", math.nan),
    ("emotion_threshold", [0.5, 1.2]), ("emotion_threshold", "0.5"),
    ("emotion_threshold", [0.5, None]), ("emotion_threshold", -0.1),
    ("max_people", 0), ("max_people", 2.5), ("max_people", True),
    ("image_transport", "theora"), ("qos_reliability", "reliable_ish"),
    ("publish_overlay", 1), ("tracking", "true"),
    ("smoothing", 1.0), ("smoothing", -0.1), ("smoothing", 2),
    ("max_rate_hz", -1.0), ("max_rate_hz", math.inf), ("max_rate_hz", [5.0]),
    ("autostart", "true"), ("autostart", 1),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_each_bad_value_gets_one_message_naming_it(name, value):
    with pytest.raises(ParamsError) as err:
        NodeParams(**{name: value})
    assert len(err.value.errors) == 1
    message = err.value.errors[0]
    assert message.startswith(f"{name}: ") and repr(value) in message, message
    _, error = check(name, value)
    assert error == message


def test_several_bad_values_give_one_message_each():
    with pytest.raises(ParamsError) as err:
        NodeParams.from_values({"backend": "tf", "max_people": 0, "smoothing": 1.0,
                                "tracking": True, "not_a_parameter": 1})
    assert [e.split(":")[0] for e in err.value.errors] == ["backend", "max_people", "smoothing"]
    assert str(err.value) == "; ".join(err.value.errors)


@pytest.mark.parametrize(
    ("name", "value", "normalised"),
    [
        ("max_rate_hz", 5, 5.0), ("smoothing", 0, 0.0), ("detection_threshold", -1, -1.0),
        ("detection_threshold", 1, 1.0),
        ("emotion_threshold", 0.4, (0.4,)), ("emotion_threshold", None, ()),
        ("emotion_threshold", [], ()), ("emotion_threshold", array.array("d", [0.1, 0.2]),
                                        (0.1, 0.2)),
        ("emotion_threshold", [0, 1], (0.0, 1.0)),
        ("providers", None, ()), ("providers", ["CPUExecutionProvider"],
                                  ("CPUExecutionProvider",)),
        ("device", "cuda:1", "cuda:1"), ("backend", "torch", "torch"),
    ],
)
def test_good_values_are_normalised(name, value, normalised):
    result = getattr(NodeParams(**{name: value}), name)
    assert result == normalised and type(result) is type(normalised)


def test_replace_validates():
    p = NodeParams().replace(smoothing=0.25)
    assert p.smoothing == 0.25
    with pytest.raises(ParamsError, match="smoothing"):
        p.replace(smoothing=1.5)


def test_emotion_thresholds_against_the_model():
    model = np.array([0.3, 0.4, 0.5])
    assert emotion_thresholds((), CATEGORIES, model).tolist() == pytest.approx([0.3, 0.4, 0.5])
    assert emotion_thresholds((0.7,), CATEGORIES, model).tolist() == pytest.approx([0.7] * 3)
    assert emotion_thresholds((0.1, 0.2, 0.3), CATEGORIES, model).dtype == np.float32
    with pytest.raises(ValueError, match="2 values, but the model has 3 categories") as err:
        emotion_thresholds((0.1, 0.2), CATEGORIES, model)
    assert "Anger, Happiness, Sadness" in str(err.value)
    with pytest.raises(ValueError, match="2 emotion thresholds for 3 categories"):
        emotion_thresholds((), CATEGORIES, model[:2])


def test_relative_model_path_is_resolved_against_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert node_params.resolve_model_path("models/emotion.onnx") == str(
        tmp_path / "models" / "emotion.onnx")
    assert node_params.resolve_model_path("/abs/m.pt") == "/abs/m.pt"


def test_ros_owned_parameters_are_passed_on_and_unknown_ones_named():
    for name in ("use_sim_time", "qos_overrides./camera/image_raw.subscription.reliability"):
        assert node_params.change_error(name, True, configured=True) is None
    assert node_params.change_error("use_sim_timer", True, configured=False) == \
        "unknown parameter 'use_sim_timer'"
    assert NodeParams(backend="auto").backend == "auto"
    _, error = node_params.check("backend", "tensorrt")
    assert error == "backend: must be one of auto, onnxruntime, torch, got 'tensorrt'"
