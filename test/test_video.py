"""caer-infer on videos (caer_ros/inference/video.py): synthetic scenes written with OpenCV's
writer and a real codec, read back through FFmpeg."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.clips import FPS, SIZE, interrupt_when, read_frames, write_clip

from caer_ros.inference import tracking
from caer_ros.inference.cli import INTERRUPTED, main
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.video import FrameSampler, _Outputs
from caer_ros.labels import EMOTIC
from conftest import REPO


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("video") / "walk.mp4", 24)


def test_every_frame_gives_a_line_and_an_annotated_frame_tracked_as_the_node_does(
        clip, small_model_files, tmp_path, capsys):
    onnx = small_model_files[1]
    out = tmp_path / "out"
    assert main([str(clip), "--model", str(onnx), "--out", str(out), "--max-people", "3",
                 "--smoothing", "0.5"]) == 0
    assert "24 of 24 frames processed" in capsys.readouterr().err
    lines = read_lines(out / "walk.jsonl")
    assert [line["frame"] for line in lines] == list(range(24))
    assert [line["time_s"] for line in lines] == pytest.approx([i / FPS for i in range(24)])
    assert {line["source"] for line in lines} == {str(clip)}
    annotated = read_frames(out / "walk.mp4")
    assert len(annotated) == 24 and annotated[0].shape == (SIZE[1], SIZE[0], 3)
    people = [p for line in lines for p in line["people"]]
    assert people and all(list(p["scores"]) == list(EMOTIC) for p in people)
    assert all(p["valence"] is not None and p["id"] for p in people)

    # the node's tracking and smoothing, the same code (not a copy), on the same frames
    from caer_ros.ros import frame_path

    assert frame_path.track is tracking.track
    predictor = Predictor.from_file(onnx)
    tracker = tracking.IouTracker(tracking.IOU_THRESHOLD, tracking.MAX_MISSED, 0.5)
    frames = read_frames(clip)
    for line, image in zip(lines, frames, strict=True):
        detections = predictor.predict(image, max_people=3)
        expected = frame_path.track(tracker, detections)
        assert [p["id"] for p in line["people"]] == expected.ids
        for person, scores in zip(line["people"], expected.scores, strict=True):
            assert list(person["scores"].values()) == pytest.approx(scores.tolist(), abs=1e-4)
    ids = [p["id"] for p in people]
    assert len(set(ids)) < len(ids)  # tracks persist over frames
    # the overlay is drawn on the processed frames (boxes and labels change pixels)
    assert np.abs(annotated[5].astype(int) - frames[5].astype(int)).max() > 100


def test_every_and_max_fps_thin_out_the_frames(clip, small_model_files, tmp_path):
    onnx = str(small_model_files[1])
    assert main([str(clip), "--model", onnx, "--out", str(tmp_path / "a"), "--every", "3"]) == 0
    lines = read_lines(tmp_path / "a" / "walk.jsonl")
    assert [line["frame"] for line in lines] == list(range(0, 24, 3))
    assert len(read_frames(tmp_path / "a" / "walk.mp4")) == 8
    assert main([str(clip), "--model", onnx, "--out", str(tmp_path / "b"), "--max-fps", "4",
                 "--no-tracking"]) == 0
    lines = read_lines(tmp_path / "b" / "walk.jsonl")
    frames = [line["frame"] for line in lines]
    assert frames == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23]  # 4 per second of video on average
    assert all("id" not in p for line in lines for p in line["people"])
    assert len(read_frames(tmp_path / "b" / "walk.mp4")) == len(frames)


def test_frame_sampler_keeps_the_average_rate():
    sampler = FrameSampler(max_fps=7.0)
    taken = [i for i in range(300) if sampler.take(i, i / 30.0)]
    assert len(taken) == pytest.approx(7.0 * 10, abs=1)  # 10 s of a 30 fps video
    assert FrameSampler(every=2, max_fps=7.0).output_fps(30.0) == 7.0
    assert FrameSampler(every=4).output_fps(30.0) == 7.5


def test_not_a_video_and_a_video_that_ends_early(small_model_files, tmp_path, capsys):
    onnx = str(small_model_files[1])
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are notes, not a video\n")
    assert main([str(fake), "--model", onnx, "--out", str(tmp_path / "out")]) == 1
    assert f"error: {fake}: not a video OpenCV (FFmpeg) can read" in capsys.readouterr().err

    whole = write_clip(tmp_path / "whole.avi", 20, "MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert main([str(cut), "--model", onnx, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    lines = read_lines(tmp_path / "out" / "cut.jsonl")
    assert 0 < len(lines) < 20
    assert f"error: {cut}: the video ended after {len(lines)} of its 20 frames" in err
    assert len(read_frames(tmp_path / "out" / "cut.mp4")) == len(lines)  # kept, playable


def test_ctrl_c_keeps_the_frames_processed(small_model_files, tmp_path):
    long = write_clip(tmp_path / "long.mp4", 400)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "caer_ros.inference.cli", str(long), "--model",
         str(small_model_files[1]), "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = out / "long.jsonl"
    code, err = interrupt_when(process, lambda: lines.exists()
                               and len(lines.read_text().splitlines()) >= 3)
    assert code == INTERRUPTED, err[-2000:]
    written = read_lines(lines)
    assert 3 <= len(written) < 400
    assert [line["frame"] for line in written] == list(range(len(written)))
    assert f"interrupted: the files keep the {len(written)} frames processed" in err
    assert len(read_frames(out / "long.mp4")) == len(written)  # closed properly: playable


def test_ctrl_c_while_a_frame_is_written_waits_for_both_files(tmp_path):
    """A SIGINT between a frame's video frame and its JSON line takes effect after both are
    written, so the two files keep the same frames."""
    outputs = _Outputs(tmp_path, "clip", 10.0)
    frame = np.zeros((32, 32, 3), np.uint8)
    outputs.write({"frame": 0}, frame)
    lines = outputs.lines

    class Interrupted:  # the JSON Lines file, interrupted after the video frame is written
        def write(self, text):
            os.kill(os.getpid(), signal.SIGINT)
            return lines.write(text)

        def __getattr__(self, name):
            return getattr(lines, name)

    outputs.lines = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        outputs.write({"frame": 1}, frame)
    outputs.lines = lines
    outputs.close()
    assert [line["frame"] for line in read_lines(tmp_path / "clip.jsonl")] == [0, 1]
    assert len(read_frames(tmp_path / "clip.mp4")) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_camera_show_and_argument_errors(clip, small_model_files, tmp_path, capsys,
                                         monkeypatch):
    onnx = str(small_model_files[1])
    assert main(["--camera", "63", "--model", onnx]) == 1  # no /dev/video63 here
    assert "error: camera 63: cannot open camera 63" in capsys.readouterr().err
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main([str(clip), "--model", onnx, "--show", "--every", "12"]) == 0
    captured = capsys.readouterr()
    assert "--show: no display here" in captured.err
    assert len(captured.out.splitlines()) == 2  # JSON Lines on stdout without --out
    for bad, message in ((["--every", "0"], "--every must be >= 1"),
                         (["--max-fps", "0"], "--max-fps must be > 0"),
                         (["--smoothing", "1"], "--smoothing must be in [0, 1)")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(clip), "--model", onnx, *bad])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", onnx])
    assert "give image or video paths, or --camera N" in capsys.readouterr().err
