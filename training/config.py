"""Training configuration: a YAML file loaded into dataclasses, with ``key=value`` overrides.

``python -m training.train --config training/configs/NAME.yaml [--data DIR] [key=value ...]``
reads the YAML, applies the overrides (dotted keys, values parsed as YAML: ``epochs=2``,
``optim.lr=1e-4``, ``model.input_size=[256,256]``, ``tasks=[bu,det]``), then checks every field
and fails with one message naming the field. Unknown keys are errors, never ignored.

Sections (every one optional; defaults are BENet's, papers/benet-bottom-up-caer.txt 3.3-4.1):

- ``model``: :class:`~caer_ros.model.config.ModelConfig` fields. ``categories`` may be a list of
  set names from :mod:`caer_ros.labels` (``[emotic]``, ``[emotic, heco]``).
  ``person_centric`` / ``background`` default to whether ``pc`` / ``bg`` are trained.
- ``data``: where the datasets are (:class:`DataConfig`).
- ``tasks``: the heads trained - ``bu`` (bottom-up emotion maps), ``det`` (person detection),
  ``pc`` (person-centric head), ``bg`` (background head); BENet Table 1's ablation rows are subsets.
- ``pre_transforms``: probability of each pre-transform (BENet 3.3, 0.25 each by default);
  ``routes``: the heads each pre-transform's images train. A pre-transform whose routes are all
  off gets probability 0.
- ``augment``: :class:`training.data.transforms.AugmentConfig` fields.
- ``bu_reading``: where the bottom-up loss reads a person's emotion maps: ``center`` (BENet
  3.4: at the box centre) or ``box_mean`` (KA 2.1: the mean inside the box, with the in-box
  variance term eq. 3 weighted by ``variance_weight``); it also sets the default
  ``inference.extraction``.
- ``optim``: Adam (``lr`` 1e-3, ``weight_decay``; ``name: sgd``: SGD with ``momentum``);
  ``emotion_loss``: per category set, ``focal``
  (BENet eq. 5), ``bce`` (KA eq. 1) or ``ce`` (KA eq. 2, one label per person). It also sets
  how the set is scored (``model.scores``, stored in the model files): ``ce`` sets with a
  softmax over the set, the others with a sigmoid per category.
- run: ``epochs``, ``batch_size`` (the global batch, split over DDP processes), ``workers``,
  ``seed``, ``out``, ``budget_minutes`` (stop once training has run this long), ``max_steps``
  (stop after this many optimiser steps: equal steps for compared runs), ``val_every``,
  ``checkpoint_every`` (steps; 0: at epoch ends only), ``log_every``, ``amp``, ``device``;
  ``best_by``: what picks ``best.pt``, ``loss`` (the lowest total validation loss, BENet's and
  KA's rule) or ``metric`` (the highest mean of the emotion tasks' validation metrics,
  :mod:`training.evaluation.task_metrics`: one rule for runs whose losses differ, e.g. KA's
  extra terms).
- ``inference``: :class:`~caer_ros.model.inference_settings.InferenceSettings` fields stored in
  the model files. ``extraction: center`` by default: BENet supervises the emotion maps only at
  the person centres (2.1), so that is where a BENet-trained model must be read (``box_mean``
  needs KA's in-box variance term). ``calibrate``: set each category's threshold (the node's
  ``labels``) to the one maximising F1 on the training split, read without augmentation
  (:mod:`training.evaluation.calibrate`; validation picks ``best.pt``).
- ABAW-style multitask extensions (papers/abaw-multitask-kd-task-discriminator.txt, eq. 13):
  ``distill`` (:class:`DistillConfig`: soft labels from a trained teacher model file, mostly
  where labels are missing), ``discriminator`` (:class:`DiscriminatorConfig`: a task
  discriminator behind a gradient reversal layer on the shared backbone features) and
  ``task_weights`` (``fixed``, or ``adaptive``: gamma_i = exp(0.5 n_i) per emotion task, n_i
  the validations without improvement of the task's metric, :mod:`training.evaluation.task_metrics`,
  capped at ``task_patience``; ``early_stop``: end the run once every task reached it, the
  paper's stop).
- knowledge amalgamation (papers/knowledge-amalgamation-single-shot-caer.txt):
  ``amalgamation`` (:class:`AmalgamationConfig` fields: the teachers and the common feature
  space, used by :mod:`training.objectives.amalgamation`) and ``init_backbone`` (a weights
  file the student's backbone starts from: an ImageNet HRNet checkpoint, or a teacher's file
  for fine-tuning).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from caer_ros.config_data import ConfigData, check_keys, from_dict
from caer_ros.labels import category_set
from caer_ros.model.config import ModelConfig
from caer_ros.model.inference_settings import InferenceSettings
from training.data.transforms import PRE_TRANSFORMS, AugmentConfig
from training.datasets.coco import is_coco_folder

TASKS = ("bu", "det", "pc", "bg")
DEFAULT_ROUTES = {"raw": ("det",), "random_mask": ("bu",), "extract_subject": ("pc",),
                  "mask_all": ("bg",)}
DEFAULT_PRE_TRANSFORMS = {"raw": 0.25, "random_mask": 0.25, "extract_subject": 0.25,
                          "mask_all": 0.25}
EMOTION_LOSSES = ("focal", "bce", "ce")
BU_READINGS = ("center", "box_mean")
BEST_BY = ("loss", "metric")
STUDENT_FEATURES = ("quarter", "concat")  # amalgamation.student_feature
DEFAULT_CHANNELS = 96  # amalgamation.channels: C of the KA paper
SOURCES = ("emotic", "heco", "coco")
OWN_SET = "own"  # the model's name for a category set of a lab's own names (data.emotions)


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the field."""


