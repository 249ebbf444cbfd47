"""Distil a teacher model into a compact student without labels (issue 31):
``python -m training.distill``.

::

    python -m training.distill --teacher benet_emotic.pt --images recordings/ day2.mp4 \\
        --out runs/student
    python -m training.distill --teacher runs/bench/best.pt --images frames/ --out runs/s \\
        --config training/configs/distill_student.yaml student=student_small max_steps=2000

Both seed papers promise a model that runs in real time with limited resources; the KA paper's
answer is a compact single-stream student that learns from teachers, and knowledge amalgamation
in its original form needs no labels at all. Here the teacher is any caer_ros model file
(BENet converted from the authors' release, a model of ``training.train``, ``.pt`` in torch or
``.onnx`` in ONNX Runtime) and the student a compact network of the same output contract
(:data:`caer_ros.model.config.STUDENT_PRESETS`: a torchvision MobileNetV3 with a stride-4
neck, :mod:`caer_ros.model.student`), with the teacher's category sets, continuous head,
score kinds, input size and normalisation.

Data: ``--images`` PATHs are image folders, image files and/or video files
(:mod:`training.datasets.frames`: frames sampled at ``frame_rate`` per second); no annotation
is read. ``val_fraction`` of the images and video stretches (whole ones: split by image) are
held out for validation. Each frame is letterboxed to ``input_size`` (default: the teacher's),
then, in training, augmented (BENet 3.3's flip, perspective, colour jitter, blur, noise:
``augment``); the teacher sees that augmented image, so its targets always match what the
student sees.

Teacher: run frozen, by its own deployed inference graph with its file's inference settings
(activation, scale fusion, flip test if its file says so; ``teacher_settings`` changes the
ones that are not fixed in an ONNX graph), on the same pixels, normalised its own way (an ONNX
teacher exported for a fixed input size needs the student's ``input_size`` to be that size,
or its ``.pt`` file). Its outputs
become targets on the student's grid and the student learns them
(:mod:`training.objectives.label_free`: heatmap, sizes, emotion maps at every scale the
student has, weighted by ``weights``).

The student's file carries the teacher's thresholds, score reading (``extraction``), peak
search and cap on people, so it reports people as the teacher does. Its frames are placed as
in training: letterboxed into its ``input_size`` (``resize: letterbox``; a converted BENet's
``short_side`` placement is not inherited), so people appear at the scale it learnt and
``input_size`` sets its cost. Flip test off (it would double the student's time).
``student_settings`` changes any of these.

Training runs the project's one loop (:mod:`training.loop`): the run folder (``out``) gets
``best.pt`` (lowest validation loss), ``final.pt``, ``history.json``, ``config.yaml``,
``tensorboard/`` and ``last.ckpt`` (the same command resumes; ``--restart`` starts over;
``max_steps`` / ``budget_minutes`` / ``epochs``, whichever ends first; one training per
folder). Adam, its learning rate ``lr`` falling over the run on a cosine (``lr_schedule:
cosine``) or ``constant``. Randomness depends only on ``seed``.

Config (YAML, every key optional, ``key=value`` overrides, unknown keys are errors): ``teacher``
(``--teacher``), ``images`` (``--images``), ``student`` (a preset name, or a ``.pt`` student
file to continue from: its categories must be the teacher's), ``init_backbone`` (torchvision
ImageNet weights for a preset's trunk), ``input_size``, ``frame_rate``, ``chunk_seconds``,
``max_frames``, ``val_fraction``, ``max_val_frames`` (held-out frames validated on, evenly
spaced; default 300), ``teacher_backend`` (``auto``, ``torch``, ``onnxruntime``),
``teacher_settings`` / ``student_settings`` (inference-setting changes), ``weights``
(``heatmap``, ``size``, ``emotions``, ``continuous``, ``background``; ``region``: ``box`` or
``centre``, where the emotion terms count; ``temperature`` of the emotion terms:
:mod:`training.objectives.label_free`), ``augment``
(:class:`training.data.transforms.AugmentConfig`; ``false`` switches it off), and the run:
``epochs``, ``batch_size``, ``lr``, ``lr_schedule``, ``weight_decay``, ``bn_momentum``,
``seed``, ``workers``, ``out``, ``budget_minutes``, ``max_steps``, ``checkpoint_every``,
``val_every``, ``device``; ``placebo`` (benchmarks only: each image of a batch learns the
teacher's maps of the previous image of the batch, in training and validation: the same
computation with the teacher's knowledge of *this* image removed; every batch then holds at
least 2 images).

Bad input (an empty folder, non-images, a broken video, a teacher file that is not a model, a
student whose categories cannot match the teacher's, a bad key) stops with exit status 1 and
one line naming it, before the run folder is touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from caer_ros.config_data import from_dict
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.preprocess import letterbox, mean_color, normalize
from caer_ros.model.checkpoint import ModelFileError, load_model_file, save_model_file
from caer_ros.model.config import STUDENT_PRESETS, ModelConfig
from caer_ros.model.inference_settings import InferenceSettings
from caer_ros.model.network import BENet, build_model
from caer_ros.model.weights import BackboneWeightsError, load_backbone_weights
from training import distributed
from training.config import ConfigError, Section, apply_override, read_yaml_config
from training.data.batches import DataError, Failed, checked_loader, epoch_batches
from training.data.transforms import AugmentConfig, augment
from training.datasets.frames import FrameError, FramePool, FrameRef, collect_frames, split_frames
from training.distributed import DistributedContext
from training.loop import (
    Job,
    LoopSettings,
    TrainingLoop,
    TrainState,
    Validation,
    prepare_for_training,
)
from training.objectives.label_free import (
    REGIONS,
    TeacherMaps,
    label_free_terms,
    teacher_maps,
)
from training.run_folder import RunFolderBusy

TEACHER_BACKENDS = ("auto", "torch", "onnxruntime")
LR_SCHEDULES = ("cosine", "constant")
# inference settings a student takes over from its teacher (the rest are the student's own:
# ``resize`` is ``letterbox`` at its ``input_size``, the placement it is trained on)
INHERITED_SETTINGS = ("detection_threshold", "emotion_thresholds", "extraction", "peak_kernel",
                      "top_k", "peak_resolution")


@dataclass(frozen=True)
class LabelFreeWeights(Section):
    """Weights of the label-free terms (:mod:`training.objectives.label_free`)."""

    config_name: ClassVar[str] = "weights"

    heatmap: float = 1.0
    size: float = 0.1  # BENet eq. 3's lambda_size
    # 4: chosen on the validation split of benchmarks/bench_student.py's synthetic scenes
    # (benchmarks/tune_student.py; emotion weight 1, 4, 10: val ER mAP 70.7, 74.9, 75.4
    # against the teacher's 76.6; person AP 64.9, 66.3, 61.6 against its 65.9)
    emotions: float = 4.0
    continuous: float = 1.0
    background: float = 0.1  # emotion-map weight outside the teacher's people
    # where the emotion terms count: ``box`` (the teacher's people's boxes) or ``centre``
    # (the teacher's centre heatmap); label_free.emotion_weight
    region: str = "box"
    temperature: float = 1.0  # of the emotion and continuous terms (label_free.soften)


@dataclass(frozen=True)
class DistillConfig(Section):
    """A distillation run (module docstring)."""

    config_name: ClassVar[str] = "config"

    teacher: str | None = None
    images: tuple[str, ...] = ()
    student: str = "student_large"
    init_backbone: str | None = None
    input_size: tuple[int, int] | None = None
    frame_rate: float = 2.0
    chunk_seconds: float = 10.0
    max_frames: int | None = None
    val_fraction: float = 0.1
    max_val_frames: int = 300
    teacher_backend: str = "auto"
    teacher_settings: dict[str, Any] = field(default_factory=dict)
    student_settings: dict[str, Any] = field(default_factory=dict)
    weights: LabelFreeWeights = field(default_factory=LabelFreeWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 100
    batch_size: int = 8
    lr: float = 2e-3
    # constant: in bench_student's setting, emotion weight 1, the student reached 70.0 test ER
    # mAP against 68.2 with a cosine (read on the test split, before the tuning moved to the
    # validation split: benchmarks/tune_student.py)
    lr_schedule: str = "constant"
    weight_decay: float = 1e-4
    # BatchNorm running-statistics momentum of every student layer while training (null: the
    # network's own; torchvision's MobileNetV3 trunk has 0.01, made for ImageNet's long runs)
    bn_momentum: float | None = None
    seed: int = 0
    workers: int = 2
    out: str = "runs/student"
    budget_minutes: float | None = None
    max_steps: int | None = None
    checkpoint_every: int = 0
    val_every: int = 1
    device: str = "auto"
    placebo: bool = False


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def config_from_dict(raw: Any) -> DistillConfig:
    """Check and convert a raw config dict; :class:`ConfigError` names the bad field."""
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping")
    values = dict(raw)
    augment_value = values.get("augment", {})
    if isinstance(augment_value, bool):  # ``augment: false`` switches it off
        values["augment"] = AugmentConfig.off().to_dict() if not augment_value else {}
    for key in ("augment", "weights", "teacher_settings", "student_settings"):
        if values.get(key) is None:
            values[key] = {}
    if isinstance(values.get("images"), str):
        values["images"] = [values["images"]]
    try:
        config = from_dict(DistillConfig, values)
    except (TypeError, ValueError) as error:
        raise ConfigError(" ".join(str(error).split())) from None
    _check(config)
    return config


def _check(c: DistillConfig) -> None:
    size_ok = c.input_size is None or (
        isinstance(c.input_size, tuple) and len(c.input_size) == 2
        and all(_integer(v, 32) and v % 32 == 0 for v in c.input_size))
    w = c.weights
    checks = [
        ("teacher", isinstance(c.teacher, str) and bool(c.teacher),
         "a model file (--teacher MODEL.pt|.onnx)"),
        ("images", isinstance(c.images, tuple) and len(c.images) > 0
         and all(isinstance(p, str) and p for p in c.images),
         "one or more image folders, images or videos (--images PATH ...)"),
        ("student", isinstance(c.student, str) and (
            c.student in STUDENT_PRESETS or c.student.lower().endswith((".pt", ".pth"))),
         f"a preset ({', '.join(STUDENT_PRESETS)}) or a .pt student file"),
        ("init_backbone", c.init_backbone is None or (isinstance(c.init_backbone, str)
                                                      and bool(c.init_backbone)),
         "a weights file path or null"),
        ("input_size", size_ok, "null or [H, W], positive multiples of 32"),
        ("frame_rate", _number(c.frame_rate) and c.frame_rate > 0, "a number > 0"),
        ("chunk_seconds", _number(c.chunk_seconds) and c.chunk_seconds > 0, "a number > 0"),
        ("max_frames", c.max_frames is None or _integer(c.max_frames, 2),
         "an integer >= 2 or null"),
        ("val_fraction", _number(c.val_fraction) and 0 < c.val_fraction < 1,
         "a number in (0, 1)"),
        ("max_val_frames", _integer(c.max_val_frames, 2), "an integer >= 2"),
        ("teacher_backend", c.teacher_backend in TEACHER_BACKENDS,
         f"one of {list(TEACHER_BACKENDS)}"),
        ("teacher_settings", isinstance(c.teacher_settings, dict), "a mapping"),
        ("student_settings", isinstance(c.student_settings, dict), "a mapping"),
        ("weights.heatmap", _number(w.heatmap) and w.heatmap >= 0, "a number >= 0"),
        ("weights.size", _number(w.size) and w.size >= 0, "a number >= 0"),
        ("weights.emotions", _number(w.emotions) and w.emotions >= 0, "a number >= 0"),
        ("weights.continuous", _number(w.continuous) and w.continuous >= 0, "a number >= 0"),
        ("weights.background", _number(w.background) and 0 <= w.background <= 1,
         "a number in [0, 1]"),
        ("weights.region", w.region in REGIONS, f"one of {list(REGIONS)}"),
        ("weights.temperature", _number(w.temperature) and w.temperature >= 1,
         "a number >= 1"),
        ("epochs", _integer(c.epochs, 1), "an integer >= 1"),
        ("batch_size", _integer(c.batch_size, 1), "an integer >= 1"),
        ("lr", _number(c.lr) and c.lr > 0, "a number > 0"),
        ("lr_schedule", c.lr_schedule in LR_SCHEDULES, f"one of {list(LR_SCHEDULES)}"),
        ("weight_decay", _number(c.weight_decay) and c.weight_decay >= 0, "a number >= 0"),
        ("bn_momentum", c.bn_momentum is None
         or (_number(c.bn_momentum) and 0 < c.bn_momentum <= 1), "a number in (0, 1] or null"),
        ("seed", _integer(c.seed, 0), "an integer >= 0"),
        ("workers", _integer(c.workers, 0), "an integer >= 0"),
        ("out", isinstance(c.out, str) and bool(c.out), "a folder path"),
        ("budget_minutes", c.budget_minutes is None
         or (_number(c.budget_minutes) and c.budget_minutes > 0), "a number > 0 or null"),
        ("max_steps", c.max_steps is None or _integer(c.max_steps, 1), "an integer >= 1 or null"),
        ("checkpoint_every", _integer(c.checkpoint_every, 0), "an integer >= 0"),
        ("val_every", _integer(c.val_every, 1), "an integer >= 1"),
        ("placebo", isinstance(c.placebo, bool), "true or false"),
        ("device", isinstance(c.device, str) and (c.device in ("auto", "cpu")
                                                   or c.device.startswith("cuda")),
         "auto, cpu or cuda[:N]"),
    ]
    for name, ok, what in checks:
        if not ok:
            value: Any = c
            for part in name.split("."):
                value = getattr(value, part)
            raise ConfigError(f"{name} must be {what}, got {value!r}")
    if c.placebo and c.batch_size < 2:
        raise ConfigError("placebo needs batch_size >= 2 (each image takes another's targets)")
    if not w.heatmap + w.size + w.emotions + w.continuous > 0:
        raise ConfigError("weights: at least one of heatmap, size, emotions, continuous must "
                          "be > 0")


def load_distill_config(path: str | Path | None, overrides: Sequence[str] = (),
                        **given: Any) -> DistillConfig:
    """Read a YAML config (None: all defaults), apply ``overrides`` (``key=value``), then the
    values ``given`` that are not None (the command line's ``--teacher``, ``--images``,
    ``--out``)."""
    raw: Any = {} if path is None else read_yaml_config(Path(path))
    try:
        for override in overrides:
            apply_override(raw, override)
        if not isinstance(raw, dict):
            raise ConfigError("the config must be a mapping")
        raw.update({key: value for key, value in given.items() if value is not None})
        return config_from_dict(raw)
    except (ConfigError, TypeError, ValueError) as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{' '.join(str(exc).split())}") from None


# --------------------------------------------------------------------------------------------
# Teacher and student


def open_teacher(config: DistillConfig, device: torch.device) -> Predictor:
    """The frozen teacher: its file's own inference graph (torch or ONNX Runtime)."""
    backend = None if config.teacher_backend == "auto" else config.teacher_backend
    run_on = str(device)
    try:
        return Predictor.from_file(config.teacher, backend=backend, device=run_on,
                                   changes=config.teacher_settings or None)
    except ModelFileError:
        raise
    except (ValueError, TypeError) as error:  # settings fixed in an ONNX graph, bad backend
        raise ConfigError(f"teacher {config.teacher}: {' '.join(str(error).split())}") from None


