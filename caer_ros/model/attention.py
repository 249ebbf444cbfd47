"""CBAM-style channel and spatial attention (BENet section 3.1, after Woo et al., ECCV 2018).

BENet "integrated spatial attention modules and channel attention modules" into the HRNet
residual blocks. One :class:`Attention` module refines a block's last feature map (after its
last batch norm, before the residual addition), exactly as BENet's public model does:

1. channel attention: ``x * sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))``, one MLP (Linear
   C -> C/reduction, ReLU, Linear back to C) shared by both pooled descriptors;
2. spatial attention: ``y * sigmoid(conv([max over channels of y, mean over channels of y]))``
   (max first, then mean), a bias-free convolution of ``spatial_kernel`` (1 in BENet).

Parameter names (``mlp.0``, ``mlp.2``, ``conv2d``) are those of BENet's released weights, so
they load by name. Everything is static-shape tensor code (no Python branches on values), so
it traces and exports to ONNX at any batch size; the channel pooling is a parameter-free
submodule (:class:`ChannelPool`) that the ONNX export swaps for a faster equivalent.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from caer_ros.model.config import AttentionConfig


class ChannelPool(nn.Module):
    """(B, C, H, W) -> (B, 2, H, W): the maximum over channels, then the mean over channels."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)


class Attention(nn.Module):
    """Channel then spatial attention on a feature map of ``channels`` channels."""

    def __init__(self, channels: int, config: AttentionConfig) -> None:
        super().__init__()
        hidden = max(1, channels // config.reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels))
        self.pool = ChannelPool()
        kernel = config.spatial_kernel
        self.conv2d = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def channel_gate(self, x: Tensor) -> Tensor:
        """(B, C, 1, 1) gate: sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))."""
        gate = torch.sigmoid(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3))))
        return gate[:, :, None, None]

    def spatial_gate(self, x: Tensor) -> Tensor:
        """(B, 1, H, W) gate: sigmoid(conv([max over channels, mean over channels]))."""
        return torch.sigmoid(self.conv2d(self.pool(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)
