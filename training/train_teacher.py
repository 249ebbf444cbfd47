"""Train a teacher classifier (KA paper 3.1): ``python -m training.train_teacher``.

::

    python -m training.train_teacher --config training/configs/teacher_fer_affectnet.yaml \\
        --data /data/AffectNet
    python -m training.train_teacher --config training/configs/teacher_vea_emoset.yaml \\
        --data /data/EmoSet-118K --out runs/vea epochs=50
    python -m training.train_teacher --config training/configs/teacher_synthetic_face.yaml \\
        --data data/faces budget_minutes=5

The paper's recipe for the FER (AffectNet) and VEA (EmoSet) teachers: an HRNet-W32 classifier
(:class:`training.teachers.models.TeacherClassifier`, head's second-to-last layer 1024 channels),
cross-entropy, Adam at lr 1e-3, 150 epochs, random perspective and random horizontal flip; the
model kept is the one with the best average (macro) F1 on the validation set. Images go to the
network as everywhere in this project: letterboxed to ``input_size`` keeping the aspect ratio
(:func:`caer_ros.inference.preprocess.letterbox`), augmented (training only; the flip and the
perspective of :func:`training.data.transforms.geometric`), then normalised. AffectNet images are
cropped to their face box first (``data.crop_face``, clipped to the image and widened by
``data.face_margin`` of its clipped size on each side), the aligned-face input the paper describes.

Training runs the project's one training loop (:mod:`training.loop`, as ``training.train``
does). The run folder (``out``) receives ``best.pt`` (best validation macro F1), ``final.pt``
(the end of training), both teacher classifier files
(:func:`training.teachers.models.save_classifier`) that
:func:`training.teachers.models.load_teacher` accepts, ``history.json`` (per epoch: training
loss and accuracy, validation loss, accuracy, macro F1 and F1 per class), ``config.yaml``,
``tensorboard/`` and ``last.ckpt``: the same command resumes a killed run exactly where it
stopped, leaves a finished one alone (a larger ``epochs``, ``budget_minutes`` or
``max_steps`` continues it) and ``--restart`` starts over. One training at a time owns the run
folder (:mod:`training.run_folder`). Randomness (data order, augmentation draws, initial
weights) depends only on ``seed``. Under ``torchrun`` the global batch is split over the
processes as in ``training.train``; each process validates the whole validation split.

Config (YAML, every key optional, ``key=value`` overrides with dotted keys as
``training.train``; unknown keys are errors):

- ``name`` (stored in the files: the teacher's name), ``backbone`` (a preset of
  :mod:`caer_ros.model.config`), ``input_size`` [H, W] (multiples of 32), ``classes`` (a subset
  and order of the dataset's classes; default: all), ``head_width`` / ``head_expansion`` /
  ``final_channels`` (the head), ``pretrained`` (an HRNet checkpoint to start from, e.g. the
  official ImageNet one; relative paths from the working directory);
- ``data``: ``kind`` (``affectnet``, ``emoset`` or ``folder``), ``root`` (``--data``),
  ``train`` / ``val`` (relative to root; defaults: ``training.csv`` / ``validation.csv``,
  ``train.json`` / ``val.json``, ``train`` / ``val``), ``images`` (AffectNet's image folder),
  ``crop_face``, ``face_margin``, ``read_annotations`` (EmoSet), ``allow_missing`` (skip rows
  whose image file is missing instead of stopping);
- ``augment``: ``enabled``, ``flip_p``, ``perspective_p``, ``perspective_scale`` (each corner
  moved inward by up to that fraction of the side; 0.25 is torchvision's default
  ``distortion_scale`` 0.5);
- run: ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``seed``, ``workers``, ``out``,
  ``budget_minutes`` (stop once training has run that long; the epoch in progress is still
  validated and ``final.pt`` written), ``max_steps`` (stop after that many optimiser steps),
  ``checkpoint_every`` (also write ``last.ckpt`` every that many steps; 0: at epoch ends),
  ``device`` (``auto``, ``cpu``, ``cuda[:N]``), ``amp``
  (float16 autocast on CUDA).

A bad config, missing data or an unreadable image stops with exit status 1 and one message
naming the file or the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from caer_ros.config_data import from_dict
from caer_ros.inference.boxes import subject_crop
from caer_ros.inference.preprocess import letterbox, mean_color, normalize
from caer_ros.model.checkpoint import ModelFileError
from caer_ros.model.config import BACKBONE_PRESETS, IMAGENET_MEAN, IMAGENET_STD
from caer_ros.model.weights import BackboneWeightsError
from training import distributed
from training.config import ConfigError, Section, apply_override, read_yaml_config
from training.data.batches import DataError, Failed, checked_loader, epoch_batches, read_rgb
from training.data.transforms import AugmentConfig, geometric
from training.datasets.teacher_data import (
    ClassLoadReport,
    LabelledImage,
    TeacherDataError,
    folder_classes,
    load_affectnet,
    load_emoset,
    load_folder,
)
from training.distributed import DistributedContext
from training.evaluation.metrics import accuracy, macro_f1
from training.loop import (
    Job,
    LoopSettings,
    TrainingLoop,
    TrainState,
    Validation,
    prepare_for_training,
)
from training.run_folder import RunFolderBusy
from training.teachers.models import (
    ClassifierConfig,
    TeacherClassifier,
    build_classifier,
    load_pretrained,
    save_classifier,
)

KINDS = ("affectnet", "emoset", "folder")
DEFAULT_SPLITS = {"affectnet": ("training.csv", "validation.csv"),
                  "emoset": ("train.json", "val.json"), "folder": ("train", "val")}


@dataclass(frozen=True)
class TeacherDataConfig(Section):
    """Where the teacher's dataset is and how to read it (module docstring)."""

    config_name: ClassVar[str] = "data"

    kind: str = "folder"
    root: str | None = None
    train: str | None = None
    val: str | None = None
    images: str = "Manually_Annotated_Images"
    crop_face: bool = True
    face_margin: float = 0.0
    read_annotations: bool = False
    allow_missing: bool = False

    def path(self, value: str) -> Path:
        """``value`` resolved against ``root``."""
        p = Path(value).expanduser()
        return p if p.is_absolute() or self.root is None else Path(self.root).expanduser() / p

    def split_path(self, split: str) -> Path:
        """The annotation file (or folder) of ``split`` (``train`` or ``val``)."""
        value = getattr(self, split)
        return self.path(value if value else DEFAULT_SPLITS[self.kind][split == "val"])


