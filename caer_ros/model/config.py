"""Model configuration: HRNet backbone layouts (presets as data) and the BENet model config.

The backbone follows HRNet (Wang et al., 2020) as used by BENet (Cladiere et al., 2023,
section 3.1) and the KA student (Cladiere et al., 2024, section 3.1): a stem, stage 1 made of
Bottleneck blocks, then stages 2-4 with 2, 3 and 4 parallel branches at 1/4, 1/8, 1/16 and
1/32 of the input, each stage a sequence of multi-resolution modules.

Everything here is plain data: ``to_dict()`` gives lists, dicts, strings, numbers and bools
only (that is what a model file stores), ``from_dict()`` reads it back with validation (both
from :class:`caer_ros.config_data.ConfigData`, the project's one config reader and writer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from caer_ros.config_data import ConfigData
from caer_ros.labels import EMOTIC, is_single_label

BLOCK_TYPES = ("basic", "bottleneck")
HEAD_LAYOUTS = ("benet", "shared")
SCORINGS = ("sigmoid", "softmax")  # how a category set's logits become scores


def _fail(message: str) -> None:
    raise ValueError(message)


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        _fail(f"{what} must be a list of integers, got {value!r}")
    items = tuple(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        _fail(f"{what} must hold positive integers, got {list(items)!r}")
    return items


@dataclass(frozen=True)
class StageConfig(ConfigData):
    """One HRNet stage (2, 3 or 4): ``num_modules`` multi-resolution modules in sequence.

    ``num_blocks[b]`` residual blocks of type ``block`` run on branch ``b``, whose width is
    ``num_channels[b]`` (times the block expansion, 1 for "basic", 4 for "bottleneck").
    """

    config_name: ClassVar[str] = "stage config"
    config_keys: ClassVar[str] = "key(s)"

    num_modules: int
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]
    block: str = "basic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_blocks", _int_tuple(self.num_blocks, "num_blocks"))
        object.__setattr__(self, "num_channels", _int_tuple(self.num_channels, "num_channels"))
        if not isinstance(self.num_modules, int) or self.num_modules < 1:
            _fail(f"num_modules must be a positive integer, got {self.num_modules!r}")
        if self.block not in BLOCK_TYPES:
            _fail(f"unknown block type {self.block!r}; known types: {', '.join(BLOCK_TYPES)}")
        if len(self.num_blocks) != len(self.num_channels):
            _fail(f"num_blocks {list(self.num_blocks)} and num_channels "
                  f"{list(self.num_channels)} must have one entry per branch")

    @property
    def num_branches(self) -> int:
        return len(self.num_channels)


@dataclass(frozen=True)
class AttentionConfig(ConfigData):
    """CBAM-style attention inside each residual block (BENet section 3.1, after Woo et al.).

    ``reduction``: channel-attention MLP hidden width = channels / reduction (BENet's public
    code uses 2, which is what makes its backbone attention 0.95 M parameters).
    ``spatial_kernel``: kernel of the spatial-attention convolution (BENet's public model: 1;
    CBAM proposed 7).
    """

    config_name: ClassVar[str] = "attention config"
    config_keys: ClassVar[str] = "key(s)"

    reduction: int = 2
    spatial_kernel: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.reduction, int) or self.reduction < 1:
            _fail(f"attention reduction must be a positive integer, got {self.reduction!r}")
        if not isinstance(self.spatial_kernel, int) or self.spatial_kernel < 1 \
                or self.spatial_kernel % 2 == 0:
            _fail(f"attention spatial_kernel must be a positive odd integer, "
                  f"got {self.spatial_kernel!r}")


@dataclass(frozen=True)
class BackboneConfig(ConfigData):
    """An HRNet layout: stem, stage 1 (``layer1``: Bottleneck blocks), stages 2-4.

    ``attention`` is None for the official HRNet (parameter names then equal the official
    checkpoints' exactly) or an :class:`AttentionConfig` to add CBAM to every residual block.
    """

    config_name: ClassVar[str] = "backbone config"
    config_keys: ClassVar[str] = "key(s)"

    stage2: StageConfig
    stage3: StageConfig
    stage4: StageConfig
    stem_channels: int = 64
    stage1_blocks: int = 4
    stage1_channels: int = 64
    attention: AttentionConfig | None = None

    def __post_init__(self) -> None:
        for name in ("stem_channels", "stage1_blocks", "stage1_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                _fail(f"{name} must be a positive integer, got {value!r}")
        stages = (self.stage2, self.stage3, self.stage4)
        for number, stage in enumerate(stages, start=2):
            if not isinstance(stage, StageConfig):
                _fail(f"stage{number} must be a StageConfig, got {type(stage).__name__}")
        pairs = zip(stages[:-1], stages[1:], strict=True)
        for number, (before, after) in enumerate(pairs, start=3):
            if after.num_branches < before.num_branches:
                _fail(f"stage{number} has fewer branches ({after.num_branches}) than "
                      f"stage{number - 1} ({before.num_branches})")

    @property
    def stages(self) -> tuple[StageConfig, StageConfig, StageConfig]:
        return (self.stage2, self.stage3, self.stage4)

    def with_attention(self, enabled: bool) -> BackboneConfig:
        """This layout with attention switched on (preset settings or defaults) or off."""
        if not enabled:
            return replace(self, attention=None)
        return self if self.attention is not None else replace(self, attention=AttentionConfig())


def _stage(modules: int, blocks: int, channels: tuple[int, ...]) -> StageConfig:
    return StageConfig(modules, (blocks,) * len(channels), channels)


# The backbone presets: a table of layouts, not subclasses.
BACKBONE_PRESETS: dict[str, BackboneConfig] = {
    # Standard HRNet-W32 (Wang et al., 2020): stages 2/3/4 with 1/4/3 modules of 4 blocks.
    "hrnet_w32": BackboneConfig(
        stage2=_stage(1, 4, (32, 64)),
        stage3=_stage(4, 4, (32, 64, 128)),
        stage4=_stage(3, 4, (32, 64, 128, 256)),
    ),
    # The slimmer W32 of BENet's public code: 2 modules of 3 blocks per stage, with attention.
    "benet": BackboneConfig(
        stage2=_stage(2, 3, (32, 64)),
        stage3=_stage(2, 3, (32, 64, 128)),
        stage4=_stage(2, 3, (32, 64, 128, 256)),
        attention=AttentionConfig(),
    ),
    # Official HRNet-W18-Small-v2: for CPU use and tests.
    "hrnet_w18_small": BackboneConfig(
        stage1_blocks=2,
        stage2=_stage(1, 2, (18, 36)),
        stage3=_stage(3, 2, (18, 36, 72)),
        stage4=_stage(2, 2, (18, 36, 72, 144)),
    ),
    # A CPU-training layout (not a published one): HRNet's four branches at half W32's widths
    # and one module of one block per stage, a 32-channel stem and one Bottleneck in stage 1;
    # about 4x faster to train than hrnet_w18_small (128x128, batch 16, 1/4 heads only: ~0.2 s
    # vs ~0.75 s a step on 2 CPU cores); benchmarks/bench_learn.py trains it from scratch.
    "hrnet_cpu": BackboneConfig(
        stem_channels=32,
        stage1_blocks=1,
        stage1_channels=32,
        stage2=_stage(1, 1, (16, 32)),
        stage3=_stage(1, 1, (16, 32, 64)),
        stage4=_stage(1, 1, (16, 32, 64, 128)),
    ),
}


# The students' compact backbones (:mod:`caer_ros.model.student`): torchvision's feature
# extractors with a stride-4 neck, named as torchvision names them.
STUDENT_BACKBONES: tuple[str, ...] = ("mobilenet_v3_large", "mobilenet_v3_small")

# Student presets for CPUs and Jetsons (issue 31): the ModelConfig fields a preset sets; the
# category sets, continuous head, scores and input size come from the teacher
# (:meth:`ModelConfig.student`). One map trunk per head at 1/4 with no residual blocks, no 1/2
# outputs and no classification heads: everything the inference graph does not read is left
# out. ``student_large``: MobileNetV3-Large, a 64-wide neck and 32-wide heads (the default);
# ``student_small``: MobileNetV3-Small, 48 and 24 (for the slowest CPUs).
STUDENT_PRESETS: dict[str, dict[str, Any]] = {
    "student_large": {"backbone": "mobilenet_v3_large", "neck_channels": 64,
                      "head_layout": "shared", "head_channels": 32, "head_blocks": 0,
                      "half_resolution": False, "person_centric": False, "background": False,
                      "attention": None},
    "student_small": {"backbone": "mobilenet_v3_small", "neck_channels": 48,
                      "head_layout": "shared", "head_channels": 24, "head_blocks": 0,
                      "half_resolution": False, "person_centric": False, "background": False,
                      "attention": None},
}


def check_backbone(backbone: Any) -> None:
    """A config's ``backbone`` field: a known preset name (HRNet or student) or a
    :class:`BackboneConfig`."""
    if isinstance(backbone, str):
        if backbone not in STUDENT_BACKBONES:
            backbone_preset(backbone)
    elif not isinstance(backbone, BackboneConfig):
        _fail(f"backbone must be a preset name or a BackboneConfig, "
              f"got {type(backbone).__name__}")


def backbone_preset(name: str) -> BackboneConfig:
    """The backbone layout of a named preset."""
    try:
        return BACKBONE_PRESETS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(BACKBONE_PRESETS) + list(STUDENT_BACKBONES))
        raise ValueError(f"unknown backbone preset {name!r}; known presets: {known}") from None


def parse_input_size(text: str, multiple: int = 32) -> tuple[int, int]:
    """``"S"`` or ``"HxW"`` -> (H, W), positive multiples of ``multiple``; ValueError else."""
    try:
        size = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        size = ()
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2 or not all(v > 0 and v % multiple == 0 for v in size):
        raise ValueError(f"invalid input size {text!r}: give S or HxW, positive multiples "
                         f"of {multiple}")
    return size  # type: ignore[return-value]


_SET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED_SET_NAMES = ("continuous",)  # an output of the emotion head of its own

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _default_categories() -> dict[str, tuple[str, ...]]:
    return {"emotic": EMOTIC}


@dataclass(frozen=True)
class ModelConfig(ConfigData):
    """Everything needed to build a :class:`~caer_ros.model.network.BENet`.

    - ``backbone``: an HRNet preset name (see :data:`BACKBONE_PRESETS`), an explicit HRNet
      layout, or a student's compact backbone (:data:`STUDENT_BACKBONES`,
      :mod:`caer_ros.model.student`) whose neck is ``neck_channels`` wide.
    - ``attention``: None keeps the backbone's own setting; True/False forces CBAM on/off.
      The same switch applies to the residual blocks of the heads (as in BENet).
    - ``categories``: category-set name -> category names, in channel order. Several sets can
      coexist (e.g. ``emotic`` and ``heco``); the first is the primary one for inference.
    - ``continuous``: add 3 valence/arousal/dominance maps to the emotion head.
    - ``input_size``: (H, W) of the network input, multiples of 32 (HRNet's coarsest stride).
    - ``input_mean`` / ``input_std``: RGB normalisation applied to [0, 1] images before the
      network (ImageNet statistics, those of the official HRNet weights).
    - ``head_layout``: ``benet`` (BENet's public model: a stack per output group, further
      category sets mixed from the first set's logits, MLP classifiers) or ``shared`` (the KA
      student: one trunk per head, every set with outputs of its own); see
      :mod:`caer_ros.model.heads`.
    - ``head_channels`` / ``head_blocks``: width and residual-block count of the detection
      and emotion-map heads (BENet's public model: 32 and 3; KA paper 2.1-2.2: 4 blocks).
    - ``half_resolution``: add the HigherHRNet-style 1/2 outputs (BENet 3.1).
    - ``person_centric`` / ``background``: the classification heads (BENet 2.3), used in
      training; ``classifier_expansion`` and ``classifier_channels`` size them (BENet 3.1:
      HRNet's bottleneck expansion 4 reduced by a factor 4 to 1; the public model's final
      layer has 128 channels).
    - ``scores``: category-set name -> how its logits become the published scores, following
      the loss the set was trained with: ``sigmoid`` (one probability per category: multi-label
      sets, and sets trained with a sigmoid loss such as the public BENet's HECO maps) or
      ``softmax`` (a distribution over the set's categories, for sets trained with
      cross-entropy, one label per person). Sets not named are ``sigmoid`` (model files written
      before this field existed read that way). Training derives it from ``emotion_loss``.

    The defaults build BENet's public network exactly.
    """

    config_name: ClassVar[str] = "model config"
    config_keys: ClassVar[str] = "key(s)"

    backbone: str | BackboneConfig = "benet"
    categories: dict[str, tuple[str, ...]] = field(default_factory=_default_categories)
    continuous: bool = False
    input_size: tuple[int, int] = (512, 512)
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    attention: bool | None = None
    head_layout: str = "benet"
    head_channels: int = 32
    head_blocks: int = 3
    half_resolution: bool = True
    person_centric: bool = True
    background: bool = True
    classifier_expansion: int = 1
    classifier_channels: int = 128
    scores: dict[str, str] = field(default_factory=dict)
    neck_channels: int = 64

    def __post_init__(self) -> None:
        check_backbone(self.backbone)
        object.__setattr__(self, "categories", self._checked_categories(self.categories))
        object.__setattr__(self, "scores", self._checked_scores(self.scores))
        size = tuple(self.input_size) if not isinstance(self.input_size, (str, int)) else ()
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 and v % 32 == 0 for v in size):
            _fail(f"input_size must be (H, W), positive multiples of 32, got {self.input_size!r}")
        object.__setattr__(self, "input_size", size)
        for name in ("input_mean", "input_std"):
            value = getattr(self, name)
            values = tuple(value) if not isinstance(value, (str, int, float)) else ()
            if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
                _fail(f"{name} must hold 3 numbers (R, G, B), got {value!r}")
            if name == "input_std" and min(values) <= 0:
                _fail(f"input_std must be positive, got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        for name in ("continuous", "half_resolution", "person_centric", "background"):
            if not isinstance(getattr(self, name), bool):
                _fail(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.attention is not None and not isinstance(self.attention, bool):
            _fail(f"attention must be a bool or None, got {self.attention!r}")
        if self.head_layout not in HEAD_LAYOUTS:
            _fail(f"head_layout must be one of {', '.join(HEAD_LAYOUTS)}, "
                  f"got {self.head_layout!r}")
        for name, least in (("head_channels", 1), ("head_blocks", 0),
                            ("classifier_expansion", 1), ("classifier_channels", 1),
                            ("neck_channels", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                _fail(f"{name} must be an integer >= {least}, got {value!r}")

    @staticmethod
    def _checked_categories(categories: Any) -> dict[str, tuple[str, ...]]:
        if not isinstance(categories, dict) or not categories:
            _fail(f"categories must be a non-empty mapping set name -> category names, "
                  f"got {categories!r}")
        checked: dict[str, tuple[str, ...]] = {}
        for name, names in categories.items():
            if not isinstance(name, str) or not _SET_NAME.match(name):
                _fail(f"category-set name {name!r} must be lower-case letters, digits or '_'")
            if name in RESERVED_SET_NAMES:
                _fail(f"category-set name {name!r} is reserved")
            if isinstance(names, str) or not hasattr(names, "__iter__"):
                _fail(f"category set {name!r} must be a list of names, got {names!r}")
            names = tuple(names)
            if not names or not all(isinstance(n, str) and n for n in names):
                _fail(f"category set {name!r} must hold non-empty names, got {list(names)!r}")
            if len(set(names)) != len(names):
                _fail(f"category set {name!r} has duplicate names")
            checked[name] = names
        return checked

    def _checked_scores(self, scores: Any) -> dict[str, str]:
        """``scores`` completed to every category set (``sigmoid`` where not named)."""
        if not isinstance(scores, dict):
            _fail(f"scores must be a mapping set name -> {' or '.join(SCORINGS)}, "
                  f"got {scores!r}")
        unknown = sorted(set(scores) - set(self.categories))
        if unknown:
            _fail(f"scores names {unknown}, not category sets of the model "
                  f"({', '.join(self.categories)})")
        for name, kind in scores.items():
            if kind not in SCORINGS:
                _fail(f"scores.{name} must be one of {', '.join(SCORINGS)}, got {kind!r}")
        return {name: scores.get(name, "sigmoid") for name in self.categories}

    @property
    def softmax_sets(self) -> frozenset[str]:
        """The category sets scored with a softmax (see ``scores``)."""
        return frozenset(name for name, kind in self.scores.items() if kind == "softmax")

    def single_label(self, name: str) -> bool:
        """Whether each person of set ``name`` has one category: by the dataset's design (HECO,
        :func:`caer_ros.labels.is_single_label`) or because this model scores it with a
        softmax (a set trained with ``emotion_loss: ce``); its labels are the top category."""
        return is_single_label(name) or name in self.softmax_sets

    @property
    def primary_set(self) -> str:
        """The category set the node reports (the first one)."""
        return next(iter(self.categories))

    @property
    def backbone_name(self) -> str:
        return self.backbone if isinstance(self.backbone, str) else "custom"

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``neck_channels`` only for a student (an HRNet model's file reads as
        it did before students existed, also by an older caer_ros)."""
        data = super().to_dict()
        if not self.is_student:
            data.pop("neck_channels", None)
        return data

    @property
    def is_student(self) -> bool:
        """Whether the backbone is a student's compact one (:data:`STUDENT_BACKBONES`)."""
        return isinstance(self.backbone, str) and self.backbone in STUDENT_BACKBONES

    @classmethod
    def student(cls, preset: str, teacher: ModelConfig, **changes: Any) -> ModelConfig:
        """The student ``preset`` (:data:`STUDENT_PRESETS`) for ``teacher``: its category sets,
        continuous head, scores, input size and normalisation, then ``changes``."""
        if preset not in STUDENT_PRESETS:
            _fail(f"unknown student preset {preset!r}; known presets: "
                  f"{', '.join(STUDENT_PRESETS)}")
        return cls(**{**STUDENT_PRESETS[preset],
                      "categories": dict(teacher.categories), "continuous": teacher.continuous,
                      "scores": dict(teacher.scores), "input_size": teacher.input_size,
                      "input_mean": teacher.input_mean, "input_std": teacher.input_std,
                      **changes})

    def backbone_config(self) -> BackboneConfig:
        """The HRNet layout, with the attention override applied (not for a student's
        backbone, which has no HRNet layout)."""
        if self.is_student:
            _fail(f"backbone {self.backbone!r} is a student backbone, not an HRNet layout")
        layout = backbone_preset(self.backbone) if isinstance(self.backbone, str) \
            else self.backbone
        return layout if self.attention is None else layout.with_attention(self.attention)

    def emotion_channels(self) -> dict[str, int]:
        """Category-set name -> number of emotion maps."""
        return {name: len(names) for name, names in self.categories.items()}
