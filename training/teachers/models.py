"""The KA paper's teachers (section 3.1): HRNet image classifiers, and teachers as frozen
feature extractors for knowledge amalgamation (section 2.3).

**Teacher classifier** (:class:`TeacherClassifier`). The FER teacher (AffectNet) and the VEA
teacher (EmoSet) are HRNet-W32 classifiers whose head "is similar to the one proposed in
(Wang et al., 2020), except that we reduce the number of channels of the second to last layer
from 2048 to 1024" (3.1). That head (:class:`TeacherHead`) is HRNet's classification head: a
Bottleneck per branch (widths ``head_width * 2**b``, expansion ``head_expansion``: 32 and 4 in
HRNet, giving 128/256/512/1024 channels), stride-2 3x3 convolutions merging the branches from
the highest resolution to the lowest, a final 1x1 convolution (the second-to-last layer:
``final_channels``, 2048 in HRNet, 1024 here), global average pooling and a linear classifier.
Its parameter names are the official ``incre_modules``, ``downsamp_modules``, ``final_layer``,
``classifier`` (under ``head.``), so :func:`load_pretrained` can start it from an official
ImageNet checkpoint (all but the resized final layer and classifier). The widths are parameters
so a CPU preset can use a smaller head.

**Teacher classifier file**: ``torch.save`` of a plain dict, read with ``weights_only=True``::

    {"format": "caer_ros.teacher", "version": 1,
     "config": ClassifierConfig.to_dict(), "state_dict": {name: tensor},
     "meta": {"name": "fer", "trained": bool, ...}}

written atomically (:func:`caer_ros.atomic_file.atomic_write`); every problem reading one
raises :class:`~caer_ros.model.checkpoint.ModelFileError` naming the file.

**Teachers as feature extractors** (:class:`Teacher`, :func:`load_teacher`). A teacher maps
``(B, 3, H, W)`` RGB images in 0..1 (not normalised: it normalises with its own mean/std) to its
feature map ``F_T`` of ``(B, channels, H / stride, W / stride)``. It is frozen: eval mode for
good (``train()`` does not switch it back, so BatchNorm statistics never move), every parameter
``requires_grad=False``. Running it under ``torch.no_grad()`` is the caller's business.

Feature choice for HRNet teachers: every branch resized (bilinear) to the 1/4 branch's grid and
concatenated, HRNetV2's representation (Wang et al., 2020): ``channels = sum of the branch
widths`` (480 for W32: 32 + 64 + 128 + 256; 240 for ``hrnet_cpu``), ``stride = 4``. Why: the
classification teachers' knowledge sits mostly in the low-resolution branches (their head
funnels every branch down to 1/32; the 1/4 branch alone is 32 of 480 channels), the
concatenation is what HRNet's dense-prediction heads read (the OD teacher's detector among
them), and the 1/4 grid is the grid of the student's emotion maps and detection head, so the
amalgamation's per-pixel feature loss (KA eq. 7-8) is taken where the student predicts. All
branch outputs are ReLU outputs, so ``F_T >= 0`` as the masked losses assume. ``features=
"quarter"`` gives only the 1/4 branch instead (``channels`` = its width, ``stride = 4``).

Spec forms of :func:`load_teacher`:

- ``PATH`` to a teacher classifier file (above): its backbone;
- ``PATH`` to a caer_ros model file (:func:`~caer_ros.model.checkpoint.load_model_file`): the
  BENet's backbone (a detector or emotion model as teacher, e.g. the OD teacher role);
- ``PRESET:PATH``, PRESET a backbone preset of :mod:`caer_ros.model.config` (``hrnet_w32``, ...):
  an HRNet of that layout with the file's weights loaded by name
  (:func:`~caer_ros.model.weights.load_backbone_weights`; official ImageNet or detection
  checkpoints, ``module.`` / ``backbone.`` prefixes found). Every backbone tensor must be in the
  file: a teacher with randomly initialised parts would teach noise. ImageNet normalisation;
- ``python:module.path:function``: any other architecture. ``function()`` (no arguments) must
  return an ``nn.Module`` mapping normalised ``(B, 3, H, W)`` images to a ``(B, C, h, w)``
  feature map. Optional attributes of the module: ``input_mean`` / ``input_std`` (3 numbers
  each, default ImageNet's; ``(0, 0, 0)`` / ``(1, 1, 1)`` to receive the 0..1 images as they
  are), ``channels`` and ``stride`` (integers; otherwise measured once on a 256 x 256 zero
  image, which needs ``256 / stride`` to be a whole number). The module alone decides which
  input sizes it accepts (its map is ``H / stride`` high when H is a multiple of ``stride``).

HRNet teachers need H and W multiples of 32 (a clear error otherwise).
"""