@dataclass(frozen=True)
class TeacherAugmentConfig(Section):
    """The paper's augmentations: random horizontal flip and random perspective."""

    config_name: ClassVar[str] = "augment"

    enabled: bool = True
    flip_p: float = 0.5
    perspective_p: float = 0.5
    perspective_scale: float = 0.25

    def geometric(self) -> AugmentConfig:
        """The :class:`~training.data.transforms.AugmentConfig` of :func:`geometric` (off when
        disabled)."""
        if not self.enabled:
            return AugmentConfig.off()
        return dataclasses.replace(AugmentConfig.off(), flip_p=self.flip_p,
                                   perspective_p=self.perspective_p,
                                   perspective_scale=self.perspective_scale)


@dataclass(frozen=True)
class TeacherTrainConfig(Section):
    """A teacher training run (module docstring). Defaults: the KA paper's teachers."""

    config_name: ClassVar[str] = "config"

    name: str = "teacher"
    backbone: str = "hrnet_w32"
    input_size: tuple[int, int] = (224, 224)
    classes: tuple[str, ...] | None = None
    head_width: int = 32
    head_expansion: int = 4
    final_channels: int = 1024
    pretrained: str | None = None
    data: TeacherDataConfig = field(default_factory=TeacherDataConfig)
    augment: TeacherAugmentConfig = field(default_factory=TeacherAugmentConfig)
    epochs: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    workers: int = 2
    out: str = "runs/teacher"
    budget_minutes: float | None = None
    max_steps: int | None = None
    checkpoint_every: int = 0
    device: str = "auto"
    amp: bool = True

    @classmethod
    def from_dict(cls, data: Any) -> TeacherTrainConfig:
        """:func:`config_from_dict` (with the checks of :func:`_check`)."""
        return config_from_dict(data)

    def classifier_config(self, classes: Sequence[str]) -> ClassifierConfig:
        return ClassifierConfig(backbone=self.backbone, classes=tuple(classes),
                                input_size=self.input_size, input_mean=IMAGENET_MEAN,
                                input_std=IMAGENET_STD, head_width=self.head_width,
                                head_expansion=self.head_expansion,
                                final_channels=self.final_channels)


