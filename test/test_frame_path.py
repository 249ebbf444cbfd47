"""Frame path pieces that need no model: the newest-frame box, tracking step, message building
(caer_ros/ros/frame_path.py). The whole path with a real model is tested with the node."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from caer_msgs.msg import PersonEmotionArray
from caer_ros.inference.decode import Detections
from caer_ros.inference.tracking import IouTracker
from caer_ros.ros.frame_path import LatestFrame, people_message, track

CATEGORIES = ("Anger", "Happiness", "Sadness")


def _detections(continuous: bool = True) -> Detections:
    return Detections(
        boxes=np.array([[10, 20, 110, 220], [300, 40, 360, 200]], np.float32),
        detection_scores=np.array([0.9, 0.45], np.float32),
        scores=np.array([[0.55, 0.9, 0.2], [0.1, 0.3, 0.6]], np.float32),
        continuous=np.array([[0.7, 0.6, 0.5], [0.2, 0.3, 0.4]], np.float32) if continuous
        else None,
    )


def test_latest_frame_keeps_the_newest_and_reports_replacements():
    box = LatestFrame()
    first, second = Image(width=1), Image(width=2)
    assert box.put(first) is False
    assert box.put(second) is True  # first was never taken: dropped
    msg, arrived = box.take(timeout=0.0)
    assert msg is second and arrived <= time.monotonic()
    assert box.take(timeout=0.01) is None
    assert box.put(first) is False
    assert box.clear() is True and box.take(timeout=0.0) is None


def test_latest_frame_wakes_a_waiting_taker():
    box = LatestFrame()
    msg = Image(width=3)
    threading.Timer(0.05, box.put, args=(msg,)).start()
    start = time.monotonic()
    item = box.take(timeout=5.0)
    assert item is not None and item[0] is msg
    assert time.monotonic() - start < 2.0


def test_people_message_fields():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    det = _detections()
    people = track(IouTracker(), det)
    msg = people_message(header, CATEGORIES, det, people, np.array([0.5, 0.5, 0.5]))
    msg = deserialize_message(serialize_message(msg), PersonEmotionArray)  # a valid message
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 34
    assert list(msg.categories) == list(CATEGORIES)
    first, second = msg.people
    assert (first.id, second.id) == ("1", "2")
    assert (first.x_min, first.y_min, first.x_max, first.y_max) == (10, 20, 110, 220)
    assert first.detection_score == np.float32(0.9)
    assert np.array_equal(np.asarray(first.scores, np.float32), det.scores[0])
    assert list(first.labels) == ["Happiness", "Anger"]
    assert list(second.labels) == ["Sadness"]
    assert (second.valence, second.arousal, second.dominance) == tuple(
        float(v) for v in det.continuous[1])


def test_people_message_without_tracking_or_continuous_head():
    det = _detections(continuous=False)
    people = track(None, det)
    msg = people_message(Header(), CATEGORIES, det, people, np.array([0.95, 0.25, 0.65]))
    assert [p.id for p in msg.people] == ["", ""]
    assert [list(p.labels) for p in msg.people] == [["Happiness"], ["Happiness"]]
    assert all(math.isnan(v) for p in msg.people for v in (p.valence, p.arousal, p.dominance))


def test_people_message_uses_smoothed_scores():
    tracker = IouTracker(smoothing=0.5)
    det = _detections()
    track(tracker, det)
    later = Detections(boxes=det.boxes + 2, detection_scores=det.detection_scores,
                       scores=np.zeros_like(det.scores), continuous=det.continuous)
    people = track(tracker, later)
    msg = people_message(Header(), CATEGORIES, later, people, np.full(3, 0.4))
    np.testing.assert_allclose(msg.people[0].scores, det.scores[0] / 2, rtol=1e-6)
    assert list(msg.people[0].labels) == ["Happiness"]  # 0.45 >= 0.4, Anger 0.275 is not


def test_empty_frame_gives_an_empty_people_list():
    det = Detections(boxes=np.zeros((0, 4), np.float32),
                     detection_scores=np.zeros(0, np.float32),
                     scores=np.zeros((0, 3), np.float32))
    msg = people_message(Header(frame_id="x"), CATEGORIES, det, track(IouTracker(), det),
                         np.full(3, 0.5))
    assert msg.people == [] and list(msg.categories) == list(CATEGORIES)


