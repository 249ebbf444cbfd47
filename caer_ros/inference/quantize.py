"""Static int8 quantization of an exported graph, calibrated on the user's own images.

``python -m caer_ros.export --int8 --calibration DIR`` runs this after the float export
(:mod:`caer_ros.inference.export`). The result is an ordinary caer_ros ONNX file: the node,
``caer-infer`` and the evaluator run it like any other, and its metadata records how it was
quantized (``meta["int8"]``, :func:`int8_record`).

How (ONNX Runtime's own tools, ``onnxruntime.quantization``):

1. calibration images (:func:`calibration_set`): a folder of images (searched
   recursively), or a dataset in the EMOTIC layout (``Annotations/Annotations.mat`` beside
   ``emotic/``: its images, every split; calibration needs no labels); ``count`` of them,
   evenly spaced over the sorted file list. Each goes through the predictor's own
   preprocessing (letterbox, normalisation), so the ranges are those the node will see;
2. ``quant_pre_process`` (graph optimisation before quantization, as ONNX Runtime advises);
3. ``quantize_static`` in the QDQ format: weights int8 per output channel, activations uint8
   with ranges from the calibration images (MinMax).

Progress (:class:`ProgressLines`): a line per step and per calibration image, and while one
step runs long a "still running" line every :data:`HEARTBEAT_SECONDS`. For ``benet`` the
calibration session's start (every activation made an output) and the range computation with
the QDQ rewrite take minutes each on 2 cores, with no line of ONNX Runtime's own. Without a
``progress`` callback nothing is said.

What stays float32 (:func:`float_nodes`): everything after the heads' last convolutions (the
sigmoid, the scale fusion, the prefix sums of the emotion maps, the classifier
probabilities) and those last convolutions themselves, so the logits and the scores published
are not rounded to 256 levels; only the network's inner layers run in int8.

Measured on this project's AVX2 cores without VNNI (docs/deployment.md, "Choosing a speed"): on
``benet`` the int8 convolutions run 1.9x faster than the float32 ones, but its ~70 CBAM
attention blocks, element-wise work between the convolutions, cost about 3x their float32
time in int8, so the whole graph is no faster. ONNX Runtime's int8 kernels use VNNI where the
CPU has it (AVX-512 VNNI, AVX-VNNI), which gains more: measure there with
``benchmarks/bench_deploy.py``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caer_ros.image_file import ImageFileError, read_image
from caer_ros.inference import onnx_metadata
from caer_ros.inference.preprocess import prepare
from caer_ros.model.config import ModelConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
EMOTIC_ANNOTATIONS = Path("Annotations") / "Annotations.mat"  # the EMOTIC layout's marker
EMOTIC_IMAGES = "emotic"
DEFAULT_CALIBRATION_IMAGES = 16
# Operator types whose weights make a layer "compute": the graph's post-processing is what
# follows the last of them.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
METHOD = "static QDQ (onnxruntime.quantization.quantize_static)"
HEARTBEAT_SECONDS = 30.0  # the longest a running step stays silent (ProgressLines)


class ProgressLines:
    """Progress lines of a long job, passed to ``say`` (None: quiet, and no thread).

    Called with a line, it passes the line on. :meth:`step` names the step that runs now (and
    says it); inside ``with``, a daemon thread says ``"<step>: still running (<s> s)"`` whenever
    ``interval`` seconds (default :data:`HEARTBEAT_SECONDS`) have passed without a line (an
    empty step name: none). The thread needs Python's GIL: a native call that keeps it holds
    the line back until it returns. ONNX Runtime's long steps let it speak; torch's ONNX
    converter (the export's first step) keeps it for minutes at a time. Entering again (the
    export's ``with`` around the quantization's) keeps the one thread.
    """

    def __init__(self, say: Callable[[str], None] | None, interval: float | None = None
                 ) -> None:
        self._say = say
        self.interval = HEARTBEAT_SECONDS if interval is None else float(interval)
        self._lock = threading.Lock()
        self._step = ""
        self._step_started = self._last = time.perf_counter()
        self._depth = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def of(cls, progress: Callable[[str], None] | None) -> ProgressLines:
        """``progress`` itself when it is one, else one passing lines to it."""
        return progress if isinstance(progress, ProgressLines) else cls(progress)

    def __call__(self, message: str) -> None:
        if self._say is None:
            return
        with self._lock:
            self._last = time.perf_counter()
            self._say(message)

    def step(self, name: str, line: str | None = None) -> None:
        """Mark ``name`` the step running now; say ``line`` (default: ``name``)."""
        with self._lock:
            self._step, self._step_started = name, time.perf_counter()
        self(name if line is None else line)

    def __enter__(self) -> ProgressLines:
        self._depth += 1
        if self._depth == 1 and self._say is not None and self.interval > 0:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="progress-lines",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        while not self._stop.wait(self.interval / 4):
            now = time.perf_counter()
            with self._lock:
                if now - self._last < self.interval or not self._step:
                    continue
                self._last = now
                self._say(f"{self._step}: still running ({now - self._step_started:.0f} s)")


class CalibrationError(ValueError):
    """The calibration set is missing, empty or has no readable image; one-line message."""


@dataclass(frozen=True)
class CalibrationSet:
    """The images chosen for calibration and the files passed over."""

    source: Path
    layout: str  # "folder" or "emotic"
    paths: tuple[Path, ...]
    candidates: int  # image files found
    unreadable: tuple[str, ...]  # "<path>: <reason>" of the files that could not be read

    def describe(self) -> str:
        text = (f"{len(self.paths)} calibration images from {self.source} ({self.layout}, "
                f"{self.candidates} image files)")
        if self.unreadable:
            text += f"; {len(self.unreadable)} unreadable skipped (first: {self.unreadable[0]})"
        return text


def image_files(source: str | os.PathLike) -> tuple[list[Path], str]:
    """The image files of a calibration source, sorted, and its layout name."""
    root = Path(source)
    if not root.exists():
        raise CalibrationError(f"calibration set {root}: no such file or folder")
    if not root.is_dir():
        raise CalibrationError(f"calibration set {root}: not a folder (give a folder of images "
                               f"or a dataset in the EMOTIC layout)")
    layout = "folder"
    if (root / EMOTIC_ANNOTATIONS).is_file():
        layout, root = "emotic", root / EMOTIC_IMAGES
        if not root.is_dir():
            raise CalibrationError(f"calibration set {Path(source)}: an EMOTIC-layout dataset "
                                   f"without its {EMOTIC_IMAGES}/ image folder")
    try:
        files = sorted(p for p in root.rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as error:
        raise CalibrationError(f"calibration set {root}: cannot be listed "
                               f"({error.strerror or error})") from None
    if not files:
        raise CalibrationError(f"calibration set {root} has no image files (looked for "
                               f"{' '.join(IMAGE_SUFFIXES)}, in subfolders too)")
    return files, layout


def calibration_set(source: str | os.PathLike, count: int = DEFAULT_CALIBRATION_IMAGES
                       ) -> CalibrationSet:
    """``count`` readable images of ``source``, evenly spaced over its sorted files; an
    unreadable file is passed over (and named) and the next one taken. Raises
    :class:`CalibrationError` when none can be read."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise CalibrationError(f"the number of calibration images must be a positive integer, "
                               f"got {count!r}")
    files, layout = image_files(source)
    step = len(files) / min(count, len(files))
    spread = [int(i * step) for i in range(min(count, len(files)))]
    taken = set(spread)
    order = spread + [i for i in range(len(files)) if i not in taken]  # fallbacks, in order
    chosen: list[Path] = []
    unreadable: list[str] = []
    for index in order:
        if len(chosen) == count:
            break
        try:
            read_image(files[index])
        except ImageFileError as error:
            unreadable.append(str(error))
            continue
        chosen.append(files[index])
    if not chosen:
        raise CalibrationError(f"calibration set {source}: none of its {len(files)} image "
                               f"files can be read (first: {unreadable[0]})")
    return CalibrationSet(Path(source), layout, tuple(chosen), len(files), tuple(unreadable))


