"""Short real video files for the video tests: a party scene with one person walking right."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training.datasets.synthetic import draw_context, draw_person

FPS = 10.0
SIZE = (128, 96)  # width, height: the small model's input, so frames are not rescaled


def write_clip(path: Path, frames: int, fourcc: str = "mp4v") -> Path:
    """``frames`` frames of the scene, the person 1 px further right each frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, SIZE)
    assert writer.isOpened()
    for i in range(frames):
        image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
        draw_context(image, "party", np.random.default_rng(0))
        draw_person(image, 36 + i, 12, 24, "smile", "up", (200, 60, 60))
        writer.write(image)
    writer.release()
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    """Every frame FFmpeg decodes from ``path``."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


def interrupt_when(process, ready, timeout: float = 120.0) -> tuple[int, str]:
    """Send SIGINT to ``process`` (a Popen with text pipes) once ``ready()`` is true, and
    return its exit status and stderr; fails when it ended before that."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if ready():
            break
        time.sleep(0.05)
    assert process.poll() is None, "it ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    return process.returncode, err
