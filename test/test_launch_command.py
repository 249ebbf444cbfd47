"""caer_ros.ros.launch_command: the launch file's command line, for places without ``launch``.

The node itself is started with it by test_emotion_node*.py (through helpers/node_probe.py),
the demo and bench_node; here: it names what launch/emotion.launch.py names.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from caer_ros.ros.launch_command import (
    DEFAULT_IMAGE_TOPIC,
    NODE_NAME,
    default_params_file,
    emotion_node_command,
)
from conftest import REPO

LAUNCH = REPO / "launch" / "emotion.launch.py"


def _pairs(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == flag]


def test_command_matches_the_launch_file():
    command = emotion_node_command("/cam/image", model_path="/m/e.onnx", ros_args=["-p", "x:=1"])
    assert Path(command[0]).name in (NODE_NAME, Path(sys.executable).name)
    assert command[command.index("--ros-args") + 1:][-2:] == ["-p", "x:=1"]
    assert _pairs(command, "--params-file") == [str(REPO / "config" / "emotion.yaml")]
    assert _pairs(command, "-p")[:2] == ["model_path:=/m/e.onnx", "use_sim_time:=false"]
    assert _pairs(command, "-r") == [f"__node:={NODE_NAME}", "image:=/cam/image",
                                     "image/compressed:=/cam/image/compressed"]
    # The same defaults and remappings as the launch file's.
    text = LAUNCH.read_text()
    tree = ast.parse(text)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str)}
    assert {DEFAULT_IMAGE_TOPIC, NODE_NAME, "image", "image/compressed", "/compressed"} <= strings


def test_autostart_as_the_launch_argument_sets_it():
    assert _pairs(emotion_node_command(autostart=False), "-p") == ["autostart:=false",
                                                                    "use_sim_time:=false"]
    assert _pairs(emotion_node_command(autostart=True), "-p") == ["autostart:=true",
                                                                   "use_sim_time:=false"]
    assert "autostart" in LAUNCH.read_text()


def test_use_sim_time_as_the_launch_argument_sets_it():
    assert _pairs(emotion_node_command(use_sim_time=True), "-p") == ["use_sim_time:=true"]
    assert "use_sim_time" in LAUNCH.read_text()


def test_namespace_and_node_name_as_the_launch_arguments_set_them():
    command = emotion_node_command(namespace="head", node_name="head_emotion")
    assert _pairs(command, "-r")[:2] == ["__node:=head_emotion", "__ns:=/head"]
    assert _pairs(emotion_node_command(namespace="/robot/base/"), "-r")[1] == "__ns:=/robot/base"
    assert "__ns" not in " ".join(emotion_node_command(namespace=""))
    text = LAUNCH.read_text()
    assert "namespace" in text and "node_name" in text


def test_no_model_path_means_the_params_file_one():
    command = emotion_node_command()
    assert _pairs(command, "-p") == ["use_sim_time:=false"]  # no model_path of its own
    assert default_params_file().is_file()
    assert f"image:={DEFAULT_IMAGE_TOPIC}" in command
