"""Rosbag replay (issue 29): a bag of camera frames played back to the real emotion_node with a
clock, as ``ros2 bag play BAG --clock`` does on a robot, the node started with
``use_sim_time:=true``.

The ``ros2 bag`` CLI is not installed here, so the test writes and reads the bag with the
pure-Python ``rosbags`` library (a ROS 2 bag, MCAP storage as ``ros2 bag record`` writes by
default, 8 ``sensor_msgs/msg/Image`` frames at 5 Hz stamped from sim time 1000 s) and plays it
itself: each message, deserialized by rosbags' ROS 2 type store, is published as a real rclpy
Image on the camera topic, while ``rosgraph_msgs/Clock`` on ``/clock`` carries the bag's time
(the time each frame was recorded, a little after its camera stamp, as on a robot). The replay
waits for each answer before the next frame (the node keeps only the newest frame; a real
``ros2 bag play`` would be slowed with ``--rate`` instead).

Checked: one PersonEmotionArray per frame, in the bag's order, each carrying its frame's header
(stamp and frame_id: the camera's, not the clock's), and ``/diagnostics`` stamped with the sim
time the node's clock follows (0 before the first ``/clock``: the diagnostics timer ticks on the
steady clock, and the replay keeps the clock running after the last frame so that several are
stamped in the bag's time).
"""

from __future__ import annotations

import array
import time

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from helpers.node_probe import CAMERA_TOPIC, NodeProbe, running_node, stamp_key
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Header

TYPESTORE = get_typestore(Stores.ROS2_KILTED)  # the ROS 2 of the pip wheels
IMAGE_TYPE = "sensor_msgs/msg/Image"
FRAME_ID = "camera_optical_frame"
FRAMES = 8
START_NS = 1000 * 10**9 + 250_000_000  # the first frame's camera stamp (sim time)
PERIOD_NS = 200_000_000  # 5 Hz
RECORD_DELAY_NS = 15_000_000  # the bag's time of a frame: when it was recorded, after its stamp
WIDTH, HEIGHT = 320, 240
ANSWER_TIMEOUT_S = 30.0
CLOCK_PERIOD_S = 0.02  # wall time between /clock messages (ros2 bag play: 40 Hz by default)
AFTER_REPLAY_NS = 3 * 10**9  # sim time the clock keeps running after the last frame
AFTER_REPLAY_STEP_NS = 100_000_000  # per clock message then: 5x faster than the wall