class Section(ConfigData):
    """A section of a training config (:class:`~caer_ros.config_data.ConfigData`; its errors
    are :class:`ConfigError`)."""

    config_error: ClassVar[type[Exception]] = ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


@dataclass(frozen=True)
class DataConfig(Section):
    """Where the data is. ``root``: the EMOTIC folder (``Annotations/Annotations.mat`` and the
    image folders; ``--data`` sets it). ``train`` / ``val``: the sources of each split,
    ``emotic`` (its own split) and/or ``heco`` (``heco_csv`` and ``heco_images``, relative to
    ``root`` unless absolute, partitioned 70/10/20 with ``heco_seed``, HECO paper style; with
    ``heco_split: all`` every HECO image goes to train, as BENet's extra data, and none to val)
    and/or ``coco`` (a lab's own folder, ``root/train.json``, ``val.json``, ``test.json``:
    :mod:`training.datasets.coco`; a ``root`` holding ``train.json`` is read so whatever the
    sources say). ``emotions``: the category set, a known set's name (``emotic``, ``heco``) or
    a list of a lab's own names (``[Happy, Sad, Neutral, Surprised]``, the model's set
    ``own``); empty: the model's first set. ``continuous_range``: the scale of valence,
    arousal and dominance in a COCO folder (e.g. ``[0, 1]``)."""

    config_name: ClassVar[str] = "data"

    root: str | None = None
    train: tuple[str, ...] = ("emotic",)
    val: tuple[str, ...] = ("emotic",)
    heco_csv: str = "HECO_Labels.csv"
    heco_images: str = "heco/images"
    heco_seed: int = 0
    heco_split: str = "partition"  # or "all": every HECO image trains (BENet's extra data)
    emotions: tuple[str, ...] = ()
    continuous_range: tuple[float, float] = (1.0, 10.0)

    def path(self, value: str) -> Path:
        """``value`` resolved against ``root``."""
        p = Path(value).expanduser()
        return p if p.is_absolute() or self.root is None else Path(self.root).expanduser() / p


@dataclass(frozen=True)
class OptimConfig(Section):
    """``adam`` (BENet 4.1) or ``sgd`` (with ``momentum``)."""

    config_name: ClassVar[str] = "optim"

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9


@dataclass(frozen=True)
class DistillConfig(Section):
    """Knowledge distillation with soft labels (ABAW-KD, eq. 8-10 and 13).

    ``teacher``: a caer_ros model file (Algorithm 1's teacher: a BENet trained on every task
    with the supervised losses); the student learns its outputs for every category set (and
    the continuous head) the teacher has, in both directions (EMOTIC scores on HECO images,
    HECO scores on EMOTIC images). ``alpha`` weighs the supervised loss of *every* emotion task
    (``gamma_i (alpha L^S_i + L^D_i)``); ``beta`` the distillation loss on people with no label
    for that task (``beta gamma_j L^D_j``); ``labelled``: also distil on labelled people (eq.
    13's ``L^D_i``); false uses the teacher only where labels are missing. ``teacher: null``
    keeps alpha alone, without a teacher: the control that tells distillation from the
    reweighting alpha brings. ``temperature``: 1 (none; the paper uses none: its ``t_img = 2``
    is two seconds of frames) unless set; see :mod:`training.objectives.distillation`.
    """

    config_name: ClassVar[str] = "distill"

    teacher: str | None = ""
    temperature: float = 1.0
    alpha: float = 10.0
    beta: float = 0.9
    labelled: bool = True


