"""The colcon recipe (README.md; docs/robot.md, Build with colcon): a workspace finds both
packages and builds them.

colcon does not look inside a package folder for more packages, so caer_msgs (inside the
caer_ros package folder) needs its own base path. This test builds a throwaway workspace the
way README.md and docs/robot.md tell a robot user to, with the ROS 2 wheels of the venv
standing in for /opt/ros.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

VENV = Path(sys.prefix)
COLCON = shutil.which("colcon", path=str(VENV / "bin")) or "colcon"  # installed by make setup


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "caer_ros").symlink_to(REPO)
    return tmp_path


def _colcon(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV),
               PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([COLCON, "--log-base", str(workspace / "log"), *args], cwd=workspace,
                          env=env, capture_output=True, text=True, timeout=600)


def _listed(result: subprocess.CompletedProcess) -> set[str]:
    assert result.returncode == 0, result.stderr
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


def test_plain_colcon_misses_caer_msgs(workspace):
    """Why the recipe needs --base-paths: the nested package is invisible otherwise."""
    assert _listed(_colcon(workspace, "list")) == {"caer_ros"}


def test_readme_recipe_builds_both_packages(workspace):
    base_paths = ["--base-paths", "src", "src/caer_ros/caer_msgs"]
    assert _listed(_colcon(workspace, "list", *base_paths)) == {"caer_ros", "caer_msgs"}
    result = _colcon(workspace, "build", *base_paths, "--build-base", "build",
                     "--install-base", "install", "--cmake-args",
                     f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF")
    assert result.returncode == 0, result.stdout + result.stderr
    install = workspace / "install"
    share = install / "caer_ros" / "share" / "caer_ros"
    assert (share / "package.xml").is_file()
    for installed in ("launch/emotion.launch.py", "config/emotion.yaml", "rviz/emotion.rviz"):
        assert (share / installed).is_file(), installed
    assert (install / "caer_ros" / "share" / "ament_index" / "resource_index" / "packages"
            / "caer_ros").is_file()
    msg_share = install / "caer_msgs" / "share" / "caer_msgs" / "msg"
    assert (msg_share / "PersonEmotionArray.msg").is_file()
    assert list((install / "caer_msgs" / "lib").glob("libcaer_msgs__rosidl_typesupport_c.so"))
