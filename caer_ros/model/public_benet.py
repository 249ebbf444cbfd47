"""BENet's public model and ours: the name of every tensor of its released state dicts in our
network, the layout read from the keys, and its outputs under its own names.

BENet's authors released trained models (ACIVS 2023, Table 1) as PyTorch state dicts of their
public network. Our ``benet`` config (:class:`~caer_ros.model.config.ModelConfig` defaults) is
that network layer for layer; only the module paths differ:

- ``conv1``, ``bn1``, ``layer1``, ``transition*``, ``stage*`` -> ``backbone.<same>``;
- ``{hm,hw,bu}_final_layers.0.<i>.0.*`` (i < blocks) -> ``<stack>.quarter_blocks.<i>.*``,
  ``..._final_layers.0.<blocks>.*`` -> ``<stack>.quarter_outputs.<output>.*``,
  ``..._deconv_layers.0.0.*`` -> ``<stack>.deconv.*``,
  ``..._deconv_layers.0.<i+1>.0.*`` -> ``<stack>.half_blocks.<i>.*``,
  ``..._final_layers.1.*`` -> ``<stack>.half_outputs.<output>.*``, where ``<stack>`` is
  ``detection.stacks.heatmap`` (hm), ``detection.stacks.size`` (hw) or
  ``emotion.stacks.<primary set>`` (bu), and ``<output>`` the last part of it;
- ``bu_mixed.<k>`` -> ``emotion.mixed.<second set>.<k>``;
- ``pc_incre_modules``, ``pc_downsamp_modules``, ``pc_final_layer`` ->
  ``person_centric.<same without pc_>``; ``pc_classifier`` ->
  ``person_centric.classifiers.<primary set>``; ``pc_mixed`` -> ``person_centric.mixed.<second
  set>``; the same without ``pc_`` (``context_mixed``) under ``background``;
- ``fusion.*``, ``fusion_mixed.*``: not built (no released config runs them; 4,121
  parameters, 4,337 with HECO's).

One convention differs: the public ``hw`` maps are (height, width), ours ``size`` maps are
(width, height) (:mod:`caer_ros.model.output`). :func:`to_own_tensor` swaps the two output
channels of both ``hw`` output convolutions and the two matching input channels of the ``hw``
deconvolution, so our network computes exactly the public one with the channels in our order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from caer_ros.labels import EMOTIC, HECO
from caer_ros.model.config import ModelConfig
from caer_ros.model.network import BENet

# Released tensors our network does not build: the fusion MLPs no released config runs.
UNUSED_PREFIXES = ("fusion.", "fusion_mixed.")
# Every public state dict has these groups; HECO models also ``bu_mixed``.
_REQUIRED = ("conv1.", "layer1.", "stage4.", "hm_final_layers.", "hw_final_layers.",
             "bu_final_layers.", "pc_classifier.", "classifier.")
_STACKS = {"hm": ("detection", "heatmap"), "hw": ("detection", "size"), "bu": ("emotion", None)}
_BACKBONE = re.compile(r"^(conv1|bn1|conv2|bn2|layer1|transition\d|stage\d)\.")
_CLASSIFIER_PARTS = ("incre_modules", "downsamp_modules", "final_layer")


class PublicLayoutError(ValueError):
    """A state dict that is not (all of) BENet's public network."""


def is_heco_layout(keys: list[str] | set[str]) -> bool:
    """Whether a public state dict carries HECO's mixed maps (``bu_mixed.*``)."""
    return any(k.startswith("bu_mixed.") for k in keys)


def public_config(keys: list[str] | set[str], input_size: tuple[int, int] = (512, 512)
                  ) -> ModelConfig:
    """The config of the network a public state dict (its keys, prefix-free) belongs to:
    EMOTIC's 26 categories, HECO's 8 second when ``bu_mixed.*`` is present.

    Raises :class:`PublicLayoutError` when the keys are not BENet's.
    """
    absent = [group for group in _REQUIRED if not any(k.startswith(group) for k in keys)]
    if absent:
        raise PublicLayoutError(
            f"not a BENet state dict: no {', '.join(g.rstrip('.') + '.*' for g in absent)} "
            f"tensors")
    categories = {"emotic": EMOTIC}
    if is_heco_layout(keys):
        categories["heco"] = HECO
    return ModelConfig(categories=categories, input_size=input_size)


