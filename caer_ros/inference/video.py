"""``caer-infer`` on videos and cameras: every processed frame through the node's steps.

Per processed frame, exactly what ``emotion_node`` does with a camera message
(:func:`caer_ros.ros.frame_path.process_frame`): predict -> track
(:func:`caer_ros.inference.tracking.track`, the node's tracker and smoothing) -> labels from
the tracked scores -> the overlay (:func:`caer_ros.inference.overlay.draw_detections` with
track ids and smoothed scores).

Outputs of one source, with ``--out DIR``: ``DIR/<name>.mp4``, the annotated processed frames
(at the rate they were taken from the source), and ``DIR/<name>.jsonl``, one JSON line per
processed frame (:func:`frame_json`), written as each frame is done. Without ``--out`` the lines
go to stdout. ``<name>`` is the video's stem, or ``camera<N>``. With ``--coco-out`` each
processed frame is also written as a JPEG and added with its people to the COCO pre-labels
(:mod:`caer_ros.inference.coco_out`), in the same step as its line.

Frames are taken with ``every`` (every N-th frame) and ``max_fps`` (at most F frames per second
of video time, or of wall time for a camera). A camera runs until Ctrl-C (or ``q`` in the
``--show`` window). Ctrl-C stops a video too: the files keep every frame processed so far and
are closed properly (the video stays playable).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from tqdm import tqdm

from caer_ros.inference.coco_out import CocoOutError, CocoWriter
from caer_ros.inference.overlay import draw_detections
from caer_ros.inference.preprocess import FrameSizeError
from caer_ros.inference.results import number, people_json
from caer_ros.inference.tracking import IOU_THRESHOLD, MAX_MISSED, IouTracker, track

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".ts", ".mts", ".3gp", ".ogv")
WINDOW = "caer-infer"
DEFAULT_CAMERA_FPS = 30.0  # for the written video when a camera does not say its rate


class VideoError(Exception):
    """A source that cannot be used (the message says why; the path is added by the caller)."""


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoOptions:
    """How frames are taken and read (the ``caer-infer`` flags)."""

    every: int = 1
    max_fps: float | None = None
    threshold: float | None = None
    max_people: int | None = None
    tracking: bool = True
    smoothing: float = 0.0
    show: bool = False


@dataclass
class SourceResult:
    """What happened to one source (``source``: its path, or ``camera N``)."""

    source: str
    read: int = 0  # frames read from the source
    processed: int = 0  # frames processed (= lines written = frames in the output video)
    interrupted: bool = False
    problem: str = ""  # why the source ended before its end, or could not be used
    files: list[Path] = field(default_factory=list)


class FrameSampler:
    """Which frames to process: every ``every``-th, and at most ``max_fps`` per second."""

    def __init__(self, every: int = 1, max_fps: float | None = None) -> None:
        self.every = every
        self.period = 1.0 / max_fps if max_fps else 0.0
        self._next_time = -math.inf

    def take(self, index: int, time_s: float) -> bool:
        if index % self.every:
            return False
        if self.period:
            if time_s + 1e-9 < self._next_time:
                return False
            # the next frame is due one period after this one (or after the schedule, when
            # this frame was late): keeps the average rate at max_fps without drifting
            self._next_time = max(self._next_time + self.period, time_s + 0.5 * self.period) \
                if math.isfinite(self._next_time) else time_s + self.period
        return True

    def output_fps(self, source_fps: float) -> float:
        """The rate of the processed frames, for the written video."""
        fps = source_fps / self.every
        return min(fps, 1.0 / self.period) if self.period else fps


def frame_json(source: str, index: int, time_s: float, detections: Any, people: Any,
               categories: tuple[str, ...], thresholds: np.ndarray, tracking: bool,
               single_label: bool = False) -> dict[str, Any]:
    """The JSON line of one processed frame: ``source``, ``frame`` (index in the source, from
    0), ``time_s`` (its time in the video; seconds since start for a camera) and ``people``
    (:func:`caer_ros.inference.results.people_json` with the tracked ``id`` and scores)."""
    return {
        "source": source,
        "frame": index,
        "time_s": number(time_s),
        "people": people_json(detections.boxes, detections.detection_scores, people.scores,
                              people.continuous, categories, thresholds,
                              ids=people.ids if tracking else None, single_label=single_label),
    }


@contextlib.contextmanager
def _interrupt_after() -> Iterator[None]:
    """Ctrl-C (SIGINT) during the block takes effect when it ends, so that a frame's JSON line
    and its video frame are written both or neither (main thread only: elsewhere, a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if previous is signal.default_int_handler:
            raise KeyboardInterrupt
        if callable(previous):
            previous(caught[0], None)


class _Outputs:
    """The JSON Lines file (or stdout), the annotated video and the COCO pre-labels' frames
    (``coco``) of one source."""

    def __init__(self, out: Path | None, name: str, fps: float,
                 coco: CocoWriter | None = None) -> None:
        self.video_path = None if out is None else out / f"{name}.mp4"
        self.lines_path = None if out is None else out / f"{name}.jsonl"
        self.name = name
        self.fps = fps
        self.coco = coco
        self.writer: cv2.VideoWriter | None = None
        self.lines: IO[str] = sys.stdout if out is None else open(
            self.lines_path, "w", encoding="utf-8")

    def write(self, line: dict[str, Any], drawn: np.ndarray | None,
              frame: np.ndarray | None = None) -> None:
        """One processed frame's line, annotated frame and (with ``coco``) its JPEG and
        people in the pre-labels: all or none of them, Ctrl-C or not."""
        with _interrupt_after():
            if self.coco is not None and frame is not None:
                try:
                    self.coco.add_frame(frame, self.name, line["frame"], line["people"])
                except CocoOutError as error:
                    raise VideoError(str(error)) from None
            self._write(line, drawn)

    def _write(self, line: dict[str, Any], drawn: np.ndarray | None) -> None:
        if drawn is not None and self.video_path is not None:
            if self.writer is None:
                height, width = drawn.shape[:2]
                self.writer = cv2.VideoWriter(str(self.video_path),
                                              cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                              (width, height))
                if not self.writer.isOpened():
                    raise VideoError(f"cannot write the video {self.video_path}")
            self.writer.write(drawn)
        text = json.dumps(line) + "\n"
        if self.lines is sys.stdout:
            tqdm.write(text, file=sys.stdout, end="")
        else:
            self.lines.write(text)
            self.lines.flush()

    def close(self) -> list[Path]:
        if self.writer is not None:
            self.writer.release()
        if self.lines is not sys.stdout:
            self.lines.close()
        return [p for p in (self.video_path, self.lines_path) if p is not None and p.exists()]


class _Window:
    """The ``--show`` window, when a display and OpenCV's GUI support are there."""

    def __init__(self, wanted: bool) -> None:
        self.open = False
        if not wanted:
            return
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            print("--show: no display here (DISPLAY and WAYLAND_DISPLAY are not set); "
                  "continuing without a window", file=sys.stderr)
            return
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        except cv2.error:
            print("--show: this OpenCV build has no window support (opencv-python-headless); "
                  "continuing without a window", file=sys.stderr)
            return
        self.open = True

    def show(self, image: np.ndarray) -> bool:
        """Show ``image``; False when the user pressed q or Esc."""
        if not self.open:
            return True
        cv2.imshow(WINDOW, image)
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        if self.open:
            cv2.destroyWindow(WINDOW)


def open_capture(source: Path | int) -> tuple[cv2.VideoCapture, float, int]:
    """``(capture, fps, frame count)`` of a video file or a V4L2 camera number (count 0 when
    unknown, as for cameras). Raises :class:`VideoError`."""
    if isinstance(source, int):
        capture = cv2.VideoCapture(source, cv2.CAP_V4L2)
        if not capture.isOpened():
            raise VideoError(f"cannot open camera {source} (/dev/video{source} missing, busy "
                             f"or not a capture device)")
        return capture, float(capture.get(cv2.CAP_PROP_FPS) or 0.0), 0
    if not source.exists():
        raise VideoError("no such file")
    if source.is_dir():
        raise VideoError("a folder, not a video")
    capture = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise VideoError("not a video OpenCV (FFmpeg) can read")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return capture, fps if math.isfinite(fps) and fps > 0 else 0.0, max(count, 0)


def run_source(source: Path | int, predictor: Any, options: VideoOptions, out: Path | None,
               name: str, progress: bool = True, coco: CocoWriter | None = None
               ) -> SourceResult:
    """Process one video file or camera (module docstring); never raises for the source's
    own problems (they are in ``problem``); KeyboardInterrupt ends it cleanly. ``coco``: add
    each processed frame to these pre-labels."""
    result = SourceResult(f"camera {source}" if isinstance(source, int) else str(source))
    try:
        capture, fps, count = open_capture(source)
    except VideoError as error:
        result.problem = str(error)
        return result
    camera = isinstance(source, int)
    sampler = FrameSampler(options.every, options.max_fps)
    outputs = _Outputs(out, name, sampler.output_fps(fps or DEFAULT_CAMERA_FPS), coco)
    tracker = IouTracker(IOU_THRESHOLD, MAX_MISSED, options.smoothing) \
        if options.tracking else None
    categories = tuple(predictor.categories)
    thresholds = np.asarray(predictor.emotion_thresholds, dtype=np.float32)
    single_label = bool(getattr(predictor, "single_label", False))
    window = _Window(options.show)
    bar = tqdm(total=count or None, unit="frame", desc=name, file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    started = time.monotonic()
    try:
        while True:
            ok, image = capture.read()
            if not ok or image is None:
                if camera:
                    result.problem = "the camera stopped delivering frames"
                elif result.read == 0:
                    result.problem = "no frame could be read (empty, damaged or an unsupported " \
                                     "codec)"
                elif count and result.read < count:
                    result.problem = (f"the video ended after {result.read} of its {count} "
                                      f"frames (truncated or damaged); the frames read are kept")
                break
            index = result.read
            result.read += 1
            bar.update(1)
            time_s = time.monotonic() - started if camera else \
                (index / fps if fps else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
            if not sampler.take(index, time_s):
                continue
            try:
                detections = predictor.predict(image, detection_threshold=options.threshold,
                                               max_people=options.max_people)
            except FrameSizeError as error:  # every frame of a video has the same size
                raise VideoError(f"frame {index}: {error}") from None
            people = track(tracker, detections)
            drawn = None
            if out is not None or window.open:
                drawn = draw_detections(image, detections, categories, thresholds,
                                        single_label=single_label,
                                        ids=people.ids if tracker is not None else None,
                                        scores=people.scores)
            outputs.write(frame_json(result.source, index, time_s, detections, people, categories,
                                     thresholds, tracker is not None, single_label), drawn,
                          image)
            result.processed += 1
            bar.set_postfix(processed=result.processed, people=len(people.ids))
            if drawn is not None and not window.show(drawn):
                break
    except KeyboardInterrupt:
        result.interrupted = True
    except VideoError as error:
        result.problem = str(error)
    finally:
        bar.close()
        capture.release()
        window.close()
        result.files = outputs.close()
    return result
