"""Backends of the :class:`~caer_ros.inference.predictor.Predictor`: what runs the inference
graph on a normalised batch, and the choice of ONNX Runtime execution providers.

- :class:`TorchRunner`: :class:`~caer_ros.inference.graph.InferenceGraph` in torch (eager) on
  a CPU or CUDA device, optionally in half precision (CUDA only);
- :class:`OnnxRunner`: the exported graph in an ONNX Runtime session (every graph
  optimisation on, one intra-op thread per physical core, denormals flushed), its input and
  outputs checked against the file's caer_ros metadata;
- :func:`default_providers` / :func:`choose_providers`: the providers for a device name, and
  those this ONNX Runtime build has (missing ones dropped with a warning, CPU last);
  :func:`physical_cores`.

Every problem with the file raises :class:`~caer_ros.model.checkpoint.ModelFileError` naming it.
Only :class:`TorchRunner` imports torch (when it is made): the ONNX Runtime backend runs
without PyTorch installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from caer_ros.inference import onnx_metadata
from caer_ros.model.checkpoint import ModelFile, ModelFileError
from caer_ros.model.config import ModelConfig
from caer_ros.model.inference_settings import InferenceSettings

if TYPE_CHECKING:
    import torch

LOG = logging.getLogger("caer_ros")
CPU_PROVIDER = "CPUExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"

ProviderSpec = str | tuple[str, dict[str, Any]]


class Runner(Protocol):
    """A backend: runs the inference graph on a normalised batch (B, 3, H, W) float32."""

    name: str  # e.g. "torch:cpu", "onnxruntime:CPUExecutionProvider"

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...


# --------------------------------------------------------------------------- torch backend


class TorchRunner:
    """The inference graph in torch (eager) on ``device``."""

    def __init__(self, model: torch.nn.Module, settings: InferenceSettings, device: str,
                 fp16: bool) -> None:
        import torch

        from caer_ros.inference.graph import InferenceGraph

        try:
            self.device = torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"invalid torch device {device!r}: {error}") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this torch has no CUDA device "
                             f"(torch {torch.__version__})")
        if fp16 and self.device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device (half precision on the CPU is slower "
                             "and less accurate); use device='cuda' or fp16=False")
        self.fp16 = fp16
        # Denormal floats (common in the activations of untrained and lightly trained
        # networks) make CPU convolutions up to 10x slower; flushing them to zero changes
        # results by less than 1e-38. Process-wide, like ONNX Runtime's option below.
        torch.set_flush_denormal(True)
        self.graph = InferenceGraph(model, settings).eval().to(self.device)
        if fp16:
            self.graph.half()
        self.name = f"torch:{self.device}" + (":fp16" if fp16 else "")

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs as float32 numpy arrays on the host (no copy on the CPU)."""
        import torch

        with torch.inference_mode():
            images = torch.from_numpy(batch).to(self.device, non_blocking=True)
            if self.fp16:
                images = images.half()
            outputs = self.graph.outputs(images)
            return {name: value.float().cpu().numpy() for name, value in outputs.items()}


# --------------------------------------------------------------------------- ONNX Runtime