def make_student(config: DistillConfig, teacher: ModelConfig) -> BENet:
    """The student network: a preset for the teacher, or a student file to continue from."""
    if config.student in STUDENT_PRESETS:
        size = config.input_size or teacher.input_size
        try:
            student_config = ModelConfig.student(config.student, teacher, input_size=size)
        except ValueError as error:
            raise ConfigError(f"student {config.student}: {error}") from None
        model = build_model(student_config, seed=config.seed)
        if config.init_backbone:
            load_backbone_weights(model, config.init_backbone)
        return model
    model, info = load_model_file(config.student)
    mine, theirs = dict(info.config.categories), dict(teacher.categories)
    if mine != theirs:
        raise ConfigError(f"student {config.student}: its categories ({_sets(mine)}) cannot "
                          f"match the teacher's ({_sets(theirs)})")
    if info.config.scores != teacher.scores:
        raise ConfigError(f"student {config.student}: scores its sets {info.config.scores}, "
                          f"the teacher {teacher.scores}")
    if info.config.continuous != teacher.continuous:
        raise ConfigError(f"student {config.student}: continuous head "
                          f"{info.config.continuous}, the teacher's {teacher.continuous}")
    if config.input_size is not None and tuple(config.input_size) != info.config.input_size:
        model = build_model(dataclasses.replace(info.config, input_size=config.input_size))
        model.load_state_dict(load_model_file(config.student)[0].state_dict())
    return model


