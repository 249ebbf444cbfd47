"""BENet heads: detection, bottom-up emotion maps, person-centric and background classifiers.

- :class:`DetectionHead` (BENet 2.2, KA paper 2.2, after CenterNet): residual blocks, then one
  conv3x3-BN-ReLU-conv1x1 output per map: the person-centre heatmap (1 channel) and the box
  size (2 channels, width and height in map pixels).
- :class:`EmotionHead` (BENet 2.1, KA paper 2.1): the same structure with one output per
  category set (E emotion maps each) and optionally 3 continuous maps (valence, arousal,
  dominance).
- Both read the highest-resolution (1/4) backbone branch, as HigherHRNet and BENet do, and
  (BENet 3.1, after HigherHRNet) optionally add 1/2 outputs: the 1/4 features concatenated
  with the head's own 1/4 outputs go through a 4x4 stride-2 deconvolution, residual blocks and
  a second set of output layers.
- :class:`ClassificationHead` (BENet 2.3 and 3.1): the HRNet classification head (a Bottleneck
  per branch, stride-2 convolutions merging the branches from high to low resolution, a final
  1x1 convolution, global average pooling, a linear layer per category set) with the
  bottleneck expansion reduced from 4 to 1. Used as the person-centric and background heads.

All heads return raw logits. Forward passes are plain tensor code (no value-dependent Python
branches) so the network traces and exports to ONNX.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from caer_ros.model.blocks import Bottleneck, batch_norm, init_weights, make_layer
from caer_ros.model.config import AttentionConfig

# CenterNet's heatmap prior: sigmoid(-2.19) = 0.1, so an untrained heatmap is near 0.1.
HEATMAP_PRIOR_BIAS = -2.19
OUTPUT_WEIGHT_STD = 0.001


def residual_blocks(in_channels: int, channels: int, num_blocks: int,
                    attention: AttentionConfig | None) -> nn.Sequential:
    """``num_blocks`` BasicBlocks of width ``channels`` (the first projects ``in_channels``);
    with no blocks and a width change, a 1x1 conv-BN-ReLU adapter instead."""
    if num_blocks == 0:
        if in_channels == channels:
            return nn.Sequential()
        return nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False),
                             batch_norm(channels), nn.ReLU(inplace=True))
    return make_layer("basic", in_channels, channels, num_blocks, attention)


def output_layer(channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3-BN-ReLU-conv1x1: one output map group (KA paper 2.1-2.2)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        batch_norm(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, out_channels, 1),
    )


class MapHead(nn.Module):
    """Residual blocks then named output layers, at 1/4 and optionally at 1/2 resolution.

    ``forward(x)`` returns one dict name -> logits per resolution, 1/4 first.
    """

    def __init__(self, in_channels: int, outputs: dict[str, int], channels: int,
                 num_blocks: int, half_resolution: bool,
                 attention: AttentionConfig | None) -> None:
        super().__init__()
        self.quarter_blocks = residual_blocks(in_channels, channels, num_blocks, attention)
        self.quarter_outputs = nn.ModuleDict(
            {name: output_layer(channels, n) for name, n in outputs.items()})
        self.deconv: nn.Sequential | None = None
        self.half_blocks: nn.Sequential | None = None
        self.half_outputs: nn.ModuleDict | None = None
        if half_resolution:
            concat = in_channels + sum(outputs.values())
            self.deconv = nn.Sequential(
                nn.ConvTranspose2d(concat, channels, 4, stride=2, padding=1, bias=False),
                batch_norm(channels),
                nn.ReLU(inplace=True),
            )
            self.half_blocks = residual_blocks(channels, channels, num_blocks, attention)
            self.half_outputs = nn.ModuleDict(
                {name: output_layer(channels, n) for name, n in outputs.items()})
        init_weights(self)
        for layers in self.output_layers():
            for layer in layers.values():  # small final weights, zero bias (HigherHRNet)
                nn.init.normal_(layer[-1].weight, std=OUTPUT_WEIGHT_STD)
                nn.init.zeros_(layer[-1].bias)

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        y = self.quarter_blocks(x)
        quarter = {name: layer(y) for name, layer in self.quarter_outputs.items()}
        scales = [quarter]
        if self.deconv is not None and self.half_blocks is not None \
                and self.half_outputs is not None:
            z = self.deconv(torch.cat([x, *quarter.values()], dim=1))
            z = self.half_blocks(z)
            scales.append({name: layer(z) for name, layer in self.half_outputs.items()})
        return scales

    def output_layers(self) -> list[nn.ModuleDict]:
        return [d for d in (self.quarter_outputs, self.half_outputs) if d is not None]


class DetectionHead(MapHead):
    """Person-centre heatmap (``heatmap``, 1 channel) and box size (``size``, 2 channels)."""

    def __init__(self, in_channels: int, channels: int, num_blocks: int,
                 half_resolution: bool, attention: AttentionConfig | None) -> None:
        super().__init__(in_channels, {"heatmap": 1, "size": 2}, channels, num_blocks,
                         half_resolution, attention)
        for outputs in self.output_layers():
            nn.init.constant_(outputs["heatmap"][-1].bias, HEATMAP_PRIOR_BIAS)


class EmotionHead(MapHead):
    """Emotion maps: one output per category set, plus ``continuous`` (3 maps) if asked."""

    def __init__(self, in_channels: int, category_sets: dict[str, int], continuous: bool,
                 channels: int, num_blocks: int, half_resolution: bool,
                 attention: AttentionConfig | None) -> None:
        outputs = dict(category_sets)
        if continuous:
            outputs["continuous"] = 3
        super().__init__(in_channels, outputs, channels, num_blocks, half_resolution,
                         attention)
        self.category_sets = tuple(category_sets)

    def split(self, maps: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None]:
        """One resolution's outputs as (set name -> emotion maps, continuous maps or None)."""
        emotions = {name: maps[name] for name in self.category_sets}
        return emotions, maps.get("continuous")


class ClassificationHead(nn.Module):
    """HRNet classification head with reduced expansion: all branches -> logits per set."""

    def __init__(self, in_channels: list[int], category_sets: dict[str, int],
                 expansion: int, final_channels: int,
                 attention: AttentionConfig | None) -> None:
        super().__init__()
        widths = [32 * 2 ** b for b in range(len(in_channels))]  # HRNet's head widths
        self.incre_modules = nn.ModuleList(
            nn.Sequential(Bottleneck(c, w, attention=attention, expansion=expansion))
            for c, w in zip(in_channels, widths, strict=True)
        )
        out = [w * expansion for w in widths]
        self.downsamp_modules = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out[b], out[b + 1], 3, stride=2, padding=1),
                          batch_norm(out[b + 1]), nn.ReLU(inplace=True))
            for b in range(len(out) - 1)
        )
        self.final_layer = nn.Sequential(
            nn.Conv2d(out[-1], final_channels, 1), batch_norm(final_channels),
            nn.ReLU(inplace=True))
        self.classifiers = nn.ModuleDict(
            {name: nn.Linear(final_channels, n) for name, n in category_sets.items()})
        init_weights(self)
        for fc in self.classifiers.values():
            nn.init.normal_(fc.weight, std=1.0 / math.sqrt(final_channels))
            nn.init.zeros_(fc.bias)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        y = self.incre_modules[0](features[0])
        for b, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[b + 1](features[b + 1]) + down(y)
        pooled = self.final_layer(y).mean(dim=(2, 3))
        return {name: fc(pooled) for name, fc in self.classifiers.items()}

