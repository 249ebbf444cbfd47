"""Predictor: camera frame (BGR uint8) -> people with emotions, with a torch or an ONNX Runtime
backend behind one interface. Used by the ROS node, ``caer-infer`` and the evaluator.

``Predictor.from_file(path)`` reads everything from the file: a model file (``.pt``, torch
backend) or an exported ONNX file (``.onnx``, ONNX Runtime backend; see
:mod:`caer_ros.inference.export`). Per frame (:meth:`Predictor.predict`):

    letterbox + normalise (preprocess) -> InferenceGraph (backend) -> find_people (decode)
    -> boxes back to image pixels [-> BU+PC fusion]

The backend runs :class:`~caer_ros.inference.graph.InferenceGraph` (BENet, activation, flip
test, scale fusion, prefix sums); the host only finds peaks and reads each person's scores.
With the setting ``fusion: mean`` (:mod:`caer_ros.inference.fusion`), the people found (or
given, :meth:`Predictor.read_boxes`) are then cropped from the original image, the crops run
as one batch through the same graph, and each person's scores become the mean of the
bottom-up and person-centric scores; a frame without people needs no second run.

Backends:

- ``torch``: ``device`` "cpu", "cuda" or "cuda:N"; ``fp16=True`` runs the network in half
  precision and needs a CUDA device (on the CPU it is an error: half precision is slower
  there and loses accuracy for nothing). Runs under ``torch.inference_mode``.
- ``onnxruntime``: ``providers``, e.g. ``["TensorrtExecutionProvider",
  "CUDAExecutionProvider", "CPUExecutionProvider"]`` (default: CPU for ``device="cpu"``, else
  CUDA then CPU). Providers this ONNX Runtime build lacks are dropped with a warning (CPU is
  the last resort); the providers the session really got are logged (logger ``caer_ros``).
  ``fp16=True`` turns on TensorRT's fp16 mode and needs the TensorRT provider. The session has
  every graph optimisation on and one intra-op thread per physical core.

Every problem with the file raises :class:`~caer_ros.model.checkpoint.ModelFileError`, whose
one-line message names the file. A predictor is safe to call from several threads (calls are
serialised; the input buffer is reused from frame to frame).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from caer_ros.inference import onnx_metadata
from caer_ros.inference.decode import (
    Detections,
    SummedMaps,
    center_cells,
    find_people,
    read_people,
)
from caer_ros.inference.fusion import crop_batch, fuse_mean, person_centric_outputs
from caer_ros.inference.graph import GRAPH_SETTINGS, InferenceGraph, output_stride
from caer_ros.inference.preprocess import Letterbox, preprocess
from caer_ros.model.checkpoint import ModelFile, ModelFileError, load_model_file
from caer_ros.model.config import ModelConfig
from caer_ros.model.inference_settings import InferenceSettings

LOG = logging.getLogger("caer_ros")
BACKENDS = ("torch", "onnxruntime")
SUFFIX_BACKENDS = {".pt": "torch", ".pth": "torch", ".onnx": "onnxruntime"}
CPU_PROVIDER = "CPUExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"

ProviderSpec = str | tuple[str, dict[str, Any]]


class Runner(Protocol):
    """A backend: runs the inference graph on a normalised batch (B, 3, H, W) float32."""

    name: str  # e.g. "torch:cpu", "onnxruntime:CPUExecutionProvider"

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...


class Predictor:
    """People and their emotions in camera frames (see the module docstring).

    Attributes read by the node and the tools: :attr:`categories`, :attr:`emotion_thresholds`,
    :attr:`detection_threshold`, :attr:`backend`, :attr:`has_continuous`, :attr:`input_size`,
    :attr:`settings`; also :attr:`config`, :attr:`category_set`, :attr:`stride`, :attr:`path`,
    :attr:`meta`.
    """

    def __init__(self, runner: Runner, info: ModelFile, settings: InferenceSettings) -> None:
        settings.check_against(info.config)
        self._runner = runner
        self.config: ModelConfig = info.config
        self.settings = settings
        self.path = info.path
        self.meta = dict(info.meta)
        self.category_set = next(iter(self.config.categories))
        self.categories: tuple[str, ...] = tuple(self.config.categories[self.category_set])
        self.emotion_thresholds = np.asarray(settings.emotion_thresholds[self.category_set],
                                             dtype=np.float32)
        self.detection_threshold = settings.detection_threshold
        self.backend = runner.name
        self.has_continuous = self.config.continuous
        self.input_size: tuple[int, int] = self.config.input_size
        self.stride = output_stride(self.config, settings)
        self._buffer = np.empty((1, 3, *self.input_size), dtype=np.float32)
        self._lock = threading.Lock()

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        backend: str | None = None,
        device: str = "cpu",
        providers: Sequence[ProviderSpec] | None = None,
        fp16: bool = False,
        settings: InferenceSettings | None = None,
        fusion: str | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> Predictor:
        """A predictor for the model in ``path`` (``.pt`` or ``.onnx``; ``backend`` None picks
        by suffix). ``settings`` replaces the file's inference settings, then ``fusion`` the
        ``fusion`` setting and ``changes`` (setting name -> value) the settings it names; an
        ONNX graph fixes the :data:`~caer_ros.inference.graph.GRAPH_SETTINGS`, so those must
        then equal the exported ones."""
        path = Path(path)

        def chosen_settings(info: ModelFile) -> InferenceSettings:
            chosen = settings or info.inference
            every = {**({} if fusion is None else {"fusion": fusion}), **(changes or {})}
            return dataclasses.replace(chosen, **every) if every else chosen

        backend = backend or SUFFIX_BACKENDS.get(path.suffix.lower())
        if backend is None:
            raise ModelFileError(path, f"unknown model file type {path.suffix or '(none)'!r}: "
                                       f"expected .pt (torch) or .onnx (onnxruntime)")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "torch":
            if path.suffix.lower() == ".onnx":
                raise ModelFileError(path, "an ONNX file needs the onnxruntime backend")
            model, info = load_model_file(path, map_location="cpu")
            chosen = chosen_settings(info)
            chosen.check_against(info.config)
            return cls(TorchRunner(model, chosen, device, fp16), info, chosen)
        if path.suffix.lower() in (".pt", ".pth"):
            raise ModelFileError(path, "a PyTorch model file needs the torch backend (or export "
                                       "it with python -m caer_ros.export for onnxruntime)")
        runner, info = OnnxRunner.open(path, device, providers, fp16)
        if info.meta.get("int8"):  # quantized by caer_ros.export --int8
            runner.name += ":int8"
        chosen = chosen_settings(info)
        changed = [name for name in GRAPH_SETTINGS
                   if getattr(chosen, name) != getattr(info.inference, name)]
        if changed:
            raise ValueError(f"{path}: {', '.join(changed)} are fixed in the exported graph "
                             f"(re-export with python -m caer_ros.export to change them)")
        return cls(runner, info, chosen)

    # ----------------------------------------------------------------------- per frame

    def use_category_set(self, name: str) -> None:
        """Report the category set ``name`` (e.g. ``heco`` of an EMOTIC + HECO model) instead
        of the model's first: :attr:`categories`, :attr:`emotion_thresholds` and every
        person's scores follow. Raises ValueError naming the model's sets."""
        if name not in self.config.categories:
            raise ValueError(f"the model has no category set {name!r}; its sets: "
                             f"{', '.join(self.config.categories)}")
        self.category_set = name
        self.categories = tuple(self.config.categories[name])
        self.emotion_thresholds = np.asarray(self.settings.emotion_thresholds[name],
                                             dtype=np.float32)

    def predict(self, image: np.ndarray, detection_threshold: float | None = None,
                max_people: int | None = None) -> Detections:
        """People in one (h, w, 3) uint8 BGR image (also gray or BGRA, see ``letterbox``),
        sorted by detection score, highest first; boxes in ``image`` pixels.

        ``detection_threshold`` replaces :attr:`detection_threshold`; ``max_people`` caps the
        model's ``top_k``.
        """
        with self._lock:
            maps, placement = self._forward(image)
        (people,) = find_people(maps, self.settings, detection_threshold=detection_threshold,
                                max_people=max_people, primary_set=self.category_set)
        return self._fused([image], [people.to_image(placement)])[0]

    def predict_batch(self, images: Sequence[np.ndarray], detection_threshold: float | None = None,
                      max_people: int | None = None) -> list[Detections]:
        """:meth:`predict` for several images in one network run."""
        if not images:
            return []
        batch = np.empty((len(images), 3, *self.input_size), dtype=np.float32)
        placements = []
        for n, image in enumerate(images):
            _, placement = preprocess(image, self.input_size, mean=self.config.input_mean,
                                      std=self.config.input_std, out=batch[n:n + 1])
            placements.append(placement)
        with self._lock:
            maps = SummedMaps.from_outputs(self._runner.run(batch), self.stride)
        people = find_people(maps, self.settings, detection_threshold=detection_threshold,
                             max_people=max_people, primary_set=self.category_set)
        return self._fused(images, [p.to_image(box)
                                    for p, box in zip(people, placements, strict=True)])

    def forward_maps(self, image: np.ndarray) -> tuple[SummedMaps, Letterbox]:
        """The graph's maps for one image (a batch of one, arrays of its own) and its letterbox
        placement: for reading other boxes (:func:`~caer_ros.inference.decode.read_people`,
        boxes mapped with ``Letterbox.to_input``)."""
        with self._lock:
            return self._forward(image)

    def read_boxes(self, image: np.ndarray, boxes: np.ndarray) -> Detections:
        """The people at given boxes (K, 4) x1, y1, x2, y2 in ``image`` pixels, e.g. the
        annotated ones (ER mAP reads predictions with the ground-truth boxes).

        Same reading as :meth:`predict` (``settings.extraction``, ``settings.fusion``);
        ``detection_scores`` are the heatmap values at the box centres; boxes are returned as
        given.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        maps, placement = self.forward_maps(image)
        inside = placement.to_input(boxes)
        emotions, continuous = read_people(maps, inside[None], self.settings.extraction)
        heat = maps.heatmap[0, 0]
        rows, cols = center_cells((inside[:, 0] + inside[:, 2]) / 2,
                                  (inside[:, 1] + inside[:, 3]) / 2, maps.stride, *heat.shape)
        sets = {name: values[0] for name, values in emotions.items()}
        people = Detections(
            boxes=boxes.astype(np.float32),
            detection_scores=heat[rows, cols].astype(np.float32),
            scores=sets[self.category_set],
            continuous=None if continuous is None else continuous[0],
            category_set=self.category_set,
            set_scores=sets,
        )
        return self._fused([image], [people], boxes=[boxes])[0]

    def stage_times(self, image: np.ndarray, runs: int = 5, people: int = 16
                    ) -> dict[str, float]:
        """Median milliseconds over ``runs`` of the stages of :meth:`predict` on ``image``:
        ``pre`` (letterbox + normalise), ``model`` (the backend's graph), ``decode`` (peaks,
        boxes, scores for exactly ``people`` people - threshold 0 - and the boxes back to image
        pixels) and, with ``fusion`` ``mean``, ``fusion`` (crops, their graph run, the mean).
        Raises RuntimeError when fewer people are found."""
        times: dict[str, list[float]] = {"pre": [], "model": [], "decode": []}
        fusing = self.settings.fusion != "none"
        if fusing:
            times["fusion"] = []
        with self._lock:
            for run in range(runs + 1):  # the first run warms up
                start = time.perf_counter()
                batch, placement = preprocess(image, self.input_size, mean=self.config.input_mean,
                                              std=self.config.input_std, out=self._buffer)
                after_pre = time.perf_counter()
                outputs = self._runner.run(batch)
                after_model = time.perf_counter()
                maps = SummedMaps.from_outputs(outputs, self.stride)
                (found,) = find_people(maps, self.settings, detection_threshold=0.0,
                                       max_people=people, primary_set=self.category_set)
                found = found.to_image(placement)
                end = time.perf_counter()
                if len(found) != people:
                    raise RuntimeError(f"found {len(found)} people, not {people}")
                if fusing:
                    crops = self._crops([image], [found.boxes])
                    fuse_mean(found, person_centric_outputs(self._runner.run(crops)))
                if run:
                    times["pre"].append(after_pre - start)
                    times["model"].append(after_model - after_pre)
                    times["decode"].append(end - after_model)
                    if fusing:
                        times["fusion"].append(time.perf_counter() - end)
        return {name: statistics.median(values) * 1e3 for name, values in times.items()}

    def _fused(self, images: Sequence[np.ndarray], people: list[Detections],
               boxes: Sequence[np.ndarray] | None = None) -> list[Detections]:
        """``people`` of each image with BU+PC fusion applied when ``settings.fusion`` is
        ``mean`` (else unchanged): one graph run on the crops of everybody in ``images``
        (none when nobody was found). ``boxes``: the crop boxes in image pixels, per image
        (default: the people's boxes)."""
        if self.settings.fusion == "none":
            return people
        boxes = [p.boxes for p in people] if boxes is None else boxes
        if sum(len(p) for p in people) == 0:
            return people
        crops = self._crops(images, boxes)
        with self._lock:
            outputs = self._runner.run(crops)
        scores = person_centric_outputs(outputs)
        fused, start = [], 0
        for found in people:
            stop = start + len(found)
            fused.append(fuse_mean(found, {k: v[start:stop] for k, v in scores.items()}))
            start = stop
        return fused

    def _crops(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> np.ndarray:
        """The crops of ``boxes[i]`` (image pixels) of ``images[i]``, all as one batch."""
        batch = np.empty((sum(len(b) for b in boxes), 3, *self.input_size), dtype=np.float32)
        start = 0
        for image, found in zip(images, boxes, strict=True):
            stop = start + len(found)
            crop_batch(image, found, self.input_size, mean=self.config.input_mean,
                       std=self.config.input_std, out=batch[start:stop])
            start = stop
        return batch

    def _forward(self, image: np.ndarray) -> tuple[SummedMaps, Letterbox]:
        batch, placement = preprocess(image, self.input_size, mean=self.config.input_mean,
                                      std=self.config.input_std, out=self._buffer)
        return SummedMaps.from_outputs(self._runner.run(batch), self.stride), placement

    def __repr__(self) -> str:
        return (f"Predictor({self.path!r}, backend={self.backend!r}, input={self.input_size}, "
                f"categories={self.category_set}({len(self.categories)}))")


# --------------------------------------------------------------------------- torch backend


class TorchRunner:
    """The inference graph in torch (eager) on ``device``."""

    def __init__(self, model: torch.nn.Module, settings: InferenceSettings, device: str,
                 fp16: bool) -> None:
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
        _check_session(path, session, info.config, graph)
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
                   graph: onnx_metadata.GraphInfo) -> None:
    """The session's input and outputs are those the metadata describes."""
    problem = "the graph does not match its caer_ros metadata:"
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [graph.input]:
        raise ModelFileError(path, f"{problem} inputs {[i.name for i in inputs]}, expected "
                                   f"[{graph.input!r}]")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or shape[1:] != [3, *config.input_size]:
        raise ModelFileError(path, f"{problem} input shape {shape}, expected "
                                   f"[batch, 3, {config.input_size[0]}, {config.input_size[1]}]")
    names = [o.name for o in session.get_outputs()]
    if sorted(names) != sorted(graph.outputs):
        raise ModelFileError(path, f"{problem} outputs {names}, expected {list(graph.outputs)}")