# --------------------------------------------------------------------------------------------
# Config


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def config_from_dict(raw: dict[str, Any]) -> TeacherTrainConfig:
    """Check and convert a raw config dict; :class:`ConfigError` names the bad field."""
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping")
    values = dict(raw)
    augment = values.get("augment", {})
    if isinstance(augment, bool):  # ``augment: false`` switches them off
        augment = {"enabled": augment}
    values["augment"] = augment if augment is not None else {}
    values["data"] = values.get("data") or {}
    config = from_dict(TeacherTrainConfig, values)
    _check(config)
    return config


def _check(c: TeacherTrainConfig) -> None:
    d, a = c.data, c.augment
    size_ok = isinstance(c.input_size, tuple) and len(c.input_size) == 2 \
        and all(_integer(v, 32) and v % 32 == 0 for v in c.input_size)
    classes_ok = c.classes is None or (isinstance(c.classes, tuple) and len(c.classes) >= 2
                                       and all(isinstance(n, str) and n for n in c.classes)
                                       and len(set(c.classes)) == len(c.classes))
    checks = [
        ("name", isinstance(c.name, str) and bool(c.name), "a non-empty string"),
        ("backbone", c.backbone in BACKBONE_PRESETS,
         f"one of the presets {sorted(BACKBONE_PRESETS)}"),
        ("input_size", size_ok, "[H, W], positive multiples of 32"),
        ("classes", classes_ok, "null or a list of at least 2 distinct names"),
        ("head_width", _integer(c.head_width, 1), "an integer >= 1"),
        ("head_expansion", _integer(c.head_expansion, 1), "an integer >= 1"),
        ("final_channels", _integer(c.final_channels, 1), "an integer >= 1"),
        ("pretrained", c.pretrained is None or (isinstance(c.pretrained, str)
                                                and bool(c.pretrained)), "a file path or null"),
        ("data.kind", d.kind in KINDS, f"one of {list(KINDS)}"),
        ("data.root", d.root is None or isinstance(d.root, str), "a folder path"),
        ("data.train", d.train is None or isinstance(d.train, str), "a path or null"),
        ("data.val", d.val is None or isinstance(d.val, str), "a path or null"),
        ("data.images", isinstance(d.images, str) and bool(d.images), "a folder path"),
        ("data.crop_face", isinstance(d.crop_face, bool), "true or false"),
        ("data.face_margin", _number(d.face_margin) and d.face_margin >= 0, "a number >= 0"),
        ("data.read_annotations", isinstance(d.read_annotations, bool), "true or false"),
        ("data.allow_missing", isinstance(d.allow_missing, bool), "true or false"),
        ("augment.enabled", isinstance(a.enabled, bool), "true or false"),
        ("augment.flip_p", _number(a.flip_p) and 0 <= a.flip_p <= 1, "a number in [0, 1]"),
        ("augment.perspective_p", _number(a.perspective_p) and 0 <= a.perspective_p <= 1,
         "a number in [0, 1]"),
        ("augment.perspective_scale", _number(a.perspective_scale)
         and 0 <= a.perspective_scale < 0.5, "a number in [0, 0.5)"),
        ("epochs", _integer(c.epochs, 1), "an integer >= 1"),
        ("batch_size", _integer(c.batch_size, 1), "an integer >= 1"),
        ("lr", _number(c.lr) and c.lr > 0, "a number > 0"),
        ("weight_decay", _number(c.weight_decay) and c.weight_decay >= 0, "a number >= 0"),
        ("seed", _integer(c.seed, 0), "an integer >= 0"),
        ("workers", _integer(c.workers, 0), "an integer >= 0"),
        ("out", isinstance(c.out, str) and bool(c.out), "a folder path"),
        ("budget_minutes", c.budget_minutes is None
         or (_number(c.budget_minutes) and c.budget_minutes > 0), "a number > 0 or null"),
        ("max_steps", c.max_steps is None or _integer(c.max_steps, 1), "an integer >= 1 or null"),
        ("checkpoint_every", _integer(c.checkpoint_every, 0), "an integer >= 0"),
        ("device", isinstance(c.device, str) and (c.device in ("auto", "cpu")
                                                   or c.device.startswith("cuda")),
         "auto, cpu or cuda[:N]"),
        ("amp", isinstance(c.amp, bool), "true or false"),
    ]
    for name, ok, what in checks:
        if not ok:
            value = c
            for part in name.split("."):
                value = getattr(value, part)
            raise ConfigError(f"{name} must be {what}, got {value!r}")


