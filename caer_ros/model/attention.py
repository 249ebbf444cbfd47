"""CBAM-style channel and spatial attention (BENet section 3.1, after Woo et al., ECCV 2018).

BENet "integrated spatial attention modules and channel attention modules" into the HRNet
residual blocks. Here one :class:`Attention` module refines a block's last feature map before
the residual addition: first channel attention (a shared two-layer MLP, written as 1x1
convolutions, over the average- and max-pooled descriptors), then spatial attention (a
convolution over the channel-wise max and mean maps). Both gates are sigmoids.

Everything is static-shape tensor code (no ``squeeze``, no Python branches on values), so it
traces and exports to ONNX at any batch size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from caer_ros.model.config import AttentionConfig


class ChannelAttention(nn.Module):
    """Per-channel gate: sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def _mlp(self, x: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(x)))

    def forward(self, x: Tensor) -> Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        peak = x.amax(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self._mlp(avg) + self._mlp(peak))


class SpatialAttention(nn.Module):
    """Per-pixel gate: sigmoid(conv([max over channels, mean over channels]))."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return torch.sigmoid(self.conv(pooled))


class Attention(nn.Module):
    """Channel then spatial attention on a feature map of ``channels`` channels."""

    def __init__(self, channels: int, config: AttentionConfig) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, config.reduction)
        self.spatial = SpatialAttention(config.spatial_kernel)

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)
