"""emotion_node: camera images in, people and their emotions out (DESIGN.md, Node contract).

Subscribes ``image`` (sensor_msgs/Image) or ``image/compressed`` (CompressedImage), by the
``image_transport`` parameter; publishes ``/people_emotions`` (caer_msgs/PersonEmotionArray),
``/people_emotions/overlay`` (bgr8 Image, with ``publish_overlay``) and ``/diagnostics``;
serves ``~/enable`` (std_srvs/SetBool) to pause and resume. Parameters: config/emotion.yaml.

Threads: the executor (main thread) runs the subscription callback, which only puts the
newest message into a one-slot box, plus the service, parameter callbacks and timers. One
worker thread takes frames from the box and runs the frame path
(:func:`caer_ros.ros.frame_path.process_frame`), then publishes. Frames replaced in the box
before the worker took them are counted as dropped.

Exit status: 0 after SIGINT/SIGTERM, 1 when the parameters or the model file are unusable
(one line on stderr naming the problem).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import SetBool

from caer_msgs.msg import PersonEmotionArray
from caer_ros.inference.tracking import IOU_THRESHOLD, MAX_MISSED, IouTracker
from caer_ros.ros import params as node_params
from caer_ros.ros.diagnostics import FrameStats, diagnostic_status
from caer_ros.ros.frame_path import FrameSettings, LatestFrame, process_frame
from caer_ros.ros.image_conversion import ImageConversionError
from caer_ros.ros.params import NodeParams, ParamsError
from caer_ros.ros.qos import image_qos, incompatible_qos_hint, input_problem

NODE_NAME = "emotion_node"
PEOPLE_TOPIC = "/people_emotions"
OVERLAY_TOPIC = "/people_emotions/overlay"
DIAGNOSTICS_TOPIC = "/diagnostics"
NO_INPUT_WARN_S = 5.0  # warn about the input topic when nothing arrived for this long
LOG_THROTTLE_S = 5.0


class StartupError(RuntimeError):
    """The node cannot start; the message is the one line printed on stderr."""


def load_predictor(params: NodeParams) -> Any:
    """The Predictor for ``params``; raises StartupError naming the model path and reason."""
    path = node_params.resolve_model_path(params.model_path)
    try:
        from caer_ros.inference.predictor import Predictor

        return Predictor.from_file(path, backend=params.backend, device=params.device,
                                   providers=list(params.providers) or None, fp16=params.fp16)
    except Exception as err:  # the predictor's own errors, ImportError, ORT/torch errors
        reason = " ".join(str(err).split()) or type(err).__name__
        raise StartupError(reason if path in reason else f"cannot load model {path}: {reason}")\
            from None


class EmotionNode(Node):
    """The node; :meth:`start` begins processing, :meth:`stop` joins the worker thread."""

    def __init__(self, predictor_factory=load_predictor) -> None:
        super().__init__(NODE_NAME)
        try:
            self.params = NodeParams.from_values(node_params.declare(self))
        except ParamsError as err:
            raise StartupError(f"bad parameters: {err}") from None
        self.predictor = predictor_factory(self.params)
        if self.params.category_set:
            try:
                self.predictor.use_category_set(self.params.category_set)
            except ValueError as err:
                raise StartupError(f"category_set: {err}") from None
        self.categories = tuple(self.predictor.categories)
        try:
            self.settings = self._frame_settings(self.params)
        except ValueError as err:
            raise StartupError(str(err)) from None
        self.tracker = (IouTracker(IOU_THRESHOLD, MAX_MISSED, self.params.smoothing)
                        if self.params.tracking else None)
        self.stats = FrameStats()
        self.frames = LatestFrame()
        self.enabled = True
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="emotion_worker", daemon=True)
        self._last_input_warning = ("", 0.0)

        self.input_topic, self.input_type = self._input()
        self.image_sub = self.create_subscription(
            self.input_type, self.input_topic, self._on_image,
            image_qos(self.params.qos_reliability),
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos),
        )
        self.people_pub = self.create_publisher(PersonEmotionArray, PEOPLE_TOPIC, 10)
        self.overlay_pub = (self.create_publisher(Image, OVERLAY_TOPIC, 2)
                            if self.params.publish_overlay else None)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(NO_INPUT_WARN_S, self._check_input)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.get_logger().info(
            f"model {node_params.resolve_model_path(self.params.model_path)} "
            f"({self.predictor.backend}, {len(self.categories)} categories); input "
            f"{self.input_topic} ({self.params.image_transport}, {self.params.qos_reliability}); "
            f"output {PEOPLE_TOPIC}" + (f", {OVERLAY_TOPIC}" if self.overlay_pub else ""))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(timeout)

    # ------------------------------------------------------------------ receive (executor)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        """Subscription callback: keep the newest frame only, never wait for inference."""
        self.stats.received()
        if self.enabled and self.frames.put(msg):
            self.stats.dropped()

    # ------------------------------------------------------------------ frame path (worker)

    def _work(self) -> None:
        """Worker thread: wait for the rate limit, take the newest frame, process, publish."""
        last_start = -float("inf")
        while not self._stop.is_set():
            rate = self.params.max_rate_hz
            if rate > 0 and self._stop.wait(max(0.0, last_start + 1.0 / rate - time.monotonic())):
                break
            item = self.frames.take(timeout=0.1)
            if item is None:
                continue
            last_start = time.monotonic()
            self._process(*item)

    def _process(self, msg: Image | CompressedImage, arrived: float) -> None:
        """One frame: process_frame, then publish; a bad frame is logged and skipped."""
        overlay = self.overlay_pub is not None and self.overlay_pub.get_subscription_count() > 0
        try:
            output = process_frame(msg, self.predictor, self.settings, self.tracker, overlay)
        except ImageConversionError as err:
            self.stats.bad()
            self.get_logger().warning(f"skipping bad frame from {self.input_topic}: {err}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        except Exception as err:  # never let one frame stop the node
            if self._stop.is_set():
                return
            self.stats.failed()
            self.get_logger().error(f"frame from {self.input_topic} failed: "
                                    f"{type(err).__name__}: {err}",
                                    throttle_duration_sec=LOG_THROTTLE_S)
            return
        if self._stop.is_set() or not self.context.ok():
            return
        self.people_pub.publish(output.people)
        if output.overlay is not None:
            self.overlay_pub.publish(output.overlay)
        self.stats.processed(time.monotonic() - arrived)

    # ------------------------------------------------------------------ services, timers

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response):
        self.enabled = bool(request.data)
        if not self.enabled:
            self.frames.clear()
        response.success = True
        response.message = "processing" if self.enabled else "paused"
        self.get_logger().info(f"~/enable: {response.message}")
        return response

    def _publish_diagnostics(self) -> None:
        status = diagnostic_status(f"{self.get_name()}: people emotions", self.predictor.backend,
                                   self.input_topic, self.stats.window(), self.enabled,
                                   NO_INPUT_WARN_S)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def _check_input(self) -> None:
        """Every 5 s without input: say why (no publisher, wrong type, QoS mismatch)."""
        if self.stats.seconds_since_input() < NO_INPUT_WARN_S:
            return
        problem = input_problem(self.input_topic, _type_name(self.input_type),
                                self.params.qos_reliability,
                                self.get_publishers_info_by_topic(self.input_topic))
        if problem:
            self._warn_input(problem)

    def _on_incompatible_qos(self, info: Any) -> None:
        policy = getattr(info.last_policy_kind, "name", str(info.last_policy_kind))
        self._warn_input(incompatible_qos_hint(self.input_topic, policy,
                                               self.params.qos_reliability))

    def _warn_input(self, text: str) -> None:
        """Warn, repeating the same text at most every 30 s."""
        last_text, last_time = self._last_input_warning
        now = time.monotonic()
        if text != last_text or now - last_time > 30.0:
            self.get_logger().warning(text)
            self._last_input_warning = (text, now)

    # ------------------------------------------------------------------ parameters

    def _validate_parameters(self, changed: list[Any]) -> SetParametersResult:
        """Reject bad values (with the reason) before ROS stores them."""
        errors = []
        for parameter in changed:
            value, error = node_params.check(parameter.name, parameter.value)
            if error is None and parameter.name == "emotion_threshold":
                try:
                    node_params.emotion_thresholds(value, self.categories,
                                                   self.predictor.emotion_thresholds)
                except ValueError as err:
                    error = str(err)
            if error:
                errors.append(error)
        return SetParametersResult(successful=not errors, reason="; ".join(errors))

    def _apply_parameters(self, changed: list[Any]) -> None:
        """Use the new values from the next frame on (the worker reads them per frame)."""
        values = {p.name: p.value for p in changed if p.name in node_params.DYNAMIC}
        if not values:
            return
        self.params = self.params.replace(**values)
        self.settings = self._frame_settings(self.params)
        if self.tracker is not None:
            self.tracker.smoothing = self.params.smoothing
        self.get_logger().info("parameters changed: " + ", ".join(
            f"{name}={getattr(self.params, name)!r}" for name in values))

    def _frame_settings(self, params: NodeParams) -> FrameSettings:
        detection = params.detection_threshold
        if detection < 0:
            detection = float(self.predictor.detection_threshold)
        thresholds = node_params.emotion_thresholds(params.emotion_threshold, self.categories,
                                                    self.predictor.emotion_thresholds)
        return FrameSettings(detection, thresholds, params.max_people)

    def _input(self) -> tuple[str, type]:
        """Input topic and type. ``image/compressed`` follows a remap of ``image`` unless it
        is remapped itself (image_transport's convention)."""
        if self.params.image_transport == "raw":
            return self.resolve_topic_name("image"), Image
        name = "image/compressed"
        if self.resolve_topic_name(name) != self.resolve_topic_name(name, only_expand=True):
            return self.resolve_topic_name(name), CompressedImage
        return self.resolve_topic_name("image") + "/compressed", CompressedImage


def _type_name(msg_type: type) -> str:
    """``sensor_msgs/msg/Image`` for the Image class (the graph's type names)."""
    module = msg_type.__module__.split(".")
    return f"{module[0]}/{module[1]}/{msg_type.__name__}"


def main(args: list[str] | None = None) -> int:
    """Console script ``emotion_node``: run until SIGINT/SIGTERM; 1 when it cannot start."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = EmotionNode()
        node.start()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except StartupError as err:
        print(f"{NODE_NAME}: {err}", file=sys.stderr, flush=True)
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
