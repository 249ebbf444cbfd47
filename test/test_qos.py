"""Image QoS and the no-input diagnosis (caer_ros/ros/qos.py), with a real ROS graph."""

from __future__ import annotations

import time

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from caer_ros.ros.qos import image_qos, incompatible_qos_hint, input_problem

IMAGE = "sensor_msgs/msg/Image"


def test_image_qos_keeps_one_volatile_frame():
    for name, policy in (("best_effort", ReliabilityPolicy.BEST_EFFORT),
                         ("reliable", ReliabilityPolicy.RELIABLE)):
        qos = image_qos(name)
        assert qos.depth == 1 and qos.reliability == policy
        assert qos.durability == DurabilityPolicy.VOLATILE


def _publishers(node, topic, count):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = node.get_publishers_info_by_topic(topic)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"graph did not show {count} publishers on {topic}")


def test_input_problem_names_topic_publisher_and_parameter(ros_env):
    import rclpy

    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        camera = rclpy.create_node("camera", namespace="/robot", context=context)
        camera.create_publisher(Image, "/cam/image_raw",
                                QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        camera.create_publisher(CompressedImage, "/cam2/image", 1)
        found = _publishers(camera, "/cam/image_raw", 1)

        problem = input_problem("/cam/image_raw", IMAGE, "reliable", found)
        assert problem is not None
        for part in ("/cam/image_raw", "/robot/camera", "best_effort",
                     "qos_reliability:=best_effort"):
            assert part in problem, part
        assert input_problem("/cam/image_raw", IMAGE, "best_effort", found) is None

        wrong = input_problem("/cam2/image", IMAGE, "best_effort",
                              _publishers(camera, "/cam2/image", 1))
        assert "sensor_msgs/msg/CompressedImage" in wrong
        assert "image_transport:=compressed" in wrong
        camera.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_no_publisher_is_reported():
    problem = input_problem("/camera/image_raw", IMAGE, "best_effort", [])
    assert "no publisher on /camera/image_raw" in problem and "image_topic" in problem


def test_incompatible_qos_hint():
    hint = incompatible_qos_hint("/cam", "RMW_QOS_POLICY_RELIABILITY", "reliable")
    assert "policy RELIABILITY" in hint and "qos_reliability:=best_effort" in hint
    assert "qos_reliability" not in incompatible_qos_hint("/cam", "DURABILITY", "best_effort")
