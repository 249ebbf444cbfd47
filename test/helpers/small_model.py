"""A small seeded model file for the inference tests: hrnet_w18_small with CBAM attention (as
BENet) at 96x128 (non-square, so height and width cannot be swapped unnoticed), EMOTIC + HECO,
continuous head.

Untrained weights give nearly flat maps; the final layers are redrawn (seeded) so that their
outputs vary by about ``SPREAD`` logits over an image - heatmaps with distinct peaks, emotion
scores spread over 0..1, box sizes around ``BOX_SIZE`` - as a trained model's would.
"""

from __future__ import annotations

from pathlib import Path

import torch

from caer_ros.labels import EMOTIC, HECO
from caer_ros.model import InferenceSettings, ModelConfig, build_model, save_model_file

INPUT_SIZE = (96, 128)
BOX_SIZE = 24.0  # typical box width and height in network-input pixels


def small_config(**changes) -> ModelConfig:
    values = {"backbone": "hrnet_w18_small", "categories": {"emotic": EMOTIC, "heco": HECO},
              "continuous": True, "input_size": INPUT_SIZE, "attention": True}
    return ModelConfig(**{**values, **changes})


SPREAD = 1.5


def small_model(seed: int = 0, **changes):
    model = build_model(small_config(**changes), seed=seed).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    finals = {}  # final conv -> (output name, stride)
    for head in (model.detection, model.emotion):
        for outputs, stride in zip(head.output_layers(), (4, 2), strict=False):
            for name, layer in outputs.items():
                finals[layer[-1]] = (name, stride)
    scale = {}  # RMS of each final conv's input on a random image
    hooks = [conv.register_forward_hook(
        lambda conv, args, _out: scale.__setitem__(conv, float(args[0].square().mean().sqrt())))
        for conv in finals]
    with torch.no_grad():
        model(torch.randn(1, 3, *model.config.input_size, generator=generator))
        for hook in hooks:
            hook.remove()
        for conv, (name, stride) in finals.items():
            spread = SPREAD if name != "size" else 0.25 * BOX_SIZE / stride
            std = spread / (max(scale[conv], 1e-6) * conv.in_channels ** 0.5)
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)
            if name == "size":
                conv.bias.fill_(BOX_SIZE / stride)
    return model


def write_small_model(path: Path, seed: int = 0, settings: dict | None = None,
                      **changes) -> Path:
    """Write the small model file; ``settings`` override its inference settings, ``changes``
    its config (e.g. ``attention=False`` for a graph that exports in a third of the time)."""
    model = small_model(seed, **changes)
    return save_model_file(path, model,
                           InferenceSettings.for_model(model.config, **(settings or {})),
                           meta={"seed": seed})
