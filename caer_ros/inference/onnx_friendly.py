"""Export-time equivalents of model operations that ONNX Runtime's CPU kernels run slowly.

CBAM's spatial attention (:class:`caer_ros.model.attention.ChannelPool`, BENet section
3.1) pools every feature map over its channels, a max and a mean over dimension 1, in each of
the ~70 attention blocks. ONNX Runtime reduces over the channel axis several times slower than
torch, outside its blocked (NCHWc) layout. In the exported graph:

- the channel max is a halving tree of element-wise maxima (``Split`` + ``Max``), exact;
- the channel mean is a 1x1 convolution with weights ``1 / C``, equal up to float rounding.

Measured on the ``benet`` preset at 512x512, one thread: 1187 ms -> 950 ms per frame in ONNX
Runtime (torch eager: 1350 ms). Torch keeps the original modules (its reductions are fast);
the export verifies the rewritten graph against the original one.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caer_ros.model.attention import ChannelPool
from caer_ros.model.network import BENet


def channel_max(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 1, H, W) maximum over channels by halving.

    When C is not a power of two, a first step takes the maximum of the first and the last
    ``2**k`` channels (``2**k < C``; they overlap, which a maximum allows); then each step
    splits the channels into two equal halves (one ``Split`` and one ``Max`` in ONNX).
    """
    channels = int(x.shape[1])  # a constant in the exported graph (channels are fixed)
    power = 1 << (channels.bit_length() - 1)
    if power != channels:
        x = torch.maximum(x[:, :power], x[:, channels - power:])
    while power > 1:
        power //= 2
        first, second = torch.split(x, power, dim=1)
        x = torch.maximum(first, second)
    return x


def channel_mean(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 1, H, W) mean over channels as a 1x1 convolution."""
    channels = int(x.shape[1])
    return F.conv2d(x, x.new_full((1, channels, 1, 1), 1.0 / channels))


class OnnxChannelPool(nn.Module):
    """:class:`~caer_ros.model.attention.ChannelPool` with the pooling above."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((channel_max(x), channel_mean(x)), dim=1)


def onnx_friendly(model: BENet) -> BENet:
    """A copy of ``model`` (in eval mode) with every attention's channel pooling replaced by
    :class:`OnnxChannelPool`; ``model`` itself is left unchanged."""
    rewritten = copy.deepcopy(model).eval()
    for module in list(rewritten.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ChannelPool):
                setattr(module, name, OnnxChannelPool())
    return rewritten
