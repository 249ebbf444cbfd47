"""Residual blocks of HRNet (Wang et al., 2020): BasicBlock and Bottleneck, optional attention.

Parameter names are those of the official HRNet code (``conv1``, ``bn1``, ..., ``downsample.0``
/ ``downsample.1``) so official checkpoints load by name. The optional CBAM module (BENet
section 3.1) is a submodule named ``attention_block`` (the name in BENet's released weights);
with attention off it does not exist, and the block's keys are exactly the official ones.
"""

from __future__ import annotations

from torch import Tensor, nn

from caer_ros.model.attention import Attention
from caer_ros.model.config import AttentionConfig

BN_MOMENTUM = 0.1  # the official HRNet value, in PyTorch's convention


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def projection(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential | None:
    """The shortcut ``downsample`` (1x1 conv + BN) when the residual changes shape, else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        batch_norm(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (expansion 1)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 attention: AttentionConfig | None = None) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = batch_norm(planes)
        self.conv2 = conv3x3(planes, out_channels)
        self.bn2 = batch_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(in_channels, out_channels, stride)
        self.attention_block = None if attention is None else Attention(out_channels, attention)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attention_block is not None:
            out = self.attention_block(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (by ``expansion``, 4 in HRNet) with a residual connection."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 attention: AttentionConfig | None = None, expansion: int | None = None) -> None:
        super().__init__()
        if expansion is not None:
            self.expansion = expansion
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = batch_norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = batch_norm(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = batch_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(in_channels, out_channels, stride)
        self.attention_block = None if attention is None else Attention(out_channels, attention)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attention_block is not None:
            out = self.attention_block(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def init_weights(module: nn.Module) -> None:
    """He (fan-out) initialisation of every convolution, unit/zero batch norm (as HRNet), and
    the last batch norm of every residual block at zero (Goyal et al., 2017), so each block
    starts as an identity. That keeps an untrained network's activations bounded in eval mode
    too, so its heads start at their priors (e.g. a heatmap near 0.1). Pretrained weights
    overwrite all of it."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
        elif isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


def make_layer(block: str, in_channels: int, planes: int, num_blocks: int,
               attention: AttentionConfig | None = None) -> nn.Sequential:
    """``num_blocks`` blocks in sequence; the first one adapts the width (HRNet ``_make_layer``)."""
    block_type = BLOCKS[block]
    layers = []
    for _ in range(num_blocks):
        layer = block_type(in_channels, planes, attention=attention)
        layers.append(layer)
        in_channels = layer.out_channels
    return nn.Sequential(*layers)