def _sets(sets: dict[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{name}: {len(names)} categories" for name, names in sets.items())


def student_settings(teacher: InferenceSettings, student: ModelConfig,
                     changes: dict[str, Any]) -> InferenceSettings:
    """The student's inference settings: the teacher's that still apply, then ``changes``."""
    base = InferenceSettings.for_model(student)
    inherited = {name: getattr(teacher, name) for name in INHERITED_SETTINGS}
    try:
        settings = dataclasses.replace(base, **{**inherited, **changes})
        settings.check_against(student)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"student_settings: {' '.join(str(error).split())}") from None
    return settings


# --------------------------------------------------------------------------------------------
# Data


class FrameDataset(torch.utils.data.Dataset):
    """Frames -> ``(H, W, 3)`` uint8 RGB canvases at the network input size, augmented in
    training; indexed by ``(epoch, index)``, every draw from ``(seed, epoch, index)``. An
    unreadable frame gives a :class:`Failed` item naming it."""

    def __init__(self, pool: FramePool, frames: Sequence[FrameRef], input_size: tuple[int, int],
                 fill: tuple[int, int, int], augment_config: AugmentConfig | None,
                 seed: int) -> None:
        self.pool = pool
        self.frames = list(frames)
        self.input_size = tuple(input_size)
        self.fill = fill
        self.augment = augment_config
        self.seed = seed

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: tuple[int, int]) -> np.ndarray | Failed:
        epoch, index = key
        try:
            image = self.pool.load(self.frames[index])
        except FrameError as error:
            return Failed(str(error))
        canvas, _ = letterbox(image, self.input_size, rgb=True, pad_rgb=self.fill)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, index])
            canvas, _, _ = augment(canvas, np.zeros((0, 4), np.float32), self.augment, rng,
                                   self.fill)
        return np.ascontiguousarray(canvas)


