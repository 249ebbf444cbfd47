"""BENet: one HRNet backbone shared by the detection, emotion-map, person-centric and background
heads (BENet section 2 and Fig. 1, section 3.1; the KA student of the KA paper, section 2 and
Fig. 2a, is the same network without the two classification heads).

``BENet(config)(images)`` returns a :class:`~caer_ros.model.output.BENetOutput`: the 1/4 and
(optionally) 1/2 maps, the classifier logits and the backbone branch outputs. ``images`` are
(B, 3, H, W) RGB tensors normalised with ``config.input_mean`` / ``config.input_std``; H and W
must be multiples of 32 (the coarsest branch is 1/32 and the fusions upsample by 2, 4, 8), which
``config.input_size`` guarantees. The network never modifies its inputs or the returned
backbone features in place.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from caer_ros.model.config import ModelConfig
from caer_ros.model.heads import ClassificationHead, DetectionHead, EmotionHead
from caer_ros.model.hrnet import HRNet
from caer_ros.model.output import BENetOutput, ScaleOutput


class BENet(nn.Module):
    """The Bottom-up Emotions Network. Heads read the 1/4 backbone branch (HigherHRNet style);
    the classification heads read all branches."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        backbone = config.backbone_config()
        attention = backbone.attention  # the heads' residual blocks follow the backbone
        self.backbone = HRNet(backbone)
        widths = self.backbone.out_channels
        self.detection = DetectionHead(widths[0], config.head_channels, config.head_blocks,
                                       config.half_resolution, attention)
        self.emotion = EmotionHead(widths[0], config.emotion_channels(), config.continuous,
                                   config.head_channels, config.head_blocks,
                                   config.half_resolution, attention)
        sets = config.emotion_channels()
        self.person_centric: ClassificationHead | None = None
        self.background: ClassificationHead | None = None
        if config.person_centric:
            self.person_centric = ClassificationHead(
                widths, sets, config.classifier_expansion, config.classifier_channels,
                attention)
        if config.background:
            self.background = ClassificationHead(
                widths, sets, config.classifier_expansion, config.classifier_channels,
                attention)

    def forward(self, images: Tensor, classifiers: bool = True) -> BENetOutput:
        """All heads; with ``classifiers=False`` the person-centric and background heads are
        skipped (inference needs only the maps)."""
        features = self.backbone(images)
        detection = self.detection(features[0])
        emotion = self.emotion(features[0])
        scales = []
        for stride, det, emo in zip((4, 2)[:len(detection)], detection, emotion, strict=True):
            emotions, continuous = self.emotion.split(emo)
            scales.append(ScaleOutput(stride=stride, heatmap=det["heatmap"], size=det["size"],
                                      emotions=emotions, continuous=continuous))
        return BENetOutput(
            quarter=scales[0],
            half=scales[1] if len(scales) > 1 else None,
            person_centric=None if self.person_centric is None or not classifiers
            else self.person_centric(features),
            background=None if self.background is None or not classifiers
            else self.background(features),
            features=features,
        )


def build_model(config: ModelConfig, seed: int | None = None) -> BENet:
    """A freshly initialised BENet; with a ``seed`` the weights depend on it alone (the global
    random state is left untouched)."""
    if seed is None:
        return BENet(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BENet(config)
