"""emotion_node: camera images in, people and their emotions out (DESIGN.md, Node contract).

Subscribes ``image`` (sensor_msgs/Image) or ``image/compressed`` (CompressedImage), by the
``image_transport`` parameter; publishes ``people_emotions`` (caer_msgs/PersonEmotionArray),
``people_emotions/overlay`` (bgr8 Image, with ``publish_overlay``) and ``/diagnostics``;
serves ``~/enable`` (std_srvs/SetBool) to pause and resume. Parameters: config/emotion.yaml.
Topic names are relative: without a namespace they are ``/people_emotions``, ...; in
namespace ``/head`` (``--ros-args -r __ns:=/head``, the launch file's ``namespace``) they are
``/head/people_emotions``, ..., so one node per camera can run in one ROS graph.
``/diagnostics`` stays absolute (every node's status goes there), named by the node's fully
qualified name.

Lifecycle: a managed node (``rclpy.lifecycle``; ``ros2 lifecycle set /emotion_node
configure|activate|deactivate|cleanup|shutdown``, or a lifecycle manager):

- unconfigured: parameters declared, no model. Every parameter but ``autostart`` may change.
- configure: reads and validates the parameters, loads the model (category set, thresholds,
  tracker), creates the output publishers. A bad parameter or model fails the transition, with
  one error line naming the reason (also on /diagnostics): the node stays unconfigured and
  alive, so fix the parameter (``ros2 param set``) and configure again.
- activate: subscribes to the image topic, starts the worker thread, enables the publishers.
- deactivate: unsubscribes and joins the worker; the model stays loaded; nothing is published.
- cleanup: drops the model and the output publishers (back to unconfigured).
- shutdown (from any state): as deactivate and cleanup; the process then idles (finalized)
  until SIGINT/SIGTERM.

Parameters: the ``[runtime]`` ones may change in any state; the others only while unconfigured
(the next configure reads them); ``autostart`` never. ``/diagnostics`` is published every
second in every state and names it.

``autostart`` (parameter, default true): the node configures and activates itself at start,
so ``emotion_node`` and the launch file behave as a plain node; false: it waits unconfigured.

``~/enable`` is a pause switch inside the active state: ``data: false`` while active pauses
(the node stays active; frames are ignored, nothing is published; diagnostics say "active:
paused"), ``data: true`` resumes. ``data: true`` while inactive activates the node; while
unconfigured it is refused (success false: configure first). ``data: false`` while not active
has nothing to pause (success true). Every activation starts unpaused.

Threads: a two-thread executor (main thread) runs, in the node's default callback group, the
subscription callback, which only puts the newest message into a one-slot box, the services
(enable, lifecycle transitions), parameter callbacks and autostart; and in a group of their
own the diagnostics and input-check timers (on the steady clock, so they tick under sim time
before ``/clock`` arrives). A configure that loads the model for minutes (a TensorRT engine
build) therefore keeps ``/diagnostics`` publishing ("configuring: building engine (95 s)");
the lifecycle transition answers with its outcome when the load is done. While active, one
worker thread takes frames from the box and runs the frame path
(:func:`caer_ros.ros.frame_path.process_frame`), then publishes; deactivating joins it before
the transition completes. Frames replaced in the box before the worker took them are counted
as dropped.

Exit status: 0 after SIGINT/SIGTERM (once the frame in progress is done), 1 when, with
``autostart``, the parameters or the model file are unusable (one line on stderr naming the
problem) or ``autostart`` is not a boolean.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.signals import uninstall_signal_handlers
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import SetBool

from caer_msgs.msg import PersonEmotionArray
from caer_ros.inference.preprocess import FrameSizeError
from caer_ros.inference.tracking import IOU_THRESHOLD, MAX_MISSED, IouTracker
from caer_ros.ros import params as node_params
from caer_ros.ros.diagnostics import FrameStats, diagnostic_status
from caer_ros.ros.frame_path import FrameSettings, LatestFrame, process_frame
from caer_ros.ros.image_conversion import ImageConversionError
from caer_ros.ros.params import NodeParams, ParamsError
from caer_ros.ros.qos import image_qos, incompatible_qos_hint, input_problem

NODE_NAME = node_params.NODE_NAME
PEOPLE_TOPIC = "people_emotions"  # relative: in the node's namespace
OVERLAY_TOPIC = "people_emotions/overlay"
DIAGNOSTICS_TOPIC = "/diagnostics"
NO_INPUT_WARN_S = 5.0  # warn about the input topic when nothing arrived for this long
LOG_THROTTLE_S = 5.0


class StartupError(RuntimeError):
    """The node cannot start; the message is the one line printed on stderr."""


def load_predictor(params: NodeParams) -> Any:
    """The Predictor for ``params``; raises StartupError naming the model path and reason.
    With TensorRT among the providers, its options come from the parameters
    (:func:`~caer_ros.ros.params.provider_specs`) and the model's engine cache folder (named
    by the file's content) is created."""
    path = node_params.resolve_model_path(params.model_path)
    if not os.path.exists(path):
        raise StartupError(f"model file {path}: no such file")
    providers = node_params.provider_specs(params, path)
    if node_params.TENSORRT_PROVIDER in params.providers and params.tensorrt_engine_cache:
        folder = node_params.engine_cache_folder(params, path)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise StartupError(f"tensorrt_engine_cache: cannot create {folder}: "
                               f"{err.strerror or err}") from None
    try:
        from caer_ros.inference.predictor import Predictor

        backend = None if params.backend == "auto" else params.backend  # None: by suffix
        return Predictor.from_file(path, backend=backend, device=params.device,
                                   providers=providers, fp16=params.fp16)
    except Exception as err:  # the predictor's own errors, ImportError, ORT/torch errors
        reason = " ".join(str(err).split()) or type(err).__name__
        raise StartupError(reason if path in reason else f"cannot load model {path}: {reason}")\
            from None


