"""Export a model file (.pt) to ONNX: ``python -m caer_ros.export --model M.pt --out M.onnx``.

What is exported is the :class:`~caer_ros.inference.graph.InferenceGraph` (BENet plus the
map-wide decoding steps), with the legacy TorchScript-based exporter of ``torch.onnx``
(``dynamo=False``: the dynamo exporter needs ``onnxscript``, which caer_ros does not require).
Input ``images`` (1, 3, H, W), normalised (``dynamic_batch``: (B, 3, H, W); it costs ONNX
Runtime seconds of symbolic shape inference when a session starts, so batch 1 is the default;
H and W are the model's ``input_size``, or dynamic for a model with ``resize: short_side``,
whose input follows the camera's frame size: verified at two sizes);
outputs named as in :func:`~caer_ros.inference.graph.output_names` (with ``fusion`` ``mean``
also the person-centric ``pc_scores.<set>``, run by the predictor on batches of crops: with
batch 1 it runs them one by one). The model config,
categories and inference settings go into the ONNX ``metadata_props``
(:mod:`caer_ros.inference.onnx_metadata`), so the ONNX file alone is enough for
:class:`~caer_ros.inference.predictor.Predictor`.

Steps: load the model file, rewrite the operations ONNX Runtime runs slowly
(:mod:`caer_ros.inference.onnx_friendly`, exact equivalents), trace and convert, add the
metadata, run ``onnx.checker``, run the result once in ONNX Runtime against the original torch
graph (``verify``), with ``--int8`` quantize it (:mod:`caer_ros.inference.quantize`,
calibrated on the user's images, recorded in the metadata as ``meta["int8"]``), then write the
file atomically (a temporary file beside the target, then ``os.replace``): a failed export
leaves no file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caer_ros import __version__
from caer_ros.atomic_file import atomic_write
from caer_ros.inference import onnx_metadata
from caer_ros.inference.graph import (
    CONTINUOUS_SUMS,
    EMOTION_SUMS,
    GRAPH_SETTINGS,
    HEATMAP,
    PC_SCORES,
    InferenceGraph,
)
from caer_ros.inference.onnx_friendly import onnx_friendly
from caer_ros.inference.quantize import (
    DEFAULT_CALIBRATION_IMAGES,
    ProgressLines,
    calibration_batches,
    calibration_set,
    int8_record,
    quantize,
)
from caer_ros.inference.setting_args import add_setting_arguments, setting_changes
from caer_ros.model.checkpoint import ModelFileError, load_model_file
from caer_ros.model.inference_settings import FUSIONS, InferenceSettings

DEFAULT_OPSET = 17
# Largest |ONNX Runtime - torch| accepted by ``verify`` on the graph's outputs (probabilities,
# sizes in pixels, prefix sums up to the map height): float32 noise is far below this.
VERIFY_TOLERANCE = 1e-3


class ExportError(RuntimeError):
    """The export itself failed (conversion, checker, verification); one-line message."""


@dataclass(frozen=True)
class ExportSummary:
    path: str
    bytes: int
    opset: int
    batch: str  # "1" or "B" (dynamic)
    input_size: tuple[int, int]
    outputs: tuple[str, ...]
    stride: int
    settings: InferenceSettings
    max_difference: float | None  # ONNX Runtime vs torch on a random input; None: not verified
    seconds: float
    int8: dict[str, Any] | None = None  # meta["int8"] of a quantized file (quantize.int8_record)
    # int8 only: largest |int8 - float32| of the heatmap and the emotion probabilities on the
    # first calibration image (a report, not a check: int8 is meant to differ a little).
    int8_difference: float | None = None

    def describe(self) -> str:
        checked = "not verified" if self.max_difference is None else \
            f"ONNX Runtime matches torch (max |diff| {self.max_difference:.1e})"
        if self.int8 is not None:
            checked += (f"; int8, calibrated on {self.int8['calibration_images']} images of "
                        f"{self.int8['calibration_source']} ({self.int8['float32_nodes']} "
                        f"post-processing nodes kept in float32)")
            if self.int8_difference is not None:
                checked += (f", max |int8 - float32| of the probabilities on a calibration "
                            f"image {self.int8_difference:.3f}")
        size = "HxW" if self.settings.resize == "short_side" else \
            f"{self.input_size[0]}x{self.input_size[1]}"
        return (f"wrote {self.path}: {self.bytes / 1e6:.1f} MB, opset {self.opset}, input "
                f"{self.batch}x3x{size}, outputs at stride "
                f"{self.stride} ({', '.join(self.outputs)}), {_graph_settings(self.settings)}; "
                f"{checked}; {self.seconds:.1f} s")


def export_onnx(model_path: str | os.PathLike, out: str | os.PathLike, **options: Any) -> Path:
    """Export the model file ``model_path`` to the ONNX file ``out`` and return its path;
    ``options`` as for :func:`export_with_summary`."""
    return Path(export_with_summary(model_path, out, **options).path)


def export_with_summary(
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    input_size: tuple[int, int] | None = None,
    fuse_scales: bool | None = None,
    flip_test: bool | None = None,
    fusion: str | None = None,
    fuse_sizes: str | None = None,
    changes: Mapping[str, Any] | None = None,
    dynamic_batch: bool = False,
    verify: bool = True,
    int8_calibration: str | os.PathLike | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    progress: Callable[[str], None] | None = None,
) -> ExportSummary:
    """Export the model file ``model_path`` to the ONNX file ``out``; what was written.

    ``input_size`` (H, W, multiples of 32) replaces the config's; ``fuse_scales``,
    ``fuse_sizes``, ``flip_test`` and ``fusion`` replace the model file's settings (they are
    fixed in the graph), and so do ``changes`` (setting name -> value, e.g. ``resize``);
    ``dynamic_batch`` makes the batch dimension dynamic (default: 1); ``verify``
    runs the result in ONNX Runtime against torch; ``int8_calibration`` (a folder of images
    or an EMOTIC-layout dataset) quantizes the graph to int8, calibrated on
    ``calibration_images`` of its images (:mod:`caer_ros.inference.quantize`); ``progress``
    receives progress lines (a line per step, and while a step runs long a "still running"
    line every :data:`~caer_ros.inference.quantize.HEARTBEAT_SECONDS`; None: quiet).
    Raises :class:`~caer_ros.model.checkpoint.ModelFileError` for a bad model file, ValueError
    for bad arguments (:class:`~caer_ros.inference.quantize.CalibrationError` for a bad
    calibration set), :class:`ExportError` when conversion or checks fail, OSError when
    writing fails.
    """
    say = ProgressLines.of(progress)
    start = time.perf_counter()
    model, info = load_model_file(model_path)
    config = info.config
    if input_size is not None:
        config = dataclasses.replace(config, input_size=tuple(input_size))
    graph_changes = {name: value for name, value in
                     (("fuse_scales", fuse_scales), ("fuse_sizes", fuse_sizes),
                      ("flip_test", flip_test), ("fusion", fusion))
                     if value is not None}
    settings = dataclasses.replace(info.inference, **{**graph_changes, **(changes or {})})
    settings.check_against(config)
    calibration = None
    if int8_calibration is not None:  # a bad calibration set fails before the long work
        calibration = calibration_set(int8_calibration, calibration_images)
        say(calibration.describe())
    with say:  # "still running" lines while a step runs long
        graph = InferenceGraph(model, settings).eval()
        exported = InferenceGraph(onnx_friendly(model), settings).eval()
        height, width = config.input_size
        meta = {**info.meta, "exported_from": os.path.basename(str(model_path)),
                "exported_by": f"caer_ros {__version__}", "opset": opset}
        dynamic_size = settings.resize == "short_side"
        say.step("converting to ONNX",
                 f"exporting {model_path}: input {'HxW (dynamic)' if dynamic_size else ''}"
                 f"{'' if dynamic_size else f'{height}x{width}'}, {_graph_settings(settings)}, "
                 f"opset {opset}")

        generator = torch.Generator().manual_seed(0)
        example = torch.randn(1, 3, height, width, generator=generator)
        proto = _convert(exported, example, opset, dynamic_batch, dynamic_size)
        data = _finished(proto, config, settings, meta)
        say.step("verifying with ONNX Runtime" if verify else "",
                 f"converted and checked ({len(data) / 1e6:.1f} MB)")
        difference = None
        if verify:
            difference = _verify(graph, data, example)
            if dynamic_size:  # another size, wider than high: no size was fixed in the graph
                other = torch.randn(1, 3, height, width + settings.size_divisor,
                                    generator=generator)
                difference = max(difference, _verify(graph, data, other))
            say.step("", f"verified with ONNX Runtime: max |diff| to torch {difference:.1e}")
        record, int8_difference = None, None
        if calibration is not None:
            float_data = data
            quantized, kept = quantize(data, config, calibration, say, settings.resize)
            say.step("checking the int8 graph against the float32 one")
            record = int8_record(calibration, kept)
            data = _finished(quantized, config, settings, {**meta, "int8": record})
            first = next(calibration_batches(calibration.paths[:1], config, settings.resize))
            int8_difference = _probability_difference(float_data, data, graph.output_names, first)
            say.step("", f"int8 graph checked ({len(data) / 1e6:.1f} MB): max |int8 - float32| of "
                         f"the probabilities on a calibration image {int8_difference:.3f}")
    path = _write_atomically(Path(out), data)
    graph_info = onnx_metadata.graph_info(config, settings)
    return ExportSummary(str(path), len(data), opset, "B" if dynamic_batch else "1",
                         config.input_size, graph_info.outputs,
                         graph_info.stride, settings, difference, time.perf_counter() - start,
                         record, int8_difference)


def _finished(proto: Any, config: Any, settings: InferenceSettings,
              meta: dict[str, Any]) -> bytes:
    """``proto`` with the caer_ros metadata (any earlier metadata replaced) and producer,
    checked by ``onnx.checker``, serialised."""
    import onnx

    del proto.metadata_props[:]
    for key, value in onnx_metadata.encode(config, settings, meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "caer_ros", __version__
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"onnx.checker rejects the exported graph: {_first_line(error)}") \
            from None
    return proto.SerializeToString()


def _session(data: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _probability_difference(float_data: bytes, int8_data: bytes, names: list[str],
                            batch: np.ndarray) -> float:
    """Largest |int8 - float32| over the heatmap and the per-pixel emotion probabilities
    (rows of the prefix sums differenced back) on ``batch``."""
    feed = {onnx_metadata.INPUT_NAME: batch}
    reference, quantized = (dict(zip(names, _session(d).run(names, feed), strict=True))
                            for d in (float_data, int8_data))
    worst = 0.0
    for name in names:
        if name == HEATMAP or name.startswith(PC_SCORES):
            a, b = reference[name], quantized[name]
        elif name.startswith(EMOTION_SUMS) or name == CONTINUOUS_SUMS:
            a, b = np.diff(reference[name], axis=2), np.diff(quantized[name], axis=2)
        else:
            continue
        worst = max(worst, float(np.abs(a - b).max(initial=0.0)))
    if not np.isfinite(worst):
        raise ExportError("the int8 graph gives non-finite outputs")
    return worst


def _convert(graph: InferenceGraph, example: torch.Tensor, opset: int,
             dynamic_batch: bool, dynamic_size: bool = False):  # -> onnx.ModelProto
    import onnx

    names = graph.output_names
    dynamic: dict[str, dict[int, str]] = {}
    for name in [onnx_metadata.INPUT_NAME, *names]:
        axes = {0: "batch"} if dynamic_batch else {}
        if dynamic_size and not name.startswith(PC_SCORES):  # the (B, E) scores have no map
            axes.update({2: f"{name}_height", 3: f"{name}_width"} if name != onnx_metadata.
                        INPUT_NAME else {2: "H", 3: "W"})
        if axes:
            dynamic[name] = axes
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad(), _native_output_discarded():
            # The legacy exporter is deprecated in favour of dynamo (needs onnxscript), and the
            # tracer notes the graph's fixed shapes: neither matters here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph, (example,), buffer, dynamo=False, opset_version=opset,
                input_names=[onnx_metadata.INPUT_NAME], output_names=names,
                dynamic_axes=dynamic or None,
                do_constant_folding=True,
            )
    except Exception as error:  # torch raises many types for unsupported ops / opsets
        raise ExportError(f"torch.onnx.export failed: {type(error).__name__}: "
                          f"{_first_line(error)}") from None
    return onnx.load_from_string(buffer.getvalue())


@contextlib.contextmanager
def _native_output_discarded() -> Iterator[None]:
    """Discard what native code writes to file descriptors 1 and 2 (on a failed conversion the
    TorchScript exporter dumps its whole IR graph); the Python exception says enough."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def _verify(graph: InferenceGraph, data: bytes, example: torch.Tensor) -> float:
    """Run the serialised model in ONNX Runtime (CPU) and compare every output with torch."""
    with torch.inference_mode():
        expected = graph.outputs(example)
    got = _session(data).run(graph.output_names, {onnx_metadata.INPUT_NAME: example.numpy()})
    worst = 0.0
    for name, value in zip(graph.output_names, got, strict=True):
        reference = expected[name].numpy()
        if value.shape != reference.shape:
            raise ExportError(f"output {name!r} has shape {value.shape} in ONNX Runtime, "
                              f"{reference.shape} in torch")
        worst = max(worst, float(np.abs(value - reference).max(initial=0.0)))
    if not worst <= VERIFY_TOLERANCE:
        raise ExportError(f"ONNX Runtime and torch outputs differ by {worst:.3g} "
                          f"(> {VERIFY_TOLERANCE})")
    return worst


