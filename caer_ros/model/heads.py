"""BENet heads: detection, bottom-up emotion maps, person-centric and background classifiers.

Two head layouts (``ModelConfig.head_layout``), both built from the same pieces:

- ``benet`` - BENet's public model exactly (BENet 2.1-2.3, 3.1): every output group has a
  stack of its own (:class:`SplitMapHead`): the person-centre heatmap, the box size and the
  primary emotion maps each get ``head_blocks`` BasicBlocks, an output layer (conv3x3 to
  ``(C + out) // 2`` channels with bias, BN, ReLU, conv1x1) and, at 1/2 resolution, a
  deconvolution, blocks and a second output layer. Further category sets are *mixed* from the
  primary emotion logits by a 1x1 convolution per resolution (BENet's HECO maps: 26 -> 8).
  The classification heads end in an MLP (Linear C -> C/2, ReLU, Linear -> E) for the primary
  set; further sets are a Linear of the primary logits.
- ``shared`` - the KA student (KA paper 2.1-2.2): one trunk of residual blocks per head
  (:class:`MapHead`) with one output layer (conv3x3 C -> C without bias, BN, ReLU, conv1x1)
  per output group; every category set has outputs of its own; the classification heads end
  in one Linear per set.

Every map head reads the highest-resolution (1/4) backbone branch (HigherHRNet, BENet) and,
with ``half_resolution``, adds 1/2 outputs: the 1/4 features concatenated with the stack's own
1/4 outputs go through a 4x4 stride-2 deconvolution (+BN+ReLU), residual blocks and a second
output layer. :class:`ClassificationHead` is HRNet's classification head with the bottleneck
expansion reduced from 4 to 1 (BENet 3.1), used as the person-centric and background heads.

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


def output_layer(channels: int, out_channels: int, layout: str) -> nn.Sequential:
    """conv3x3-BN-ReLU-conv1x1: one output map group. ``benet``: the 3x3 convolution narrows
    to ``(channels + out_channels) // 2`` and has a bias; ``shared``: it keeps ``channels``,
    without bias (KA paper 2.1-2.2)."""
    benet = layout == "benet"
    hidden = (channels + out_channels) // 2 if benet else channels
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1, bias=benet),
        batch_norm(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, out_channels, 1),
    )


class MapHead(nn.Module):
    """One stack: residual blocks then named output layers, at 1/4 and optionally at 1/2.

    ``forward(x)`` returns one dict name -> logits per resolution, 1/4 first.
    """

    def __init__(self, in_channels: int, outputs: dict[str, int], channels: int,
                 num_blocks: int, half_resolution: bool,
                 attention: AttentionConfig | None, layout: str = "shared") -> None:
        super().__init__()
        self.quarter_blocks = residual_blocks(in_channels, channels, num_blocks, attention)
        self.quarter_outputs = nn.ModuleDict(
            {name: output_layer(channels, n, layout) for name, n in outputs.items()})
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
                {name: output_layer(channels, n, layout) for name, n in outputs.items()})
        init_weights(self)
        for layers in self.output_layers():
            for layer in layers.values():  # small final weights, zero bias (HigherHRNet)
                nn.init.normal_(layer[-1].weight, std=OUTPUT_WEIGHT_STD)
                nn.init.zeros_(layer[-1].bias)

    def forward(self, x: Tensor, half: bool = True) -> list[dict[str, Tensor]]:
        """One dict per resolution; with ``half=False`` the 1/2 branch is not computed (the
        1/4 outputs are the same either way)."""
        y = self.quarter_blocks(x)
        quarter = {name: layer(y) for name, layer in self.quarter_outputs.items()}
        scales = [quarter]
        if half and self.deconv is not None and self.half_blocks is not None \
                and self.half_outputs is not None:
            z = self.deconv(torch.cat([x, *quarter.values()], dim=1))
            z = self.half_blocks(z)
            scales.append({name: layer(z) for name, layer in self.half_outputs.items()})
        return scales

    def output_layers(self) -> list[nn.ModuleDict]:
        """The output layers, one dict name -> layer per resolution, 1/4 first."""
        return [d for d in (self.quarter_outputs, self.half_outputs) if d is not None]


class SplitMapHead(nn.Module):
    """BENet's layout: one :class:`MapHead` per output group (``stacks``, keyed by the output
    name) and 1x1 convolutions that mix a source output into further ones (``mixed``: name ->
    one convolution per resolution, applied to the logits of ``sources[name]``).

    Same interface as :class:`MapHead`: ``forward(x)`` gives one dict per resolution.
    """

    def __init__(self, stacks: dict[str, MapHead],
                 mixed: dict[str, tuple[str, int, int]] | None = None,
                 num_scales: int = 1) -> None:
        super().__init__()
        self.stacks = nn.ModuleDict(stacks)
        self.sources = {name: source for name, (source, _, _) in (mixed or {}).items()}
        self.mixed = nn.ModuleDict({
            name: nn.ModuleList(nn.Conv2d(n_in, n_out, 1) for _ in range(num_scales))
            for name, (_, n_in, n_out) in (mixed or {}).items()})

    def forward(self, x: Tensor, half: bool = True) -> list[dict[str, Tensor]]:
        per_stack = [stack(x, half) for stack in self.stacks.values()]
        scales: list[dict[str, Tensor]] = []
        for index in range(len(per_stack[0])):
            maps = {name: t for outputs in per_stack for name, t in outputs[index].items()}
            for name, convs in self.mixed.items():
                maps[name] = convs[index](maps[self.sources[name]])
            scales.append(maps)
        return scales

    def output_layers(self) -> list[nn.ModuleDict]:
        """Per resolution, every stack's output layers in one dict (mixed convs excluded)."""
        layers = [stack.output_layers() for stack in self.stacks.values()]
        return [nn.ModuleDict({n: m for d in per_scale for n, m in d.items()})
                for per_scale in zip(*layers, strict=True)]


