"""Load pretrained HRNet backbone weights by name (BENet 3.1 / KA paper 3.3: the backbone
starts from ImageNet weights; KA teachers are HRNet-W32 networks of other tasks), or a student
backbone's torchvision weights (``mobilenet_v3_large-*.pth``: its trunk keeps torchvision's
names under ``features.``; the neck is not in such a file and is reported missing).

Accepts official HRNet ImageNet checkpoints, HigherHRNet checkpoints, training checkpoints
(``{"state_dict": ...}``, ``module.`` prefixes) and caer_ros model files. The prefix in front
of the backbone keys is found by matching, not guessed: the prefix under which most source keys
name a backbone tensor wins (e.g. ``""``, ``"module."``, ``"backbone."``,
``"module.backbone."``). Keys outside that prefix, or naming no backbone tensor (official
classification heads ``incre_modules``/``downsamp_modules``/``final_layer``/``classifier``,
HigherHRNet's ``final_layers``/``deconv_layers``), are reported as unexpected, not errors.
A tensor whose name matches but whose shape does not is skipped and reported (name and both
shapes): a standard HRNet-W32 or HigherHRNet-W32 checkpoint (4 blocks per branch, more
modules) starts BENet's slimmer backbone from every tensor the two share. Only a source that
cannot be read, or from which nothing loads, is an error.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

from torch import Tensor, nn

from caer_ros.model.checkpoint import ModelFileError, load_plain_data
from caer_ros.model.hrnet import HRNet
from caer_ros.model.student import StudentBackbone

log = logging.getLogger(__name__)

# Buffers that older checkpoints lack and that need no loading: never reported as missing.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


class BackboneWeightsError(ValueError):
    """A weights file that cannot be loaded into the backbone."""


@dataclass
class LoadReport:
    """What :func:`load_backbone_weights` did."""

    source: str
    prefix: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: source shape vs model shape"

    def summary(self) -> str:
        return (f"backbone weights from {self.source}: {self.loaded} tensors loaded, "
                f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                f"{len(self.skipped)} skipped (shape differs) (prefix {self.prefix!r})")


def _backbone_of(target: nn.Module) -> HRNet | StudentBackbone:
    if isinstance(target, (HRNet, StudentBackbone)):
        return target
    backbone = getattr(target, "backbone", None)
    if isinstance(backbone, (HRNet, StudentBackbone)):
        return backbone
    raise TypeError(f"expected an HRNet, a student backbone or a model with one as .backbone, "
                    f"got {type(target).__name__}")


def read_state_dict(source: dict[str, Tensor] | str | os.PathLike
                    ) -> tuple[dict[str, Tensor], str]:
    """The tensors of a weights file (or dict) and a name for messages: a training checkpoint's
    ``state_dict`` or a caer_ros model file's is unwrapped, non-tensor entries are dropped.
    Files are read with ``weights_only=True``; problems raise :class:`BackboneWeightsError`."""
    if isinstance(source, (str, os.PathLike)):
        try:
            data = load_plain_data(source)
        except ModelFileError as error:
            raise BackboneWeightsError(str(error)) from None
        name = str(source)
    else:
        data, name = source, "state_dict"
    # Unwrap training checkpoints and caer_ros model files.
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict):
        raise BackboneWeightsError(f"{name}: holds a {type(data).__name__}, not a state dict")
    tensors = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, Tensor)}
    return tensors, name


def find_prefix(source_keys: list[str], target_keys: set[str]) -> str:
    """The prefix under which most ``source_keys`` name a key of ``target_keys``
    (the shortest prefix on a tie); ``""`` when none match."""
    votes: Counter[str] = Counter()
    for key in source_keys:
        parts = key.split(".")
        for cut in range(len(parts)):
            if ".".join(parts[cut:]) in target_keys:
                votes[".".join(parts[:cut]) + ("." if cut else "")] += 1
    if not votes:
        return ""
    return max(votes, key=lambda p: (votes[p], -len(p)))


def load_backbone_weights(target: nn.Module, source: dict[str, Tensor] | str | os.PathLike,
                          *, prefix: str | None = None) -> LoadReport:
    """Load HRNet weights by name into ``target`` (an :class:`HRNet` or a model whose
    ``.backbone`` is one) and return (and log) a :class:`LoadReport`.

    ``source`` is a state dict or a file path (read with ``weights_only=True``). ``prefix``
    forces the key prefix to strip; by default it is found (see :func:`find_prefix`).
    Tensors whose shape differs from the model's are skipped (``LoadReport.skipped`` names
    each with both shapes). Raises :class:`BackboneWeightsError` on an unreadable source or
    when no tensor loads.
    """
    backbone = _backbone_of(target)
    own = backbone.state_dict()
    tensors, name = read_state_dict(source)
    if prefix is None:
        prefix = find_prefix(list(tensors), set(own))
    matched: dict[str, Tensor] = {}
    unexpected: list[str] = []
    skipped: list[str] = []
    for key, value in tensors.items():
        local = key[len(prefix):] if key.startswith(prefix) else None
        if local is None or local not in own:
            unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(own[local].shape):
            skipped.append(f"{local}: checkpoint {tuple(value.shape)} vs model "
                           f"{tuple(own[local].shape)}")
            continue
        matched[local] = value
    if not matched:
        shapes = f"; {len(skipped)} differ in shape (e.g. {skipped[0]})" if skipped else ""
        raise BackboneWeightsError(
            f"{name}: no backbone tensor loads among {len(tensors)} tensors "
            f"(e.g. {sorted(tensors)[:3]}){shapes}")
    missing = [k for k in own if k not in matched and not k.endswith(_OPTIONAL_SUFFIXES)]
    backbone.load_state_dict(matched, strict=False)
    report = LoadReport(source=name, prefix=prefix, loaded=len(matched), missing=missing,
                        unexpected=unexpected, skipped=skipped)
    log.info(report.summary())
    if skipped:
        log.warning("backbone tensors skipped, shape differs (kept as initialised): %s%s",
                    "; ".join(skipped[:3]), " ..." if len(skipped) > 3 else "")
    if missing:
        log.warning("backbone tensors not in %s (kept as initialised): %s%s", name,
                    ", ".join(missing[:5]), " ..." if len(missing) > 5 else "")
    return report
