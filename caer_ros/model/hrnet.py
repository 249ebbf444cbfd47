"""HRNet backbone (Wang et al., 2020), the shared backbone of BENet (section 3.1) and of the
KA student (section 3.1): four parallel branches at 1/4, 1/8, 1/16 and 1/32 resolution.

Layout and parameter names follow the official HRNet / HigherHRNet code exactly (``conv1``,
``bn1``, ``conv2``, ``bn2``, ``layer1``, ``transition1``..``transition3``, ``stage2``..``stage4``
with ``branches`` and ``fuse_layers``), so the state dict of :class:`HRNet` without attention
has the official keys, prefix-free, and official ImageNet or HigherHRNet weights load by name.
Where the official code stores ``None`` (an unchanged transition branch, the identity term of a
fusion) this code stores a parameter-free ``nn.Identity``: the state-dict keys are the same and
the forward pass has no Python branches.

Every module of stage 4 keeps all four outputs (the classification-network variant), because
the person-centric / background heads and knowledge amalgamation read all branches.
"""

from __future__ import annotations

from torch import Tensor, nn

from caer_ros.model.blocks import BLOCKS, batch_norm, conv3x3, init_weights, make_layer
from caer_ros.model.config import AttentionConfig, BackboneConfig, StageConfig


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int,
             relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2,
                  bias=False),
        batch_norm(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def make_transition(before: list[int], after: list[int]) -> nn.ModuleList:
    """Adapt the branches of one stage to the next: keep, re-width (3x3) or add a new branch
    by stride-2 3x3 convolutions from the lowest-resolution existing branch."""
    layers: list[nn.Module] = []
    for i, channels in enumerate(after):
        if i < len(before):
            layers.append(nn.Identity() if before[i] == channels
                          else _conv_bn(before[i], channels, 3, 1, relu=True))
            continue
        steps = []
        for step in range(i + 1 - len(before)):
            out = channels if step == i - len(before) else before[-1]
            steps.append(_conv_bn(before[-1], out, 3, 2, relu=True))
        layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


def _fuse_path(channels: list[int], source: int, target: int) -> nn.Module:
    """The path from branch ``source`` to branch ``target`` in a multi-resolution fusion."""
    if source == target:
        return nn.Identity()
    if source > target:  # lower resolution: 1x1 conv, BN, nearest upsampling
        return nn.Sequential(
            nn.Conv2d(channels[source], channels[target], 1, bias=False),
            batch_norm(channels[target]),
            nn.Upsample(scale_factor=2 ** (source - target), mode="nearest"),
        )
    steps = []  # higher resolution: stride-2 3x3 convs, ReLU between them, not after the last
    for step in range(target - source):
        last = step == target - source - 1
        out = channels[target] if last else channels[source]
        steps.append(_conv_bn(channels[source], out, 3, 2, relu=not last))
    return nn.Sequential(*steps)


class HighResolutionModule(nn.Module):
    """Parallel branches of residual blocks, then every output fuses all branches (sum, ReLU)."""

    def __init__(self, in_channels: list[int], stage: StageConfig,
                 attention: AttentionConfig | None) -> None:
        super().__init__()
        expansion = BLOCKS[stage.block].expansion
        self.branches = nn.ModuleList(
            make_layer(stage.block, in_channels[b], stage.num_channels[b],
                       stage.num_blocks[b], attention)
            for b in range(stage.num_branches)
        )
        self.out_channels = [c * expansion for c in stage.num_channels]
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(_fuse_path(self.out_channels, j, i) for j in range(stage.num_branches))
            for i in range(stage.num_branches)
        )
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        x = [branch(xb) for branch, xb in zip(self.branches, x, strict=True)]
        fused = []
        for paths in self.fuse_layers:
            y = paths[0](x[0])
            for j in range(1, len(x)):
                y = y + paths[j](x[j])
            fused.append(self.relu(y))
        return fused


class HRNet(nn.Module):
    """The HRNet backbone: ``forward(images)`` gives the branch outputs, highest resolution
    first (strides 4, 8, 16, 32 for four branches); ``out_channels`` their widths."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        attention = config.attention
        stem = config.stem_channels
        self.conv1 = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = batch_norm(stem)
        self.conv2 = conv3x3(stem, stem, stride=2)
        self.bn2 = batch_norm(stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer("bottleneck", stem, config.stage1_channels,
                                 config.stage1_blocks, attention)
        channels = [self.layer1[-1].out_channels]
        for number, stage in enumerate(config.stages, start=2):
            expansion = BLOCKS[stage.block].expansion
            wanted = [c * expansion for c in stage.num_channels]
            self.add_module(f"transition{number - 1}", make_transition(channels, wanted))
            modules = []
            for _ in range(stage.num_modules):
                modules.append(HighResolutionModule(wanted, stage, attention))
                wanted = modules[-1].out_channels
            self.add_module(f"stage{number}", nn.Sequential(*modules))
            channels = wanted
        self.out_channels: list[int] = channels
        self.strides: list[int] = [4 * 2 ** b for b in range(len(channels))]
        init_weights(self)

    @staticmethod
    def _transition(layers: nn.ModuleList, x: list[Tensor]) -> list[Tensor]:
        # Existing branches map one to one; new branches grow from the last existing one.
        return [layer(x[min(i, len(x) - 1)]) for i, layer in enumerate(layers)]

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.relu(self.bn2(self.conv2(x)))
        branches = [self.layer1(x)]
        for transition, stage in ((self.transition1, self.stage2),
                                  (self.transition2, self.stage3),
                                  (self.transition3, self.stage4)):
            branches = stage(self._transition(transition, branches))
        return branches
