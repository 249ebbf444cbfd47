"""The unlabelled frame pool: images and video frames without annotations, for label-free
distillation (``python -m training.distill --images PATH ...``) and for comparing models on
the same frames (``python -m training.evaluate --against``).

A PATH is an image file, a video file, or a folder searched recursively for both (symlinked
folders are followed). Images are the files whose suffix is one of :data:`IMAGE_SUFFIXES`
(any case); videos are those :func:`caer_ros.inference.video.is_video` knows. In a folder,
other files are left out, and so are hidden files and folders (names starting with ``.``,
such as macOS's ``._photo.jpg`` resource forks, which carry an image suffix but are not
images).

:func:`collect_frames` finds every frame once and cheaply, and refuses at once what cannot be
used (:class:`FrameError`, one line naming the path): a path that does not exist, a folder
with no image or video, an image file that is cut short or not an image (every image's header
and end are checked by :func:`caer_ros.image_file.image_info`), a video that cannot be opened
or yields no frame. Of a video, frames are taken at ``frame_rate`` per second of video time by
:class:`caer_ros.inference.video.FrameSampler` (the frames ``caer-infer --max-fps`` would
process), from the container's frame rate (30/s when it gives none) and frame count (counted
by reading through the video when the container gives none).

:func:`split_frames` holds out whole groups: an image, or a ``chunk_seconds`` stretch of a
video, so neighbouring frames, which are nearly the same picture, are never on both sides.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from caer_ros.image_file import ImageFileError, image_info, read_image
from caer_ros.inference.video import (
    VIDEO_SUFFIXES,
    FrameSampler,
    VideoError,
    is_video,
    open_capture,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_FPS = 30.0  # a video's frame rate when its container gives none
OPEN_CAPTURES = 4  # open videos a pool keeps (least recently used closed first)
READ_AHEAD = 32  # a frame at most this far ahead is reached by reading on, not by seeking


class FrameError(ValueError):
    """A path or frame that cannot be used; the one-line message names the path and the
    problem."""


@dataclass(frozen=True)
class FrameRef:
    """One frame of the pool: ``source`` (the image or video file), ``index`` (the frame's
    number in the video, from 0; 0 for an image), ``group`` (the unit :func:`split_frames`
    keeps on one side: the image path, or ``"<video path>#<chunk number>"``) and ``time_s``
    (the frame's time in its video; 0 for an image)."""

    source: str
    index: int
    group: str
    time_s: float = 0.0


def is_image(path: Path) -> bool:
    """Whether ``path`` has an image suffix (:data:`IMAGE_SUFFIXES`, any case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


class _Capture:
    """An open video and the number of the frame its next ``read()`` returns."""

    def __init__(self, capture: cv2.VideoCapture) -> None:
        self.capture = capture
        self.position = 0


class FramePool:
    """The frames of images and videos, read on demand.

    ``frames`` is in a deterministic order (sorted sources, then frame index). :meth:`load`
    keeps up to :data:`OPEN_CAPTURES` videos open, so frames loaded in order are read on
    rather than sought. Calls are serialised by a lock (one thread at a time reads); a
    pickled copy (a DataLoader worker) or a forked process opens its own videos.
    """

    def __init__(self, frames: Sequence[FrameRef], frame_rate: float) -> None:
        self.frames: list[FrameRef] = list(frames)
        self.frame_rate = float(frame_rate)
        self._captures: OrderedDict[str, _Capture] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[FrameRef]:
        return iter(self.frames)

    def describe(self) -> str:
        """One line for logs: ``"N frames from A images and B videos (frame rate R/s)"``."""
        sources = {ref.source for ref in self.frames}
        videos = sum(1 for source in sources if is_video(Path(source)))
        return (f"{len(self.frames)} frames from {len(sources) - videos} images and {videos} "
                f"videos (frame rate {self.frame_rate:g}/s)")

    def load(self, ref: FrameRef) -> np.ndarray:
        """The frame ``ref`` as RGB uint8 ``(H, W, 3)``.

        Raises:
            FrameError: the image cannot be read, or the video frame cannot be read (a video
                shorter than its header says, or damaged there).
        """
        if not is_video(Path(ref.source)):
            try:
                return read_image(ref.source, rgb=True)
            except ImageFileError as error:
                raise FrameError(str(error)) from None
        with self._lock:
            image = self._read_video_frame(ref.source, ref.index)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        """Close the open videos (the next :meth:`load` opens them again)."""
        with self._lock:
            for entry in self._captures.values():
                entry.capture.release()
            self._captures.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_captures"], state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._captures = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _read_video_frame(self, source: str, index: int) -> np.ndarray:
        if index < 0:
            raise FrameError(f"{source}: frame {index} does not exist (frames count from 0)")
        entry = self._capture(source)
        try:
            if not entry.position <= index <= entry.position + READ_AHEAD:
                entry.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                entry.position = int(entry.capture.get(cv2.CAP_PROP_POS_FRAMES))
                if entry.position != index:
                    # the container cannot seek to exact frames: read on from the start
                    entry.capture.release()
                    entry = self._reopen(source)
            while entry.position < index:
                if not entry.capture.grab():
                    raise FrameError(self._unreadable(source, index))
                entry.position += 1
            ok, image = entry.capture.read()
            if not ok or image is None:
                raise FrameError(self._unreadable(source, index))
            entry.position += 1
            return image
        except BaseException:
            # its position is unknown now: the next load opens the video again
            self._captures.pop(source, None)
            entry.capture.release()
            raise

    def _capture(self, source: str) -> _Capture:
        if self._pid != os.getpid():  # forked: the parent's captures share its file offsets
            self._captures = OrderedDict()
            self._pid = os.getpid()
        entry = self._captures.get(source)
        if entry is not None:
            self._captures.move_to_end(source)
            return entry
        return self._reopen(source)

    def _reopen(self, source: str) -> _Capture:
        try:
            capture, _, _ = open_capture(Path(source))
        except VideoError as error:
            raise FrameError(f"{source}: broken video ({error})") from None
        entry = self._captures[source] = _Capture(capture)
        self._captures.move_to_end(source)
        while len(self._captures) > OPEN_CAPTURES:
            _, oldest = self._captures.popitem(last=False)
            oldest.capture.release()
        return entry

    @staticmethod
    def _unreadable(source: str, index: int) -> str:
        return (f"{source}: frame {index} cannot be read (the video is shorter than its "
                f"header says, or damaged there)")


def collect_frames(paths: Sequence[str | os.PathLike], frame_rate: float = 2.0,
                   chunk_seconds: float = 10.0, max_frames: int | None = None) -> FramePool:
    """The frames of ``paths`` (image files, video files and folders of both; module
    docstring): each image once, each video's frames at ``frame_rate`` per second of video
    time, grouped in ``chunk_seconds`` chunks for :func:`split_frames`. With ``max_frames``,
    an evenly spaced subset of that many frames (the same for the same files). A file reached
    twice (named and in a named folder, or through a link) counts once.

    Raises:
        FrameError: no paths, a path that does not exist, a folder without images or videos,
            a named file that is neither, a broken image or video (the first one, in order).
        ValueError: ``frame_rate`` or ``chunk_seconds`` not above 0, ``max_frames`` below 1.
    """
    if not (math.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate must be above 0 frames per second, got {frame_rate}")
    if not (math.isfinite(chunk_seconds) and chunk_seconds > 0):
        raise ValueError(f"chunk_seconds must be above 0, got {chunk_seconds}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1 (or None for all), got {max_frames}")
    if isinstance(paths, (str, os.PathLike)):
        raise FrameError(f"{os.fspath(paths)}: paths must be a list of paths, not one path")
    if not paths:
        raise FrameError("no paths given: name image folders, images or videos")

    files: dict[str, Path] = {}  # real path -> the path as found, first found kept
    for given in paths:
        for path in _files_of(Path(os.fspath(given))):
            files.setdefault(os.path.realpath(path), path)
    sources = sorted(files.values(), key=str)

    frames: list[FrameRef] = []
    for path in sources:  # images first, so a broken one is named before any video is opened
        if not is_video(path):
            try:
                image_info(path)
            except ImageFileError as error:
                raise FrameError(str(error)) from None
            frames.append(FrameRef(str(path), 0, str(path)))
    for path in sources:
        if is_video(path):
            frames.extend(_video_frames(path, frame_rate, chunk_seconds))
    frames.sort(key=lambda ref: (ref.source, ref.index))

    if max_frames is not None and len(frames) > max_frames:
        keep = (np.arange(max_frames) * len(frames)) // max_frames
        frames = [frames[i] for i in keep]
    return FramePool(frames, frame_rate)


def split_frames(frames: Sequence[FrameRef], val_fraction: float, seed: int
                 ) -> tuple[list[FrameRef], list[FrameRef]]:
    """``(train, val)``: whole groups (an image, a video chunk) on one side, each side in
    ``frames``' order. ``val`` gets ``round(val_fraction * groups)`` groups chosen by a
    generator seeded with ``seed`` (the same split for the same frames and seed), at least one
    when ``val_fraction > 0`` and at most all groups but one.

    Raises:
        ValueError: ``val_fraction`` not in ``[0, 1)``.
        FrameError: ``val_fraction > 0`` with fewer than two groups to split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = sorted({ref.group for ref in frames})
    if val_fraction == 0.0:
        return list(frames), []
    if len(groups) < 2:
        where = f"{groups[0]}: the only image or video chunk" if groups else "no frames"
        raise FrameError(f"{where}: too few images/videos to hold some out for validation "
                         f"(give more, or a val_fraction of 0)")
    count = min(max(round(val_fraction * len(groups)), 1), len(groups) - 1)
    order = np.random.default_rng(seed).permutation(len(groups))
    held_out = {groups[i] for i in order[:count]}
    train = [ref for ref in frames if ref.group not in held_out]
    val = [ref for ref in frames if ref.group in held_out]
    return train, val


def _files_of(path: Path) -> list[Path]:
    """The image and video files ``path`` names or holds (module docstring)."""
    if not path.exists():
        raise FrameError(f"{path}: no such file or folder")
    if not path.is_dir():
        if not (is_image(path) or is_video(path)):
            raise FrameError(f"{path}: not an image or a video (looked for "
                             f"{_suffixes()})")
        return [path]
    found = []
    seen: set[tuple[int, int]] = set()  # folders walked, so a link loop is walked once
    for folder, names, files in os.walk(path, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            names[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        names[:] = sorted(name for name in names if not name.startswith("."))
        for name in files:
            file = Path(folder, name)
            if not name.startswith(".") and (is_image(file) or is_video(file)):
                found.append(file)
    if not found:
        raise FrameError(f"{path}: no images or videos found (looked for {_suffixes()})")
    return found


def _suffixes() -> str:
    return ", ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)


def _video_frames(path: Path, frame_rate: float, chunk_seconds: float) -> list[FrameRef]:
    """The frames taken of the video ``path``; opens it and reads its first frame."""
    try:
        capture, fps, count = open_capture(path)
    except VideoError as error:
        raise FrameError(f"{path}: broken video ({error})") from None
    try:
        if not capture.grab():
            raise FrameError(f"{path}: broken video (no frame could be read: empty, damaged "
                             f"or an unsupported codec)")
        if count <= 0:  # the container does not say: count them
            count = 1
            while capture.grab():
                count += 1
    finally:
        capture.release()
    fps = fps or DEFAULT_FPS
    sampler = FrameSampler(max_fps=frame_rate)
    frames = []
    for index in range(count):
        time_s = index / fps
        if sampler.take(index, time_s):
            chunk = math.floor(time_s / chunk_seconds + 1e-9)
            frames.append(FrameRef(str(path), index, f"{path}#{chunk}", time_s))
    return frames