def calibration_batches(paths: Sequence[Path], config: ModelConfig, resize: str = "letterbox"
                        ) -> Iterator[np.ndarray]:
    """Each image as the network input the predictor makes of it, (1, 3, H, W) float32, all at
    the model's ``input_size``: a short-side model (``resize``) sees each image placed as the
    predictor places it (its short side filling the input), so the activations have the
    camera's statistics; one size keeps the calibrator's ranges comparable."""
    for path in paths:
        batch, _ = prepare(read_image(path), config.input_size, resize,
                           mean=config.input_mean, std=config.input_std)
        yield batch


def float_nodes(proto: Any) -> list[str]:
    """Names of the nodes that stay float32: the post-processing (nodes from which no
    :data:`COMPUTE_OPS` node can be reached, other than such nodes themselves) and the compute
    nodes that feed it directly (the heads' last convolutions and the classifiers' last
    layers)."""
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_compute: dict[int, bool] = {}

    def reaches_compute(node: Any) -> bool:  # iterative DFS: graphs have thousands of nodes
        stack = [(node, False)]
        while stack:
            current, expanded = stack.pop()
            key = id(current)
            if key in feeds_compute:
                continue
            children = [c for out in current.output for c in consumers.get(out, [])]
            if expanded:
                feeds_compute[key] = any(c.op_type in COMPUTE_OPS or feeds_compute[id(c)]
                                         for c in children)
                continue
            stack.append((current, True))
            stack.extend((c, False) for c in children if id(c) not in feeds_compute)
        return feeds_compute[id(node)]

    post = {id(n) for n in proto.graph.node
            if n.op_type not in COMPUTE_OPS and not reaches_compute(n)}
    keep = []
    for node in proto.graph.node:
        if id(node) in post or (node.op_type in COMPUTE_OPS and any(
                id(c) in post for out in node.output for c in consumers.get(out, []))):
            keep.append(node.name)
    return keep