def _scene(index: int) -> np.ndarray:
    """A room-like BGR frame with a figure that moves right from frame to frame."""
    rows = np.linspace(0.7, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    image = (np.array([170, 190, 210], np.float32) * rows).repeat(WIDTH, axis=1).astype(np.uint8)
    image[int(HEIGHT * 0.75):] = (60, 80, 90)
    cx = 60 + 25 * index
    cv2.rectangle(image, (cx - 18, 90), (cx + 18, 160), (40, 60, 200), -1)  # torso
    cv2.rectangle(image, (cx - 12, 160), (cx + 12, 225), (40, 40, 60), -1)  # legs
    cv2.ellipse(image, (cx, 70), (13, 18), 0, 0, 360, (90, 140, 200), -1)  # head
    return image


def _write_bag(path) -> None:
    """The bag a robot would have recorded: FRAMES camera frames on CAMERA_TOPIC."""
    image_cls = TYPESTORE.types[IMAGE_TYPE]
    header_cls = TYPESTORE.types["std_msgs/msg/Header"]
    time_cls = TYPESTORE.types["builtin_interfaces/msg/Time"]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(CAMERA_TOPIC, IMAGE_TYPE, typestore=TYPESTORE)
        for index in range(FRAMES):
            stamp = START_NS + index * PERIOD_NS
            bgr = _scene(index)
            header = header_cls(stamp=time_cls(sec=stamp // 10**9, nanosec=stamp % 10**9),
                                frame_id=FRAME_ID)
            msg = image_cls(header=header, height=HEIGHT, width=WIDTH, encoding="bgr8",
                            is_bigendian=0, step=WIDTH * 3, data=bgr.reshape(-1))
            writer.write(connection, stamp + RECORD_DELAY_NS,
                         TYPESTORE.serialize_cdr(msg, IMAGE_TYPE))


def _to_rclpy(msg) -> Image:
    """A rosbags Image as the rclpy sensor_msgs/Image a player would publish."""
    data = array.array("B")
    data.frombytes(np.asarray(msg.data, np.uint8).tobytes())
    stamp = Time(sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec)
    return Image(header=Header(stamp=stamp, frame_id=msg.header.frame_id), height=msg.height,
                 width=msg.width, encoding=msg.encoding, is_bigendian=msg.is_bigendian,
                 step=msg.step, data=data)


def _read_bag(path) -> list[tuple[int, Image]]:
    """The bag's camera frames in its order: (bag time in ns, rclpy Image)."""
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.topic == CAMERA_TOPIC]
        return [(timestamp, _to_rclpy(TYPESTORE.deserialize_cdr(raw, connection.msgtype)))
                for connection, timestamp, raw in reader.messages(connections=connections)]


class ClockPlayer:
    """Publishes ``/clock`` from the probe's node every CLOCK_PERIOD_S of wall time while the
    probe spins (the node's time source listens best effort: a lost message is soon
    replaced), as ``ros2 bag play --clock`` does; :meth:`set` moves the time."""

    def __init__(self, probe: NodeProbe):
        self.probe = probe
        self.publisher = probe.node.create_publisher(
            Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.now_ns: int | None = None
        self.started = 0.0  # time.monotonic() of the first clock message
        probe.node.create_timer(CLOCK_PERIOD_S, self._tick)

    def set(self, now_ns: int) -> None:
        if self.now_ns is None:
            self.started = time.monotonic()
        self.now_ns = now_ns
        self._tick()

    def _tick(self) -> None:
        if self.now_ns is not None:
            self.publisher.publish(Clock(clock=Time(sec=self.now_ns // 10**9,
                                                    nanosec=self.now_ns % 10**9)))


def _ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


def test_replayed_bag_is_answered_frame_by_frame_with_its_headers(small_model_files, tmp_path):
    bag = tmp_path / "camera_bag"
    _write_bag(bag)
    frames = _read_bag(bag)
    assert [t for t, _ in frames] == [START_NS + i * PERIOD_NS + RECORD_DELAY_NS
                                      for i in range(FRAMES)]
    assert [(_ns(m.header.stamp), m.header.frame_id) for _, m in frames] == \
        [(START_NS + i * PERIOD_NS, FRAME_ID) for i in range(FRAMES)]
    assert np.array_equal(np.frombuffer(frames[3][1].data, np.uint8).reshape(HEIGHT, WIDTH, 3),
                          _scene(3))

    _, onnx_path = small_model_files
    with running_node(tmp_path, "-p", f"model_path:={onnx_path}",
                      "-p", "use_sim_time:=true") as (process, probe, log):
        clock = ClockPlayer(probe)
        for bag_time, msg in frames:
            clock.set(bag_time)
            probe.spin_for(CLOCK_PERIOD_S)
            answer, _ = probe.answer(msg, ANSWER_TIMEOUT_S, process, repeat_s=ANSWER_TIMEOUT_S)
            assert answer is not None, f"no answer to frame {msg.header.stamp} (node exit " \
                                       f"{process.poll()}):\n{log.read_text()[-3000:]}"
        # the bag is over; the clock keeps running (faster than the wall) for the diagnostics
        replay_end = frames[-1][0]
        for step in range(1, AFTER_REPLAY_NS // AFTER_REPLAY_STEP_NS + 1):
            clock.set(replay_end + step * AFTER_REPLAY_STEP_NS)
            probe.spin_for(CLOCK_PERIOD_S)
        probe.spin_for(0.3)  # the last diagnostics and any late (duplicate) answer
        last_clock = clock.now_ns
        diagnostics = list(probe.diagnostics)

    expected = [stamp_key(msg) for _, msg in frames]
    assert list(probe.people) == expected, "answers missing, extra or out of the bag's order"
    for _, msg in frames:
        answers = probe.people[stamp_key(msg)]
        assert len(answers) == 1, f"{len(answers)} answers to frame {msg.header.stamp}"
        assert answers[0].header == msg.header  # the camera's stamp and frame_id, not /clock's

    # /diagnostics tick on the steady clock (so they come before any /clock too) and are
    # stamped with the node's clock: sim time, 0 until the first /clock, then the bag's time,
    # never the wall's
    stamps = [_ns(m.header.stamp) for _, m in diagnostics]
    assert all(s == 0 or frames[0][0] <= s <= last_clock for s in stamps), (stamps, last_clock)
    sim = [s for s in stamps if s]
    assert len(sim) >= 2, f"{len(sim)} diagnostics in {AFTER_REPLAY_NS / 1e9} s of sim time"
    assert sim == sorted(sim)
