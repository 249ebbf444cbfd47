"""The inference graph: BENet plus the map-wide steps of decoding, as one torch module.

:class:`InferenceGraph` runs in the torch backend and is what ``caer_ros.export`` writes to
ONNX, so the same code does the per-pixel work in both backends (in ONNX Runtime on all cores).
Its steps (each a small function here):

1. :func:`map_outputs` - BENet's detection and emotion-map heads only (the person-centric and
   background classifiers serve training, BENet section 2.3; the person-centric one also
   serves BU+PC fusion, step 6). With ``fuse_scales`` off, the *fast head mode*: the heads'
   1/2-resolution branches (deconvolutions and their blocks, about a third of BENet's FLOPs)
   are not computed at all, and everything is read from the 1/4 outputs.
2. :func:`activate` - sigmoid of the heatmap, emotion and continuous logits (a softmax over
   the categories for the emotion sets the model scores that way, ``ModelConfig.scores``: sets
   trained with cross-entropy); box sizes from map pixels to network-input pixels
   (size * stride) -> :class:`ScoreMaps`.
3. :func:`fuse_scales` - HigherHRNet-style aggregation of the 1/4 and 1/2 outputs (BENet
   section 3.1): resize to the finest grid (bilinear) and average. With ``fuse_upsample``
   ``logits`` (BENet's public code) the 1/4 *logits* are resized and then activated
   (:func:`resized_logits`), otherwise the probabilities of step 2 are.
4. :func:`merge_flipped` - flip test: average with the maps of the horizontally flipped image,
   flipped back (the graph runs the image and its mirror as one batch; :func:`score_maps`
   says in which order 3 and 4 run).
5. :func:`column_sums` - prefix sums of the emotion and continuous maps down the rows, so the
   host reads the mean of a box from two rows instead of summing the whole box
   (:mod:`caer_ros.inference.decode`); with ``peak_resolution`` ``input`` the heatmap and the
   sizes are upsampled bilinearly to the network input's resolution (:func:`at_input`), where
   the host searches the peaks (the emotion maps stay on the fused grid: the host reads them
   at a peak by the same bilinear rule).
6. :func:`person_centric_scores` - only with ``settings.fusion == "mean"``: the probabilities
   (sigmoid or softmax, as in step 2) of the person-centric head's logits for each image of
   the batch (with the flip test, averaged with the mirrored image's). The predictor runs the
   graph a second time on the people's crops and averages these with the bottom-up scores
   (:mod:`caer_ros.inference.fusion`).

Outputs (:func:`output_names`), for a batch of B images and the grid ``(h, w)`` of the output
stride (2 when the 1/4 and 1/2 maps are fused, else 4; :func:`output_stride`):

- ``heatmap`` (B, 1, h', w'): person-centre probability, on the grid ``(h, w)`` or, with
  ``peak_resolution`` ``input``, on the network input's ``(H, W)`` (:func:`peak_stride`);
- ``size`` (B, 2, h', w'): box width and height in network-input pixels, on the heatmap's grid;
- ``emotion_sums.<set>`` (B, E, h + 1, w): row ``i`` holds the sum of the emotion
  probabilities of rows ``< i`` (row 0 is zero; the maps are the row differences);
- ``continuous_sums`` (B, 3, h + 1, w): the same for valence, arousal, dominance (if any);
- ``pc_scores.<set>`` (B, E): person-centric probabilities of each image taken as one
  person's crop (only with ``fusion`` ``mean``).

The :data:`GRAPH_SETTINGS` shape the graph and are fixed when it is exported (``resize`` too:
a ``short_side`` model is exported with a dynamic input height and width, a ``letterbox`` one
with its fixed ``input_size``); every other setting (thresholds, top-K, peak window,
extraction, the short side) is read on the host at run time. Every resize of the graph is by
an integer factor (``scale_factor``), so an exported graph takes any input size the network
does.

The output names, the strides and :data:`GRAPH_SETTINGS` are defined without torch in
:mod:`caer_ros.inference.graph_outputs` (what the host side of an ONNX model reads) and are
the same objects here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caer_ros.inference.graph_outputs import (
    CONTINUOUS_SUMS,
    EMOTION_SUMS,
    HEATMAP,
    PC_SCORES,
    SIZE,
    output_names,
    output_stride,
    peak_stride,
)
from caer_ros.inference.graph_outputs import GRAPH_SETTINGS as GRAPH_SETTINGS  # re-exported
from caer_ros.model.inference_settings import InferenceSettings
from caer_ros.model.network import BENet
from caer_ros.model.output import BENetOutput, ScaleOutput


@dataclass
class ScoreMaps:
    """Activated maps at one resolution: what peaks and scores are read from.

    Unlike :class:`~caer_ros.model.output.ScaleOutput` (logits, sizes in map pixels), these hold
    probabilities in 0..1 and box sizes in network-input pixels, so maps of different strides
    and of the flipped image can be averaged.
    """

    stride: int  # input pixels per map pixel
    heatmap: Tensor  # (B, 1, h, w) person-centre probability
    size: Tensor  # (B, 2, h, w) box width, height in network-input pixels
    emotions: dict[str, Tensor]  # category-set name -> (B, E, h, w) probabilities
    continuous: Tensor | None = None  # (B, 3, h, w) valence, arousal, dominance in 0..1


# --------------------------------------------------------------------------- steps


def map_outputs(model: BENet, images: Tensor, half: bool = True) -> BENetOutput:
    """BENet's map outputs (detection and emotion heads) without the classification heads;
    ``half=False``: without the 1/2-resolution branches too (the fast head mode)."""
    return model(images, classifiers=False, half=half)


def person_centric_scores(model: BENet, output: BENetOutput) -> dict[str, Tensor]:
    """Step 6: the person-centric head on the backbone features of ``output`` (computed by
    :func:`map_outputs`, so the backbone runs once), as probabilities: set name -> (B, E)."""
    if model.person_centric is None:
        raise ValueError("the model has no person-centric head (ModelConfig.person_centric)")
    softmax = model.config.softmax_sets
    return {name: probabilities(logits, name in softmax)
            for name, logits in model.person_centric(output.features).items()}


def probabilities(logits: Tensor, softmax: bool) -> Tensor:
    """Emotion logits (B, E, ...) -> scores in float32: a softmax over the E categories
    (``softmax``: a set trained with cross-entropy, one category per person) or a sigmoid per
    category."""
    return logits.float().softmax(dim=1) if softmax else logits.float().sigmoid()


def as_benet_output(output: BENetOutput | Mapping[str, Tensor | np.ndarray]) -> BENetOutput:
    """A :class:`BENetOutput`, or its flat view (``BENetOutput.flat`` names, torch tensors or
    numpy arrays), as a :class:`BENetOutput` of torch tensors (numpy wrapped without copying).
    """
    if isinstance(output, BENetOutput):
        return output
    if not isinstance(output, Mapping):
        raise ValueError(
            f"expected a BENetOutput or a name -> array dict, got {type(output).__name__}"
        )
    flat = {name: as_tensor(value) for name, value in output.items()}
    if "q.heatmap" not in flat:
        raise ValueError(f"output has no 'q.heatmap' map; names: {', '.join(sorted(flat))}")
    return BENetOutput.from_flat(flat)


def activate(scale: ScaleOutput, softmax: Collection[str] = ()) -> ScoreMaps:
    """Logits -> probabilities and sizes map pixels -> input pixels (``* stride``). The emotion
    sets named in ``softmax`` get a softmax over their categories at each pixel, every other
    map a sigmoid."""
    heatmap = scale.heatmap.float()
    if heatmap.ndim != 4 or heatmap.shape[1] != 1:
        raise ValueError(f"heatmap must be (B, 1, h, w), got {tuple(heatmap.shape)}")
    batch, _, height, width = heatmap.shape
    expected = {"size": (batch, 2, height, width)}
    maps = {"size": scale.size}
    for name, logits in scale.emotions.items():
        expected[f"emotions.{name}"] = (batch, logits.shape[1], height, width)
        maps[f"emotions.{name}"] = logits
    if scale.continuous is not None:
        expected["continuous"] = (batch, 3, height, width)
        maps["continuous"] = scale.continuous
    for name, shape in expected.items():
        if tuple(maps[name].shape) != shape:
            raise ValueError(
                f"stride-{scale.stride} {name} map must be {shape} like the heatmap, "
                f"got {tuple(maps[name].shape)}"
            )
    return ScoreMaps(
        stride=int(scale.stride),
        heatmap=heatmap.sigmoid(),
        size=scale.size.float() * float(scale.stride),
        emotions={name: probabilities(logits, name in softmax)
                  for name, logits in scale.emotions.items()},
        continuous=None if scale.continuous is None else scale.continuous.float().sigmoid(),
    )


def merge_flipped(maps: ScoreMaps, flipped: ScoreMaps) -> ScoreMaps:
    """Flip test: average ``maps`` with the maps of the horizontally flipped input, flipped back.

    Width and height need no sign change (they are sizes, not offsets); heatmap, emotion and
    continuous maps are only mirrored back. Exact when the input width is a multiple of the
    stride (map column ``j`` of the flipped image is then column ``w - 1 - j`` of the original).
    """
    if maps.heatmap.shape != flipped.heatmap.shape or maps.stride != flipped.stride:
        raise ValueError(
            f"flipped maps {tuple(flipped.heatmap.shape)} (stride {flipped.stride}) do not match "
            f"{tuple(maps.heatmap.shape)} (stride {maps.stride})"
        )
    if set(maps.emotions) != set(flipped.emotions) or (
        (maps.continuous is None) != (flipped.continuous is None)
    ):
        raise ValueError("flipped output has different emotion/continuous maps")

    def mean(a: Tensor, b: Tensor) -> Tensor:
        return torch.add(a, b.flip(-1)).mul_(0.5)

    return ScoreMaps(
        stride=maps.stride,
        heatmap=mean(maps.heatmap, flipped.heatmap),
        size=mean(maps.size, flipped.size),
        emotions={k: mean(v, flipped.emotions[k]) for k, v in maps.emotions.items()},
        continuous=None
        if maps.continuous is None or flipped.continuous is None
        else mean(maps.continuous, flipped.continuous),
    )


def fuse_scales(scales: Sequence[ScoreMaps], sizes: str = "mean") -> ScoreMaps:
    """Average maps of several strides on the finest grid (HigherHRNet heatmap aggregation).

    Rule: every map is resized bilinearly (``align_corners=False``, consistent with the
    cell-centre convention) to the grid of the smallest stride, then the maps are averaged
    element-wise: heatmaps, each emotion set over the scales that have it, continuous maps
    likewise. Box sizes (already in input pixels, so units agree) are averaged too with
    ``sizes="mean"``; with ``sizes="quarter"`` they are the coarsest scale's alone, resized
    (BENet's public code: the 1/4 sizes, doubled into 1/2-map pixels). With BENet: the 1/4
    maps are upsampled x2 and averaged with the 1/2 maps; the result has stride 2.
    """
    if not scales:
        raise ValueError("fuse_scales needs at least one scale")
    if len(scales) == 1:
        return scales[0]
    finest = min(scales, key=lambda m: m.stride).stride

    def mean(pairs: list[tuple[Tensor, int]]) -> Tensor:
        if len(pairs) == 1:
            return upsampled(*pairs[0], finest)
        total = torch.add(upsampled(*pairs[0], finest), upsampled(*pairs[1], finest))
        for t, stride in pairs[2:]:  # ``total`` is a new tensor: update in place
            total.add_(upsampled(t, stride, finest))
        return total.mul_(1.0 / len(pairs))

    names = list(dict.fromkeys(name for m in scales for name in m.emotions))
    continuous = [(m.continuous, m.stride) for m in scales if m.continuous is not None]
    coarsest = max(scales, key=lambda m: m.stride)  # the first (1/4) of equal strides
    return ScoreMaps(
        stride=finest,
        heatmap=mean([(m.heatmap, m.stride) for m in scales]),
        size=mean([(m.size, m.stride) for m in scales]) if sizes == "mean"
        else upsampled(coarsest.size, coarsest.stride, finest),
        emotions={n: mean([(m.emotions[n], m.stride) for m in scales if n in m.emotions])
                  for n in names},
        continuous=mean(continuous) if continuous else None,
    )


def upsampled(maps: Tensor, stride: int, target: int) -> Tensor:
    """(B, C, h, w) maps of ``stride`` bilinearly resized (``align_corners=False``, the
    cell-centre convention) to the grid of the finer ``target`` stride: by the integer factor
    ``stride / target`` (a ``scale_factor``, so an exported graph keeps dynamic sizes)."""
    if stride == target:
        return maps
    if stride % target:
        raise ValueError(f"cannot resize stride-{stride} maps to stride {target}: not a "
                         f"whole factor")
    return F.interpolate(maps, scale_factor=stride // target, mode="bilinear",
                         align_corners=False)


def resized_logits(scale: ScaleOutput, stride: int) -> ScaleOutput:
    """``scale``'s logits resized to the grid of the finer ``stride`` (:func:`upsampled`),
    box sizes converted to that grid's pixels: what BENet's public code fuses (it upsamples
    the 1/4 logits, then applies the sigmoid)."""
    factor = scale.stride / stride
    return ScaleOutput(
        stride=stride,
        heatmap=upsampled(scale.heatmap, scale.stride, stride),
        size=upsampled(scale.size, scale.stride, stride) * factor,
        emotions={k: upsampled(v, scale.stride, stride) for k, v in scale.emotions.items()},
        continuous=None if scale.continuous is None
        else upsampled(scale.continuous, scale.stride, stride),
    )


def score_maps(
    output: BENetOutput | Mapping[str, Tensor | np.ndarray],
    settings: InferenceSettings,
    flipped: BENetOutput | Mapping[str, Tensor | np.ndarray] | None = None,
    softmax: Collection[str] = (),
) -> ScoreMaps:
    """Steps 2-4: activation, scale fusion and the flip merge (if ``flipped`` is given).

    ``flipped`` is the network output for the horizontally flipped input; it is required when
    ``settings.flip_test`` is on. ``softmax``: the emotion sets scored with a softmax
    (``ModelConfig.softmax_sets``). Probabilities are linear from step 2 on, so the order of
    fusion and flip merge is free: each scale is merged first (bit for bit what files written
    before ``fuse_upsample`` existed gave); with ``fuse_upsample`` ``logits`` each pass is fused
    first, as BENet's public code does (the sigmoid comes after the upsampling).
    """
    if settings.flip_test and flipped is None:
        raise ValueError("flip_test is on: pass the output for the horizontally flipped input")
    output = as_benet_output(output)
    mirrored = None if flipped is None else as_benet_output(flipped)
    if settings.fuse_upsample == "logits":
        maps = fused_pass(output, settings, softmax)
        return maps if mirrored is None else \
            merge_flipped(maps, fused_pass(mirrored, settings, softmax))
    chosen = output.scales() if settings.fuse_scales else [output.quarter]
    maps = [activate(s, softmax) for s in chosen]
    if mirrored is not None:
        mirrored_chosen = mirrored.scales() if settings.fuse_scales else [mirrored.quarter]
        if len(mirrored_chosen) != len(chosen):
            raise ValueError("flipped output has a different number of scales")
        maps = [merge_flipped(m, activate(f, softmax))
                for m, f in zip(maps, mirrored_chosen, strict=True)]
    return fuse_scales(maps, settings.fuse_sizes)


def fused_pass(output: BENetOutput, settings: InferenceSettings, softmax: Collection[str] = ()
               ) -> ScoreMaps:
    """Steps 2-3 for one pass of the network: each scale activated, then fused on the
    finest grid (``fuse_upsample``: the coarser logits upsampled before the activation, or
    its probabilities after it)."""
    chosen = output.scales() if settings.fuse_scales else [output.quarter]
    if settings.fuse_upsample == "logits" and len(chosen) > 1:
        finest = min(s.stride for s in chosen)
        chosen = [resized_logits(s, finest) for s in chosen]
    return fuse_scales([activate(s, softmax) for s in chosen], settings.fuse_sizes)


def at_input(maps: ScoreMaps) -> tuple[Tensor, Tensor]:
    """The heatmap and sizes of ``maps`` bilinearly upsampled to the network input's
    resolution (stride 1): where BENet's public code searches the peaks."""
    return upsampled(maps.heatmap, maps.stride, 1), upsampled(maps.size, maps.stride, 1)


def prefix_rows(maps: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C, h + 1, w): row ``i`` is the sum of rows ``< i`` (row 0 zero)."""
    return F.pad(maps, (0, 0, 1, 0)).cumsum(2)


def column_sums(maps: ScoreMaps, peaks_at_input: bool = False) -> dict[str, Tensor]:
    """Step 5: the graph's named outputs (module docstring) from fused, activated maps;
    ``peaks_at_input``: heatmap and sizes at the input's resolution (:func:`at_input`)."""
    heatmap, size = at_input(maps) if peaks_at_input else (maps.heatmap, maps.size)
    out = {HEATMAP: heatmap, SIZE: size}
    for name, probabilities in maps.emotions.items():
        out[EMOTION_SUMS + name] = prefix_rows(probabilities)
    if maps.continuous is not None:
        out[CONTINUOUS_SUMS] = prefix_rows(maps.continuous)
    return out


# --------------------------------------------------------------------------- the module


class InferenceGraph(nn.Module):
    """BENet followed by steps 2-5: normalised images (B, 3, H, W) -> a tuple of tensors named
    :attr:`output_names` (:meth:`outputs` gives them as a dict).

    The graph holds ``model`` (no copy); the :data:`GRAPH_SETTINGS` of ``settings`` are read
    once here.
    """

    def __init__(self, model: BENet, settings: InferenceSettings) -> None:
        super().__init__()
        self.fusion = settings.fusion == "mean"
        if self.fusion and model.person_centric is None:
            raise ValueError(f"fusion {settings.fusion!r} needs the person-centric head, and "
                             f"this model has none")
        self.model = model
        self.settings = settings
        self.stride = output_stride(model.config, settings)
        self.peak_stride = peak_stride(model.config, settings)
        self.output_names = output_names(model.config, settings)
        self.softmax = model.config.softmax_sets  # read once, not per frame

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        batch = images.shape[0]
        flip = self.settings.flip_test
        raw = map_outputs(self.model, torch.cat([images, images.flip(-1)]) if flip else images,
                          half=self.settings.fuse_scales)
        every = raw.flat()
        if flip:
            output = {k: v[:batch] for k, v in every.items()}
            flipped: dict[str, Tensor] | None = {k: v[batch:] for k, v in every.items()}
        else:
            output, flipped = every, None
        named = column_sums(score_maps(output, self.settings, flipped, self.softmax),
                            self.peak_stride == 1)
        if self.fusion:
            for name, scores in person_centric_scores(self.model, raw).items():
                named[PC_SCORES + name] = torch.add(scores[:batch], scores[batch:]).mul_(0.5) \
                    if flip else scores
        return tuple(named[name] for name in self.output_names)

    def outputs(self, images: Tensor) -> dict[str, Tensor]:
        """:meth:`forward` as a name -> tensor dict."""
        return dict(zip(self.output_names, self(images), strict=True))


def as_tensor(value: Tensor | np.ndarray) -> Tensor:
    """A torch tensor sharing ``value``'s memory where possible."""
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))
