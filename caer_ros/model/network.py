"""BENet: one HRNet backbone shared by the detection, emotion-map, person-centric and background
heads (BENet section 2 and Fig. 1, section 3.1; the KA student of the KA paper, section 2 and
Fig. 2a, is the same network in the ``shared`` head layout without the classification heads).

``BENet(config)(images)`` returns a :class:`~caer_ros.model.output.BENetOutput`: the 1/4 and
(optionally) 1/2 maps, the classifier logits and the backbone branch outputs. ``images`` are
(B, 3, H, W) RGB tensors normalised with ``config.input_mean`` / ``config.input_std``; H and W
must be multiples of 32 (the coarsest branch is 1/32 and the fusions upsample by 2, 4, 8), which
``config.input_size`` guarantees. The network never modifies its inputs or the returned
backbone features in place.

With a student backbone (``ModelConfig.is_student``, :mod:`caer_ros.model.student`) the
HRNet is replaced by a torchvision trunk and a stride-4 neck; the heads are the same.

With the default config (``backbone: benet``, ``head_layout: benet``, 3 head blocks, 128
classifier channels) this is BENet's public network layer for layer; its released weights load
through :mod:`caer_ros.convert` and :func:`reference_outputs` gives its outputs under the
public model's names.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from caer_ros.model.config import AttentionConfig, ModelConfig
from caer_ros.model.heads import ClassificationHead, map_head, set_heatmap_prior
from caer_ros.model.hrnet import HRNet
from caer_ros.model.output import BENetOutput, ScaleOutput
from caer_ros.model.student import StudentBackbone

CONTINUOUS = "continuous"  # the output name of the valence/arousal/dominance maps


class BENet(nn.Module):
    """The Bottom-up Emotions Network. Map heads read the 1/4 backbone branch (HigherHRNet
    style); the classification heads read all branches."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone: HRNet | StudentBackbone
        if config.is_student:  # a compact torchvision trunk and a stride-4 neck
            attention = None if not config.attention else AttentionConfig()
            self.backbone = StudentBackbone(str(config.backbone), config.neck_channels)
        else:
            backbone = config.backbone_config()
            attention = backbone.attention  # the heads' residual blocks follow the backbone
            self.backbone = HRNet(backbone)
        widths = self.backbone.out_channels
        layout = config.head_layout

        def head(outputs: dict[str, int], mixed: dict[str, tuple[str, int]] | None = None):
            return map_head(widths[0], outputs, layout, config.head_channels,
                            config.head_blocks, config.half_resolution, attention, mixed)

        self.detection = head({"heatmap": 1, "size": 2})
        set_heatmap_prior(self.detection)
        sets = config.emotion_channels()
        continuous = {CONTINUOUS: 3} if config.continuous else {}
        if layout == "benet":  # further sets mixed from the primary set's logits
            primary = config.primary_set
            self.emotion = head({primary: sets[primary], **continuous},
                                {name: (primary, n) for name, n in sets.items()
                                 if name != primary})
        else:
            self.emotion = head({**sets, **continuous})
        self.person_centric: ClassificationHead | None = None
        self.background: ClassificationHead | None = None
        if config.person_centric:
            self.person_centric = ClassificationHead(
                widths, sets, config.classifier_expansion, config.classifier_channels,
                attention, layout)
        if config.background:
            self.background = ClassificationHead(
                widths, sets, config.classifier_expansion, config.classifier_channels,
                attention, layout)

    def forward(self, images: Tensor, classifiers: bool = True,
                half: bool = True) -> BENetOutput:
        """All heads; with ``classifiers=False`` the person-centric and background heads are
        skipped (inference needs only the maps); with ``half=False`` the 1/2-resolution
        branches of the map heads are skipped (the fast head mode: about a third of BENet's
        FLOPs; the 1/4 outputs are unchanged) and ``half`` is None."""
        features = self.backbone(images)
        detection = self.detection(features[0], half)
        emotion = self.emotion(features[0], half)
        scales = []
        for stride, det, emo in zip((4, 2)[:len(detection)], detection, emotion, strict=True):
            scales.append(ScaleOutput(
                stride=stride, heatmap=det["heatmap"], size=det["size"],
                emotions={name: emo[name] for name in self.config.categories},
                continuous=emo.get(CONTINUOUS)))
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