@dataclass(frozen=True)
class DiscriminatorConfig(Section):
    """Task discriminator (ABAW-KD 3.1, eq. 11): from the backbone features (every branch,
    globally pooled) through a gradient reversal layer, an MLP with ``hidden`` units predicts
    the sample's category set (its dataset/task). ``delta`` scales the reversed gradient that
    reaches the backbone (eq. 13's delta), ``constant`` or ``ramp``ed linearly 0 -> ``delta``
    over the epochs."""

    config_name: ClassVar[str] = "discriminator"

    delta: float = 1.0
    schedule: str = "constant"
    hidden: int = 128


@dataclass(frozen=True)
class AmalgamationConfig(Section):
    """The ``amalgamation:`` section of a training config.

    - ``teachers``: teacher specs, each loaded by :func:`training.teachers.models.load_teacher`
      (1 to 3 in the paper; any N >= 1);
    - ``channels``: C, the common space's width, a positive multiple of N (96 by default);
    - ``student_feature``: ``quarter`` (the 1/4 backbone branch, default) or ``concat``;
    - ``feature_weight`` / ``reconstruction_weight``: factors of ``L_feat`` / ``L_rec`` in the
      total loss (eq. 9: both 1);
    - ``detach_target``: stop eq. 7's gradient into the teachers' side (default true; why:
      :mod:`training.objectives.amalgamation`);
    - ``probe_images``: before training, probe each teacher's features on this many of the
      student's training images (:mod:`training.teachers.probe`; a warning when they carry
      little); 0 skips it.
    """

    config_name: ClassVar[str] = "amalgamation"
    config_path: ClassVar[str] = "amalgamation."

    teachers: tuple[str, ...]
    channels: int = DEFAULT_CHANNELS
    student_feature: str = "quarter"
    feature_weight: float = 1.0
    reconstruction_weight: float = 1.0
    detach_target: bool = True
    probe_images: int = 100

    def __post_init__(self) -> None:
        teachers = self.teachers
        if isinstance(teachers, str | os.PathLike):
            teachers = [teachers]
        if not isinstance(teachers, list | tuple) or not teachers:
            raise ConfigError(f"amalgamation.teachers must list at least one teacher, "
                              f"got {self.teachers!r}")
        for spec in teachers:
            if not isinstance(spec, str | os.PathLike) or not os.fspath(spec):
                raise ConfigError(f"amalgamation.teachers must hold teacher files or names, "
                                  f"got {spec!r}")
        teachers = tuple(os.fspath(t) for t in teachers)
        object.__setattr__(self, "teachers", teachers)
        n, c = len(teachers), self.channels
        if isinstance(c, bool) or not isinstance(c, int) or c < 1 or c % n:
            raise ConfigError(f"amalgamation.channels must be a positive multiple of the number "
                              f"of teachers ({n}), got {c!r}")
        if self.student_feature not in STUDENT_FEATURES:
            raise ConfigError(f"amalgamation.student_feature must be one of "
                              f"{', '.join(STUDENT_FEATURES)}, got {self.student_feature!r}")
        for name in ("feature_weight", "reconstruction_weight"):
            value = getattr(self, name)
            if not _number(value) or value < 0:
                raise ConfigError(f"amalgamation.{name} must be a number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.detach_target, bool):
            raise ConfigError(f"amalgamation.detach_target must be true or false, "
                              f"got {self.detach_target!r}")
        if isinstance(self.probe_images, bool) or not isinstance(self.probe_images, int) \
                or self.probe_images < 0:
            raise ConfigError(f"amalgamation.probe_images must be an integer >= 0, "
                              f"got {self.probe_images!r}")


@dataclass(frozen=True)
class TrainConfig(Section):
    """A BENet training run (module docstring); :func:`config_from_dict` builds one."""

    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    tasks: tuple[str, ...] = TASKS
    pre_transforms: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRE_TRANSFORMS))
    routes: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ROUTES))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    emotion_loss: dict[str, str] = field(default_factory=dict)
    continuous_loss: str = "ccc"
    bu_reading: str = "center"
    variance_weight: float = 1.0
    max_cover: float = 0.4
    epochs: int = 250
    batch_size: int = 16
    workers: int = 2
    seed: int = 0
    out: str = "runs/train"
    budget_minutes: float | None = None
    max_steps: int | None = None
    val_every: int = 1
    checkpoint_every: int = 0
    log_every: int = 10
    amp: bool = True
    device: str = "auto"
    inference: InferenceSettings = field(default_factory=InferenceSettings)  # for the model
    calibrate: bool = True
    distill: DistillConfig | None = None
    discriminator: DiscriminatorConfig | None = None
    task_weights: str = "fixed"
    task_patience: int = 5
    early_stop: bool = False
    best_by: str = "loss"
    amalgamation: AmalgamationConfig | None = None
    init_backbone: str | None = None
    init_from: str | None = None
    freeze_backbone_steps: int = 0

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        """:func:`config_from_dict` (the sections that depend on others are resolved there)."""
        return config_from_dict(data)

    def effective_pre_transforms(self) -> dict[str, float]:
        """The probabilities actually used: those whose routes train no enabled task are 0."""
        return {name: (p if any(t in self.tasks for t in self.routes.get(name, ())) else 0.0)
                for name, p in self.pre_transforms.items()}

    def loss_of(self, category_set_name: str) -> str:
        return self.emotion_loss.get(category_set_name, "focal")


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML) to the raw config dict."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key=value")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {override!r} has an empty key")
    try:
        value = _yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({exc})") from None
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def read_yaml_config(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (empty file: ``{}``); ConfigError naming the file when it
    cannot be read, is not YAML or not a mapping. Numbers like ``1e-3`` read as floats."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from None
    try:
        raw = _yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                data_root: str | Path | None = None) -> TrainConfig:
    """Read a YAML config (None: all defaults), apply ``overrides`` and ``--data``."""
    raw = {} if path is None else read_yaml_config(Path(path))
    for override in overrides:
        apply_override(raw, override)
    if data_root is not None:
        raw.setdefault("data", {})
        if not isinstance(raw["data"], dict):
            raise ConfigError("data must be a section")
        raw["data"]["root"] = str(data_root)
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


