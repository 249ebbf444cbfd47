"""launch/emotion.launch.py agrees with setup.py, config/emotion.yaml and the node.

ROS ``launch`` is not installable here, so the file is read with ``ast``; where ``launch`` and
``launch_ros`` exist the second test also loads it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re

import pytest
import yaml

from caer_ros.ros import params as node_params
from conftest import REPO

LAUNCH = REPO / "launch" / "emotion.launch.py"
CONFIG = REPO / "config" / "emotion.yaml"
ENTRY_POINT = "emotion_node = caer_ros.ros.emotion_node:main"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _keyword(call: ast.Call, name: str) -> ast.expr:
    (value,) = [k.value for k in call.keywords if k.arg == name]
    return value


def _console_script() -> tuple[str, str]:
    """(script name, module:function) of emotion_node: from setup.py once it has the entry."""
    setup = (REPO / "setup.py").read_text()
    found = re.search(r"[\"'](emotion_node\s*=\s*[\w.]+:\w+)[\"']", setup)
    name, target = (found.group(1) if found else ENTRY_POINT).split("=")
    return name.strip(), target.strip()


def test_launch_file_starts_the_emotion_node_console_script():
    tree = ast.parse(LAUNCH.read_text())
    (node,) = _calls(tree, "Node")
    script, target = _console_script()
    assert ast.literal_eval(_keyword(node, "package")) == "caer_ros"
    assert ast.literal_eval(_keyword(node, "executable")) == script
    module, function = target.split(":")
    assert callable(getattr(importlib.import_module(module), function))
    # The params file's top-level key is the default node name; the node's name and
    # namespace are launch arguments, and params_for_node gives that section to the node.
    assert list(yaml.safe_load(CONFIG.read_text())) == ["/**/emotion_node"]
    assert ast.unparse(_keyword(node, "name")) == "node_name"
    assert "namespace" in ast.unparse(_keyword(node, "namespace"))
    assert "params_for_node" in ast.unparse(_keyword(node, "parameters")) or \
        "params_for_node(" in LAUNCH.read_text()


def test_launch_arguments_and_remappings():
    tree = ast.parse(LAUNCH.read_text())
    declared = {ast.literal_eval(c.args[0]): c for c in _calls(tree, "DeclareLaunchArgument")}
    assert set(declared) == {"image_topic", "params_file", "model_path", "autostart",
                             "use_sim_time", "namespace", "node_name"}
    assert ast.literal_eval(_keyword(declared["namespace"], "default_value")) == ""
    assert ast.literal_eval(_keyword(declared["node_name"], "default_value")) == "emotion_node"
    assert ast.literal_eval(_keyword(declared["image_topic"], "default_value")) == \
        "/camera/image_raw"
    # Empty: the params file's value (a launch default never overrides the params file).
    assert ast.literal_eval(_keyword(declared["model_path"], "default_value")) == ""
    assert ast.literal_eval(_keyword(declared["autostart"], "default_value")) == ""
    assert ast.literal_eval(_keyword(declared["use_sim_time"], "default_value")) == "false"
    default_params = ast.unparse(_keyword(declared["params_file"], "default_value"))
    assert "default_params" in default_params
    assert "get_package_share_directory" in LAUNCH.read_text()
    used = {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}
    assert used == set(declared)
    (node,) = _calls(tree, "Node")
    remapped = [ast.literal_eval(pair.elts[0]) for pair in _keyword(node, "remappings").elts]
    assert remapped == ["image", "image/compressed"]


def test_parameters_set_by_the_launch_file_exist():
    """Every parameter name the launch file sets is in config/emotion.yaml and declared by the
    node (params.declare on a real node), or one rclpy owns (use_sim_time)."""
    tree = ast.parse(LAUNCH.read_text())
    names = {ast.literal_eval(key) for d in ast.walk(tree) if isinstance(d, ast.Dict)
             for key in d.keys}
    assert names == {"model_path", "autostart", "use_sim_time"}
    ours = {name for name in names if not node_params.is_ros_owned(name)}
    assert ours == {"model_path", "autostart"}
    yaml_names = set(yaml.safe_load(CONFIG.read_text())["/**/emotion_node"]["ros__parameters"])
    assert ours <= yaml_names
    assert ours <= set(node_params.defaults())


def test_launch_description_loads_where_launch_is_installed(tmp_path, monkeypatch):
    pytest.importorskip("launch_ros")
    launch = pytest.importorskip("launch")
    if not hasattr(launch, "LaunchDescription"):  # the repo's launch/ folder, not ROS launch
        pytest.skip("ROS launch is not installed")
    # A minimal ament prefix so the default params file resolves without an installed package.
    share = tmp_path / "share"
    (share / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (share / "ament_index" / "resource_index" / "packages" / "caer_ros").write_text("")
    (share / "caer_ros" / "config").mkdir(parents=True)
    (share / "caer_ros" / "config" / "emotion.yaml").write_text(CONFIG.read_text())
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))

    spec = importlib.util.spec_from_file_location("emotion_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, launch.LaunchDescription)
    arguments = {a.name: a for a in description.get_launch_arguments()}
    assert set(arguments) == {"image_topic", "params_file", "model_path", "autostart",
                              "use_sim_time", "namespace", "node_name"}
    context = launch.LaunchContext()
    for action in description.entities:
        action.visit(context)
    (node,) = module._emotion_node(context)
    executable = node.node_executable
    if not isinstance(executable, str):  # a list of substitutions in some launch_ros versions
        from launch.utilities import perform_substitutions

        executable = perform_substitutions(context, executable)
    assert executable == _console_script()[0]


def test_rviz_config_shows_the_camera_and_the_overlay():
    """rviz/emotion.rviz (installed beside the launch file): two Image displays, on the launch
    file's default camera topic and on the node's overlay, best effort as a camera publishes."""
    from caer_ros.ros.emotion_node import OVERLAY_TOPIC

    config = yaml.safe_load((REPO / "rviz" / "emotion.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    images = {d["Topic"]["Value"]: d for d in displays
              if d["Class"] == "rviz_default_plugins/Image"}
    assert set(images) == {"/camera/image_raw", "/" + OVERLAY_TOPIC}
    assert all(d["Topic"]["Reliability Policy"] == "Best Effort" for d in images.values())
    assert 'glob("rviz/*.rviz")' in (REPO / "setup.py").read_text()
