"""Drive a running emotion_node from a test: start it as the launch file does, publish camera
frames, collect its answers (people, overlay, diagnostics), call its enable service and its
lifecycle services (change_state, get_state).

:func:`start_node` runs the ``emotion_node`` console script with the params file and the
launch file's remapping (its output goes to a log file: a pipe nobody reads would block it).
:class:`NodeProbe` is an rclpy node in a context of its own on a given domain id, so one test
module can talk to several nodes on different domains.
"""

from __future__ import annotations

import array
import contextlib
import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import DescribeParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import SetBool

from caer_msgs.msg import PersonEmotionArray
from caer_ros.ros.launch_command import emotion_node_command
from caer_ros.ros.spinning import spin_until

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "emotion.yaml"
CAMERA_TOPIC = "/camera/image_raw"
PEOPLE_TOPIC = "/people_emotions"
OVERLAY_TOPIC = "/people_emotions/overlay"
TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "cleanup": Transition.TRANSITION_CLEANUP,
}


def node_command(*ros_args: str, camera_topic: str = CAMERA_TOPIC, namespace: str = "",
                 node_name: str = "emotion_node") -> list[str]:
    """``emotion_node --ros-args ... --params-file config/emotion.yaml -r image:=/camera/image_raw
    ...``: the launch file's command (:mod:`caer_ros.ros.launch_command`), then ``ros_args``."""
    return emotion_node_command(camera_topic, CONFIG, ros_args=ros_args, namespace=namespace,
                                node_name=node_name)


def start_node(env: dict[str, str], log: Path, *ros_args: str,
               command: list[str] | None = None, **where: str) -> subprocess.Popen:
    """The node as a process in ``REPO``, stdout and stderr to ``log``; ``where``: the
    camera_topic, namespace and node_name of :func:`node_command`; ``command``: another
    program in place of the ``emotion_node`` script (the arguments follow it)."""
    arguments = node_command(*ros_args, **where)
    if command is not None:
        arguments = [*command, *arguments[arguments.index("--ros-args"):]]
    with log.open("w") as out:
        return subprocess.Popen(arguments, env=env, cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)


def stop_node(process: subprocess.Popen, signal_number: int, timeout: float = 20.0) -> int | None:
    """Send ``signal_number``, wait; kill when it does not exit. Its return code (None: none)."""
    if process.poll() is None:
        process.send_signal(signal_number)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            return None
    return process.returncode


@contextlib.contextmanager
def running_node(folder: Path, *ros_args: str, timeout: float = 60.0
                 ) -> Iterator[tuple[subprocess.Popen, NodeProbe, Path]]:
    """One node on a domain of its own (loopback only), reliable QoS, log in ``folder``/node.log,
    and a reliable probe that saw it come up: ``(process, probe, log)``; both are stopped
    after."""
    domain = random.SystemRandom().randint(1, 100)
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1"}
    log = folder / "node.log"
    process = start_node(env, log, "-p", "qos_reliability:=reliable", *ros_args)
    previous = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # the probe's own discovery
    try:
        probe = NodeProbe(domain, reliable=True)
    finally:
        if previous is None:
            del os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]
        else:
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = previous
    try:
        if not probe.wait_for_node(process, "raw", timeout):
            raise AssertionError(f"the node did not come up (exit {process.poll()}):\n"
                                 f"{log.read_text()[-3000:]}")
        yield process, probe, log
    finally:
        probe.close()
        stop_node(process, signal.SIGINT)