class Targets:
    """The teacher's maps for a batch of canvases, on each of the student's grids."""

    def __init__(self, teacher: Predictor, student: ModelConfig, placebo: bool = False) -> None:
        self.teacher = teacher
        self.placebo = placebo
        self.config = teacher.config
        self.student_scales = (4, 2) if student.half_resolution else (4,)
        session = getattr(teacher.runner, "session", None)  # an ONNX Runtime graph
        if session is not None:
            fixed = session.get_inputs()[0].shape[2:]
            if all(isinstance(v, int) for v in fixed) and tuple(fixed) != student.input_size:
                raise ConfigError(
                    f"teacher {teacher.path}: an ONNX graph exported for {fixed[0]}x{fixed[1]} "
                    f"inputs; set input_size=[{fixed[0]},{fixed[1]}] or give its .pt file")

    def __call__(self, canvases: np.ndarray) -> list[TeacherMaps]:
        """``canvases``: (B, H, W, 3) uint8 RGB; one :class:`TeacherMaps` per student scale."""
        _, height, width, _ = canvases.shape
        batch = np.concatenate([normalize(image, self.config.input_mean, self.config.input_std)
                                for image in canvases])
        outputs = self.teacher.runner.run(batch)
        if self.placebo:  # the previous image's maps (module docstring: placebo)
            outputs = {name: np.roll(value, 1, axis=0) for name, value in outputs.items()}
        settings = self.teacher.settings
        return [teacher_maps(outputs, self.config, (height, width),
                             (height // stride, width // stride),
                             settings.detection_threshold, settings.peak_kernel, settings.top_k)
                for stride in self.student_scales]


# --------------------------------------------------------------------------------------------
# The job


class DistillJob(Job):
    """Label-free distillation as a job of the one training loop (module docstring)."""

    def __init__(self, config: DistillConfig, ctx: DistributedContext,
                 progress: bool = True) -> None:
        self.config = config
        self.ctx = ctx
        self.progress = progress
        self.out = Path(config.out)
        if config.batch_size % ctx.world:
            raise ConfigError(f"batch_size ({config.batch_size}) must be a multiple of the "
                              f"number of processes ({ctx.world})")
        self.teacher = open_teacher(config, ctx.device)
        pool = collect_frames(config.images, config.frame_rate, config.chunk_seconds,
                              config.max_frames)
        try:
            train, val = split_frames(pool.frames, config.val_fraction, config.seed)
        except ValueError as error:
            raise FrameError(str(error)) from None
        if len(val) > config.max_val_frames:  # evenly spaced: the teacher's maps are kept
            val = [val[i] for i in np.linspace(0, len(val) - 1, config.max_val_frames
                                               ).round().astype(int)]
        if config.placebo and (min(len(train), len(val)) < 2
                               or config.batch_size < 2 * ctx.world):
            raise ConfigError(f"placebo needs at least 2 images per process's batch and per "
                              f"split (batch_size {config.batch_size}, {ctx.world} "
                              f"process(es), {len(train)} training / {len(val)} validation "
                              f"frames)")
        if ctx.main:
            print(f"frames: {pool.describe()}; {len(train)} for training, {len(val)} held out "
                  f"for validation (split by image and video stretch)", flush=True)
            print(f"teacher: {config.teacher} ({self.teacher.backend})", flush=True)
        self.model = make_student(config, self.teacher.config)
        if config.bn_momentum is not None:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.momentum = config.bn_momentum
        student = self.model.config
        self.settings = student_settings(self.teacher.settings, student, config.student_settings)
        if ctx.main:
            counts = sum(p.numel() for p in self.model.parameters())
            print(f"student: {config.student} ({student.backbone_name}, {counts / 1e6:.2f} M "
                  f"parameters, input {student.input_size[0]}x{student.input_size[1]})",
                  flush=True)
        self.targets = Targets(self.teacher, student, config.placebo)
        self.net, self.optimizer = prepare_for_training(self.model, ctx, config.lr,
                                                        config.weight_decay)
        fill = mean_color(student.input_mean)
        size = student.input_size
        self.train_set = FrameDataset(pool, train, size, fill, config.augment, config.seed)
        self.val_set = FrameDataset(pool, val, size, fill, None, config.seed)
        self.train_size = len(self.train_set)
        self._val_targets: list[list[TeacherMaps]] | None = None

    # ------------------------------------------------------------------------ one batch

    def _student_input(self, canvases: np.ndarray) -> torch.Tensor:
        config = self.model.config
        batch = np.concatenate([normalize(c, config.input_mean, config.input_std)
                                for c in canvases])
        return torch.from_numpy(batch).to(self.ctx.device, non_blocking=True)

    def _terms(self, net: torch.nn.Module, canvases: np.ndarray, maps: list[TeacherMaps]
               ) -> dict[str, torch.Tensor]:
        output = net(self._student_input(canvases), classifiers=False)
        weights = self.config.weights
        factor = {"heatmap": weights.heatmap, "size": weights.size,
                  "continuous": weights.continuous}
        terms: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.ctx.device)
        for prefix, scale, target in zip(("q", "h"), output.scales(), maps, strict=False):
            for name, value in label_free_terms(scale, target.to(self.ctx.device),
                                                self.model.config, weights.background,
                                                weights.region,
                                                weights.temperature).items():
                weight = weights.emotions if name.startswith("emotions.") else factor[name]
                terms[f"{prefix}.{name}"] = value
                total = total + weight * value
        return {"total": total, **terms}

    def _lr(self) -> float:
        if self.config.lr_schedule == "constant":
            return self.config.lr
        progress = self.loop.progress_fraction() if self.loop is not None else 0.0
        return self.config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def train_step(self, batch: Any) -> dict[str, float]:
        self.net.train()
        canvases = batch.numpy()
        maps = self.targets(canvases)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        terms = self._terms(self.net, canvases, maps)
        loss = terms["total"]
        if not torch.isfinite(loss):
            step = self.loop.state.global_step if self.loop is not None else 0
            raise FloatingPointError(f"distillation loss is {loss.item()} at step {step}; "
                                     f"lower lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        values = torch.stack([v.detach() for v in terms.values()])
        if self.ctx.enabled:
            torch.distributed.all_reduce(values)
            values = values / self.ctx.world
        return {name: float(v) for name, v in zip(terms, values, strict=True)} | {
            "teacher_people": float(sum(m.count for m in maps[:1]))}

    # ------------------------------------------------------------------------ the loop's hooks

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def train_batches(self, batches: list[list[Any]]) -> Any:
        return checked_loader(self.train_set, batches, self.config.workers,
                              collate=_stack, pin_memory=False)

    def validate(self, record: dict[str, Any]) -> Validation:
        batches = epoch_batches(len(self.val_set), self.config.batch_size, self.config.seed, 0,
                                shuffle=False, drop_last=False)
        if len(batches) > 1 and len(batches[-1]) == 1:  # no batch of one (placebo's roll)
            batches = [*batches[:-2], batches[-2] + batches[-1]]
        if self._val_targets is None:  # the teacher on unaugmented frames: computed once,
            # kept in float16 (the frames are loaded again at each validation)
            self._val_targets = [
                [maps.half() for maps in self.targets(b.numpy())]
                for b in checked_loader(self.val_set, batches, 0, collate=_stack)]
        self.model.eval()
        sums: dict[str, float] = {}
        loader = checked_loader(self.val_set, batches, 0, collate=_stack)
        with torch.no_grad():
            for canvases, maps in zip(loader, self._val_targets, strict=True):
                terms = self._terms(self.model, canvases.numpy(), maps)
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * len(canvases)
        val = {name: total / len(self.val_set) for name, total in sums.items()}
        return Validation(loss=val["total"], metric=None, record={"val": val},
                          best_meta={"val_loss": val["total"]})

    def epoch_line(self, record: dict[str, Any], validation: Validation,
                   state: TrainState) -> str:
        train, val = record["train"], record["val"]
        return (f"epoch {record['epoch']}: train loss {train.get('total', math.nan):.4f} | "
                f"val loss {val['total']:.4f} (best {state.best_val_loss:.4f})")

    def state_dict(self) -> dict[str, Any]:
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, data: dict[str, Any], path: Path) -> None:
        self.model.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])

    def save_model(self, name: str, meta: dict[str, Any]) -> None:
        teacher_meta = getattr(self.teacher, "meta", None) or {}
        extra = {key: teacher_meta[key] for key in ("continuous_range",) if key in teacher_meta}
        step = self.loop.state.global_step if self.loop is not None else 0
        save_model_file(self.out / name, self.model, self.settings, {
            "trained": True, "seed": self.config.seed, "global_step": step,
            "distilled_from": str(self.config.teacher),
            "student": self.config.student, "labels": "none (distilled from the teacher)",
            "out": str(self.out), **extra, **meta})


