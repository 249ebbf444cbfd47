"""The unlabelled frame pool (training/datasets/frames.py): real images and videos written with
OpenCV in tmp_path, read back through the pool."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.clips import read_frames

from training.datasets import frames as frames_module
from training.datasets.frames import (
    FrameError,
    FramePool,
    FrameRef,
    collect_frames,
    split_frames,
)

WIDTH, HEIGHT = 64, 48
FPS = 10.0
STRIPE = WIDTH // 8  # one bit of the frame's number per 8 px wide stripe


def coded_frame(index: int) -> np.ndarray:
    """A BGR frame whose stripes spell ``index`` in binary (white: 1), robust to the codec."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for bit in range(8):
        if index >> bit & 1:
            image[:, bit * STRIPE:(bit + 1) * STRIPE] = 255
    return image


def decode_index(rgb: np.ndarray) -> int:
    """The number :func:`coded_frame` wrote, read from the stripes' centres."""
    centres = [rgb[8:-8, bit * STRIPE + 2:(bit + 1) * STRIPE - 2].mean() for bit in range(8)]
    return sum(1 << bit for bit, value in enumerate(centres) if value > 128)


def write_video(path: Path, frames: int = 60, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for index in range(frames):
        writer.write(coded_frame(index))
    writer.release()
    return path


def write_image(path: Path, bgr: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((HEIGHT, WIDTH, 3), bgr, np.uint8))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """60 frames at 10/s (6 s), each frame's number in its stripes."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def test_a_folder_of_images_and_a_video_together(tmp_path, clip):
    data = tmp_path / "data"
    a = write_image(data / "a.jpg")
    b = write_image(data / "sub" / "b.PNG")
    (data / "notes.txt").write_text("not an image")
    (data / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 a macOS resource fork")  # hidden: skipped
    pool = collect_frames([data, str(clip)])
    assert len(pool) == 2 + 12
    assert pool.describe() == "14 frames from 2 images and 1 videos (frame rate 2/s)"
    sources = [ref.source for ref in pool.frames]
    assert sources == sorted(sources)
    images = [ref for ref in pool.frames if ref.source in (str(a), str(b))]
    assert images == [FrameRef(str(a), 0, str(a), 0.0), FrameRef(str(b), 0, str(b), 0.0)]
    # the same files named again, and through the folder twice, count once
    assert collect_frames([data, clip, a, data / "sub"]).frames == pool.frames


@pytest.mark.parametrize(("rate", "count"), [(1.0, 6), (2.0, 12), (5.0, 30), (10.0, 60),
                                             (30.0, 60), (0.25, 2)])
def test_frames_are_taken_at_the_frame_rate_of_video_time(clip, rate, count):
    pool = collect_frames([clip], frame_rate=rate)
    assert len(pool) == count
    times = [ref.time_s for ref in pool.frames]
    assert times == [ref.index / FPS for ref in pool.frames]
    assert times[0] == 0.0 and np.allclose(np.diff(times), max(1 / rate, 1 / FPS))
    if rate == 2.0:
        assert [ref.index for ref in pool.frames] == list(range(0, 60, 5))


def test_load_returns_the_right_frame_in_any_order(tmp_path, clip):
    image = write_image(tmp_path / "one.png", (10, 20, 30))
    avi = write_video(tmp_path / "clip.avi", 40, "MJPG")
    pool = collect_frames([clip, avi, image], frame_rate=10.0)
    decoded = {str(path): [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in read_frames(path)]
               for path in (clip, avi)}
    loaded = pool.load(FrameRef(str(image), 0, str(image)))
    assert loaded.dtype == np.uint8 and loaded.shape == (HEIGHT, WIDTH, 3)
    assert tuple(loaded[0, 0]) == (30, 20, 10)  # RGB
    videos = [ref for ref in pool.frames if ref.source != str(image)]
    order = np.random.default_rng(0).permutation(len(videos))  # seeks back and far ahead
    for ref in [*videos, *videos[::-1], *(videos[i] for i in order)]:
        frame = pool.load(ref)
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        assert decode_index(frame) == ref.index
        np.testing.assert_array_equal(frame, decoded[ref.source][ref.index])
    pool.close()
    with pytest.raises(FrameError, match=r"clip\.mp4: frame 500 cannot be read"):
        pool.load(FrameRef(str(clip), 500, f"{clip}#0"))
    assert decode_index(pool.load(videos[3])) == videos[3].index  # opened again after it


def test_a_pool_pickles_without_its_open_videos(clip):
    pool = collect_frames([clip])
    pool.load(pool.frames[1])
    copy = pickle.loads(pickle.dumps(pool))
    assert copy.frames == pool.frames
    assert decode_index(copy.load(copy.frames[4])) == copy.frames[4].index


def test_a_video_without_frame_count_or_rate(clip, monkeypatch):
    """A container that gives no frame count is counted through; no rate means 30/s."""
    opened = frames_module.open_capture

    def without_count(path):
        capture, fps, _ = opened(path)
        return capture, fps, 0

    monkeypatch.setattr(frames_module, "open_capture", without_count)
    assert len(collect_frames([clip], frame_rate=2.0)) == 12

    def without_rate(path):
        capture, _, count = opened(path)
        return capture, 0.0, count

    monkeypatch.setattr(frames_module, "open_capture", without_rate)
    pool = collect_frames([clip], frame_rate=2.0)  # 60 frames at 30/s: 2 s
    assert [ref.index for ref in pool.frames] == [0, 15, 30, 45]
    assert pool.frames[1].time_s == pytest.approx(0.5)


def test_split_keeps_groups_whole_and_video_chunks_together(tmp_path, clip):
    images = [write_image(tmp_path / "images" / f"{i:02d}.jpg") for i in range(10)]
    pool = collect_frames([tmp_path / "images", clip], chunk_seconds=2.0)
    video = [ref for ref in pool.frames if ref.source == str(clip)]
    assert {ref.group for ref in video} == {f"{clip}#{n}" for n in range(3)}
    assert all(ref.group == f"{clip}#{int(ref.time_s // 2)}" for ref in video)
    assert all(ref.group == ref.source for ref in pool.frames if ref.source != str(clip))

    train, val = split_frames(pool.frames, 0.25, seed=1)
    assert len({ref.group for ref in val}) == round(0.25 * 13)
    assert not {ref.group for ref in train} & {ref.group for ref in val}
    assert sorted(train + val, key=pool.frames.index) == pool.frames
    assert train == [ref for ref in pool.frames if ref in train]  # the pool's order
    assert split_frames(pool.frames, 0.25, seed=1) == (train, val)
    seeds = {tuple(ref.group for ref in split_frames(pool.frames, 0.25, seed)[1])
             for seed in range(5)}
    assert len(seeds) > 1

    assert split_frames(pool.frames, 0.0, seed=1) == (pool.frames, [])
    assert len({ref.group for ref in split_frames(pool.frames, 0.01, seed=1)[1]}) == 1
    two = collect_frames(images[:2])
    assert [len(side) for side in split_frames(two.frames, 0.9, seed=0)] == [1, 1]
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="val_fraction must be in"):
            split_frames(pool.frames, bad, seed=0)
    with pytest.raises(FrameError, match="00.jpg: the only image or video chunk: too few"):
        split_frames(collect_frames([images[0]]).frames, 0.2, seed=0)


def test_max_frames_keeps_an_evenly_spaced_subset(clip):
    every = collect_frames([clip], frame_rate=10.0).frames
    pool = collect_frames([clip], frame_rate=10.0, max_frames=6)
    assert [ref.index for ref in pool.frames] == [0, 10, 20, 30, 40, 50]
    assert collect_frames([clip], frame_rate=10.0, max_frames=6).frames == pool.frames
    assert collect_frames([clip], frame_rate=10.0, max_frames=600).frames == every
    with pytest.raises(ValueError, match="max_frames must be at least 1"):
        collect_frames([clip], max_frames=0)


def test_bad_paths_fail_at_once_with_one_line(tmp_path, clip):
    def refused(paths, match):
        with pytest.raises(FrameError, match=match) as caught:
            collect_frames(paths)
        assert "\n" not in str(caught.value)

    refused([], "no paths given")
    refused([tmp_path / "missing"], "missing: no such file or folder")
    (tmp_path / "empty").mkdir()
    refused([tmp_path / "empty"], r"empty: no images or videos found \(looked for .jpg, ")
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("hello")
    (texts / "b.json").write_text("{}")
    refused([texts, clip], "texts: no images or videos found")
    refused([texts / "a.txt"], r"a\.txt: not an image or a video")

    broken = tmp_path / "broken"
    write_image(broken / "a.jpg")
    (broken / "b.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (broken / "c.png").write_bytes(b"")
    refused([broken], r"b\.jpg: ")
    (tmp_path / "bad.mp4").write_bytes(np.random.default_rng(1).bytes(2000))
    refused([tmp_path / "bad.mp4"], r"bad\.mp4: broken video")
    (tmp_path / "empty.avi").write_bytes(b"")
    refused([tmp_path / "empty.avi"], r"empty\.avi: broken video")
    with pytest.raises(ValueError, match="frame_rate must be above 0"):
        collect_frames([clip], frame_rate=0.0)
    with pytest.raises(ValueError, match="chunk_seconds must be above 0"):
        collect_frames([clip], chunk_seconds=-1.0)
    with pytest.raises(FrameError, match="a list of paths"):
        collect_frames(str(clip))  # type: ignore[arg-type]


def test_a_frame_pool_can_be_made_of_some_frames(clip):
    pool = collect_frames([clip])
    train, val = split_frames(pool.frames, 0.0, seed=0)
    part = FramePool(train[:3], pool.frame_rate)
    assert part.describe() == "3 frames from 0 images and 1 videos (frame rate 2/s)"
    assert decode_index(part.load(part.frames[2])) == part.frames[2].index