def _write_atomically(path: Path, data: bytes) -> Path:
    with atomic_write(path) as stream:
        stream.write(data)
    return path


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _graph_settings(settings: InferenceSettings) -> str:
    """The settings fixed in the graph, e.g. "fuse_scales on, flip_test off, fusion none"."""
    values = ((name, getattr(settings, name)) for name in GRAPH_SETTINGS)
    return ", ".join(f"{name} {_on(v) if isinstance(v, bool) else v}" for name, v in values)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m caer_ros.export",
        description="Export a caer_ros model file (.pt) to ONNX for the onnxruntime backend. "
                    "The ONNX file holds the model config, categories and inference settings, "
                    "so it is all the node and caer-infer need.")
    parser.add_argument("--model", required=True, help="model file (.pt) to export")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                        help="network input height and width, multiples of 32 "
                             "(default: the model's)")
    add_setting_arguments(parser, "; fixed in the graph")
    parser.add_argument("--fusion", choices=FUSIONS, default=None,
                        help="mean: also output the person-centric scores, so that each "
                             "person's scores are the mean of the bottom-up and person-centric "
                             "heads (BENet Table 4; needs a person-centric head; fixed in the "
                             "graph; default: the model file's setting)")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="dynamic batch dimension (default: batch 1; a dynamic one makes "
                             "ONNX Runtime sessions start much slower)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the ONNX Runtime vs torch comparison")
    parser.add_argument("--int8", action="store_true",
                        help="quantize to int8 (static, ONNX Runtime's tools), calibrated on "
                             "--calibration; faster on CPUs, most with VNNI "
                             "(docs/deployment.md: Choosing a speed)")
    parser.add_argument("--calibration", metavar="DIR_OR_DATASET",
                        help="with --int8: a folder of your own images (subfolders too) or a "
                             "dataset in the EMOTIC layout")
    parser.add_argument("--calibration-images", type=int, metavar="N",
                        default=DEFAULT_CALIBRATION_IMAGES,
                        help=f"with --int8: images used for calibration, evenly spaced over "
                             f"the set (default {DEFAULT_CALIBRATION_IMAGES})")
    args = parser.parse_args(argv)
    if args.int8 and not args.calibration:
        parser.error("--int8 needs --calibration DIR_OR_DATASET (images like the camera's)")
    if args.calibration and not args.int8:
        parser.error("--calibration is for --int8")
    if args.calibration_images < 1:
        parser.error(f"--calibration-images must be at least 1, got {args.calibration_images}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = export_with_summary(
            args.model, args.out, opset=args.opset,
            input_size=None if args.input_size is None else tuple(args.input_size),
            fuse_scales=args.fuse_scales, flip_test=args.flip_test, fusion=args.fusion,
            fuse_sizes=args.fuse_sizes, changes=setting_changes(args),
            dynamic_batch=args.dynamic_batch, verify=args.verify,
            int8_calibration=args.calibration if args.int8 else None,
            calibration_images=args.calibration_images,
            progress=lambda message: print(message, flush=True),
        )
    except ModelFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, ExportError) as error:
        print(f"error: cannot export {args.model}: {_first_line(error)}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: cannot write {args.out}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