def _stack(items: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(items))


def distill(config: DistillConfig, progress: bool = True, restart: bool = False
            ) -> TrainingLoop:
    """One distillation run (module docstring); returns its loop (``loop.state``: steps,
    training time, history)."""
    ctx = distributed.setup(config.device)
    try:
        settings = LoopSettings(out=config.out, epochs=config.epochs,
                                batch_size=config.batch_size, seed=config.seed,
                                workers=config.workers, budget_minutes=config.budget_minutes,
                                max_steps=config.max_steps, val_every=config.val_every,
                                checkpoint_every=config.checkpoint_every, best_by="loss")
        loop = TrainingLoop(settings, DistillJob(config, ctx, progress), ctx, restart=restart,
                            progress=progress)
        loop.run()
        if ctx.main and not loop.finished:
            print(f"done: {config.out}/best.pt and final.pt", flush=True)
        return loop
    finally:
        distributed.teardown(ctx)


# --------------------------------------------------------------------------------------------
# Command line

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.distill",
        description="Distil a teacher model into a compact student on unlabelled images and "
                    "videos (no annotations); key=value overrides the config.",
        epilog="See the module docstring of training/distill.py.")
    parser.add_argument("--teacher", help="teacher model file (.pt or .onnx)")
    parser.add_argument("--images", nargs="+", default=[], metavar="PATH",
                        help="image folders, image files and/or video files")
    parser.add_argument("--out", help="run folder (sets out)")
    parser.add_argument("--config", type=Path, help="YAML config")
    parser.add_argument("--restart", action="store_true",
                        help="ignore a training state in the run folder and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. student=student_small max_steps=2000")
    args = parser.parse_intermixed_args(argv)
    # ``--images a b key=value``: a key=value that is not a file is an override
    moved = [p for p in args.images if _OVERRIDE.match(p) and not Path(p).exists()]
    args.images = [p for p in args.images if p not in moved]
    args.overrides = moved + list(args.overrides)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_distill_config(args.config, args.overrides, teacher=args.teacher,
                                     images=args.images or None, out=args.out)
        distill(config, progress=not args.no_progress, restart=args.restart)
    except (ConfigError, DataError, FrameError, ModelFileError, BackboneWeightsError,
            FloatingPointError, RunFolderBusy) as exc:
        print(f"training.distill: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
