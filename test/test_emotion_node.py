"""emotion_node start-up failures (with autostart, the default): exit status 1 and one line on
stderr naming the problem.

The node runs as its own process, started the way the launch file starts it (params file,
remapping). Frames in, people out with a real model: test/test_emotion_node_frames.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

CONFIG = REPO / "config" / "emotion.yaml"


def _run_node(ros_env, *ros_args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "caer_ros.ros.emotion_node", "--ros-args",
         "--params-file", str(CONFIG), "-r", "image:=/camera/image_raw", *ros_args],
        env=ros_env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(("name", "backend"), [("no_such_model.onnx", "auto"),
                                               ("no_such_model.pt", "auto"),
                                               ("no_such_model.pt", "onnxruntime")])
def test_missing_model_exits_1_naming_the_path(ros_env, tmp_path, name, backend):
    """A missing file is said to be missing, whatever the backend (not that a .pt file needs
    the torch backend)."""
    model = tmp_path / name
    result = _run_node(ros_env, "-p", f"model_path:={model}", "-p", f"backend:={backend}")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"emotion_node: model file {model}: no such file"], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(("name", "backend"), [("corrupt.onnx", "onnxruntime"),
                                               ("corrupt.pt", "torch")])
def test_unreadable_model_exits_1_naming_the_path(ros_env, tmp_path, name, backend):
    model = tmp_path / name
    model.write_bytes(bytes(range(256)) * 20)  # neither an ONNX protobuf nor a torch archive
    result = _run_node(ros_env, "-p", f"model_path:={model}", "-p", f"backend:={backend}")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("emotion_node: ") and str(model) in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_parameters_exit_1_with_one_message_each(ros_env):
    result = _run_node(ros_env, "-p", "backend:=tensorflow", "-p", "smoothing:=1.0",
                       "-p", "qos_reliability:=fast")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("emotion_node: bad parameters: ")
    for part in ("backend: must be one of auto, onnxruntime, torch, got 'tensorflow'",
                 "smoothing: must be in [0, 1)", "qos_reliability: must be one of"):
        assert part in lines[0], part


def test_bad_autostart_exits_1_naming_it(ros_env):
    """autostart decides whether to configure at all: a bad value stops the start."""
    result = _run_node(ros_env, "-p", "autostart:=maybe")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["emotion_node: bad parameters: autostart: must be true or false, "
                     "got 'maybe'"], result.stderr