def load_teacher_config(path: str | Path | None, overrides: Sequence[str] = (),
                        data_root: str | Path | None = None) -> TeacherTrainConfig:
    """Read a YAML config (None: all defaults), apply ``overrides`` and ``--data``."""
    raw: Any = {} if path is None else read_yaml_config(Path(path))
    try:
        for override in overrides:
            apply_override(raw, override)
        if data_root is not None:
            if not isinstance(raw.setdefault("data", {}), dict):
                raise ConfigError("data must be a section")
            raw["data"]["root"] = str(data_root)
        return config_from_dict(raw)
    except (ConfigError, TypeError, ValueError) as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{' '.join(str(exc).split())}") from None


# --------------------------------------------------------------------------------------------
# Data


def load_teacher_split(config: TeacherTrainConfig, split: str,
                       classes: Sequence[str] | None = None
                       ) -> tuple[list[LabelledImage], ClassLoadReport]:
    """The records of ``split`` (``train`` or ``val``). ``classes``: those of the training
    split, so that both splits index the same classes (default: the config's, else the
    dataset's). Missing data, an empty split or (unless ``data.allow_missing``) missing image
    files raise :class:`~training.data.batches.DataError` naming the place."""
    data = config.data
    if data.root is None:
        raise DataError("no data folder: pass --data DIR (or set data.root in the config)")
    if not Path(data.root).expanduser().is_dir():
        raise DataError(f"{data.root}: no such data folder")
    source = data.split_path(split)
    wanted = classes if classes is not None else config.classes
    try:
        if data.kind == "affectnet":
            records, report = load_affectnet(source, data.path(data.images), wanted,
                                             face_boxes=data.crop_face)
        elif data.kind == "emoset":
            records, report = load_emoset(source, Path(data.root).expanduser(), wanted,
                                          read_annotations=data.read_annotations)
        else:
            records, report = load_folder(source, wanted if wanted is not None
                                          else folder_classes(source))
    except (TeacherDataError, OSError) as exc:
        raise DataError(" ".join(str(exc).split())) from None
    missing = report.missing_images()
    if missing and not data.allow_missing:
        raise DataError(f"{len(missing)} {split} images are missing, e.g. {missing[0]}; set "
                        f"data.allow_missing: true to train without them")
    if not records:
        raise DataError(f"{source}: no usable {split} images ({report.summary()})")
    return records, report


