"""IoU tracking and score smoothing (caer_ros/inference/tracking.py)."""

from __future__ import annotations

import numpy as np
import pytest

from caer_ros.inference.tracking import IouTracker, iou_matrix

SCORES = np.array([[0.2, 0.8, 0.5]], dtype=np.float32)


def _box(x: float, y: float, w: float = 50, h: float = 100) -> list[float]:
    return [x, y, x + w, y + h]


def test_iou_matrix_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]])
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 4)
    assert iou[0].tolist() == [1.0, 50 / 150, 0.0, 0.0]


def test_person_moving_a_little_keeps_one_id():
    tracker = IouTracker(iou_threshold=0.3, max_missed=2)
    ids = set()
    for t in range(30):
        people = tracker.update([_box(100 + 4 * t, 50 + 2 * t)], SCORES)
        ids.update(people.ids)
    assert ids == {"1"}
    assert len(tracker.tracks) == 1


def test_two_people_crossing_far_apart_keep_their_ids():
    """One walks right along the top of the image, the other left along the bottom: their
    x ranges cross, their boxes never overlap."""
    tracker = IouTracker()
    scores = np.repeat(SCORES, 2, axis=0)
    first = tracker.update([_box(0, 0), _box(400, 300)], scores).ids
    assert first == ["1", "2"]
    for t in range(1, 41):
        walker_a, walker_b = _box(10 * t, 0), _box(400 - 10 * t, 300)
        order = [walker_b, walker_a] if t % 2 else [walker_a, walker_b]  # detection order varies
        ids = tracker.update(order, scores).ids
        assert ids == (["2", "1"] if t % 2 else ["1", "2"]), t


def test_new_person_gets_a_new_id_and_ids_are_never_reused():
    tracker = IouTracker(max_missed=0)
    assert tracker.update([_box(0, 0)], SCORES).ids == ["1"]
    people = tracker.update([_box(2, 0), _box(300, 0)], np.repeat(SCORES, 2, axis=0))
    assert people.ids == ["1", "2"]
    tracker.update(np.zeros((0, 4)), np.zeros((0, 3)))  # both missed once: dropped
    assert tracker.tracks == []
    assert tracker.update([_box(2, 0)], SCORES).ids == ["3"]


def test_track_survives_max_missed_frames_then_is_dropped():
    tracker = IouTracker(max_missed=3)
    tracker.update([_box(0, 0)], SCORES)
    for _ in range(3):
        assert tracker.update(np.zeros((0, 4)), np.zeros((0, 3))).ids == []
    assert tracker.update([_box(1, 0)], SCORES).ids == ["1"]  # back after 3 missed frames
    for _ in range(4):
        tracker.update(np.zeros((0, 4)), np.zeros((0, 3)))
    assert tracker.update([_box(1, 0)], SCORES).ids == ["2"]  # 4 missed: a new person


def test_low_iou_starts_a_new_track():
    tracker = IouTracker(iou_threshold=0.5)
    tracker.update([_box(0, 0, 100, 100)], SCORES)
    # IoU of the shifted box with the first one is 50 * 100 / (150 * 100) = 1/3 < 0.5
    assert tracker.update([_box(50, 0, 100, 100)], SCORES).ids == ["2"]


@pytest.mark.parametrize("smoothing", [0.0, 0.3, 0.9])
def test_smoothing_is_exact_exponential_average(smoothing):
    tracker = IouTracker(smoothing=smoothing)
    xs = np.random.default_rng(1).random((6, 1, 4))
    cs = np.random.default_rng(2).random((6, 1, 3))
    state, cstate = xs[0, 0], cs[0, 0]
    for t in range(6):
        people = tracker.update([_box(t, 0)], xs[t], cs[t])
        if t:
            state = smoothing * state + (1 - smoothing) * xs[t, 0]
            cstate = smoothing * cstate + (1 - smoothing) * cs[t, 0]
        assert people.scores.dtype == np.float32
        np.testing.assert_allclose(people.scores[0], state, rtol=0, atol=1e-7)
        np.testing.assert_allclose(people.continuous[0], cstate, rtol=0, atol=1e-7)
    if smoothing == 0.0:
        np.testing.assert_allclose(people.scores[0], xs[-1, 0], atol=1e-7)


def test_smoothing_is_per_person():
    tracker = IouTracker(smoothing=0.5)
    scores = np.array([[1.0, 0.0], [0.0, 1.0]])
    tracker.update([_box(0, 0), _box(300, 0)], scores)
    people = tracker.update([_box(300, 0), _box(0, 0)], np.zeros((2, 2)))
    assert people.ids == ["2", "1"]
    np.testing.assert_allclose(people.scores, [[0.0, 0.5], [0.5, 0.0]])
    assert people.continuous is None


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, 1.5])
def test_smoothing_out_of_range_is_rejected(smoothing):
    with pytest.raises(ValueError, match="smoothing must be in"):
        IouTracker(smoothing=smoothing)
    tracker = IouTracker()
    with pytest.raises(ValueError, match="smoothing must be in"):
        tracker.smoothing = smoothing


def test_mismatched_scores_are_rejected():
    with pytest.raises(ValueError, match=r"scores must have shape \(2, K\)"):
        IouTracker().update([_box(0, 0), _box(100, 0)], SCORES)


def test_a_frame_without_people_keeps_the_shapes():
    """No one in the frame, with and without continuous values (a model with a continuous
    head sees empty rooms too)."""
    tracker = IouTracker()
    tracker.update([_box(0, 0)], np.zeros((1, 3)), np.full((1, 3), 0.5))
    people = tracker.update(np.zeros((0, 4)), np.zeros((0, 3)), np.zeros((0, 3)))
    assert people.ids == []
    assert people.scores.shape == (0, 3) and people.continuous.shape == (0, 3)
    people = tracker.update(np.zeros((0, 4)), np.zeros((0, 3)))
    assert people.scores.shape == (0, 3) and people.continuous is None