def _scored(model: ModelConfig, losses: dict[str, str], raw_model: dict[str, Any]
            ) -> ModelConfig:
    """``model`` with each category set scored as its loss trains it (``ModelConfig.scores``):
    ``ce`` (softmax cross-entropy) -> ``softmax``, the sigmoid losses -> ``sigmoid``. A
    ``model.scores`` written in the config must agree."""
    derived = {name: "softmax" if losses.get(name) == "ce" else "sigmoid"
               for name in model.categories}
    for name, kind in (raw_model.get("scores") or {}).items():
        if kind != derived[name]:
            raise ConfigError(
                f"model.scores.{name} is {kind!r}, but emotion_loss.{name} "
                f"({losses.get(name, 'focal')}) trains {derived[name]} scores; leave "
                f"model.scores out: it follows emotion_loss")
    return dataclasses.replace(model, scores=derived)


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Check and convert a raw config dict (see the module docstring): the sections that
    depend on others (the model's categories and scores, the inference settings, the
    pre-transforms' and routes' defaults) are resolved here, then
    :func:`caer_ros.config_data.from_dict` reads the whole."""
    check_keys(TrainConfig, raw)
    raw = _with_init_model(_with_emotions(raw))
    values = dict(raw)
    tasks = _names(raw.get("tasks", list(TASKS)), "tasks", TASKS)
    if not tasks:
        raise ConfigError("tasks must name at least one of " + ", ".join(TASKS))
    values["tasks"] = tasks
    for name in ("data", "augment", "optim"):  # ``name: null`` is the defaults
        values[name] = raw.get(name) or {}
    probs = {**DEFAULT_PRE_TRANSFORMS, **_mapping(raw.get("pre_transforms") or {},
                                                  "pre_transforms")}
    for name, p in probs.items():
        if name not in PRE_TRANSFORMS:
            raise ConfigError(f"pre_transforms: unknown {name!r}; known: {sorted(PRE_TRANSFORMS)}")
        if not _number(p) or p < 0:
            raise ConfigError(f"pre_transforms.{name} must be a number >= 0, got {p!r}")
    values["pre_transforms"] = {k: float(v) for k, v in probs.items()}
    routes = {**DEFAULT_ROUTES, **_mapping(raw.get("routes") or {}, "routes")}
    for name in routes:
        if name not in PRE_TRANSFORMS:
            raise ConfigError(f"routes: unknown pre-transform {name!r}")
        routes[name] = _names(routes[name], f"routes.{name}", TASKS)
    values["routes"] = routes
    model = _model(raw.get("model") or {}, tasks)
    losses = _mapping(raw.get("emotion_loss") or {}, "emotion_loss")
    for set_name, loss in losses.items():
        if set_name not in model.categories:
            raise ConfigError(f"emotion_loss: {set_name!r} is not a category set of the model")
        if loss not in EMOTION_LOSSES:
            raise ConfigError(f"emotion_loss.{set_name} must be one of {EMOTION_LOSSES}, "
                              f"got {loss!r}")
    values["emotion_loss"] = dict(losses)
    values["model"] = _scored(model, values["emotion_loss"], raw.get("model") or {})
    reading = raw.get("bu_reading", "center")
    inference = {"extraction": reading if reading in BU_READINGS else "center",
                 **_mapping(raw.get("inference") or {}, "inference")}
    try:
        values["inference"] = InferenceSettings.for_model(values["model"], **inference)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"inference: {exc}") from None
    config = from_dict(TrainConfig, values)
    if is_coco_folder(config.data.root):  # a lab's own folder is read as one
        config = dataclasses.replace(config, data=dataclasses.replace(
            config.data, train=("coco",), val=("coco",)))
    for name in ("train", "val"):
        sources = _names(getattr(config.data, name), f"data.{name}", SOURCES)
        if "coco" in sources and len(sources) > 1:
            raise ConfigError(f"data.{name}: coco (a lab's own folder) cannot be mixed with "
                              f"other sources, got {list(sources)}")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                       **{name: sources}))
    _check_run(config)
    return config


def _check_run(c: TrainConfig) -> None:
    checks = [
        ("epochs", isinstance(c.epochs, int) and c.epochs >= 1, "an integer >= 1"),
        ("batch_size", isinstance(c.batch_size, int) and c.batch_size >= 1, "an integer >= 1"),
        ("workers", isinstance(c.workers, int) and c.workers >= 0, "an integer >= 0"),
        ("seed", isinstance(c.seed, int), "an integer"),
        ("val_every", isinstance(c.val_every, int) and c.val_every >= 1, "an integer >= 1"),
        ("checkpoint_every", isinstance(c.checkpoint_every, int) and c.checkpoint_every >= 0,
         "an integer >= 0"),
        ("log_every", isinstance(c.log_every, int) and c.log_every >= 1, "an integer >= 1"),
        ("max_cover", _number(c.max_cover) and 0 < c.max_cover <= 1, "a number in (0, 1]"),
        ("budget_minutes", c.budget_minutes is None
         or (_number(c.budget_minutes) and c.budget_minutes > 0), "a number > 0 or null"),
        ("max_steps", c.max_steps is None or (isinstance(c.max_steps, int)
                                              and not isinstance(c.max_steps, bool)
                                              and c.max_steps >= 1), "an integer >= 1 or null"),
        ("task_patience", isinstance(c.task_patience, int)
         and not isinstance(c.task_patience, bool) and c.task_patience >= 1, "an integer >= 1"),
        ("early_stop", isinstance(c.early_stop, bool), "true or false"),
        ("best_by", c.best_by in BEST_BY, " or ".join(BEST_BY)),
        ("amp", isinstance(c.amp, bool), "true or false"),
        ("calibrate", isinstance(c.calibrate, bool), "true or false"),
        ("continuous_loss", c.continuous_loss in ("ccc", "l2"), "ccc or l2"),
        ("bu_reading", c.bu_reading in BU_READINGS, "center or box_mean"),
        ("variance_weight", _number(c.variance_weight) and c.variance_weight >= 0,
         "a number >= 0"),
        ("device", isinstance(c.device, str) and (c.device in ("auto", "cpu")
                                                   or c.device.startswith("cuda")),
         "auto, cpu or cuda[:N]"),
        ("out", isinstance(c.out, str) and bool(c.out), "a folder path"),
        ("optim.lr", _number(c.optim.lr) and c.optim.lr > 0, "a number > 0"),
        ("optim.name", c.optim.name in ("adam", "sgd"), "adam or sgd"),
        ("optim.momentum", _number(c.optim.momentum) and 0 <= c.optim.momentum < 1,
         "a number in [0, 1)"),
        ("optim.weight_decay", _number(c.optim.weight_decay) and c.optim.weight_decay >= 0,
         "a number >= 0"),
        ("data.heco_seed", isinstance(c.data.heco_seed, int), "an integer"),
        ("data.heco_split", c.data.heco_split in ("partition", "all"), "partition or all"),
    ]
    for name, ok, what in checks:
        if not ok:
            raise ConfigError(f"{name} must be {what}")
    if not any(c.effective_pre_transforms().values()):
        raise ConfigError("no pre-transform trains an enabled task: check pre_transforms, "
                          "routes and tasks")
    if "pc" in c.tasks and not c.model.person_centric:
        raise ConfigError("task pc needs model.person_centric: true")
    if "bg" in c.tasks and not c.model.background:
        raise ConfigError("task bg needs model.background: true")
    sources = (set(c.data.train) | set(c.data.val)) - {"coco"}  # coco: the model's first set
    for source in sources:
        if source not in c.model.categories:
            raise ConfigError(f"data uses {source} but the model has no {source!r} category "
                              f"set (model.categories: {list(c.model.categories)})")
    if c.data.root is not None and not isinstance(c.data.root, str):
        raise ConfigError("data.root must be a folder path")
    if c.task_weights not in ("fixed", "adaptive"):
        raise ConfigError(f"task_weights must be fixed or adaptive, got {c.task_weights!r}")
    if c.early_stop and c.task_weights != "adaptive":
        raise ConfigError("early_stop needs task_weights: adaptive (it stops when every task "
                          "went task_patience validations without improving)")
    if c.task_weights == "adaptive" and "bu" not in c.tasks:
        raise ConfigError("task_weights: adaptive needs the bu task (each task's validation "
                          "metric is read from the bottom-up emotion maps)")
    if c.best_by == "metric" and "bu" not in c.tasks:
        raise ConfigError("best_by: metric needs the bu task (the validation metrics are read "
                          "from the bottom-up emotion maps)")
    if c.init_backbone is not None and not (isinstance(c.init_backbone, str) and c.init_backbone):
        raise ConfigError("init_backbone must be a weights file path or null")
    if c.init_backbone is not None and c.init_from is not None:
        raise ConfigError("init_from (a whole model file) and init_backbone (backbone weights) "
                          "both start the model: give one")
    if not (isinstance(c.freeze_backbone_steps, int)
            and not isinstance(c.freeze_backbone_steps, bool) and c.freeze_backbone_steps >= 0):
        raise ConfigError("freeze_backbone_steps must be an integer >= 0")
    low, high = c.data.continuous_range
    if not (_number(low) and _number(high) and low < high):
        raise ConfigError(f"data.continuous_range must be [low, high] with low < high, got "
                          f"{list(c.data.continuous_range)}")
    _check_multitask(c)


def _check_multitask(c: TrainConfig) -> None:
    d = c.distill
    if d is not None:
        checks = [
            ("teacher", d.teacher is None or (isinstance(d.teacher, str) and bool(d.teacher)),
             "the path of a trained caer_ros model file, or null (alpha alone)"),
            ("temperature", _number(d.temperature) and d.temperature > 0, "a number > 0"),
            ("alpha", _number(d.alpha) and d.alpha >= 0, "a number >= 0"),
            ("beta", _number(d.beta) and d.beta >= 0, "a number >= 0"),
            ("labelled", isinstance(d.labelled, bool), "true or false"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ConfigError(f"distill.{name} must be {what}")
        if "bu" not in c.tasks and d.teacher is not None:
            raise ConfigError("distill needs the bu task (it distils the emotion maps)")
    g = c.discriminator
    if g is not None:
        checks = [
            ("delta", _number(g.delta) and g.delta >= 0, "a number >= 0"),
            ("schedule", g.schedule in ("constant", "ramp"), "constant or ramp"),
            ("hidden", isinstance(g.hidden, int) and not isinstance(g.hidden, bool)
             and g.hidden >= 1, "an integer >= 1"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ConfigError(f"discriminator.{name} must be {what}")
        if len(c.model.categories) < 2:
            raise ConfigError("discriminator needs at least two category sets (tasks) to tell "
                              f"apart; model.categories has {list(c.model.categories)}")


def emotion_categories(emotions: Any) -> dict[str, tuple[str, ...]]:
    """The model's category set for ``data.emotions``: a known set's name (a string, or a
    list of that one name) -> that set; a list of names -> ``{"own": names}``; ConfigError
    otherwise (the message names the field)."""
    if isinstance(emotions, str):
        emotions = [emotions]
    if not isinstance(emotions, list | tuple) or not emotions or \
            not all(isinstance(n, str) and n.strip() for n in emotions):
        raise ConfigError(f"data.emotions must be a category set's name (emotic, heco) or a "
                          f"list of emotion names, got {emotions!r}")
    if len(emotions) == 1:
        try:
            return {emotions[0].lower(): category_set(emotions[0])}
        except ValueError:
            pass  # one name of the lab's own
    names = tuple(n.strip() for n in emotions)
    folded = [n.casefold() for n in names]
    doubles = sorted({n for n in names if folded.count(n.casefold()) > 1})
    if doubles:
        raise ConfigError(f"data.emotions names {', '.join(doubles)} twice")
    return {OWN_SET: names}


def _with_emotions(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with ``model.categories`` set from ``data.emotions`` (when given; a
    ``model.categories`` written beside it must agree)."""
    data = raw.get("data")
    emotions = data.get("emotions") if isinstance(data, dict) else None
    if emotions in (None, [], ()):
        return raw
    categories = emotion_categories(emotions)
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError("model must be a section")
    given = model.get("categories")
    if given is not None:
        named = {n: category_set(n) for n in given} if isinstance(given, list | tuple) \
            else given
        if {k: tuple(v) for k, v in dict(named).items()} != categories:
            raise ConfigError(f"model.categories ({given!r}) and data.emotions ({emotions!r}) "
                              f"disagree: give data.emotions alone")
    data = {**data, "emotions": list(next(iter(categories.values())))
            if OWN_SET in categories else [next(iter(categories))]}
    return {**raw, "data": data, "model": {**model, "categories": dict(categories)}}