def crop_box(image: np.ndarray, box: tuple[float, float, float, float], margin: float,
             where: str) -> np.ndarray:
    """``image`` cut to ``box`` clipped to the image and widened by ``margin`` of its clipped size
    on each side: the person crop of :func:`caer_ros.inference.boxes.subject_crop`. A box with no
    pixel inside the image is a :class:`~training.data.batches.DataError` naming ``where``."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    if min(x2, width) <= max(x1, 0) or min(y2, height) <= max(y1, 0):
        raise DataError(f"{where}: face box {box} is outside the {width}x{height} image")
    r0, r1, c0, c1 = subject_crop(box, height, width, margin)
    return image[r0:r1, c0:c1]


class TeacherDataset(torch.utils.data.Dataset):
    """Records -> ``(image (3, H, W) float32 normalised, label)``, indexed by
    ``(epoch, index)``; every random draw comes from ``(seed, epoch, index)``. An unreadable
    image gives a :class:`~training.data.batches.Failed` item naming it
    (:func:`~training.data.batches.checked_loader` stops with its message, not a worker
    traceback)."""

    def __init__(self, records: Sequence[LabelledImage], config: TeacherTrainConfig,
                 train: bool) -> None:
        self.records = list(records)
        self.train = train
        self.seed = config.seed
        self.input_size = tuple(config.input_size)
        self.crop_face = config.data.crop_face
        self.margin = config.data.face_margin
        self.augment = config.augment.geometric() if train else AugmentConfig.off()
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def __len__(self) -> int:
        return len(self.records)

    def image(self, epoch: int, index: int) -> np.ndarray:
        """The uint8 RGB network input of one record, before normalisation."""
        record = self.records[index]
        image = read_rgb(record.path)
        if self.crop_face and record.box is not None:
            image = crop_box(image, record.box, self.margin, str(record.path))
        fill = mean_color(self.mean)
        canvas, _ = letterbox(image, self.input_size, rgb=True, pad_rgb=fill)
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            canvas, _, _, _ = geometric(canvas, np.zeros((0, 4), np.float32), self.augment,
                                        rng, fill)
        return canvas

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, int] | Failed:
        epoch, index = key
        try:
            canvas = self.image(epoch, index)
        except DataError as exc:
            return Failed(str(exc))
        return normalize(canvas, self.mean, self.std)[0], self.records[index].label


def _loader(dataset: TeacherDataset, batches: list[list[tuple[int, int]]], workers: int,
            pin: bool) -> Any:
    return checked_loader(dataset, batches, workers, pin_memory=pin)


def _to(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = batch
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


# --------------------------------------------------------------------------------------------
# Training


def evaluate(model: TeacherClassifier, dataset: TeacherDataset, config: TeacherTrainConfig,
             device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Loss, accuracy, macro F1 and F1 per class of ``model`` on ``dataset``."""
    model.eval()
    batches = epoch_batches(len(dataset), config.batch_size, config.seed, 0, shuffle=False,
                            drop_last=False)
    logits, labels = [], []
    with torch.no_grad():
        for batch in tqdm(_loader(dataset, batches, config.workers, device.type == "cuda"),
                          total=len(batches), desc="validation", unit="batch", leave=False,
                          disable=not progress):
            images, targets = _to(batch, device)
            logits.append(model(images).float().cpu())
            labels.append(targets.cpu())
    scores, truth = torch.cat(logits), torch.cat(labels)
    loss = float(F.cross_entropy(scores, truth))
    f1, per_class = macro_f1(scores.numpy(), truth.numpy())
    names = model.config.classes
    return {"loss": loss, "accuracy": accuracy(scores.numpy(), truth.numpy()),
            "macro_f1": f1,
            "f1": {n: None if math.isnan(v) else float(v)
                   for n, v in zip(names, per_class, strict=True)}}


