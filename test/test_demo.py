"""``make demo`` (scripts/demo.py): the short mode end to end, the model cache, and Ctrl-C.

The driver runs as a subprocess with ``--fast`` and its output folder (and so its cache) under
pytest's tmp_path, never the repository's outputs/. One fast run (scenes, training, export,
node, camera, report) is shared by the module; the second run of the same command must reuse
its model and is interrupted with SIGINT once the node runs; a third is interrupted while it
trains. After an interruption no process started by the demo may be left: they are found by
the demo's output folder in their command lines (the node's model path, training's --out).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

DEMO = REPO / "scripts" / "demo.py"
RUN_TIMEOUT_S = 300
pytestmark = pytest.mark.slow


def _demo_module():
    """scripts/demo.py as a module (registered first: its dataclasses need that)."""
    if "demo_driver" not in sys.modules:
        spec = importlib.util.spec_from_file_location("demo_driver", DEMO)
        module = importlib.util.module_from_spec(spec)
        sys.modules["demo_driver"] = module
        spec.loader.exec_module(module)
    return sys.modules["demo_driver"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def _command(out: Path) -> list[str]:
    return [sys.executable, str(DEMO), "--fast", "--out", str(out)]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes (other than this one) that contain ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


def _interrupt_when(out: Path, marker: str, timeout: float = RUN_TIMEOUT_S,
                    delay: float = 0.0) -> tuple[int, str]:
    """Run the fast demo, send SIGINT ``delay`` s after a line containing ``marker``; its exit
    status and output."""
    lines = []
    process = subprocess.Popen(_command(out), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                time.sleep(delay)
                process.send_signal(signal.SIGINT)
                break
            assert time.monotonic() < deadline, "".join(lines)
        else:
            pytest.fail(f"the demo ended before {marker!r}:\n{''.join(lines)}")
        lines.extend(process.stdout)
        return process.wait(60), "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = subprocess.run(_command(out), cwd=REPO, env=_env(), capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out, result.stdout


def test_fast_demo_writes_summary_overlays_and_contact_sheet(fast_demo):
    out, stdout = fast_demo
    summary = json.loads((out / "summary.json").read_text())
    for key in ("frames_sent", "frames_answered", "frames_dropped", "median_latency_ms",
                "people_per_frame"):
        assert key in summary
    assert summary["frames_answered"] > 0
    assert summary["frames_sent"] == summary["frames_answered"] + summary["frames_dropped"]
    assert len(summary["people_per_frame"]) == summary["frames_sent"]
    assert summary["median_latency_ms"] > 0
    assert summary["trained_on"] == "synthetic scenes"
    assert not summary["model"]["reused_from_cache"]
    overlays = sorted((out / "overlays").glob("frame_*.png"))
    assert overlays and (out / "contact_sheet.png").stat().st_size > 0
    assert (out / "model" / "demo.onnx").is_file()
    frames = json.loads((out / "frames.json").read_text())
    assert len(frames) == summary["frames_sent"]
    assert {f["overlay"] for f in frames if "overlay" in f} == \
        {str(p.relative_to(out)) for p in overlays}
    # Every step printed, and the plain statement about the training data.
    for step in ("[scenes]", "[model] training", "[export]", "[node] ready", "[camera]",
                 "frame   1/", "summary"):
        assert step in stdout
    assert "trained on synthetic scenes" in stdout


def test_second_run_reuses_the_model_and_ctrl_c_leaves_no_process(fast_demo):
    out, _ = fast_demo
    code, output = _interrupt_when(out, "[node] started")
    assert "[model] reusing the demo model" in output
    assert code == 130, output
    assert "interrupted" in output
    assert _processes_mentioning(str(out)) == []


def test_ctrl_c_while_training_leaves_no_process(tmp_path):
    out = tmp_path / "out"
    code, output = _interrupt_when(out, "[model] training", delay=3.0)
    assert "-m training.train" in output  # it was running when the SIGINT came
    assert code == 130, output
    assert _processes_mentioning(str(out)) == []
    # The interrupted run is not taken for a finished one.
    assert not list((out / "cache").glob("model-*/demo_model.json"))


def test_model_key_follows_config_and_code(tmp_path):
    demo = _demo_module()
    plan = demo.FAST
    assert demo.model_key(plan) == demo.model_key(plan)
    config = tmp_path / "demo.yaml"
    config.write_text(demo.CONFIG.read_text())
    assert demo.model_key(plan, config) == demo.model_key(plan)
    config.write_text(demo.CONFIG.read_text() + "\nseed: 1\n")
    assert demo.model_key(plan, config) != demo.model_key(plan)
    longer = demo.dataclasses.replace(plan, budget_minutes=plan.budget_minutes * 2)
    assert demo.model_key(longer) != demo.model_key(plan)
    more = demo.dataclasses.replace(plan, images=plan.images + 1)
    assert demo.scenes_key(more) != demo.scenes_key(plan)
    assert demo.model_key(more) != demo.model_key(plan)
    sources = {p.relative_to(REPO).as_posix() for p in demo.source_files(demo.MODEL_KEY_SOURCES)}
    assert {"training/train.py", "training/datasets/synthetic.py",
            "caer_ros/model/network.py"} <= sources


def test_contact_sheet_layout():
    demo = _demo_module()
    tiles = [(np.full((100, 200, 3), 80 * i, np.uint8), f"tile {i}") for i in range(3)]
    sheet = demo.contact_sheet(tiles, ["title", "second line"], tile=120, columns=2)
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3
    assert sheet.shape[1] >= 2 * 120
    assert sheet.shape[0] > 2 * 120  # two rows of tiles below the title


def test_match_truth_pairs_each_drawn_person_once():
    demo = _demo_module()
    truth = [([0, 0, 10, 10], ["Happiness"]), ([20, 0, 30, 10], ["Fear"])]
    boxes = [[21, 0, 31, 10], [0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]]
    assert demo.match_truth(boxes, truth) == [1, 0, None, None]