def map_head(in_channels: int, outputs: dict[str, int], layout: str, channels: int,
             num_blocks: int, half_resolution: bool, attention: AttentionConfig | None,
             mixed: dict[str, tuple[str, int]] | None = None) -> MapHead | SplitMapHead:
    """A map head in ``layout``: ``shared`` puts every output on one trunk (``mixed`` must be
    empty); ``benet`` gives each output a stack and derives each ``mixed`` output
    (name -> (source output, channels)) from its source's logits."""
    if layout == "shared":
        if mixed:
            raise ValueError("the shared head layout has no mixed outputs")
        return MapHead(in_channels, outputs, channels, num_blocks, half_resolution, attention)
    stacks = {name: MapHead(in_channels, {name: n}, channels, num_blocks, half_resolution,
                            attention, layout)
              for name, n in outputs.items()}
    return SplitMapHead(
        stacks, {name: (source, outputs[source], n) for name, (source, n) in
                 (mixed or {}).items()},
        num_scales=2 if half_resolution else 1)


def set_heatmap_prior(head: MapHead | SplitMapHead) -> None:
    """Heatmap output biases at the CenterNet prior (:data:`HEATMAP_PRIOR_BIAS`)."""
    for outputs in head.output_layers():
        nn.init.constant_(outputs["heatmap"][-1].bias, HEATMAP_PRIOR_BIAS)


class ClassificationHead(nn.Module):
    """HRNet classification head with reduced expansion: all branches -> logits per set.

    ``benet`` layout: ``classifiers`` holds an MLP (Linear C -> C/2, ReLU, Linear -> E) for the
    first set only; each further set is ``mixed`` from the first set's logits by one Linear.
    ``shared`` layout: one Linear per set.
    """

    def __init__(self, in_channels: list[int], category_sets: dict[str, int],
                 expansion: int, final_channels: int,
                 attention: AttentionConfig | None, layout: str = "shared") -> None:
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
        self.primary = next(iter(category_sets))
        primary = category_sets[self.primary]
        self.mixed = nn.ModuleDict()
        if layout == "benet":
            hidden = max(1, final_channels // 2)
            self.classifiers = nn.ModuleDict({self.primary: nn.Sequential(
                nn.Linear(final_channels, hidden), nn.ReLU(inplace=True),
                nn.Linear(hidden, primary))})
            self.mixed = nn.ModuleDict({name: nn.Linear(primary, n)
                                        for name, n in category_sets.items()
                                        if name != self.primary})
        else:
            self.classifiers = nn.ModuleDict(
                {name: nn.Linear(final_channels, n) for name, n in category_sets.items()})
        init_weights(self)
        for module in (*self.classifiers.modules(), *self.mixed.modules()):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=1.0 / math.sqrt(module.in_features))
                nn.init.zeros_(module.bias)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        y = self.incre_modules[0](features[0])
        for b, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[b + 1](features[b + 1]) + down(y)
        pooled = self.final_layer(y).mean(dim=(2, 3))
        logits = {name: fc(pooled) for name, fc in self.classifiers.items()}
        for name, fc in self.mixed.items():
            logits[name] = fc(logits[self.primary])
        return logits