class TeacherJob(Job):
    """Teacher training as a job of the one training loop (:mod:`training.loop`): cross-entropy
    and Adam, validated every epoch, ``best.pt`` by the highest validation macro F1."""

    def __init__(self, config: TeacherTrainConfig, ctx: DistributedContext,
                 progress: bool = True) -> None:
        self.config = config
        self.ctx = ctx
        self.progress = progress
        self.out = Path(config.out)
        self.amp = config.amp and ctx.device.type == "cuda"
        if config.batch_size % ctx.world:  # each process's mean loss: equal shares
            raise ConfigError(f"batch_size ({config.batch_size}) must be a multiple of the "
                              f"number of processes ({ctx.world})")
        train_records, report = load_teacher_split(config, "train")
        val_records, val_report = load_teacher_split(config, "val", report.classes)
        if ctx.main:
            print(report.summary(), flush=True)
            print(val_report.summary(), flush=True)
        self.model = build_classifier(config.classifier_config(report.classes), seed=config.seed)
        if config.pretrained:
            summary = load_pretrained(self.model, config.pretrained).summary()
            if ctx.main:
                print(summary, flush=True)
        self.net, self.optimizer = prepare_for_training(self.model, ctx, config.lr,
                                                        config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.train_set = TeacherDataset(train_records, config, train=True)
        self.val_set = TeacherDataset(val_records, config, train=False)
        self.train_size = len(self.train_set)

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def train_batches(self, batches: list[list[Any]]) -> Any:
        return _loader(self.train_set, batches, self.config.workers,
                       self.ctx.device.type == "cuda")

    def train_step(self, batch: Any) -> dict[str, float]:
        self.net.train()
        images, labels = _to(batch, self.ctx.device)
        with torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext():
            logits = self.net(images)
        loss = F.cross_entropy(logits.float(), labels)
        if not torch.isfinite(loss):
            step = self.loop.state.global_step if self.loop is not None else 0
            raise FloatingPointError(f"training loss is {loss.item()} at step {step}; lower lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values = torch.stack([loss.detach(),
                              (logits.detach().argmax(1) == labels).float().mean()])
        if self.ctx.enabled:  # the processes' equal shares of the global batch, averaged
            torch.distributed.all_reduce(values)
            values = values / self.ctx.world
        return {"loss": float(values[0]), "accuracy": float(values[1])}

    def validate(self, record: dict[str, Any]) -> Validation:
        # every process validates the whole split (the same numbers in each)
        val = evaluate(self.model, self.val_set, self.config, self.ctx.device,
                       self.progress and self.ctx.main)
        scores = {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"]}
        return Validation(loss=val["loss"], metric=val["macro_f1"], record={"val": val},
                          best_meta=scores)

    def epoch_line(self, record: dict[str, Any], validation: Validation,
                   state: TrainState) -> str:
        train, val = record["train"], record["val"]
        return (f"epoch {record['epoch']}: train loss {train.get('loss', math.nan):.4f} "
                f"accuracy {train.get('accuracy', math.nan):.3f} | val loss {val['loss']:.4f} "
                f"accuracy {val['accuracy']:.3f} macro F1 {val['macro_f1']:.3f} "
                f"(best {state.best_val_metric:.3f})")

    def state_dict(self) -> dict[str, Any]:
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, data: dict[str, Any], path: Path) -> None:
        self.model.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scaler.load_state_dict(data["scaler"])

    def save_model(self, name: str, meta: dict[str, Any]) -> None:
        history = self.loop.state.history if self.loop is not None else []
        if meta.get("kind") == "final" and history:  # the last validation's scores
            last = history[-1]
            meta = {"epoch": last["epoch"], "val_accuracy": last["val"]["accuracy"],
                    "val_macro_f1": last["val"]["macro_f1"], **meta}
        save_classifier(self.out / name, self.model, {
            "name": self.config.name, "trained": True, "seed": self.config.seed,
            "dataset": self.config.data.kind, "out": str(self.out), **meta})


def train_teacher(config: TeacherTrainConfig, progress: bool = True, restart: bool = False
                  ) -> list[dict[str, Any]]:
    """One training run (module docstring); returns the history. A finished run in
    ``config.out`` is left alone (it says so; its history is returned) unless ``restart``."""
    ctx = distributed.setup(config.device)
    try:
        settings = LoopSettings(out=config.out, epochs=config.epochs,
                                batch_size=config.batch_size, seed=config.seed,
                                workers=config.workers, budget_minutes=config.budget_minutes,
                                max_steps=config.max_steps,
                                checkpoint_every=config.checkpoint_every, best_by="metric")
        loop = TrainingLoop(settings, TeacherJob(config, ctx, progress), ctx, restart=restart,
                            progress=progress)
        history = loop.run()
        if ctx.main and not loop.finished:
            print(f"done: {config.out}/best.pt and final.pt", flush=True)
        return history
    finally:
        distributed.teardown(ctx)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.train_teacher",
        description="Train a teacher classifier (KA paper 3.1) from a YAML config; key=value "
                    "overrides it.")
    parser.add_argument("--config", type=Path, help="YAML config (training/configs/teacher_*)")
    parser.add_argument("--data", type=Path, help="dataset folder (sets data.root)")
    parser.add_argument("--out", help="run folder (sets out)")
    parser.add_argument("--restart", action="store_true",
                        help="ignore a training state in the run folder and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. epochs=5 lr=1e-4 data.kind=folder")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    try:
        config = load_teacher_config(args.config, overrides, args.data)
        train_teacher(config, progress=not args.no_progress, restart=args.restart)
    except (ConfigError, DataError, ModelFileError, BackboneWeightsError,
            FloatingPointError, RunFolderBusy) as exc:
        print(f"training.train_teacher: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
