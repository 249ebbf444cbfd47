"""caer_msgs crosses a process boundary over rclpy with every field intact."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import numpy as np

from caer_msgs.msg import PersonEmotion, PersonEmotionArray
from conftest import REPO

SPEC = {
    "stamp": [1_763_000_123, 456_789_012],
    "frame_id": "head_camera_optical_frame",
    "categories": ["Anger", "Disgust", "Excitement", "Fear",
                   "Happiness", "Peace", "Sadness", "Surprise"],
    "people": [
        {
            "id": "7", "detection_score": 0.93,
            "x_min": 12.5, "y_min": 40.25, "x_max": 210.0, "y_max": 470.75,
            "scores": [0.01, 0.02, 0.71, 0.03, 0.88, 0.4, 0.05, 0.12],
            "labels": ["Happiness", "Excitement"],
            "valence": 0.8, "arousal": 0.65, "dominance": 0.55,
        },
        {
            "id": "12", "detection_score": 0.41,
            "x_min": 300.0, "y_min": 22.0, "x_max": 355.5, "y_max": 190.0,
            "scores": [0.6, 0.1, 0.0, 0.55, 0.02, 0.0, 0.3, 1.0],
            "labels": ["Surprise", "Anger", "Fear"],
            "valence": None, "arousal": None, "dominance": None,
        },
    ],
}


def test_fields_are_documented():
    """Every field of the .msg files has a comment above it."""
    for name in ("PersonEmotion", "PersonEmotionArray"):
        lines = (REPO / "caer_msgs" / "msg" / f"{name}.msg").read_text().splitlines()
        fields = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
        assert fields, name
        for i in fields:
            assert lines[i - 1].startswith("#"), f"{name}.msg: field {lines[i]!r} has no comment"


def test_message_types_match_design():
    assert PersonEmotionArray.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "categories": "sequence<string>",
        "people": "sequence<caer_msgs/PersonEmotion>",
    }
    assert PersonEmotion.get_fields_and_field_types() == {
        "id": "string", "detection_score": "float",
        "x_min": "float", "y_min": "float", "x_max": "float", "y_max": "float",
        "scores": "sequence<float>", "labels": "sequence<string>",
        "valence": "float", "arousal": "float", "dominance": "float",
    }


def _same_float32(received: float, sent: float | None) -> bool:
    if sent is None:
        return math.isnan(received)
    return received == float(np.float32(sent))


def test_person_emotion_array_crosses_processes(ros_env):
    import rclpy
    from rclpy.qos import QoSProfile

    topic = "/people_emotions"
    publisher = subprocess.Popen(
        [sys.executable, str(REPO / "test" / "helpers" / "publish_people.py"), topic,
         json.dumps(SPEC)],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    received: list[PersonEmotionArray] = []
    rclpy.init()
    try:
        node = rclpy.create_node("test_people_subscriber")
        node.create_subscription(PersonEmotionArray, topic, received.append, QoSProfile(depth=10))
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline and publisher.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.2)
        # The graph learns node names a little after the topic itself: wait for them.
        names: list[str] = []
        while time.monotonic() < deadline and names != ["test_people_publisher"]:
            names = [p.node_name for p in node.get_publishers_info_by_topic(topic)]
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        rclpy.shutdown()
        publisher.terminate()
        output, _ = publisher.communicate(timeout=20)
    assert received, f"nothing received from the publisher process; its output:\n{output}"
    assert names == ["test_people_publisher"], "the message did not come from the publisher process"

    msg = received[0]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == tuple(SPEC["stamp"])
    assert msg.header.frame_id == SPEC["frame_id"]
    assert list(msg.categories) == SPEC["categories"]
    assert len(msg.people) == len(SPEC["people"])
    for got, sent in zip(msg.people, SPEC["people"], strict=True):
        assert got.id == sent["id"]
        assert list(got.labels) == sent["labels"]
        assert np.array_equal(np.asarray(got.scores),
                              np.asarray(sent["scores"], dtype=np.float32))
        for key in ("detection_score", "x_min", "y_min", "x_max", "y_max",
                    "valence", "arousal", "dominance"):
            assert _same_float32(getattr(got, key), sent[key]), (key, getattr(got, key))