def int8_record(calibration: CalibrationSet, float_node_count: int) -> dict[str, Any]:
    """What ``meta["int8"]`` of a quantized file says."""
    return {"method": METHOD, "weights": "int8, per output channel",
            "activations": "uint8, MinMax ranges", "calibration_images": len(calibration.paths),
            "calibration_source": calibration.source.name, "float32_nodes": float_node_count}


def quantize(data: bytes, config: ModelConfig, calibration: CalibrationSet,
             progress: Callable[[str], None] | None = None, resize: str = "letterbox"
             ) -> tuple[Any, int]:
    """The float graph ``data`` (a serialised ONNX model) quantized to int8 as an
    ``onnx.ModelProto`` (metadata not set), and the number of nodes left in float32;
    ``resize``: the model's setting (:func:`calibration_batches`); ``progress`` receives
    progress lines (:class:`ProgressLines`: one per step and per image, and "still running"
    lines while a step runs long)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = calibration_batches(calibration.paths, config, resize)
    count = len(calibration.paths)
    started = time.perf_counter()
    say = ProgressLines.of(progress)

    def elapsed() -> str:
        return f"{time.perf_counter() - started:.0f} s"

    class Reader(CalibrationDataReader):
        """Hands the images over one by one; ONNX Runtime runs each through the calibration
        graph before asking for the next."""

        def __init__(self) -> None:
            self.done = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            if batch is None:
                say.step("computing the activation ranges and writing the int8 graph",
                         f"calibration images done ({elapsed()}); computing the activation "
                         f"ranges and writing the int8 graph")
                return None
            self.done += 1
            say.step(f"calibrating: image {self.done}/{count}",
                     f"calibrating: image {self.done}/{count} ({elapsed()})")
            return {onnx_metadata.INPUT_NAME: batch}

    with say, tempfile.TemporaryDirectory(prefix="caer_ros_int8_") as tmp:
        source, prepared, target = (Path(tmp) / n for n in ("float.onnx", "pre.onnx",
                                                             "int8.onnx"))
        source.write_bytes(data)
        say.step("preparing the graph for quantization")
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        kept = float_nodes(onnx.load(str(prepared)))
        say.step("starting the calibration session (every activation an output)",
                 f"graph prepared ({elapsed()}); starting the calibration session (every "
                 f"activation an output)")
        quantize_static(
            str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=kept, extra_options={"CalibTensorRangeSymmetric": False},
        )
        say.step("", f"quantized ({elapsed()})")
        return onnx.load(str(target)), len(kept)
