"""How to read a model's outputs at inference time, stored in the model file beside the weights.

- ``detection_threshold``: minimum centre-heatmap score of a detected person.
- ``emotion_thresholds``: per category set, one threshold per category: a person's ``labels``
  are the categories scoring at or above theirs.
- ``extraction``: how a person's emotion scores are read from the emotion maps: ``box_mean``
  averages the maps inside the detected box (KA paper 2.1-2.2) or ``center`` reads them at
  the person's centre, the detected peak (BENet 2.1; a given box, e.g. an annotated one, at
  its centre).
- ``resize``: how a frame becomes the network input. ``letterbox`` scales it into the model's
  fixed ``input_size`` (H, W) keeping the aspect ratio, centred on a border of the mean
  colour (how caer_ros trains). ``short_side`` is BENet's test path: the frame's short side
  becomes ``short_side`` pixels and the long side follows the aspect ratio, rounded up to a
  multiple of ``size_divisor``; the frame is warped about its centre (an affine map,
  ``cv2.warpAffine``, integer coordinates at pixel centres), the rest of the input is black.
  The network input size then follows the camera's resolution.
- ``peak_kernel``: max-pooling window of the heatmap peak search (CenterNet); ``top_k``: at
  most that many peaks per image. ``peak_resolution``: where peaks are searched: ``map``, on
  the output grid (a peak decodes to its cell's centre), or ``input``: the fused heatmap and
  sizes are upsampled bilinearly to the network input's resolution first and a peak is a whole
  input pixel, its box corners whole pixels too (BENet's public code: ``trunc(c -+ w / 2)``);
  emotion maps are then read at the peak as their bilinear upsampling would give.
- ``fuse_scales``: average the 1/4 and 1/2 outputs (when the model has both): the
  probabilities of each scale's maps (sigmoid, or softmax for a set the model scores so), the
  1/4 maps upsampled bilinearly to the 1/2 grid; ``fuse_sizes`` says where the fused box
  sizes come from: ``mean`` of both scales, or ``quarter``, the 1/4 sizes
  alone (upsampled). ``fuse_upsample`` says what is upsampled to the finer grid:
  ``probabilities`` (activate, then upsample) or ``logits`` (upsample the logits, then
  activate: BENet's public code). ``fuse_scales`` false is the *fast head
  mode*: the 1/2-resolution branches are not computed at all (docs/deployment.md, "Choosing a
  speed").
  ``flip_test``: also run the horizontally flipped image and average (maps mirrored back).
- ``fusion``: ``none`` reads each person's emotion scores from the bottom-up emotion maps
  alone; ``mean`` also runs the person-centric head on each person's crop and averages the two
  scores (BENet section 4.3, Table 4: BU+PC was the best). Needs a model with a person-centric
  head. Files written before the setting existed read as ``none``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from caer_ros.config_data import ConfigData
from caer_ros.model.config import ModelConfig

EXTRACTIONS = ("box_mean", "center")
FUSIONS = ("none", "mean")
SIZE_SOURCES = ("mean", "quarter")
UPSAMPLED = ("probabilities", "logits")
RESIZES = ("letterbox", "short_side")
PEAK_RESOLUTIONS = ("map", "input")
# The network's coarsest feature map is 1/32 of the input: an input size must divide by it.
NETWORK_MULTIPLE = 32
DEFAULT_EMOTION_THRESHOLD = 0.5


def _fail(message: str) -> None:
    raise ValueError(message)


def _probability(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        _fail(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class InferenceSettings(ConfigData):
    """Decoding defaults of one model (see the module docstring)."""

    config_name: ClassVar[str] = "inference"
    config_keys: ClassVar[str] = "setting(s)"

    detection_threshold: float = 0.3
    emotion_thresholds: dict[str, tuple[float, ...]] = field(default_factory=dict)
    extraction: str = "box_mean"
    peak_kernel: int = 3
    top_k: int = 32
    fuse_scales: bool = True
    fuse_sizes: str = "mean"
    fuse_upsample: str = "probabilities"
    flip_test: bool = False
    fusion: str = "none"
    resize: str = "letterbox"
    short_side: int = 512
    size_divisor: int = 64
    peak_resolution: str = "map"

    def __post_init__(self) -> None:
        object.__setattr__(self, "detection_threshold",
                           _probability(self.detection_threshold, "detection_threshold"))
        if not isinstance(self.emotion_thresholds, dict):
            _fail(f"emotion_thresholds must map set name -> thresholds, "
                  f"got {self.emotion_thresholds!r}")
        thresholds = {}
        for name, values in self.emotion_thresholds.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                _fail(f"emotion_thresholds[{name!r}] must be a list of numbers, got {values!r}")
            thresholds[name] = tuple(_probability(v, f"emotion_thresholds[{name!r}] value")
                                     for v in values)
        object.__setattr__(self, "emotion_thresholds", thresholds)
        if self.extraction not in EXTRACTIONS:
            _fail(f"extraction must be one of {', '.join(EXTRACTIONS)}, got {self.extraction!r}")
        if not isinstance(self.peak_kernel, int) or isinstance(self.peak_kernel, bool) \
                or self.peak_kernel < 1 or self.peak_kernel % 2 == 0:
            _fail(f"peak_kernel must be a positive odd integer, got {self.peak_kernel!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1:
            _fail(f"top_k must be a positive integer, got {self.top_k!r}")
        for name in ("fuse_scales", "flip_test"):
            if not isinstance(getattr(self, name), bool):
                _fail(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.fuse_sizes, str) or self.fuse_sizes not in SIZE_SOURCES:
            _fail(f"fuse_sizes must be one of {', '.join(SIZE_SOURCES)}, "
                  f"got {self.fuse_sizes!r}")
        for name, choices in (("fusion", FUSIONS), ("fuse_upsample", UPSAMPLED),
                              ("resize", RESIZES), ("peak_resolution", PEAK_RESOLUTIONS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                _fail(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        for name in ("short_side", "size_divisor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1 \
                    or value % NETWORK_MULTIPLE:
                _fail(f"{name} must be a positive multiple of {NETWORK_MULTIPLE} (the network's "
                      f"coarsest stride), got {value!r}")
        if self.short_side % self.size_divisor:
            _fail(f"short_side ({self.short_side}) must be a multiple of size_divisor "
                  f"({self.size_divisor})")

    @classmethod
    def for_model(cls, config: ModelConfig, **overrides: Any) -> InferenceSettings:
        """Defaults for ``config``: 0.5 for every category unless ``emotion_thresholds`` is
        given; other fields from ``overrides``. Validated against the config."""
        thresholds = {name: (DEFAULT_EMOTION_THRESHOLD,) * len(names)
                      for name, names in config.categories.items()}
        thresholds.update(overrides.pop("emotion_thresholds", {}))
        settings = cls.from_dict({**overrides, "emotion_thresholds": thresholds})
        settings.check_against(config)
        return settings

    def check_against(self, config: ModelConfig) -> None:
        """Raise ValueError unless there is one threshold per category of every set, and
        unless the model has a person-centric head when ``fusion`` needs one."""
        if set(self.emotion_thresholds) != set(config.categories):
            _fail(f"emotion_thresholds sets {sorted(self.emotion_thresholds)} differ from "
                  f"the model's category sets {sorted(config.categories)}")
        for name, names in config.categories.items():
            if len(self.emotion_thresholds[name]) != len(names):
                _fail(f"emotion_thresholds[{name!r}] has {len(self.emotion_thresholds[name])} "
                      f"values for {len(names)} categories")
        if self.fusion != "none" and not config.person_centric:
            _fail(f"fusion {self.fusion!r} needs the person-centric head, and this model has "
                  f"none (ModelConfig.person_centric is false); use fusion 'none'")
