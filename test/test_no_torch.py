"""A robot that runs an ``.onnx`` model needs no PyTorch (issue 29).

The node and ``caer-infer`` run here in processes where importing torch fails, as on a robot
installed from ``requirements/robot.txt``: a ``sitecustomize`` on ``PYTHONPATH`` puts an import
finder first on ``sys.meta_path`` that raises ImportError for ``torch`` and its submodules.
With the session's small model exported to ONNX they still answer; its ``.pt`` file there is
refused with one line saying what is missing. A plain process (torch installed) that imports
the node and ``caer-infer`` is checked to leave torch out of ``sys.modules``: nothing on the
ONNX path imports it, even where it could.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.node_probe import image_msg, running_node
from helpers.small_model import small_config

from caer_ros.model.checkpoint import TORCH_NEEDED
from conftest import REPO
from training.datasets.synthetic import draw_context, draw_person

NO_TORCH_SITECUSTOMIZE = '''\
"""Test only: importing torch fails in this process, as where it is not installed."""
import sys


class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (test: no torch)", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
'''
CATEGORIES = list(next(iter(small_config().categories.values())))
SIZE = (128, 96)  # width, height: the small model's input


@pytest.fixture(scope="module")
def no_torch_path(tmp_path_factory) -> str:
    """A PYTHONPATH whose first folder holds the no-torch ``sitecustomize``."""
    folder = tmp_path_factory.mktemp("no_torch")
    (folder / "sitecustomize.py").write_text(NO_TORCH_SITECUSTOMIZE)
    return os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))


@pytest.fixture
def no_torch_env(no_torch_path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": no_torch_path, "PYTHONUNBUFFERED": "1"}


def _scene(seed: int = 0) -> np.ndarray:
    image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    draw_context(image, "party", np.random.default_rng(seed))
    draw_person(image, 40, 14, 26, "smile", "up", (200, 60, 60))
    return image


def _caer_infer(*args: str) -> list[str]:
    """The ``caer-infer`` console script beside this Python (its module where not installed)."""
    script = Path(sys.executable).with_name("caer-infer")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "import sys; from caer_ros.inference.cli import main; "
                                  "sys.exit(main())", *args]


def _python(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_the_blocker_blocks(no_torch_env):
    """The tests below mean something only if torch cannot be imported in their processes."""
    result = _python(no_torch_env, "import torch")
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'torch' (test: no torch)" in result.stderr


def test_importing_the_node_and_caer_infer_leaves_torch_out():
    """With torch installed too: the node's and caer-infer's modules import neither torch nor
    SciPy (the tracker imports SciPy when it is made), so the node starts faster."""
    code = ("import sys, caer_ros.ros.emotion_node, caer_ros.inference.cli, "
            "caer_ros.inference.predictor; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'scipy'}))")
    result = _python(dict(os.environ), code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_caer_infer_with_an_onnx_model_without_torch(small_model_files, no_torch_env, tmp_path):
    """An image and a short video: people with scores out, as JSON lines on stdout."""
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), _scene())
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, SIZE)
    assert writer.isOpened()
    for seed in range(3):
        writer.write(_scene(seed))
    writer.release()
    result = subprocess.run(
        _caer_infer(str(image), str(video), "--model", str(small_model_files[1]),
                    "--threshold", "0", "--max-people", "3"),
        env=no_torch_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torch" not in result.stderr.lower(), result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 1 + 3, result.stdout  # the image, then each frame of the video
    found, *frames = lines
    assert found["backend"].startswith("onnxruntime")
    assert len(found["people"]) == 3
    for person in found["people"]:
        assert sorted(person["scores"]) == sorted(CATEGORIES)
        assert person["valence"] is not None
    assert [frame["frame"] for frame in frames] == [0, 1, 2]
    assert all(len(frame["people"]) == 3 and all(p["id"] for p in frame["people"])
               for frame in frames)


def test_a_pt_model_without_torch_is_one_line(small_model_files, no_torch_env, tmp_path):
    """caer-infer, the predictor and the export say in one line that PyTorch is needed."""
    pt = small_model_files[0]
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), _scene())
    result = subprocess.run(_caer_infer(str(image), "--model", str(pt)), env=no_torch_env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {pt}: {TORCH_NEEDED}"]

    code = ("from caer_ros.inference.predictor import Predictor\n"
            "from caer_ros.model import ModelFileError\n"
            f"try:\n    Predictor.from_file({str(pt)!r})\n"
            "except ModelFileError as error:\n    print(error)\n")
    result = _python(no_torch_env, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{pt}: {TORCH_NEEDED}"

    result = _python(no_torch_env, "import sys; from caer_ros.export import main; "
                                   f"sys.exit(main(['--model', {str(pt)!r}, '--out', 'x.onnx']))")
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: exporting a model needs PyTorch (pip install torch)")


def test_the_node_answers_with_an_onnx_model_without_torch(small_model_files, no_torch_path,
                                                          tmp_path, monkeypatch):
    """The real node (console script, params file, launch remapping) in a process without
    torch: a frame in, its PersonEmotionArray out."""
    monkeypatch.setenv("PYTHONPATH", no_torch_path)  # the node's process inherits it
    with running_node(tmp_path, "-p", f"model_path:={small_model_files[1]}",
                      "-p", "detection_threshold:=0.0", "-p", "max_people:=3") as (
            process, probe, log):
        msg = probe.stamp(image_msg(_scene()))
        people, _ = probe.answer(msg, timeout=30.0, process=process)
        assert people is not None, log.read_text()[-3000:]
        assert (people.header.stamp.sec, people.header.frame_id) == \
            (msg.header.stamp.sec, msg.header.frame_id)
        assert list(people.categories) == CATEGORIES
        assert len(people.people) == 3
        assert all(len(p.scores) == len(CATEGORIES) and p.id for p in people.people)
        assert process.poll() is None


def test_the_node_refuses_a_pt_model_without_torch_in_one_line(small_model_files, ros_env,
                                                               no_torch_path):
    pt = small_model_files[0]
    result = subprocess.run(
        [sys.executable, "-m", "caer_ros.ros.emotion_node", "--ros-args",
         "--params-file", str(REPO / "config" / "emotion.yaml"), "-r", "image:=/camera/image_raw",
         "-p", f"model_path:={pt}"],
        env={**ros_env, "PYTHONPATH": no_torch_path}, cwd=REPO, capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [f"emotion_node: {pt}: {TORCH_NEEDED}"]