class OnnxRunner:
    """The exported inference graph in an ONNX Runtime session."""

    def __init__(self, session: Any, graph: onnx_metadata.GraphInfo) -> None:
        self.session = session
        self.graph = graph
        self.output_names = list(graph.outputs)
        self.name = f"onnxruntime:{session.get_providers()[0]}"
        batch = session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    @classmethod
    def open(cls, path: Path, device: str = "cpu",
             providers: Sequence[ProviderSpec] | None = None,
             fp16: bool = False) -> tuple[OnnxRunner, ModelFile]:
        import onnxruntime as ort

        _check_readable(path)
        if providers is None:
            providers = default_providers(device)
        chosen = choose_providers(providers, ort.get_available_providers(), fp16)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = physical_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # ONNX Runtime's own warnings: errors only
        options.add_session_config_entry("session.set_denormal_as_zero", "1")  # see TorchRunner
        try:
            session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as error:  # InvalidProtobuf, Fail, NoSuchFile, ...: many types
            text = (str(error).strip().splitlines() or [""])[0]
            if "protobuf" in text.lower() or "load model" in text.lower():
                raise ModelFileError(path, f"not an ONNX model (unreadable or corrupted: "
                                           f"{text[:160]})") from None
            raise ModelFileError(path, f"ONNX Runtime cannot open it: {text[:200]}") from None
        info, graph = onnx_metadata.decode(str(path), session.get_modelmeta().custom_metadata_map)
        _check_session(path, session, info.config, info.inference, graph)
        got = session.get_providers()
        LOG.info("%s: ONNX Runtime session on %s", path, ", ".join(got))
        wanted = _provider_name(chosen[0])
        if got[0] != wanted:
            LOG.warning("%s: ONNX Runtime could not start %s; running on %s", path, wanted, got[0])
        return cls(session, graph), info

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs; a graph exported with a fixed batch size runs the batch in
        chunks of that size (the last one padded)."""
        size = self.fixed_batch
        if size is None or len(batch) == size:
            values = self.session.run(self.output_names, {self.graph.input: batch})
            return dict(zip(self.output_names, values, strict=True))
        chunks = []
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            if len(chunk) < size:
                chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]),
                                                        chunk.dtype)])
            chunks.append(self.session.run(self.output_names, {self.graph.input: chunk}))
        return {name: np.concatenate([c[n] for c in chunks])[:len(batch)]
                for n, name in enumerate(self.output_names)}


def default_providers(device: str) -> list[ProviderSpec]:
    """Providers for a torch-style device name: "cpu" -> CPU; "cuda" or "cuda:N" -> CUDA (on
    device N) then CPU."""
    if device == "cpu":
        return [CPU_PROVIDER]
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"device must be cpu, cuda or cuda:N for onnxruntime, got {device!r}")
    cuda: ProviderSpec = ("CUDAExecutionProvider", {"device_id": int(index)}) if index \
        else "CUDAExecutionProvider"
    return [cuda, CPU_PROVIDER]


def choose_providers(requested: Sequence[ProviderSpec], available: Sequence[str],
                     fp16: bool = False) -> list[ProviderSpec]:
    """The requested providers this ONNX Runtime has, in order; unavailable ones are dropped
    with a warning, and CPU is used when none is left. ``fp16`` turns on TensorRT's fp16 mode
    (``trt_fp16_enable``) and needs the TensorRT provider among the requested ones."""
    if isinstance(requested, str):
        requested = [requested]
    names = [_provider_name(p) for p in requested]
    if fp16 and TENSORRT_PROVIDER not in names:
        raise ValueError("fp16 with onnxruntime needs the TensorrtExecutionProvider (its fp16 "
                         "mode); use the torch backend on CUDA for fp16 otherwise")
    chosen: list[ProviderSpec] = []
    missing = []
    for spec, name in zip(requested, names, strict=True):
        if name not in available:
            missing.append(name)
            continue
        if fp16 and name == TENSORRT_PROVIDER:
            options = dict(spec[1]) if isinstance(spec, tuple) else {}
            spec = (name, {**options, "trt_fp16_enable": True})
        chosen.append(spec)
    if not chosen:
        chosen = [CPU_PROVIDER]
    if missing:
        LOG.warning("ONNX Runtime provider(s) %s not available in this build (available: %s); "
                    "using %s", ", ".join(missing), ", ".join(available),
                    ", ".join(_provider_name(p) for p in chosen))
    return chosen


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads not counted)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return allowed
    cores, physical = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            cores.add((physical, value.strip()))
    return max(1, min(allowed, len(cores) or allowed))


def _provider_name(spec: ProviderSpec) -> str:
    return spec[0] if isinstance(spec, tuple) else spec


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(path, "no such file")
    if path.is_dir():
        raise ModelFileError(path, "is a directory, not a model file")
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise ModelFileError(path, f"cannot be read ({error.strerror or error})") from None


def _check_session(path: Path, session: Any, config: ModelConfig,
                   settings: InferenceSettings, graph: onnx_metadata.GraphInfo) -> None:
    """The session's input and outputs are those the metadata describes."""
    problem = "the graph does not match its caer_ros metadata:"
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [graph.input]:
        raise ModelFileError(path, f"{problem} inputs {[i.name for i in inputs]}, expected "
                                   f"[{graph.input!r}]")
    shape = list(inputs[0].shape)
    # a short-side model's graph takes any height and width (named dynamic dimensions)
    spatial = ["H", "W"] if settings.resize == "short_side" else list(config.input_size)
    dynamic = [not isinstance(v, int) for v in shape[2:]]
    if len(shape) != 4 or shape[1] != 3 or (
            shape[2:] != spatial if settings.resize == "letterbox" else not all(dynamic)):
        raise ModelFileError(path, f"{problem} input shape {shape}, expected "
                                   f"[batch, 3, {spatial[0]}, {spatial[1]}]")
    names = [o.name for o in session.get_outputs()]
    if sorted(names) != sorted(graph.outputs):
        raise ModelFileError(path, f"{problem} outputs {names}, expected {list(graph.outputs)}")
