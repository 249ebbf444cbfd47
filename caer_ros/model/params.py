"""Parameter counts per part of a BENet (BENet 3.1 argues for a light model; the benchmark
reports these per preset)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from caer_ros.model.attention import Attention
from caer_ros.model.network import BENet


def count(module: nn.Module | None) -> int:
    """Number of parameters of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def count_attention(module: nn.Module | None) -> int:
    """Number of parameters inside the attention modules of ``module``."""
    if module is None:
        return 0
    return sum(count(m) for m in module.modules() if isinstance(m, Attention))


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters per part; ``attention`` counts the CBAM modules of all parts together and
    ``backbone_attention`` those inside the backbone (both are included in the part totals)."""

    total: int
    backbone: int
    backbone_attention: int
    attention: int
    detection: int
    emotion: int
    person_centric: int
    background: int

    def millions(self) -> dict[str, float]:
        return {name: round(value / 1e6, 3) for name, value in asdict(self).items()}


def parameter_counts(model: BENet) -> ParameterCounts:
    return ParameterCounts(
        total=count(model),
        backbone=count(model.backbone),
        backbone_attention=count_attention(model.backbone),
        attention=count_attention(model),
        detection=count(model.detection),
        emotion=count(model.emotion),
        person_centric=count(model.person_centric),
        background=count(model.background),
    )
