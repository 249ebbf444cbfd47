"""Predictor: camera frame (BGR uint8) -> people with emotions, with a torch or an ONNX Runtime
backend behind one interface. Used by the ROS node, ``caer-infer`` and the evaluator.

``Predictor.from_file(path)`` reads everything from the file: a model file (``.pt``, torch
backend) or an exported ONNX file (``.onnx``, ONNX Runtime backend; see
:mod:`caer_ros.inference.export`). Per frame (:meth:`Predictor.predict`):

    letterbox or BENet's short-side warp + normalise (preprocess) -> InferenceGraph (backend)
    -> find_people (decode) -> boxes back to image pixels [-> BU+PC fusion]

With the setting ``resize: short_side`` the network input size follows the frame
(:func:`~caer_ros.inference.preprocess.short_side_size`): it is worked out once per frame size
(the last few sizes are remembered with their input buffers) and :attr:`Predictor.input_size`
is the last frame's; frames of different sizes in one :meth:`Predictor.predict_batch` run in
one network run per input size. A frame the network cannot take raises
:class:`~caer_ros.inference.preprocess.FrameSizeError` (a ValueError) naming its size.

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
import os
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caer_ros import BACKENDS
from caer_ros.inference.decode import (
    Detections,
    SummedMaps,
    center_cells,
    find_people,
    read_people,
)
from caer_ros.inference.fusion import crop_batch, fuse_mean, person_centric_outputs
from caer_ros.inference.graph_outputs import GRAPH_SETTINGS, output_stride, peak_stride
from caer_ros.inference.preprocess import Letterbox, input_size_for, prepare
from caer_ros.inference.runners import (
    OnnxRunner,
    ProviderSpec,
    Runner,
    TorchRunner,
)
from caer_ros.model.checkpoint import ModelFile, ModelFileError, load_model_file
from caer_ros.model.config import ModelConfig
from caer_ros.model.inference_settings import InferenceSettings

SUFFIX_BACKENDS = {".pt": "torch", ".pth": "torch", ".onnx": "onnxruntime"}
REMEMBERED_SIZES = 4  # frame sizes whose network input size and buffer are kept


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
        self.single_label = self.config.single_label(self.category_set)
        self.detection_threshold = settings.detection_threshold
        self.backend = runner.name
        self.has_continuous = self.config.continuous
        # the network input of the last frame (a letterbox model's is always its input_size)
        self.input_size: tuple[int, int] = self.config.input_size
        self.stride = peak_stride(self.config, settings)  # of the heatmap the peaks come from
        self.emotion_stride = output_stride(self.config, settings)
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}  # frame (h, w) -> input (H, W)
        self._buffers: dict[tuple[int, int], np.ndarray] = {}  # input (H, W) -> (1, 3, H, W)
        self._lock = threading.Lock()
        self._sizes_lock = threading.Lock()

    @property
    def runner(self) -> Runner:
        """The inference graph's runner (torch or ONNX Runtime): batches of normalised images
        in, the graph's outputs out (what label-free distillation reads as targets)."""
        return self._runner

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

        if not path.exists():  # before any word on the file's type
            raise ModelFileError(path, "no such file")
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
        self.single_label = self.config.single_label(name)

    def predict(self, image: np.ndarray, detection_threshold: float | None = None,
                max_people: int | None = None) -> Detections:
        """People in one (h, w, 3) uint8 BGR image (also gray or BGRA, see ``letterbox``),
        sorted by detection score, highest first; boxes in ``image`` pixels.

        ``detection_threshold`` replaces :attr:`detection_threshold`; ``max_people`` caps the
        model's ``top_k``.
        """
        return self.predict_batch([image], detection_threshold, max_people)[0]

    def predict_batch(self, images: Sequence[np.ndarray], detection_threshold: float | None = None,
                      max_people: int | None = None) -> list[Detections]:
        """:meth:`predict` for several images (one network run per network input size)."""
        if not images:
            return []
        maps = self._maps(images)
        return self._fused(images, self._people(maps, detection_threshold, max_people))

    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        """The network input (H, W) for a ``height`` x ``width`` frame (the model's fixed
        ``input_size`` with ``resize: letterbox``); raises
        :class:`~caer_ros.inference.preprocess.FrameSizeError` for a frame the network cannot
        take. Remembered for the last few frame sizes."""
        key = (int(height), int(width))
        size = self._sizes.get(key)
        if size is None:
            s = self.settings
            size = input_size_for(key, s.resize, self.config.input_size, s.short_side,
                                  s.size_divisor)
            with self._sizes_lock:
                while len(self._sizes) >= REMEMBERED_SIZES:
                    self._sizes.pop(next(iter(self._sizes)))
                self._sizes[key] = size
        return size

    def forward_maps(self, image: np.ndarray) -> tuple[SummedMaps, Letterbox]:
        """The graph's maps for one image (a batch of one, arrays of its own) and its
        placement on the network input: for reading other boxes
        (:func:`~caer_ros.inference.decode.read_people`, boxes mapped with
        ``Letterbox.to_input``)."""
        ((maps, placement),) = self._maps([image])
        return maps, placement

    def read_boxes(self, image: np.ndarray, boxes: np.ndarray) -> Detections:
        """The people at given boxes (K, 4) x1, y1, x2, y2 in ``image`` pixels, e.g. the
        annotated ones (ER mAP reads predictions with the ground-truth boxes).

        Same reading as :meth:`predict` (``settings.extraction``, ``settings.fusion``);
        ``detection_scores`` are the heatmap values at the box centres; boxes are returned as
        given.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        maps, placement = self.forward_maps(image)
        return self._fused([image], [self._read(maps, placement, boxes)], boxes=[boxes])[0]

    def predict_and_read(self, image: np.ndarray, boxes: np.ndarray,
                         detection_threshold: float | None = None,
                         max_people: int | None = None) -> tuple[Detections, Detections]:
        """:meth:`predict` and :meth:`read_boxes` of one image from one run of the network
        (and, with fusion, one run on everybody's crops): the people found, and the people at
        ``boxes``. The evaluator needs both for every test image."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        maps, placement = self.forward_maps(image)
        (found,) = self._people([(maps, placement)], detection_threshold, max_people)
        read = self._read(maps, placement, boxes)
        found, read = self._fused([image, image], [found, read], boxes=[found.boxes, boxes])
        return found, read

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
        for run in range(runs + 1):  # the first run warms up
            marks = [time.perf_counter()]
            maps = self._maps([image], marks)
            (found,) = self._people(maps, 0.0, people)
            marks.append(time.perf_counter())
            if len(found) != people:
                raise RuntimeError(f"found {len(found)} people, not {people}")
            self._fused([image], [found])
            marks.append(time.perf_counter())
            if run:
                for name, start, end in zip(times, marks, marks[1:], strict=False):
                    times[name].append(end - start)
        return {name: statistics.median(values) * 1e3 for name, values in times.items()}

    # ----------------------------------------------------------------------- the pipeline

    def _maps(self, images: Sequence[np.ndarray], marks: list[float] | None = None
              ) -> list[tuple[SummedMaps, Letterbox]]:
        """Pre-processing and the graph for ``images``: per image its maps (a batch of one)
        and placement; one network run per input size. ``marks`` gets
        ``time.perf_counter()`` after each stage (of one-size batches)."""
        sizes = [self.input_size_for(*_frame_size(image)) for image in images]
        found: list[tuple[SummedMaps, Letterbox] | None] = [None] * len(images)
        for size in dict.fromkeys(sizes):
            members = [n for n, s in enumerate(sizes) if s == size]
            for n, item in zip(members, self._run([images[n] for n in members], size, marks),
                               strict=True):
                found[n] = item
        return found

    def _run(self, images: Sequence[np.ndarray], size: tuple[int, int],
             marks: list[float] | None) -> list[tuple[SummedMaps, Letterbox]]:
        """One network run on ``images``, all placed on a ``size`` input."""
        settings, config = self.settings, self.config
        with self._lock:
            batch = self._buffer(size) if len(images) == 1 else \
                np.empty((len(images), 3, *size), dtype=np.float32)
            placements = [prepare(image, size, settings.resize, mean=config.input_mean,
                                  std=config.input_std, out=batch[n:n + 1])[1]
                          for n, image in enumerate(images)]
            self.input_size = size
            if marks is not None:
                marks.append(time.perf_counter())
            outputs = self._runner.run(batch)
        if marks is not None:
            marks.append(time.perf_counter())
        maps = SummedMaps.from_outputs(outputs, self.stride, self.emotion_stride)
        return [(maps.image(n), placement) for n, placement in enumerate(placements)]

    def _buffer(self, size: tuple[int, int]) -> np.ndarray:
        """The reused one-frame input buffer of ``size`` (called under the lock)."""
        buffer = self._buffers.get(size)
        if buffer is None:
            if len(self._buffers) >= REMEMBERED_SIZES:
                self._buffers.pop(next(iter(self._buffers)))
            buffer = self._buffers[size] = np.empty((1, 3, *size), dtype=np.float32)
        return buffer

    def _people(self, maps: Sequence[tuple[SummedMaps, Letterbox]],
                detection_threshold: float | None, max_people: int | None
                ) -> list[Detections]:
        """The people found in each image's maps, boxes in the image's pixels."""
        return [find_people(one, self.settings, detection_threshold=detection_threshold,
                            max_people=max_people, primary_set=self.category_set)[0]
                .to_image(placement) for one, placement in maps]

    def _read(self, maps: SummedMaps, placement: Letterbox, boxes: np.ndarray) -> Detections:
        """The people at ``boxes`` ((K, 4) float64, image pixels) of a one-image ``maps``
        (before fusion)."""
        inside = placement.to_input(boxes)
        emotions, continuous = read_people(maps, inside[None], self.settings.extraction,
                                           bilinear=self.settings.peak_resolution == "input")
        heat = maps.heatmap[0, 0]
        rows, cols = center_cells((inside[:, 0] + inside[:, 2]) / 2,
                                  (inside[:, 1] + inside[:, 3]) / 2, maps.stride, *heat.shape)
        sets = {name: values[0] for name, values in emotions.items()}
        return Detections(
            boxes=boxes.astype(np.float32),
            detection_scores=heat[rows, cols].astype(np.float32),
            scores=sets[self.category_set],
            continuous=None if continuous is None else continuous[0],
            category_set=self.category_set,
            set_scores=sets,
        )

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
        """The crops of ``boxes[i]`` (image pixels) of ``images[i]``, all as one batch, each
        letterboxed into the model's ``input_size``."""
        size = self.config.input_size
        batch = np.empty((sum(len(b) for b in boxes), 3, *size), dtype=np.float32)
        start = 0
        for image, found in zip(images, boxes, strict=True):
            stop = start + len(found)
            crop_batch(image, found, size, mean=self.config.input_mean,
                       std=self.config.input_std, out=batch[start:stop])
            start = stop
        return batch

    def __repr__(self) -> str:
        return (f"Predictor({self.path!r}, backend={self.backend!r}, input={self.input_size}, "
                f"categories={self.category_set}({len(self.categories)}))")


def _frame_size(image: np.ndarray) -> tuple[int, int]:
    """(h, w) of an image array, with the letterbox's check of what an image is."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ValueError(f"image must be an (h, w) or (h, w, channels) numpy array, got "
                         f"{getattr(image, 'shape', type(image).__name__)}")
    return image.shape[0], image.shape[1]