class EmotionNode(LifecycleNode):
    """The managed node (module docstring); :meth:`start` is autostart's configure and
    activate, :meth:`stop` joins the worker thread at the end of the process."""

    def __init__(self, predictor_factory=load_predictor) -> None:
        super().__init__(NODE_NAME)
        values, self._refused_at_start = node_params.declare(self)
        autostart, error = node_params.check("autostart", values["autostart"])
        if error:
            raise StartupError(f"bad parameters: {error}")
        self.autostart: bool = autostart
        self._predictor_factory = predictor_factory
        self.state = "unconfigured"  # of the lifecycle: unconfigured, inactive, active, finalized
        self.configure_error = ""  # why the last configure failed ("" after a success)
        self._log_configure_error = True  # autostart reports it on stderr instead
        self.params: NodeParams | None = None
        self.predictor: Any = None
        self.categories: tuple[str, ...] = ()
        self.settings: FrameSettings | None = None
        self.tracker: IouTracker | None = None
        self.input_topic, self.input_type = "", Image
        self.people_pub: Any = None
        self.overlay_pub: Any = None
        self.image_sub: Any = None

        self.stats = FrameStats()
        self.frames = LatestFrame()
        self.enabled = True
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._last_input_warning = ("", 0.0)
        self._input_size: tuple[int, ...] = ()  # the last frame's network input (H, W)
        self._input_size_changes = 0
        self._loading: tuple[str, float] | None = None  # (what, since time.monotonic())
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_service(SetBool, "~/enable", self._on_enable)
        # Diagnostics tick beside a long configure, and without /clock under sim time.
        monitor, steady = MutuallyExclusiveCallbackGroup(), Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=monitor, clock=steady)
        self.create_timer(NO_INPUT_WARN_S, self._check_input, callback_group=monitor,
                          clock=steady)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

    # ------------------------------------------------------------------ process start and end

    def start_when_spinning(self) -> Future:
        """autostart, run by the executor as soon as it spins (in the default callback group,
        so a lifecycle request waits for it, while diagnostics tick): a future whose result
        is "" when the node is active, or the reason it could not start."""
        future = Future()
        timer = None

        def start_once() -> None:
            timer.cancel()
            self.destroy_timer(timer)
            try:
                self.start()
            except StartupError as err:
                future.set_result(str(err))
            else:
                future.set_result("")

        timer = self.create_timer(0.0, start_once,
                                  clock=Clock(clock_type=ClockType.STEADY_TIME))
        return future

    def start(self) -> None:
        """autostart: configure and activate now; StartupError (the reason) when either fails."""
        self._log_configure_error = False  # main prints the one line
        try:
            configured = self.trigger_configure()
        finally:
            self._log_configure_error = True
        if configured != TransitionCallbackReturn.SUCCESS:
            raise StartupError(self.configure_error or "configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise StartupError("activate failed")

    def stop(self, timeout: float | None = None) -> None:
        """End of the process: stop processing (no transition: the context may be gone). Waits
        for a frame in progress: the interpreter must not exit while the worker is inside the
        model (torch then aborts the process)."""
        self._stop_processing(timeout)

    # ------------------------------------------------------------------ lifecycle transitions

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Read and validate the parameters, load the model; FAILURE (stay unconfigured) with
        the reason in :attr:`configure_error` when they are unusable."""
        try:
            self._configure()
        except Exception as err:  # StartupError; anything else is a bug, reported the same way
            reason = str(err) if isinstance(err, StartupError) else \
                f"{type(err).__name__}: {err}"
            self._release()
            self.configure_error = reason
            if self._log_configure_error:
                self.get_logger().error(f"configure failed: {reason}")
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        self.state = "inactive"
        outputs = [self.people_pub.topic_name] + ([self.overlay_pub.topic_name]
                                                  if self.overlay_pub else [])
        self.get_logger().info(
            f"configured: model {node_params.resolve_model_path(self.params.model_path)} "
            f"({self.predictor.backend}, {len(self.categories)} categories); input "
            f"{self.input_topic} ({self.params.image_transport}, {self.params.qos_reliability}); "
            f"output {', '.join(outputs)}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Enable the publishers, subscribe, start the worker; unpaused."""
        result = super().on_activate(state)  # the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self.enabled = True
        self.frames.clear()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, args=(self._stop,),
                                        name="emotion_worker", daemon=True)
        self.image_sub = self.create_subscription(
            self.input_type, self.input_topic, self._on_image,
            image_qos(self.params.qos_reliability),
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos),
        )
        self._worker.start()
        self.state = "active"
        self.get_logger().info(f"active: processing frames from {self.input_topic}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Unsubscribe and join the worker, then disable the publishers; the model stays."""
        self._stop_processing()
        result = super().on_deactivate(state)
        self.state = "inactive"
        self.get_logger().info("inactive: not processing (model kept)")
        return result

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Drop the model and the output publishers: back to unconfigured."""
        result = super().on_cleanup(state)
        self._release()
        self.state = "unconfigured"
        self.get_logger().info("unconfigured: model unloaded")
        return result

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """From any state: stop processing and drop everything (finalized)."""
        self._release()
        self.state = "finalized"
        self.get_logger().info("finalized: shut down")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """A transition raised (a bug): drop everything and go back to unconfigured."""
        self._release()
        self.state = "unconfigured"
        self.get_logger().error(f"a transition from {state.label} raised; back to unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        """Everything the frame path needs, from the parameters as they are now."""
        try:
            if self._refused_at_start:
                raise ParamsError(list(self._refused_at_start.values()))
            params = NodeParams.from_values(node_params.read(self))
        except ParamsError as err:
            raise StartupError(f"bad parameters: {err}") from None
        what = loading_what(params)
        if what == "building engine":  # the one slow load worth a line (a bad file: one line)
            self.get_logger().info(
                f"{what} for {node_params.resolve_model_path(params.model_path)}: minutes the "
                f"first time on a Jetson, then read from tensorrt_engine_cache; /diagnostics "
                f"tell the time so far")
        self._loading = (what, time.monotonic())
        try:
            predictor = self._load(params)
        finally:
            self._loading = None
        if params.category_set:
            try:
                predictor.use_category_set(params.category_set)
            except ValueError as err:
                raise StartupError(f"category_set: {err}") from None
        try:
            settings = frame_settings(params, predictor)
        except ValueError as err:
            raise StartupError(str(err)) from None
        self.params, self.predictor, self.settings = params, predictor, settings
        self.categories = tuple(predictor.categories)
        self.tracker = (IouTracker(IOU_THRESHOLD, MAX_MISSED, params.smoothing)
                        if params.tracking else None)
        self.input_topic, self.input_type = self._input(params)
        self.people_pub = self.create_lifecycle_publisher(PersonEmotionArray, PEOPLE_TOPIC, 10)
        self.overlay_pub = (self.create_lifecycle_publisher(Image, OVERLAY_TOPIC, 2)
                            if params.publish_overlay else None)

    def _load(self, params: NodeParams) -> Any:
        """The predictor factory's result, loaded in a daemon thread of its own: a process
        ended (SIGINT) during a load of minutes ends now, not when the load is done."""
        result: dict[str, Any] = {}

        def load() -> None:
            try:
                result["predictor"] = self._predictor_factory(params)
            except BaseException as err:  # handed to the configure that waits for it
                result["error"] = err

        loader = threading.Thread(target=load, name="model_loader", daemon=True)
        loader.start()
        while loader.is_alive():
            loader.join(0.2)
            if loader.is_alive() and not self.context.ok():
                raise StartupError("interrupted while loading the model")
        if "error" in result:
            raise result["error"]
        return result["predictor"]

    def _stop_processing(self, timeout: float | None = 10.0) -> None:
        """Unsubscribe, stop and join the worker, forget a waiting frame."""
        if self.image_sub is not None:
            self.destroy_subscription(self.image_sub)
            self.image_sub = None
        self._stop.set()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout)
        self._worker = None
        self.frames.clear()

    def _release(self) -> None:
        """Stop processing, destroy the output publishers, drop the model."""
        self._stop_processing()
        for publisher in (self.people_pub, self.overlay_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self.people_pub = self.overlay_pub = None
        self.params = self.predictor = self.settings = self.tracker = None
        self.categories = ()

    # ------------------------------------------------------------------ receive (executor)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        """Subscription callback: keep the newest frame only, never wait for inference."""
        self.stats.received()
        if self.enabled and self.frames.put(msg):
            self.stats.dropped()

    # ------------------------------------------------------------------ frame path (worker)

    def _work(self, stop: threading.Event) -> None:
        """Worker thread: wait for the rate limit, take the newest frame, process, publish."""
        last_start = -float("inf")
        while not stop.is_set():
            rate = self.params.max_rate_hz
            if rate > 0 and stop.wait(max(0.0, last_start + 1.0 / rate - time.monotonic())):
                break
            item = self.frames.take(timeout=0.1)
            if item is None or stop.is_set():
                continue
            last_start = time.monotonic()
            self._process(*item, stop)

    def _process(self, msg: Image | CompressedImage, arrived: float,
                 stop: threading.Event) -> None:
        """One frame: process_frame, then publish; a bad frame is logged and skipped."""
        people_pub, overlay_pub = self.people_pub, self.overlay_pub
        overlay = overlay_pub is not None and overlay_pub.get_subscription_count() > 0
        try:
            output = process_frame(msg, self.predictor, self.settings, self.tracker, overlay)
        except (ImageConversionError, FrameSizeError) as err:
            self.stats.bad()
            self.get_logger().warning(f"skipping bad frame from {self.input_topic}: {err}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        except Exception as err:  # never let one frame stop the node
            if stop.is_set():
                return
            self.stats.failed()
            self.get_logger().error(f"frame from {self.input_topic} failed: "
                                    f"{type(err).__name__}: {err}",
                                    throttle_duration_sec=LOG_THROTTLE_S)
            return
        if stop.is_set() or not self.context.ok():
            return
        people_pub.publish(output.people)  # lifecycle publishers: only while active
        if output.overlay is not None:
            overlay_pub.publish(output.overlay)
        self.stats.processed(time.monotonic() - arrived)
        self._note_input_size(msg)

    def _note_input_size(self, msg: Image | CompressedImage) -> None:
        """Log the network input size when it changes (it follows the frame size for a model
        with ``resize: short_side``; a TensorRT engine is built for each new size)."""
        size = tuple(getattr(self.predictor, "input_size", ()) or ())
        if size == self._input_size:
            return
        first = not self._input_size
        self._input_size = size
        self._input_size_changes += 0 if first else 1
        frame = f"{msg.width}x{msg.height} " if isinstance(msg, Image) else ""
        text = (f"network input {size[0]}x{size[1]} (H x W) for {frame}frames from "
                f"{self.input_topic}")
        if first:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(
                f"frame size changed: {text} ({self._input_size_changes} changes so far; "
                f"the input size follows the frame size, and a TensorRT engine is built for "
                f"each new one)", throttle_duration_sec=LOG_THROTTLE_S)

    # ------------------------------------------------------------------ services, timers

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response):
        """Pause/resume while active; true also activates an inactive node (module docstring)."""
        response.success = True
        if request.data and self.state == "inactive":
            activated = self.trigger_activate() == TransitionCallbackReturn.SUCCESS
            response.success = activated
            response.message = "activated: processing" if activated else "activate failed"
        elif request.data and self.state == "unconfigured":
            response.success = False
            response.message = (f"{self.state}: no model loaded; configure first (ros2 "
                                f"lifecycle set {self.get_fully_qualified_name()} configure)")
        elif request.data and self.state != "active":
            response.success = False
            response.message = f"{self.state}: the node was shut down"
        elif self.state == "active":
            self.enabled = bool(request.data)
            if not self.enabled:
                self.frames.clear()
            response.message = "processing" if self.enabled else "paused"
        else:
            response.message = f"{self.state}: not processing, nothing to pause"
        self.get_logger().info(f"~/enable {str(request.data).lower()}: {response.message}")
        return response

    def _publish_diagnostics(self) -> None:
        predictor, loading = self.predictor, self._loading
        backend = predictor.backend if predictor is not None else ""
        if loading is not None:
            loading = (loading[0], time.monotonic() - loading[1])
        status = diagnostic_status(f"{self.get_fully_qualified_name().lstrip('/')}: people "
                                   f"emotions", backend, self.input_topic, self.stats.window(),
                                   self.enabled, NO_INPUT_WARN_S, self.state,
                                   self.configure_error, loading)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def _check_input(self) -> None:
        """Every 5 s without input while active: say why (no publisher, wrong type, QoS
        mismatch)."""
        params = self.params  # this timer runs beside the transitions
        if self.state != "active" or params is None or \
                self.stats.seconds_since_input() < NO_INPUT_WARN_S:
            return
        problem = input_problem(self.input_topic, _type_name(self.input_type),
                                params.qos_reliability,
                                self.get_publishers_info_by_topic(self.input_topic))
        if problem:
            self._warn_input(problem)

    def _on_incompatible_qos(self, info: Any) -> None:
        if self.params is None:
            return
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
        """Reject bad values, and static parameters while configured, with the reason,
        before ROS stores them."""
        configured = self.state in ("inactive", "active")
        errors = []
        for parameter in changed:
            error = node_params.change_error(parameter.name, parameter.value, configured,
                                             self.get_fully_qualified_name())
            if error is None and configured and parameter.name == "emotion_threshold":
                value, _ = node_params.check(parameter.name, parameter.value)
                try:
                    node_params.emotion_thresholds(value, self.categories,
                                                   self.predictor.emotion_thresholds)
                except ValueError as err:
                    error = str(err)
            if error:
                errors.append(error)
        return SetParametersResult(successful=not errors, reason="; ".join(errors))

    def _apply_parameters(self, changed: list[Any]) -> None:
        """Configured: use the new values from the next frame on (the worker reads them per
        frame). Unconfigured: nothing to do, the next configure reads them. A value set now
        replaces one refused at start."""
        for parameter in changed:
            self._refused_at_start.pop(parameter.name, None)
        if self.params is None:
            self.get_logger().info("parameters changed, used at the next configure: " +
                                   ", ".join(f"{p.name}={p.value!r}" for p in changed))
            return
        values = {p.name: p.value for p in changed if p.name in node_params.DYNAMIC}
        if not values:
            return
        self.params = self.params.replace(**values)
        self.settings = frame_settings(self.params, self.predictor)
        if self.tracker is not None:
            self.tracker.smoothing = self.params.smoothing
        self.get_logger().info("parameters changed: " + ", ".join(
            f"{name}={getattr(self.params, name)!r}" for name in values))

    def _input(self, params: NodeParams) -> tuple[str, type]:
        """Input topic and type. ``image/compressed`` follows a remap of ``image`` unless it
        is remapped itself (image_transport's convention)."""
        if params.image_transport == "raw":
            return self.resolve_topic_name("image"), Image
        name = "image/compressed"
        if self.resolve_topic_name(name) != self.resolve_topic_name(name, only_expand=True):
            return self.resolve_topic_name(name), CompressedImage
        return self.resolve_topic_name("image") + "/compressed", CompressedImage


def frame_settings(params: NodeParams, predictor: Any) -> FrameSettings:
    """Thresholds and limits of the frame path: ``params`` against the model's defaults
    (after its category set was chosen). Raises ValueError."""
    detection = params.detection_threshold
    if detection < 0:
        detection = float(predictor.detection_threshold)
    thresholds = node_params.emotion_thresholds(params.emotion_threshold,
                                                tuple(predictor.categories),
                                                predictor.emotion_thresholds)
    return FrameSettings(detection, thresholds, params.max_people,
                         bool(getattr(predictor, "single_label", False)),
                         params.single_label_threshold)


def loading_what(params: NodeParams) -> str:
    """What a configure with ``params`` spends its time on: "building engine" when ONNX
    Runtime will run TensorRT (an engine is built, or read from the cache, for the model),
    else "loading model"."""
    onnx = params.backend == "onnxruntime" or (
        params.backend == "auto" and params.model_path.lower().endswith(".onnx"))
    if not onnx or node_params.TENSORRT_PROVIDER not in params.providers:
        return "loading model"
    try:
        import onnxruntime
    except ImportError:
        return "loading model"
    available = node_params.TENSORRT_PROVIDER in onnxruntime.get_available_providers()
    return "building engine" if available else "loading model"


def _type_name(msg_type: type) -> str:
    """``sensor_msgs/msg/Image`` for the Image class (the graph's type names)."""
    module = msg_type.__module__.split(".")
    return f"{module[0]}/{module[1]}/{msg_type.__name__}"


def main(args: list[str] | None = None, predictor_factory=load_predictor) -> int:
    """Console script ``emotion_node``: run until SIGINT/SIGTERM; 1 when autostart cannot
    configure (or activate) the node. ``predictor_factory``: how the model is loaded (tests
    give a slow one)."""
    rclpy.init(args=args)
    node = executor = None
    code = 0
    try:
        node = EmotionNode(predictor_factory)
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        if node.autostart:
            started = node.start_when_spinning()
            executor.spin_until_future_complete(started)
            # (a start cut short by SIGINT/SIGTERM is no failure: the context is then gone)
            if started.done() and started.result() and node.context.ok():
                raise StartupError(started.result())
        else:
            node.get_logger().info("unconfigured (autostart false): waiting for "
                                   f"ros2 lifecycle set {node.get_fully_qualified_name()} "
                                   "configure")
        if node.context.ok():  # not interrupted while starting
            executor.spin()
    except StartupError as err:
        print(f"{NODE_NAME}: {err}", file=sys.stderr, flush=True)
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # rclpy's signal thread answers SIGINT/SIGTERM by triggering the executor's guard
        # condition, which executor.shutdown() destroys: on a busy CPU that thread can run after
        # this point (KeyboardInterrupt does not wait for it), and then crashes (SIGSEGV).
        # Uninstalling the handlers joins it first.
        uninstall_signal_handlers()
        if executor is not None:  # no callback runs on while the node is destroyed
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
