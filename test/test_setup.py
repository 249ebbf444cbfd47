"""make setup stops early, naming the tool that is missing, before it creates anything."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO

TOOLS = ["make", "cmake", "cc", "gcc", "c++", "g++"]


def _bin_without(tmp_path, missing: set[str]):
    """A PATH directory holding the tools make setup uses, minus ``missing``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    for tool in TOOLS:
        found = shutil.which(tool)
        if tool not in missing and found:
            (bindir / tool).symlink_to(found)
    return bindir


def _make_setup(tmp_path, bindir):
    venv = tmp_path / "venv"
    result = subprocess.run(
        [shutil.which("make"), "-C", str(REPO), "setup", f"VENV={venv}", "PYTHON=python3"],
        env={"PATH": str(bindir), "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )
    return result, venv


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"cmake"}, ["cmake"]),
        ({"cc", "gcc", "c++", "g++"}, ["cc/gcc", "c++/g++"]),
    ],
)
def test_missing_tool_is_named(tmp_path, missing, named):
    result, venv = _make_setup(tmp_path, _bin_without(tmp_path, missing))
    assert result.returncode != 0
    for name in named:
        assert f"{name} (" in result.stderr, result.stderr
    assert "missing tools" in result.stderr
    assert not (venv / "bin" / "python").exists(), "a venv was created despite the missing tool"


def test_tool_check_passes_with_every_tool(tmp_path):
    bindir = _bin_without(tmp_path, set())
    result = subprocess.run(
        [str(REPO / "scripts" / "check_tools.sh"), "python3"],
        env={"PATH": str(bindir)}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
