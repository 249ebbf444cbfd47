"""Compact backbones for students that run in real time on a CPU or a Jetson (issue 31).

A student is a :class:`~caer_ros.model.network.BENet` whose backbone is one of these instead of
HRNet: the same heads, the same output contract (:mod:`caer_ros.model.output`: a 1/4 centre
heatmap, box sizes and emotion maps per category set), so the inference graph, export, int8,
``caer-infer``, the node and ``training.evaluate`` take it as they take any model file.

Backbone: torchvision's MobileNetV3 (Howard et al., 2019), the anchor the field uses for
CenterNet-style detectors on mobile hardware (CenterNet's own light models and most real-time
keypoint/centre detectors on phones pair it, or ShuffleNet, with a stride-4 upsampling neck).
It is chosen over Lite-HRNet and EfficientHRNet because torchvision ships and maintains it: its
parameter names are the ones its ImageNet weights are published under, so a user with
``mobilenet_v3_large-*.pth`` starts from them (``init_backbone``,
:func:`caer_ros.model.weights.load_backbone_weights`), and its depthwise convolutions and
hard-swish export to ONNX and run in ONNX Runtime and TensorRT as they are. Weights are never
downloaded (``weights=None``).

Neck: a CenterNet-style stride-4 neck in the FPN pattern (Lin et al., 2017) made light: each of
the four taps (1/4, 1/8, 1/16, 1/32) is projected to ``neck_channels`` by a 1x1 convolution;
from the coarsest, each level is upsampled by 2 (nearest: an integer factor, which every ONNX
runtime and TensorRT run as is) and added to the next finer projection, then refined by a
depthwise-separable 3x3 convolution (MobileNet's own unit). The map heads read the 1/4 level
(as they read HRNet's 1/4 branch); the four levels are the backbone's ``features`` (for the
classification heads and knowledge amalgamation's feature terms, as HRNet's four branches are).

The taps are found by running the trunk once on a small input at construction: the last layer
of each stride, so the code does not hard-code torchvision's layer indices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caer_ros.model.blocks import batch_norm, init_weights
from caer_ros.model.config import STUDENT_BACKBONES

TAP_STRIDES = (4, 8, 16, 32)


def _trunk(name: str) -> nn.Sequential:
    """torchvision's feature extractor ``name`` (``.features``), without weights."""
    try:
        from torchvision import models
    except ImportError as error:  # pragma: no cover - torchvision is in requirements
        raise ImportError(f"the student backbone {name!r} needs torchvision "
                          f"(pip install torchvision): {error}") from None
    if name not in STUDENT_BACKBONES:
        raise ValueError(f"unknown student backbone {name!r}; known: "
                         f"{', '.join(STUDENT_BACKBONES)}")
    return getattr(models, name)(weights=None).features


def _find_taps(features: nn.Sequential) -> tuple[list[int], list[int]]:
    """Index and width of the last layer of each stride in :data:`TAP_STRIDES`."""
    size = 64
    x = torch.zeros(1, 3, size, size)
    last: dict[int, tuple[int, int]] = {}
    was_training = features.training
    features.eval()
    with torch.no_grad():
        for index, layer in enumerate(features):
            x = layer(x)
            stride = size // x.shape[-1]
            if stride in TAP_STRIDES:
                last[stride] = (index, int(x.shape[1]))
    features.train(was_training)
    missing = [s for s in TAP_STRIDES if s not in last]
    if missing:
        raise ValueError(f"backbone has no layer at stride(s) {missing}")
    return [last[s][0] for s in TAP_STRIDES], [last[s][1] for s in TAP_STRIDES]


def separable(channels: int) -> nn.Sequential:
    """Depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU (MobileNet's unit)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        batch_norm(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 1, bias=False),
        batch_norm(channels), nn.ReLU(inplace=True))


class StudentBackbone(nn.Module):
    """A torchvision trunk (``features``: torchvision's names) and the stride-4 neck.

    ``forward(images)`` returns four maps at 1/4, 1/8, 1/16 and 1/32 of the input, each
    ``neck_channels`` wide (``out_channels``), the 1/4 one first, as :class:`HRNet` does.
    """

    def __init__(self, name: str, neck_channels: int) -> None:
        super().__init__()
        self.features = _trunk(name)
        self.taps, widths = _find_taps(self.features)
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w, neck_channels, 1, bias=False), batch_norm(neck_channels))
            for w in widths)
        self.smooth = nn.ModuleList(separable(neck_channels) for _ in widths)
        init_weights(self.lateral)
        init_weights(self.smooth)
        self.out_channels: list[int] = [neck_channels] * len(widths)

    def forward(self, images: Tensor) -> list[Tensor]:
        taps: list[Tensor] = []
        x = images
        for index, layer in enumerate(self.features[:self.taps[-1] + 1]):
            x = layer(x)
            if index in self.taps:
                taps.append(x)
        levels: list[Tensor] = []
        y: Tensor | None = None
        for level in reversed(range(len(taps))):  # coarsest first
            z = self.lateral[level](taps[level])
            if y is not None:
                z = z + F.interpolate(y, scale_factor=2.0, mode="nearest")
            y = self.smooth[level](z)
            levels.append(y)
        return levels[::-1]