def _with_init_model(raw: dict[str, Any]) -> dict[str, Any]:
    """With ``init_from``: the model section starts from the model file's architecture (the
    config's keys over it; the categories are the data's) and the inference settings from the
    file's (its emotion thresholds left out: the set may differ)."""
    path = raw.get("init_from")
    if path is None:
        return raw
    if not isinstance(path, str) or not path:
        raise ConfigError("init_from must be a model file path or null")
    from caer_ros.model.checkpoint import ModelFileError, read_model_file

    try:
        info, _ = read_model_file(Path(path).expanduser())
    except (ModelFileError, OSError) as exc:
        raise ConfigError(f"init_from: {' '.join(str(exc).split())}") from None
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError("model must be a section")
    base = info.config.to_dict()
    base.pop("scores", None)  # follows emotion_loss
    inference = info.inference.to_dict()
    inference.pop("emotion_thresholds", None)
    given = raw.get("inference") or {}
    if not isinstance(given, dict):
        raise ConfigError("inference must be a mapping")
    return {**raw, "model": {**base, **model}, "inference": {**inference, **given}}


def _model(raw: Any, tasks: tuple[str, ...]) -> ModelConfig:
    if not isinstance(raw, dict):
        raise ConfigError("model must be a section")
    values = dict(raw)
    categories = values.get("categories", ["emotic"])
    if isinstance(categories, list | tuple):
        try:
            values["categories"] = {name: category_set(name) for name in categories}
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"model.categories: {exc}") from None
    values.setdefault("person_centric", "pc" in tasks)
    values.setdefault("background", "bg" in tasks)
    try:
        return ModelConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from None


def _mapping(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} must be a mapping")
    return dict(raw)


def _names(raw: Any, what: str, known: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"{what} must be a list of names from {list(known)}")
    for name in raw:
        if name not in known:
            raise ConfigError(f"{what}: unknown {name!r}; known: {list(known)}")
    return tuple(dict.fromkeys(raw))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
