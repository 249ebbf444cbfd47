"""The network's typed output: named fields per head and resolution.

This is the contract between ``caer_ros.model`` (which fills it) and ``caer_ros.inference``
and ``training`` (which read it). Every map holds raw logits (no sigmoid applied).

Units of the box-size maps: the map's own pixels (CenterNet convention), i.e. a size value
``s`` at the 1/4 map means ``4 * s`` pixels of the network input; at the 1/2 map ``2 * s``.
Channel 0 is the box width, channel 1 its height.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ScaleOutput:
    """Outputs of the detection and bottom-up heads at one resolution (1/4 or 1/2)."""

    stride: int  # input pixels per map pixel: 4 or 2
    heatmap: Tensor  # (B, 1, h, w) person-centre heatmap logits
    size: Tensor  # (B, 2, h, w) box width, height in map pixels
    emotions: dict[str, Tensor]  # category-set name -> (B, E, h, w) emotion-map logits
    continuous: Tensor | None = None  # (B, 3, h, w) valence, arousal, dominance logits


@dataclass
class BENetOutput:
    """Everything one forward pass of BENet gives."""

    quarter: ScaleOutput  # 1/4 resolution
    half: ScaleOutput | None = None  # 1/2 resolution (HigherHRNet-style deconvolution)
    # Classification heads, used for training (and for BU+PC fusion): set name -> (B, E) logits.
    person_centric: dict[str, Tensor] | None = None
    background: dict[str, Tensor] | None = None
    # Backbone branch outputs (1/4, 1/8, 1/16, 1/32), for knowledge amalgamation.
    features: list[Tensor] = field(default_factory=list)

    def scales(self) -> list[ScaleOutput]:
        """The per-resolution outputs present, 1/4 first."""
        return [self.quarter] if self.half is None else [self.quarter, self.half]

    def flat(self) -> dict[str, Tensor]:
        """Flat name -> tensor view (ONNX output names), without the backbone features.

        Names: ``q.heatmap``, ``q.size``, ``q.emotions.<set>``, ``q.continuous`` and the same
        with ``h.`` for the 1/2 outputs; ``pc.<set>`` and ``bg.<set>`` for the classifiers.
        """
        out: dict[str, Tensor] = {}
        for prefix, scale in (("q", self.quarter), ("h", self.half)):
            if scale is None:
                continue
            out[f"{prefix}.heatmap"] = scale.heatmap
            out[f"{prefix}.size"] = scale.size
            for name, maps in scale.emotions.items():
                out[f"{prefix}.emotions.{name}"] = maps
            if scale.continuous is not None:
                out[f"{prefix}.continuous"] = scale.continuous
        for prefix, heads in (("pc", self.person_centric), ("bg", self.background)):
            for name, logits in (heads or {}).items():
                out[f"{prefix}.{name}"] = logits
        return out

    @classmethod
    def from_flat(cls, flat: dict[str, Tensor]) -> BENetOutput:
        """Inverse of :meth:`flat` (features are not part of the flat view)."""

        def scale(prefix: str, stride: int) -> ScaleOutput | None:
            if f"{prefix}.heatmap" not in flat:
                return None
            emo = f"{prefix}.emotions."
            return ScaleOutput(
                stride=stride,
                heatmap=flat[f"{prefix}.heatmap"],
                size=flat[f"{prefix}.size"],
                emotions={k[len(emo):]: v for k, v in flat.items() if k.startswith(emo)},
                continuous=flat.get(f"{prefix}.continuous"),
            )

        def heads(prefix: str) -> dict[str, Tensor] | None:
            found = {k[len(prefix) + 1:]: v for k, v in flat.items() if k.startswith(prefix + ".")}
            return found or None

        quarter = scale("q", 4)
        if quarter is None:
            raise KeyError("flat output has no 'q.heatmap': not a BENet output")
        return cls(quarter=quarter, half=scale("h", 2),
                   person_centric=heads("pc"), background=heads("bg"))