from __future__ import annotations

import importlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caer_ros import __version__
from caer_ros.atomic_file import atomic_write
from caer_ros.config_data import ConfigData
from caer_ros.model.blocks import Bottleneck, batch_norm, init_weights
from caer_ros.model.checkpoint import FORMAT as MODEL_FORMAT
from caer_ros.model.checkpoint import ModelFileError, check_version_and_keys, load_model_file
from caer_ros.model.checkpoint import load_plain_data as load_raw_file
from caer_ros.model.config import (
    BACKBONE_PRESETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneConfig,
    backbone_preset,
    check_backbone,
)
from caer_ros.model.hrnet import HRNet
from caer_ros.model.weights import (
    BackboneWeightsError,
    find_prefix,
    load_backbone_weights,
    read_state_dict,
)

FORMAT = "caer_ros.teacher"
VERSION = 1
_KEYS = {"format", "version", "config", "state_dict", "meta"}
FEATURE_CHOICES = ("concat", "quarter")
HRNET_MULTIPLE = 32  # HRNet inputs: multiples of its coarsest stride
PROBE_SIZE = 256  # side of the zero image that measures a factory module's channels/stride


def _fail(message: str) -> None:
    raise ValueError(message)


def _positive_int(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        _fail(f"{name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------
# The classifier


@dataclass(frozen=True)
class ClassifierConfig(ConfigData):
    """Everything needed to build a :class:`TeacherClassifier`.

    - ``backbone``: a preset name (``hrnet_w32`` for the paper's teachers) or a layout;
    - ``classes``: class names, in logit order;
    - ``input_size``: (H, W) the classifier was trained at, multiples of 32;
    - ``input_mean`` / ``input_std``: RGB normalisation of 0..1 images (ImageNet's);
    - ``head_width`` / ``head_expansion`` / ``final_channels``: the head (module docstring;
      HRNet: 32 / 4 / 2048, the KA teachers: 32 / 4 / 1024).
    """

    config_name: ClassVar[str] = "classifier config"
    config_keys: ClassVar[str] = "key(s)"

    backbone: str | BackboneConfig = "hrnet_w32"
    classes: tuple[str, ...] = ()
    input_size: tuple[int, int] = (224, 224)
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    head_width: int = 32
    head_expansion: int = 4
    final_channels: int = 1024

    def __post_init__(self) -> None:
        check_backbone(self.backbone)
        names = self.classes
        if isinstance(names, str) or not hasattr(names, "__iter__"):
            _fail(f"classes must be a list of names, got {names!r}")
        names = tuple(names)
        if len(names) < 2 or not all(isinstance(n, str) and n for n in names) \
                or len(set(names)) != len(names):
            _fail(f"classes must hold at least 2 distinct non-empty names, got {list(names)!r}")
        object.__setattr__(self, "classes", names)
        size = tuple(self.input_size) if not isinstance(self.input_size, str | int) else ()
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                     and v % HRNET_MULTIPLE == 0 for v in size):
            _fail(f"input_size must be (H, W), positive multiples of {HRNET_MULTIPLE}, "
                  f"got {self.input_size!r}")
        object.__setattr__(self, "input_size", size)
        for name in ("input_mean", "input_std"):
            value = getattr(self, name)
            values = tuple(value) if not isinstance(value, str | int | float) else ()
            if len(values) != 3 or not all(isinstance(v, int | float) and math.isfinite(v)
                                           for v in values):
                _fail(f"{name} must hold 3 numbers (R, G, B), got {value!r}")
            if name == "input_std" and min(values) <= 0:
                _fail(f"input_std must be positive, got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        for name in ("head_width", "head_expansion", "final_channels"):
            _positive_int(getattr(self, name), name)

    def backbone_config(self) -> BackboneConfig:
        return backbone_preset(self.backbone) if isinstance(self.backbone, str) \
            else self.backbone


class TeacherHead(nn.Module):
    """HRNet's classification head (Wang et al., 2020) with a ``final_channels`` second-to-last
    layer (KA paper 3.1): all backbone branches -> class logits. Official parameter names."""

    def __init__(self, in_channels: list[int], num_classes: int, width: int = 32,
                 expansion: int = 4, final_channels: int = 1024) -> None:
        super().__init__()
        widths = [width * 2 ** b for b in range(len(in_channels))]
        self.incre_modules = nn.ModuleList(
            nn.Sequential(Bottleneck(c, w, expansion=expansion))
            for c, w in zip(in_channels, widths, strict=True))
        out = [w * expansion for w in widths]
        self.downsamp_modules = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out[b], out[b + 1], 3, stride=2, padding=1),
                          batch_norm(out[b + 1]), nn.ReLU(inplace=True))
            for b in range(len(out) - 1))
        self.final_layer = nn.Sequential(nn.Conv2d(out[-1], final_channels, 1),
                                         batch_norm(final_channels), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(final_channels, num_classes)
        init_weights(self)

    def forward(self, branches: list[Tensor]) -> Tensor:
        y = self.incre_modules[0](branches[0])
        for b, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[b + 1](branches[b + 1]) + down(y)
        return self.classifier(self.final_layer(y).mean(dim=(2, 3)))


class TeacherClassifier(nn.Module):
    """HRNet backbone + :class:`TeacherHead`: normalised ``(B, 3, H, W)`` -> ``(B, classes)``
    logits. ``backbone`` is the :class:`~caer_ros.model.hrnet.HRNet` a :class:`Teacher` uses."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = HRNet(config.backbone_config())
        self.head = TeacherHead(self.backbone.out_channels, len(config.classes),
                                config.head_width, config.head_expansion,
                                config.final_channels)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))


def build_classifier(config: ClassifierConfig, seed: int | None = None) -> TeacherClassifier:
    """A freshly initialised classifier; with a ``seed`` its weights depend on it alone."""
    if seed is None:
        return TeacherClassifier(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TeacherClassifier(config)


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained` loaded: backbone tensors and head tensors (by name)."""

    source: str
    backbone: int
    head: int

    def summary(self) -> str:
        return (f"pretrained weights from {self.source}: {self.backbone} backbone and "
                f"{self.head} head tensors")


def load_pretrained(model: TeacherClassifier, path: str | os.PathLike) -> PretrainedReport:
    """Start ``model`` from an HRNet checkpoint (e.g. the official ImageNet one): the backbone
    by name (:func:`~caer_ros.model.weights.load_backbone_weights`, errors as there), then the
    head's ``incre_modules`` and ``downsamp_modules`` tensors whose official names and shapes
    match; the resized ``final_layer`` and the ``classifier`` keep their initialisation."""
    report = load_backbone_weights(model, path, prefix=None)
    data, _ = read_state_dict(path)  # read as load_backbone_weights reads it
    own = {k: v for k, v in model.head.state_dict().items()
           if k.startswith(("incre_modules.", "downsamp_modules."))}
    prefix = find_prefix(list(data), set(own))
    local = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
    matched = {k: v for k, v in local.items() if k in own and v.shape == own[k].shape}
    model.head.load_state_dict(matched, strict=False)
    return PretrainedReport(str(path), report.loaded, len(matched))


def _check_meta(meta: dict[str, Any]) -> None:
    """Meta data must be plain (JSON-like): a model file must not be able to run code."""
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must hold plain data only: {exc}") from None


def save_classifier(path: str | os.PathLike, model: TeacherClassifier,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a teacher classifier file at ``path``, atomically. ``meta`` (plain
    data) is merged over ``{"name": <file stem>, "trained": False, "created_by": ...}``."""
    path = Path(path)
    full_meta = {"name": path.stem, "trained": False, "created_by": f"caer_ros {__version__}",
                 **(meta or {})}
    _check_meta(full_meta)
    data = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": full_meta,
    }
    with atomic_write(path) as stream:
        torch.save(data, stream)
    return path


def _check_teacher_file(path: Path, data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ModelFileError(path, f"not a teacher classifier file (format {found!r}, "
                                   f"expected {FORMAT!r})")
    check_version_and_keys(path, data, VERSION, _KEYS)


def _classifier_from(path: Path, data: dict[str, Any]) -> tuple[TeacherClassifier,
                                                                  dict[str, Any]]:
    _check_teacher_file(path, data)
    try:
        config = ClassifierConfig.from_dict(data["config"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(path, f"invalid config: {exc}") from None
    model = TeacherClassifier(config)
    state = data["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                              for k, v in state.items()):
        raise ModelFileError(path, "state_dict is not a mapping of names to tensors")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[0]
        raise ModelFileError(path, f"state_dict does not match its config: {len(missing)} "
                                   f"missing, {len(unexpected)} unexpected, {len(wrong)} of "
                                   f"another shape (e.g. {example!r})")
    model.load_state_dict(state)
    meta = data["meta"] if isinstance(data["meta"], dict) else {}
    return model.eval(), dict(meta)


def load_classifier(path: str | os.PathLike, map_location: Any = "cpu"
                    ) -> tuple[TeacherClassifier, dict[str, Any]]:
    """Read a teacher classifier file: the classifier (eval mode) and its meta data."""
    path = Path(path)
    model, meta = _classifier_from(path, load_raw_file(path, map_location))
    if isinstance(map_location, str | torch.device):
        model.to(map_location)
    return model, meta


# --------------------------------------------------------------------------------------------
# Teachers as feature extractors


class HRNetFeatures(nn.Module):
    """An HRNet's feature map: all branches resized to the 1/4 grid and concatenated
    (``"concat"``) or the 1/4 branch alone (``"quarter"``); see the module docstring."""

    def __init__(self, backbone: HRNet, features: str = "concat") -> None:
        super().__init__()
        if features not in FEATURE_CHOICES:
            _fail(f"features must be one of {FEATURE_CHOICES}, got {features!r}")
        self.backbone = backbone
        self.concat = features == "concat"
        widths = backbone.out_channels
        self.channels = sum(widths) if self.concat else widths[0]
        self.stride = backbone.strides[0]

    def forward(self, images: Tensor) -> Tensor:
        branches = self.backbone(images)
        if not self.concat:
            return branches[0]
        size = branches[0].shape[-2:]
        return torch.cat([branches[0], *(F.interpolate(b, size=size, mode="bilinear",
                                                       align_corners=False)
                                         for b in branches[1:])], dim=1)


class Teacher(nn.Module):
    """A frozen feature extractor: ``(B, 3, H, W)`` RGB in 0..1 -> ``(B, channels, H / stride,
    W / stride)``. It normalises with its own ``mean`` / ``std``; H and W must be multiples of
    ``input_multiple`` (32 for HRNet teachers). Always in eval mode, no parameter requires
    grad."""

    name: str
    channels: int
    stride: int

    def __init__(self, name: str, extractor: nn.Module, channels: int, stride: int,
                 mean: tuple[float, float, float], std: tuple[float, float, float],
                 input_multiple: int) -> None:
        super().__init__()
        self.name = name
        self.channels = int(channels)
        self.stride = int(stride)
        self.input_multiple = int(input_multiple)
        self.extractor = extractor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """Teachers stay in eval mode whatever their parent asks (BatchNorm never updates)."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"teacher {self.name!r} expects (B, 3, H, W) RGB images, got "
                             f"{tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.input_multiple or width % self.input_multiple:
            raise ValueError(f"teacher {self.name!r} needs H and W multiples of "
                             f"{self.input_multiple}, got {height}x{width}")
        return self.extractor((images - self.mean) / self.std)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, channels={self.channels}, stride={self.stride}"


def _hrnet_teacher(name: str, backbone: HRNet, mean: Any, std: Any, features: str) -> Teacher:
    extractor = HRNetFeatures(backbone, features)
    return Teacher(name, extractor, extractor.channels, extractor.stride, tuple(mean),
                   tuple(std), HRNET_MULTIPLE)


def _spec_forms() -> str:
    return (f"expected a teacher classifier or caer_ros model file, PRESET:PATH (an HRNet "
            f"checkpoint; presets: {', '.join(sorted(BACKBONE_PRESETS))}) or "
            f"python:module.path:function")


def _from_file(path: Path, features: str) -> Teacher:
    if not path.exists():
        raise ModelFileError(path, f"no such file (teacher spec: {_spec_forms()})")
    data = load_raw_file(path, "cpu")
    kind = data.get("format") if isinstance(data, dict) else None
    if kind == FORMAT:
        model, meta = _classifier_from(path, data)
        name = str(meta.get("name") or path.stem)
        return _hrnet_teacher(name, model.backbone, model.config.input_mean,
                              model.config.input_std, features)
    if kind == MODEL_FORMAT:
        model, info = load_model_file(path)
        name = str(info.meta.get("name") or path.stem)
        return _hrnet_teacher(name, model.backbone, info.config.input_mean,
                              info.config.input_std, features)
    raise ModelFileError(path, f"neither a teacher classifier file ({FORMAT!r}) nor a caer_ros "
                               f"model file ({MODEL_FORMAT!r}); for an HRNet checkpoint "
                               f"write PRESET:{path} (e.g. hrnet_w32:{path})")


def _from_checkpoint(preset: str, path: Path, features: str) -> Teacher:
    backbone = HRNet(backbone_preset(preset))
    try:
        report = load_backbone_weights(backbone, path)
    except BackboneWeightsError as exc:
        text = str(exc)
        raise ModelFileError(path, text.removeprefix(f"{path}: ")) from None
    if report.skipped:
        raise ModelFileError(path, f"shape mismatch for {len(report.skipped)} {preset} "
                                   f"backbone tensors ({report.skipped[0]}): not a {preset} "
                                   f"checkpoint")
    if report.missing:
        raise ModelFileError(path, f"{len(report.missing)} {preset} backbone tensors are not "
                                   f"in the file (e.g. {report.missing[0]!r}): not a complete "
                                   f"{preset} checkpoint, the teacher would be partly random")
    return _hrnet_teacher(f"{preset}:{path.stem}", backbone, IMAGENET_MEAN, IMAGENET_STD,
                          features)


def _module_triple(module: nn.Module, name: str, default: tuple[float, float, float],
                   spec: str) -> tuple[float, float, float]:
    value = getattr(module, name, None)
    if value is None:
        return default
    values = tuple(float(v) for v in (value.tolist() if isinstance(value, Tensor) else value))
    if len(values) != 3:
        raise ModelFileError(spec, f"the module's {name} must hold 3 numbers, got {value!r}")
    return values  # type: ignore[return-value]


def _from_factory(spec: str, target: str) -> Teacher:
    module_name, _, function_name = target.rpartition(":")
    if not module_name or not function_name:
        raise ModelFileError(spec, "a python teacher is written python:module.path:function")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except ImportError as exc:
        raise ModelFileError(spec, f"cannot import {module_name!r} ({exc})") from None
    except AttributeError:
        raise ModelFileError(spec, f"{module_name!r} has no {function_name!r}") from None
    module = factory()
    if not isinstance(module, nn.Module):
        raise ModelFileError(spec, f"{function_name}() returned a {type(module).__name__}, "
                                   f"not a torch.nn.Module")
    module.eval()
    mean = _module_triple(module, "input_mean", IMAGENET_MEAN, spec)
    std = _module_triple(module, "input_std", IMAGENET_STD, spec)
    channels, stride = getattr(module, "channels", None), getattr(module, "stride", None)
    if not (isinstance(channels, int) and isinstance(stride, int)):
        parameter = next(module.parameters(), None)
        probe = torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE,
                            dtype=parameter.dtype if parameter is not None else torch.float32,
                            device=parameter.device if parameter is not None else "cpu")
        with torch.no_grad():
            out = module(probe)
        if not isinstance(out, Tensor) or out.dim() != 4 or out.shape[-1] != out.shape[-2] \
                or out.shape[-1] < 1 or PROBE_SIZE % out.shape[-1]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ModelFileError(spec, f"on a 1x3x{PROBE_SIZE}x{PROBE_SIZE} image the module "
                                       f"gave {shape}, not a (1, C, h, w) feature map with "
                                       f"{PROBE_SIZE}/h whole; give it int attributes channels "
                                       f"and stride")
        channels, stride = int(out.shape[1]), PROBE_SIZE // int(out.shape[-1])
    name = getattr(module, "name", None)
    return Teacher(name if isinstance(name, str) and name else function_name, module, channels,
                   stride, mean, std, input_multiple=1)


def load_teacher(spec: str | os.PathLike, device: str | torch.device = "cpu", *,
                 features: str = "concat") -> Teacher:
    """A frozen :class:`Teacher` on ``device`` from ``spec`` (module docstring for the forms
    and the feature choice). Problems raise
    :class:`~caer_ros.model.checkpoint.ModelFileError` naming the file or the spec."""
    if features not in FEATURE_CHOICES:
        raise ValueError(f"features must be one of {FEATURE_CHOICES}, got {features!r}")
    text = os.fspath(spec)
    if not text.strip():
        raise ModelFileError(repr(text), f"empty teacher spec; {_spec_forms()}")
    head, sep, rest = text.partition(":")
    if sep and head == "python":
        teacher = _from_factory(text, rest)
    elif sep and head in BACKBONE_PRESETS:
        teacher = _from_checkpoint(head, Path(rest).expanduser(), features)
    elif sep and not Path(text).exists() and "/" not in head and "\\" not in head:
        raise ModelFileError(text, f"unknown teacher spec form {head + ':'!r}; {_spec_forms()}")
    else:
        teacher = _from_file(Path(text).expanduser(), features)
    teacher.to(device)
    teacher.requires_grad_(False)
    return teacher.train(False)
