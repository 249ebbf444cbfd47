"""Publisher half of test_msgs_roundtrip: publishes one PersonEmotionArray, given as JSON,
on a topic every 0.1 s until killed. Runs in its own process."""

from __future__ import annotations

import json
import math
import sys

import rclpy
from builtin_interfaces.msg import Time

from caer_msgs.msg import PersonEmotion, PersonEmotionArray


def build(spec: dict) -> PersonEmotionArray:
    msg = PersonEmotionArray()
    msg.header.stamp = Time(sec=spec["stamp"][0], nanosec=spec["stamp"][1])
    msg.header.frame_id = spec["frame_id"]
    msg.categories = spec["categories"]
    for p in spec["people"]:
        person = PersonEmotion()
        for key, value in p.items():
            if value is None:  # JSON has no NaN: None stands for "no continuous head"
                value = math.nan
            setattr(person, key, value)
        msg.people.append(person)
    return msg


def main() -> None:
    topic, spec = sys.argv[1], json.loads(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("test_people_publisher")
    pub = node.create_publisher(PersonEmotionArray, topic, 10)
    msg = build(spec)
    node.create_timer(0.1, lambda: pub.publish(msg))
    print("publishing", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