def stamp_key(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


class NodeProbe:
    """Publishes frames to and listens to one emotion_node (see the module docstring).

    ``reliable``: QoS reliability of the frame publishers (a camera driver's is usually best
    effort). Answers are kept by their header stamp: give every published frame its own.
    """

    def __init__(self, domain_id: int, reliable: bool = True, name: str = "emotion_probe",
                 camera_topic: str = CAMERA_TOPIC, namespace: str = "",
                 node_name: str = "emotion_node"):
        """``camera_topic``, ``namespace``, ``node_name``: where the node listens and what it
        is called (its outputs are in its namespace, its services under its name)."""
        namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self.people_topic = namespace + PEOPLE_TOPIC
        self.node_path = f"{namespace}/{node_name}"
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        frames = QoSProfile(depth=500, reliability=reliability)
        self.raw_pub = self.node.create_publisher(Image, camera_topic, frames)
        self.compressed_pub = self.node.create_publisher(
            CompressedImage, camera_topic + "/compressed", frames)
        self.people: dict[tuple[int, int], list[PersonEmotionArray]] = defaultdict(list)
        self.overlays: dict[tuple[int, int], list[Image]] = defaultdict(list)
        self.diagnostics: list[tuple[float, DiagnosticArray]] = []
        self.node.create_subscription(PersonEmotionArray, self.people_topic,
                                      lambda m: self.people[stamp_key(m)].append(m), 50)
        self.node.create_subscription(Image, namespace + OVERLAY_TOPIC,
                                      lambda m: self.overlays[stamp_key(m)].append(m), 10)
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics",
            lambda m: self.diagnostics.append((time.monotonic(), m)), 10)
        self.enable_client = self.node.create_client(SetBool, f"{self.node_path}/enable")
        self.parameters_client = self.node.create_client(SetParameters,
                                                         f"{self.node_path}/set_parameters")
        self.describe_client = self.node.create_client(
            DescribeParameters, f"{self.node_path}/describe_parameters")
        self.change_state_client = self.node.create_client(ChangeState,
                                                           f"{self.node_path}/change_state")
        self.get_state_client = self.node.create_client(GetState, f"{self.node_path}/get_state")
        self._next_stamp = 1000

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # ------------------------------------------------------------------ waiting

    def spin_until(self, done: Callable[[], bool], timeout: float,
                   process: subprocess.Popen | None = None) -> bool:
        """Spin until ``done()`` (True), ``timeout`` seconds or the process ended (False)."""
        return spin_until(self.executor, done, timeout, process)

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def wait_for_node(self, process: subprocess.Popen, transport: str, timeout: float) -> bool:
        """Until the node subscribes to our frames, publishes people and serves enable."""
        pub = self.raw_pub if transport == "raw" else self.compressed_pub
        return self.spin_until(
            lambda: pub.get_subscription_count() > 0
            and self.node.count_publishers(self.people_topic) > 0
            and self.enable_client.service_is_ready(), timeout, process)

    # ------------------------------------------------------------------ frames

    def stamp(self, msg, frame_id: str = "camera_optical_frame"):
        """Give ``msg`` a stamp no other frame of this probe has; returns ``msg``."""
        self._next_stamp += 1
        msg.header.stamp.sec, msg.header.stamp.nanosec = self._next_stamp, 123_000_000
        msg.header.frame_id = frame_id
        return msg

    def publish(self, msg) -> None:
        (self.compressed_pub if isinstance(msg, CompressedImage) else self.raw_pub).publish(msg)

    def answer(self, msg, timeout: float = 30.0, process: subprocess.Popen | None = None,
               overlay: bool = False, repeat_s: float = 2.0
               ) -> tuple[PersonEmotionArray | None, Image | None]:
        """Publish ``msg`` (again every ``repeat_s`` until answered: best effort may lose it)
        and return the node's answer with its stamp (and the overlay with ``overlay``);
        None where nothing came within ``timeout``."""
        key = stamp_key(msg)

        def answered() -> bool:
            return bool(self.people[key]) and (not overlay or bool(self.overlays[key]))

        deadline = time.monotonic() + timeout
        while not answered() and time.monotonic() < deadline:
            self.publish(msg)
            wait = min(repeat_s, deadline - time.monotonic())
            if not self.spin_until(answered, wait, process) and process is not None \
                    and process.poll() is not None:
                break
        people = self.people[key][0] if self.people[key] else None
        image = self.overlays[key][0] if self.overlays[key] else None
        return people, image

    # ------------------------------------------------------------------ enable, diagnostics

    def set_enabled(self, enabled: bool, timeout: float = 10.0) -> SetBool.Response | None:
        future = self.enable_client.call_async(SetBool.Request(data=enabled))
        self.spin_until(future.done, timeout)
        return future.result() if future.done() else None

    def set_parameter(self, name: str, value, timeout: float = 10.0):
        """Set one of the node's parameters; its SetParametersResult (None: no reply)."""
        parameter = Parameter(name, value=value).to_parameter_msg()
        request = SetParameters.Request(parameters=[parameter])
        future = self.parameters_client.call_async(request)
        self.spin_until(future.done, timeout)
        return future.result().results[0] if future.done() else None

    def describe_parameters(self, names: list[str], timeout: float = 10.0) -> list | None:
        """The node's ParameterDescriptors of ``names`` (None: no reply)."""
        response = self._call(self.describe_client, DescribeParameters.Request(names=names),
                              timeout)
        return None if response is None else list(response.descriptors)

    def _call(self, client, request, timeout: float):
        """The response of ``client`` to ``request`` (None: no service or no reply in time)."""
        deadline = time.monotonic() + timeout
        if not self.spin_until(client.service_is_ready, timeout):
            return None
        future = client.call_async(request)
        self.spin_until(future.done, max(0.0, deadline - time.monotonic()))
        return future.result() if future.done() else None

    def change_state(self, transition: str, timeout: float = 30.0) -> bool | None:
        """Trigger a lifecycle ``transition`` (configure, activate, deactivate, cleanup) on the
        node: its success (None: no reply)."""
        request = ChangeState.Request(transition=Transition(id=TRANSITIONS[transition]))
        response = self._call(self.change_state_client, request, timeout)
        return None if response is None else response.success

    def lifecycle_state(self, timeout: float = 10.0) -> str | None:
        """The node's lifecycle state label (unconfigured, inactive, active; None: no reply)."""
        response = self._call(self.get_state_client, GetState.Request(), timeout)
        return None if response is None else response.current_state.label

    def latest_diagnostics(self) -> dict[str, str]:
        """The key/values of the newest /diagnostics status received so far ({} when none)."""
        self.executor.spin_once(timeout_sec=0.0)
        arrays = [m for _, m in self.diagnostics if m.status]
        return {kv.key: kv.value for kv in arrays[-1].status[0].values} if arrays else {}

    def diagnostics_after(self, moment: float, timeout: float = 10.0) -> dict[str, str] | None:
        """The key/values of the first /diagnostics status received after ``moment``
        (time.monotonic())."""
        def later() -> list[DiagnosticArray]:
            return [m for t, m in self.diagnostics if t > moment and m.status]

        if not self.spin_until(lambda: bool(later()), timeout):
            return None
        return {kv.key: kv.value for kv in later()[0].status[0].values}


def image_msg(bgr: np.ndarray, encoding: str = "bgr8", padding: int = 0) -> Image:
    """A sensor_msgs/Image of ``bgr`` in ``encoding`` (bgr8, rgb8, mono8), rows padded."""
    if encoding == "rgb8":
        pixels = bgr[..., ::-1]
    elif encoding == "mono8":
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[..., None]
    else:
        pixels = bgr
    height, width, channels = pixels.shape
    rows = np.zeros((height, width * channels + padding), np.uint8)
    rows[:, :width * channels] = pixels.reshape(height, -1)
    buffer = array.array("B")
    buffer.frombytes(rows.tobytes())
    return Image(height=height, width=width, encoding=encoding, step=rows.shape[1], data=buffer)
