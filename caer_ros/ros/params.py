"""The emotion node's parameters: names, defaults, documentation and validation.

:class:`NodeParams` is the single source of the defaults: the node declares exactly these
fields (:func:`declare`) and ``config/emotion.yaml`` repeats them (a test compares the two).
:func:`check` validates one value and returns one message per bad value; the node uses it when
it configures itself and in its set-parameters callback (:func:`change_error`). When each
parameter may change: the :data:`DYNAMIC` ones at any time (used from the next frame on);
:data:`START_ONLY` (``autostart``) never, it is declared read-only; every other one only while
the node is unconfigured, since configuring reads them (model, backend, input).

ROS hands over typed values: every parameter is declared with dynamic typing so that ``5``
for a float parameter is accepted (as ``5.0``) and a wrong type gets our message, not an
exception. An empty list in a YAML file arrives as "not set" (``None``): both mean "empty".
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from caer_ros import BACKENDS

IMAGE_TRANSPORTS = ("raw", "compressed")
NODE_BACKENDS = ("auto", *BACKENDS)  # auto: by the model file's type (.onnx, .pt)
# Parameters rclpy itself owns (declared by every node, or by QoS overrides): ours to pass on.
ROS_OWNED = ("use_sim_time",)
ROS_OWNED_PREFIXES = ("qos_overrides.",)
RELIABILITIES = ("best_effort", "reliable")
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
MAX_PEOPLE = 1000
MAX_RATE_HZ = 1000.0
NODE_NAME = "emotion_node"
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+)$")
_PROVIDER = re.compile(r"^[A-Za-z][A-Za-z0-9]*ExecutionProvider$")


def _doc(text: str, dynamic: bool = False, start_only: bool = False,
         limits: tuple[float, float] | None = None) -> dict[str, Any]:
    """A field's metadata: its description, when it may change, and the range its descriptor
    shows (``ros2 param describe``, rqt_reconfigure); :func:`check` tells the exact rule."""
    return {"doc": text, "dynamic": dynamic, "start_only": start_only, "limits": limits}


@dataclass(frozen=True)
class NodeParams:
    """Validated parameters of ``emotion_node`` (defaults = the node's declared defaults)."""

    model_path: str = field(default="models/emotion.onnx", metadata=_doc(
        "Model file (.onnx or .pt checkpoint); a relative path is resolved against the "
        "node's current directory."))
    backend: str = field(default="auto", metadata=_doc(
        "Inference backend: auto (by the model file: .onnx -> onnxruntime, .pt -> torch), "
        "onnxruntime or torch."))
    device: str = field(default="cpu", metadata=_doc(
        "Device: cpu, cuda or cuda:N."))
    providers: tuple[str, ...] = field(default=(), metadata=_doc(
        "ONNX Runtime execution providers in order of preference, e.g. "
        "[TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider]; "
        "empty: chosen from device. Ignored by the torch backend."))
    fp16: bool = field(default=False, metadata=_doc(
        "Run the network in half precision (GPU only): torch on CUDA, or ONNX Runtime's "
        "TensorRT provider (trt_fp16_enable)."))
    tensorrt_int8: bool = field(default=False, metadata=_doc(
        "TensorRT's int8 mode (trt_int8_enable), for an int8 export; needs "
        "TensorrtExecutionProvider in providers."))
    tensorrt_engine_cache: str = field(default="~/.cache/caer_ros/tensorrt", metadata=_doc(
        "Folder where ONNX Runtime's TensorRT provider keeps the engines it builds (and its "
        "timing cache), so a restart reads them instead of building again (minutes on a "
        "Jetson); created when needed; empty: no cache. Used with TensorrtExecutionProvider."))
    category_set: str = field(default="", metadata=_doc(
        "Category set to report, for a model with several (e.g. heco of an EMOTIC + HECO "
        "model); empty: the model's first."))
    detection_threshold: float = field(default=-1.0, metadata=_doc(
        "Minimum person detection score, 0..1; -1: the model file's value.", dynamic=True,
        limits=(-1.0, 1.0)))
    emotion_threshold: tuple[float, ...] = field(default=(), metadata=_doc(
        "Label threshold(s), 0..1: one value for every category, or one per category of the "
        "model; empty: the model file's thresholds.", dynamic=True, limits=(0.0, 1.0)))
    max_people: int = field(default=20, metadata=_doc(
        f"At most this many people per frame, the most confident first (1..{MAX_PEOPLE}).",
        dynamic=True, limits=(1, MAX_PEOPLE)))
    single_label_threshold: bool = field(default=False, metadata=_doc(
        "For a single-label category set (HECO: one category per person), labels hold the top "
        "category alone; true: only when its score reaches its threshold.", dynamic=True))
    image_transport: str = field(default="raw", metadata=_doc(
        "raw: subscribe image (sensor_msgs/Image); compressed: image/compressed "
        "(sensor_msgs/CompressedImage)."))
    qos_reliability: str = field(default="best_effort", metadata=_doc(
        "Reliability of the image subscription: best_effort (hears every camera) or "
        "reliable (hears only reliable publishers)."))
    publish_overlay: bool = field(default=True, metadata=_doc(
        "Publish /people_emotions/overlay, the image with boxes and labels drawn (drawn only "
        "while someone subscribes)."))
    tracking: bool = field(default=True, metadata=_doc(
        "Give each person a stable id across frames (IoU tracking); off: ids are empty."))
    smoothing: float = field(default=0.0, metadata=_doc(
        "Exponential smoothing of a tracked person's scores, 0 <= s < 1 (0: off): "
        "s_t = smoothing * s_(t-1) + (1 - smoothing) * x_t.", dynamic=True,
        limits=(0.0, 1.0)))
    max_rate_hz: float = field(default=0.0, metadata=_doc(
        f"Process at most this many frames per second (up to {MAX_RATE_HZ:g}); 0: as fast as "
        f"possible.", dynamic=True, limits=(0.0, MAX_RATE_HZ)))
    autostart: bool = field(default=True, metadata=_doc(
        "Configure and activate at start, so the node processes frames at once; false: wait "
        "unconfigured for a lifecycle manager (ros2 lifecycle set /emotion_node configure).",
        start_only=True))

    def __post_init__(self) -> None:
        errors = []
        for f in fields(self):
            value, error = check(f.name, getattr(self, f.name))
            if error:
                errors.append(error)
            else:
                object.__setattr__(self, f.name, value)
        if not errors and self.tensorrt_int8 and TENSORRT_PROVIDER not in self.providers:
            errors.append(f"tensorrt_int8: needs {TENSORRT_PROVIDER} in providers, got "
                          f"{list(self.providers)}")
        if errors:
            raise ParamsError(errors)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeParams:
        """From raw ROS values (unknown names ignored); raises :class:`ParamsError`."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self, **changes: Any) -> NodeParams:
        """A validated copy with some values changed."""
        return NodeParams(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


class ParamsError(ValueError):
    """Bad parameter values; ``errors`` holds one message per bad value."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


DYNAMIC = frozenset(f.name for f in fields(NodeParams) if f.metadata["dynamic"])
START_ONLY = frozenset(f.name for f in fields(NodeParams) if f.metadata["start_only"])


def defaults() -> dict[str, Any]:
    """Every parameter's default as ROS declares it (lists for tuples)."""
    return {f.name: list(f.default) if isinstance(f.default, tuple) else f.default
            for f in fields(NodeParams)}


def declare(node: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Declare every parameter on an rclpy ``node`` with its descriptor (:func:`descriptor`);
    returns the values it then holds, and the errors of values given at start (a params file,
    ``-p``) that rclpy refused for being outside their range: those parameters keep their
    default, and the error is the node's to report (name -> message)."""
    from rclpy.exceptions import InvalidParameterValueException

    values = defaults()
    refused = {}
    for f in fields(NodeParams):
        try:
            node.declare_parameter(f.name, values[f.name], descriptor(f.name))
        except InvalidParameterValueException as err:
            reason = str(err).partition("Reason: ")[2] or str(err)
            refused[f.name] = f"{f.name}: {reason.rstrip('.')} (the value given at start)"
            node.declare_parameter(f.name, values[f.name], descriptor(f.name),
                                   ignore_override=True)
    return read(node), refused


def descriptor(name: str) -> Any:
    """The ``rcl_interfaces/ParameterDescriptor`` of parameter ``name``: its description,
    dynamic typing (so that ``5`` for a float is ours to accept), read-only for
    :data:`START_ONLY`, a floating-point or integer range where it has one, and when it may
    change."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    (f,) = (f for f in fields(NodeParams) if f.name == name)
    meta = f.metadata
    if meta["start_only"]:
        when = "read only at start"
    elif meta["dynamic"]:
        when = "may change at any time (used from the next frame on)"
    else:
        when = ("may change while the node is unconfigured; read at configure "
                "(ros2 lifecycle set <node> cleanup, set it, configure)")
    result = ParameterDescriptor(name=name, description=meta["doc"], dynamic_typing=True,
                                 read_only=meta["start_only"], additional_constraints=when)
    if meta["limits"] is not None:
        low, high = meta["limits"]
        if isinstance(f.default, int) and not isinstance(f.default, bool):
            result.integer_range = [IntegerRange(from_value=int(low), to_value=int(high),
                                                 step=1)]
        else:
            result.floating_point_range = [FloatingPointRange(
                from_value=float(low), to_value=float(high), step=0.0)]
    return result


def read(node: Any) -> dict[str, Any]:
    """The values ``node`` holds now (a parameter unset at run time: its default)."""
    values = defaults()
    return {name: node.get_parameter(name).value if node.has_parameter(name) else default
            for name, default in values.items()}


def change_error(name: str, value: Any, configured: bool,
                 node: str = f"/{NODE_NAME}") -> str | None:
    """Why ``name`` may not become ``value`` now (None: it may); ``configured``: the node
    holds a model (inactive or active), so only :data:`DYNAMIC` parameters may change;
    ``node``: its fully qualified name, for the command the message suggests."""
    if is_ros_owned(name):
        return None  # rclpy checks its own (use_sim_time, qos_overrides.*)
    if name in START_ONLY:
        return f"{name}: read-only, it is used only when the node starts"
    _, error = check(name, value)
    if error is None and configured and name not in DYNAMIC:
        error = (f"{name}: read-only while the node is configured; it can change while the "
                 f"node is unconfigured (ros2 lifecycle set {node} cleanup) and is "
                 f"used at the next configure")
    return error


def is_ros_owned(name: str) -> bool:
    """A parameter rclpy declares and checks itself (``use_sim_time``, ``qos_overrides.*``)."""
    return name in ROS_OWNED or name.startswith(ROS_OWNED_PREFIXES)


def check(name: str, value: Any) -> tuple[Any, str | None]:
    """Validate one parameter: ``(normalised value, None)`` or ``(value, message)``."""
    checker = _CHECKS.get(name)
    if checker is None:
        return value, f"unknown parameter {name!r}"
    try:
        return checker(value), None
    except ValueError as err:
        return value, f"{name}: {err}, got {value!r}"


def emotion_thresholds(value: Sequence[float], categories: Sequence[str],
                       model_thresholds: Sequence[float]) -> np.ndarray:
    """The (E,) thresholds in use: ``value`` (validated emotion_threshold) against the
    model's ``categories``; empty means ``model_thresholds``. Raises ValueError."""
    if len(value) == 0:
        thresholds = np.asarray(model_thresholds, dtype=np.float32).reshape(-1)
        if len(thresholds) != len(categories):
            raise ValueError(f"the model file has {len(thresholds)} emotion thresholds for "
                             f"{len(categories)} categories")
        return thresholds
    if len(value) == 1:
        return np.full(len(categories), value[0], dtype=np.float32)
    if len(value) != len(categories):
        raise ValueError(
            f"emotion_threshold: {len(value)} values, but the model has {len(categories)} "
            f"categories ({', '.join(categories)}): give one value, one per category, or [] "
            f"for the model file's thresholds")
    return np.asarray(value, dtype=np.float32)


def engine_cache_folder(params: NodeParams, model_path: str | None = None) -> str | None:
    """Where TensorRT keeps the engines of the model ``model_path``: a folder of its own in
    ``tensorrt_engine_cache`` named by the file's stem and content hash (ONNX Runtime names a
    cached engine by the model's file name, not its weights, so a re-export under the same
    name would otherwise reuse the old engine); None: no cache."""
    if not params.tensorrt_engine_cache:
        return None
    folder = resolve_model_path(params.tensorrt_engine_cache)
    if model_path is None:
        return folder
    digest = hashlib.sha256()
    with open(model_path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return os.path.join(folder, f"{Path(model_path).stem}-{digest.hexdigest()[:16]}")


def tensorrt_options(params: NodeParams, model_path: str | None = None) -> dict[str, Any]:
    """ONNX Runtime's TensorRT provider options for ``params``: fp16 and int8 modes, and the
    engine and timing caches in the model's folder of ``tensorrt_engine_cache`` (when set;
    :func:`engine_cache_folder`)."""
    options: dict[str, Any] = {"trt_fp16_enable": params.fp16,
                               "trt_int8_enable": params.tensorrt_int8}
    folder = engine_cache_folder(params, model_path)
    if folder is not None:
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=folder,
                       trt_timing_cache_enable=True, trt_timing_cache_path=folder)
    return options


def provider_specs(params: NodeParams, model_path: str | None = None) -> list[Any] | None:
    """The ONNX Runtime providers for ``params``: names, TensorRT's with its options
    (:func:`tensorrt_options` for ``model_path``); None when ``providers`` is empty (chosen
    from ``device``)."""
    if not params.providers:
        return None
    return [(name, tensorrt_options(params, model_path)) if name == TENSORRT_PROVIDER
            else name for name in params.providers]


def resolve_model_path(path: str) -> str:
    """``~`` expanded, relative paths made absolute against the current directory."""
    return os.path.abspath(os.path.expanduser(path))


# --------------------------------------------------------------------------- checks


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number")
    if not np.isfinite(value):
        raise ValueError("must be a finite number")
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _choice(options: Sequence[str]):
    def check_choice(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value
    return check_choice


def _list(value: Any) -> list[Any]:
    if value is None:  # an empty YAML list arrives as "not set"
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        return [value]
    return list(value)


def _category_set(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a category-set name (e.g. emotic, heco) or empty")
    return value.strip()


def _model_path(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty path")
    return value


def _device(value: Any) -> str:
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ValueError("must be cpu, cuda or cuda:N")
    return value


def _providers(value: Any) -> tuple[str, ...]:
    names = _list(value)
    if not names:
        return ()
    bad = [v for v in names if not isinstance(v, str) or not _PROVIDER.match(v)]
    if bad:
        raise ValueError(f"not ONNX Runtime provider names: {bad!r} (e.g. "
                         f"CUDAExecutionProvider, CPUExecutionProvider)")
    try:
        import onnxruntime
    except ImportError:
        return tuple(names)
    unknown = [v for v in names if v not in onnxruntime.get_all_providers()]
    if unknown:
        raise ValueError(f"unknown to ONNX Runtime: {', '.join(unknown)}")
    return tuple(names)


def _detection_threshold(value: Any) -> float:
    number = _number(value)
    if number != -1.0 and not 0.0 <= number <= 1.0:
        raise ValueError("must be in [0, 1], or -1 for the model file's value")
    return number


def _emotion_threshold(value: Any) -> tuple[float, ...]:
    values = _list(value)
    try:
        numbers = tuple(_number(v) for v in values)
    except ValueError:
        raise ValueError("must be a number or a list of numbers in [0, 1]") from None
    if any(not 0.0 <= v <= 1.0 for v in numbers):
        raise ValueError("every value must be in [0, 1]")
    return numbers


def _max_people(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PEOPLE:
        raise ValueError(f"must be an integer in [1, {MAX_PEOPLE}]")
    return value


def _smoothing(value: Any) -> float:
    number = _number(value)
    if not 0.0 <= number < 1.0:
        raise ValueError("must be in [0, 1) (0: off)")
    return number


def _max_rate_hz(value: Any) -> float:
    number = _number(value)
    if not 0.0 <= number <= MAX_RATE_HZ:
        raise ValueError(f"must be in (0, {MAX_RATE_HZ:g}], or 0 for as fast as possible")
    return number


def _cache_folder(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a folder path, or empty for no cache")
    return value.strip()


_CHECKS = {
    "model_path": _model_path,
    "backend": _choice(NODE_BACKENDS),
    "device": _device,
    "providers": _providers,
    "fp16": _boolean,
    "tensorrt_int8": _boolean,
    "tensorrt_engine_cache": _cache_folder,
    "category_set": _category_set,
    "detection_threshold": _detection_threshold,
    "emotion_threshold": _emotion_threshold,
    "max_people": _max_people,
    "single_label_threshold": _boolean,
    "image_transport": _choice(IMAGE_TRANSPORTS),
    "qos_reliability": _choice(RELIABILITIES),
    "publish_overlay": _boolean,
    "tracking": _boolean,
    "smoothing": _smoothing,
    "max_rate_hz": _max_rate_hz,
    "autostart": _boolean,
}