def own_key(key: str, config: ModelConfig) -> str | None:
    """Our name for the public tensor ``key`` (None for :data:`UNUSED_PREFIXES`).

    Raises :class:`PublicLayoutError` for a key that no rule maps.
    """
    if key.startswith(UNUSED_PREFIXES):
        return None
    if _BACKBONE.match(key):
        return "backbone." + key
    primary, *others = list(config.categories)
    blocks = config.head_blocks
    found = re.match(r"^(hm|hw|bu)_(final|deconv)_layers\.(\d+)\.(.*)$", key)
    if found:
        short, kind, index, rest = found.groups()
        head, output = _STACKS[short]
        output = output or primary
        stack = f"{head}.stacks.{output}."
        if kind == "final" and index == "1":
            return stack + f"half_outputs.{output}.{rest}"
        part = re.match(r"^(\d+)\.(.*)$", rest)
        if index == "0" and part:
            position, tail = int(part.group(1)), part.group(2)
            if kind == "final" and position < blocks and tail.startswith("0."):
                return stack + f"quarter_blocks.{position}.{tail[2:]}"
            if kind == "final" and position == blocks:
                return stack + f"quarter_outputs.{output}.{tail}"
            if kind == "deconv" and position == 0:
                return stack + f"deconv.{tail}"
            if kind == "deconv" and 0 < position <= blocks and tail.startswith("0."):
                return stack + f"half_blocks.{position - 1}.{tail[2:]}"
    found = re.match(r"^bu_mixed\.(\d+)\.(.*)$", key)
    if found and others:
        return f"emotion.mixed.{others[0]}.{found.group(1)}.{found.group(2)}"
    for public, head in (("pc_", "person_centric"), ("", "background")):
        for part in _CLASSIFIER_PARTS:
            if key.startswith(f"{public}{part}."):
                return f"{head}.{key[len(public):]}"
        classifier = f"{public}classifier."
        if key.startswith(classifier):
            return f"{head}.classifiers.{primary}.{key[len(classifier):]}"
        mixed = f"{public}mixed." if public else "context_mixed."
        if key.startswith(mixed) and others:
            return f"{head}.mixed.{others[0]}.{key[len(mixed):]}"
    raise PublicLayoutError(f"no rule maps the public key {key!r}")


def to_own_tensor(key: str, value: Tensor, config: ModelConfig) -> Tensor:
    """``value`` of the public tensor ``key`` in our channel order: (height, width) ->
    (width, height) for the box-size outputs and the deconvolution input that reads them."""
    if re.match(rf"^hw_final_layers\.(0\.{config.head_blocks}\.3|1\.3)\.(weight|bias)$", key):
        return value.flip(0)
    if key == "hw_deconv_layers.0.0.0.weight":
        features = value.shape[0] - 2  # input channels: the features, then (h, w)
        order = list(range(features)) + [features + 1, features]
        return value[order]
    return value


def convert_state_dict(public: Mapping[str, Tensor], config: ModelConfig
                       ) -> dict[str, Tensor]:
    """Our state dict for a public one (prefix-free keys). Every public tensor (but the unused
    fusion MLPs) must map to one of ours with the same shape, and every one of ours must be
    filled; :class:`PublicLayoutError` names the keys otherwise."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation work
        own_shapes = {k: tuple(v.shape) for k, v in BENet(config).state_dict().items()}
    converted: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in public.items():
        try:
            name = own_key(key, config)
        except PublicLayoutError:
            unmapped.append(key)
            continue
        if name is None:
            continue
        if name not in own_shapes:
            unmapped.append(key)
            continue
        if tuple(value.shape) != own_shapes[name]:
            raise PublicLayoutError(f"{key!r} has shape {tuple(value.shape)}; BENet's "
                                    f"{name!r} needs {own_shapes[name]}")
        converted[name] = to_own_tensor(key, value, config)
    missing = sorted(set(own_shapes) - set(converted))
    if unmapped or missing:
        parts = []
        if unmapped:
            parts.append(f"{len(unmapped)} tensor(s) not part of BENet: "
                         f"{', '.join(unmapped[:5])}{' ...' if len(unmapped) > 5 else ''}")
        if missing:
            parts.append(f"{len(missing)} BENet tensor(s) missing: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        raise PublicLayoutError("; ".join(parts))
    return converted


@torch.no_grad()
def reference_outputs(model: BENet, x: Tensor) -> dict[str, Tensor]:
    """``model`` (BENet in the ``benet`` layout) in eval mode on the normalised NCHW tensor
    ``x``, outputs named as BENet's public model names them: ``hm_0, hw_0, bu_0`` (1/4),
    ``hm_1, hw_1, bu_1`` (1/2), ``pc``, ``context`` (classifier logits), and for a model with a
    second category set ``bu_mixed_0, bu_mixed_1``. Box sizes are in the public (height,
    width) order. The model's training mode is restored afterwards."""
    training = model.training
    model.eval()
    try:
        out = model(x)
    finally:
        model.train(training)
    primary, *others = list(model.config.categories)
    named: dict[str, Tensor] = {}
    for index, scale in enumerate(out.scales()):
        named[f"hm_{index}"] = scale.heatmap
        named[f"hw_{index}"] = scale.size.flip(1)
        named[f"bu_{index}"] = scale.emotions[primary]
        if others:
            named[f"bu_mixed_{index}"] = scale.emotions[others[0]]
    if out.person_centric is not None:
        named["pc"] = out.person_centric[primary]
    if out.background is not None:
        named["context"] = out.background[primary]
    return named
