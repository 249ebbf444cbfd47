"""Node parameters: validation, defaults, and config/emotion.yaml agreeing with the node."""

from __future__ import annotations

import array
import math
import os
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
    return yaml.safe_load(CONFIG.read_text())["/**/emotion_node"]["ros__parameters"]


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
        declared, refused = node_params.declare(node)
        assert refused == {}
        assert set(declared) == {f.name for f in fields(NodeParams)}
        normalised = {k: [] if v is None else (list(v) if isinstance(v, array.array) else v)
                      for k, v in declared.items()}
        assert normalised == _yaml_params()
        assert NodeParams.from_values(declared) == NodeParams()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_params_file_reaches_a_renamed_node_in_a_namespace(ros_env, tmp_path):
    """config/emotion.yaml's emotion_node section reaches a renamed node in a namespace (one
    node per camera) as the launch file gives it (params_for_node); a section named after
    that node sets its own values over it; -p still overrides the file."""
    import rclpy

    from caer_ros.ros.launch_command import params_for_node

    assert params_for_node(CONFIG) == CONFIG  # the default node reads the file itself
    params = tmp_path / "two_cameras.yaml"
    params.write_text(CONFIG.read_text() + "/head/head_emotion:\n  ros__parameters:\n"
                      "    max_people: 3\n")
    head_file = params_for_node(params, "head", "head_emotion")
    base_file = params_for_node(params, "/base/", "base_emotion")
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(head_file), "--params-file",
                     str(base_file), "-p", "smoothing:=0.25"], context=context)
    try:
        head = rclpy.create_node("head_emotion", namespace="/head", context=context)
        base = rclpy.create_node("base_emotion", namespace="/base", context=context)
        head_values, _ = node_params.declare(head)
        base_values, _ = node_params.declare(base)
        assert head_values["max_people"] == 3 and head_values["smoothing"] == 0.25
        assert head_values["model_path"] == _yaml_params()["model_path"]
        assert NodeParams.from_values(base_values) == NodeParams(smoothing=0.25)
        head.destroy_node()
        base.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    bad = tmp_path / "not_yaml.yaml"
    bad.write_text("emotion_node: [unclosed")
    assert params_for_node(bad, "head") == bad  # rcl reports what is wrong with it
    assert params_for_node(params, "head", "head_emotion") == head_file  # written once


def test_params_file_reaches_the_default_node_in_any_namespace(ros_env, tmp_path):
    """The shipped section (/**/emotion_node) reaches emotion_node under a namespace an
    including launch file pushed (/robot1/head), and -p still overrides it, a value of
    another type too (the node's checks then name it)."""
    import rclpy

    from caer_ros.ros.launch_command import params_for_node

    edited = tmp_path / "edited.yaml"
    edited.write_text(CONFIG.read_text().replace("max_people: 20", "max_people: 5"))
    assert params_for_node(edited, "head") == edited  # no copy needed
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(edited), "-p", "smoothing:=abc"],
               context=context)
    try:
        node = rclpy.create_node("emotion_node", namespace="/robot1/head", context=context)
        values, _ = node_params.declare(node)
        assert values["max_people"] == 5 and values["smoothing"] == "abc"
        with pytest.raises(ParamsError, match="smoothing: must be a number"):
            NodeParams.from_values(values)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_descriptors_show_ranges_and_when_each_may_change(ros_env):
    """What ros2 param describe and rqt_reconfigure show: floating-point and integer ranges,
    autostart read-only, and when each parameter may change."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        node = rclpy.create_node("emotion_node", context=context)
        node_params.declare(node)
        described = {d.name: d for d in node.describe_parameters(
            [f.name for f in fields(NodeParams)])}
        ranges = {name: (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value)
                  for name, d in described.items() if d.floating_point_range}
        assert ranges == {"detection_threshold": (-1.0, 1.0), "emotion_threshold": (0.0, 1.0),
                          "smoothing": (0.0, 1.0), "max_rate_hz": (0.0, node_params.MAX_RATE_HZ)}
        integer = {name: (d.integer_range[0].from_value, d.integer_range[0].to_value)
                   for name, d in described.items() if d.integer_range}
        assert integer == {"max_people": (1, node_params.MAX_PEOPLE)}
        assert [n for n, d in described.items() if d.read_only] == ["autostart"]
        assert "any time" in described["smoothing"].additional_constraints
        assert "unconfigured" in described["model_path"].additional_constraints
        assert all(d.description for d in described.values())
        # rclpy itself refuses a value outside the range, before the node's callback.
        from rclpy.parameter import Parameter

        (result,) = node.set_parameters([Parameter("max_people", value=5000)])
        assert not result.successful and "max_people" in result.reason
        (result,) = node.set_parameters([Parameter("smoothing", value=1.5)])
        assert not result.successful and "smoothing" in result.reason
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_a_value_outside_its_range_at_start_is_refused_with_its_name(ros_env):
    """-p max_people:=5000 (or a params file): rclpy refuses it when the node declares it; the
    parameter keeps its default and declare returns the error for the node to report."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "-p", "max_people:=5000", "-p", "smoothing:=0.5"],
               context=context)
    try:
        node = rclpy.create_node("emotion_node", context=context)
        values, refused = node_params.declare(node)
        assert list(refused) == ["max_people"]
        assert "max_people" in refused["max_people"] and "5000" in refused["max_people"]
        assert values["max_people"] == NodeParams().max_people
        assert values["smoothing"] == 0.5
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_tensorrt_provider_options_come_from_the_parameters(tmp_path):
    from caer_ros.ros.params import provider_specs, tensorrt_options

    assert provider_specs(NodeParams()) is None  # chosen from device
    params = NodeParams(providers=("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                   "CPUExecutionProvider"),
                        fp16=True, tensorrt_engine_cache=str(tmp_path / "engines"))
    trt, cuda, cpu = provider_specs(params)
    assert (cuda, cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert trt == ("TensorrtExecutionProvider", tensorrt_options(params))
    assert trt[1] == {"trt_fp16_enable": True, "trt_int8_enable": False,
                      "trt_engine_cache_enable": True,
                      "trt_engine_cache_path": str(tmp_path / "engines"),
                      "trt_timing_cache_enable": True,
                      "trt_timing_cache_path": str(tmp_path / "engines")}
    no_cache = tensorrt_options(params.replace(tensorrt_engine_cache="", tensorrt_int8=True))
    assert no_cache == {"trt_fp16_enable": True, "trt_int8_enable": True}
    home = tensorrt_options(NodeParams(providers=("TensorrtExecutionProvider",)))
    assert home["trt_engine_cache_path"] == os.path.expanduser("~/.cache/caer_ros/tensorrt")
    # Per model file, named by its content: a re-export under the same name gets a new folder.
    model = tmp_path / "best.onnx"
    model.write_bytes(b"first export")
    first = tensorrt_options(params, str(model))["trt_engine_cache_path"]
    assert first.startswith(str(tmp_path / "engines" / "best-"))
    model.write_bytes(b"second export")
    assert tensorrt_options(params, str(model))["trt_engine_cache_path"] != first
    assert provider_specs(params, str(model))[0][1]["trt_engine_cache_path"] != first
    with pytest.raises(node_params.ParamsError, match="tensorrt_int8: needs "
                                                      "TensorrtExecutionProvider"):
        NodeParams(tensorrt_int8=True, providers=("CUDAExecutionProvider",))


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
    ("max_people", 0), ("max_people", 2.5), ("max_people", True), ("max_people", 1001),
    ("max_rate_hz", 1001.0), ("tensorrt_int8", "no"), ("tensorrt_engine_cache", 3),
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
