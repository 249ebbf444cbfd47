"""Decoding: network output maps -> people (boxes, detection scores, emotion scores).

The one decode path shared by the ROS node, ``caer-infer`` and the evaluator. It reads the
:class:`~caer_ros.model.output.BENetOutput` contract (raw logits) from the torch model, or the
flat ``name -> array`` dict an ONNX Runtime session gives (see :func:`as_benet_output`).

Steps, each a small function, all vectorised over the batch (no Python loop over pixels or
people):

1. :func:`activate` - sigmoid of the heatmap, emotion and continuous logits; box sizes from map
   pixels to network-input pixels (size * stride) -> :class:`ScoreMaps`.
2. :func:`merge_flipped` - optional flip test: average with the maps of the horizontally
   flipped image, flipped back.
3. :func:`fuse_scales` - optional HigherHRNet-style aggregation of the 1/4 and 1/2 outputs
   (BENet section 3.1): resize to the finest grid (bilinear) and average.
4. :func:`peak_nms` and :func:`top_peaks` - CenterNet peak extraction (Zhou et al. 2019,
   section 4): local maxima by a max-pool, then top-K over the flattened map.
5. :func:`peak_boxes` - box width/height read from the size maps at the peaks (BENet 2.2,
   KA 2.2), centred on the peak cell.
6. :func:`read_people` / :func:`extract_scores` - each person's emotion scores from the emotion
   maps: the mean inside the box (KA section 2.2) or the value at the box centre (BENet
   sections 2.1 and 3.4). Given boxes work the same way (the evaluator passes ground truth).

Map-pixel convention (training targets must use the same, see :func:`center_cells`): a map of
stride ``s`` has cell ``(row i, column j)`` covering network-input pixels
``[j*s, (j+1)*s) x [i*s, (i+1)*s)`` in continuous coordinates (pixel ``k`` covers
``[k, k+1)``). A box centre ``(cx, cy)`` falls in cell ``(floor(cy/s), floor(cx/s))``; a
detected peak at cell ``(i, j)`` decodes to centre ``((j + 0.5) * s, (i + 0.5) * s)``. There is
no offset head, so decoded centres are quantised to the cell centre (error <= s/2).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from caer_ros.model.output import BENetOutput, ScaleOutput

EXTRACTION_MODES: tuple[str, ...] = ("box_mean", "center")
# Keys of a model file's "inference" dict that are not decode settings (read elsewhere).
NON_DECODE_KEYS: tuple[str, ...] = ("emotion_thresholds",)


@dataclass(frozen=True)
class DecodeSettings:
    """How network maps become people. Stored in the model file's ``inference`` dict."""

    detection_threshold: float = 0.3  # keep peaks whose heatmap probability is >= this
    top_k: int = 32  # at most this many people per image (CenterNet's K; model-file default)
    peak_kernel: int = 3  # max-pool window of the peak NMS (odd)
    extraction: str = "box_mean"  # "box_mean" (KA 2.2) or "center" (BENet 2.1)
    fuse_scales: bool = True  # average 1/4 and 1/2 outputs (else the 1/4 output only)
    flip_test: bool = False  # average with the horizontally flipped image's maps

    def __post_init__(self) -> None:
        threshold = self.detection_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise ValueError(f"detection_threshold must be a number, got {threshold!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"detection_threshold must be in [0, 1], got {threshold}")
        object.__setattr__(self, "detection_threshold", float(threshold))
        for name in ("top_k", "peak_kernel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.peak_kernel % 2 == 0:
            raise ValueError(f"peak_kernel must be odd (centred window), got {self.peak_kernel}")
        if self.extraction not in EXTRACTION_MODES:
            raise ValueError(
                f"extraction must be one of {', '.join(EXTRACTION_MODES)}, "
                f"got {self.extraction!r}"
            )
        for name in ("fuse_scales", "flip_test"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DecodeSettings:
        """Settings from a model file's ``inference`` dict; missing keys keep their default.

        Keys in :data:`NON_DECODE_KEYS` are skipped; any other unknown key is an error.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - set(NON_DECODE_KEYS))
        if unknown:
            raise ValueError(
                f"unknown decode setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for the model file)."""
        return dataclasses.asdict(self)


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

    def image(self, index: int) -> ScoreMaps:
        """The maps of one image of the batch, as a batch of one."""
        pick = slice(index, index + 1)
        return ScoreMaps(
            stride=self.stride,
            heatmap=self.heatmap[pick],
            size=self.size[pick],
            emotions={k: v[pick] for k, v in self.emotions.items()},
            continuous=None if self.continuous is None else self.continuous[pick],
        )


@dataclass
class Detections:
    """The people found in one image, sorted by detection score, highest first.

    ``decode`` gives boxes in network-input pixels; a predictor maps them to image pixels with
    :meth:`with_boxes` (``Letterbox.to_original``).
    """

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    detection_scores: np.ndarray  # (N,) float32, heatmap probability at the peak
    scores: np.ndarray  # (N, E) float32 in 0..1, the primary category set
    continuous: np.ndarray | None = None  # (N, 3) valence, arousal, dominance in 0..1
    category_set: str = ""  # name of the primary set ("" when the model has no emotion maps)
    set_scores: dict[str, np.ndarray] = field(default_factory=dict)  # every set, (N, E_set)

    def __len__(self) -> int:
        return len(self.detection_scores)

    def with_boxes(self, boxes: np.ndarray) -> Detections:
        """A copy with other boxes (same people), e.g. mapped to original-image pixels."""
        boxes = np.asarray(boxes, dtype=np.float32)
        if boxes.shape != self.boxes.shape:
            raise ValueError(f"boxes must have shape {self.boxes.shape}, got {boxes.shape}")
        return dataclasses.replace(self, boxes=boxes)


# --------------------------------------------------------------------------- maps


def as_benet_output(output: BENetOutput | Mapping[str, Tensor | np.ndarray]) -> BENetOutput:
    """A :class:`BENetOutput`, or its flat view (``BENetOutput.flat`` names, torch tensors or
    numpy arrays as ONNX Runtime returns them), as a :class:`BENetOutput` of torch tensors.

    Numpy arrays are wrapped without copying (``torch.from_numpy``).
    """
    if isinstance(output, BENetOutput):
        return output
    if not isinstance(output, Mapping):
        raise ValueError(
            f"expected a BENetOutput or a name -> array dict, got {type(output).__name__}"
        )
    flat = {name: _as_tensor(value) for name, value in output.items()}
    if "q.heatmap" not in flat:
        raise ValueError(f"output has no 'q.heatmap' map; names: {', '.join(sorted(flat))}")
    return BENetOutput.from_flat(flat)


def activate(scale: ScaleOutput) -> ScoreMaps:
    """Logits -> probabilities (sigmoid) and sizes map pixels -> input pixels (``* stride``)."""
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
        emotions={name: logits.float().sigmoid() for name, logits in scale.emotions.items()},
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
        if maps.continuous is None
        else mean(maps.continuous, flipped.continuous),
    )


def fuse_scales(scales: Sequence[ScoreMaps]) -> ScoreMaps:
    """Average maps of several strides on the finest grid (HigherHRNet heatmap aggregation).

    Rule: every map is resized bilinearly (``align_corners=False``, consistent with the
    cell-centre convention) to the grid of the smallest stride, then the maps are averaged
    element-wise: heatmaps, sizes (already in input pixels, so units agree), each emotion set
    over the scales that have it, continuous maps likewise. With BENet: the 1/4 maps are
    upsampled x2 and averaged with the 1/2 maps; the result has stride 2.
    """
    if not scales:
        raise ValueError("fuse_scales needs at least one scale")
    if len(scales) == 1:
        return scales[0]
    finest = min(scales, key=lambda m: m.stride)
    grid = tuple(finest.heatmap.shape[-2:])

    def resized(t: Tensor) -> Tensor:
        if tuple(t.shape[-2:]) == grid:
            return t
        return F.interpolate(t, size=grid, mode="bilinear", align_corners=False)

    def mean(maps: list[Tensor]) -> Tensor:
        if len(maps) == 1:
            return resized(maps[0])
        total = torch.add(resized(maps[0]), resized(maps[1]))  # a new tensor: update in place
        for t in maps[2:]:
            total.add_(resized(t))
        return total.mul_(1.0 / len(maps))

    names = list(dict.fromkeys(name for m in scales for name in m.emotions))
    continuous = [m.continuous for m in scales if m.continuous is not None]
    return ScoreMaps(
        stride=finest.stride,
        heatmap=mean([m.heatmap for m in scales]),
        size=mean([m.size for m in scales]),
        emotions={n: mean([m.emotions[n] for m in scales if n in m.emotions]) for n in names},
        continuous=mean(continuous) if continuous else None,
    )


def score_maps(
    output: BENetOutput | Mapping[str, Tensor | np.ndarray],
    settings: DecodeSettings,
    flipped: BENetOutput | Mapping[str, Tensor | np.ndarray] | None = None,
) -> ScoreMaps:
    """Steps 1-3: activation, flip merge (if ``flipped`` is given) and scale fusion.

    ``flipped`` is the network output for the horizontally flipped input; it is required when
    ``settings.flip_test`` is on (the caller decides what to run, decode only merges).
    """
    if settings.flip_test and flipped is None:
        raise ValueError("flip_test is on: pass the output for the horizontally flipped input")
    output = as_benet_output(output)
    chosen = output.scales() if settings.fuse_scales else [output.quarter]
    maps = [activate(s) for s in chosen]
    if flipped is not None:
        flipped = as_benet_output(flipped)
        flipped_chosen = flipped.scales() if settings.fuse_scales else [flipped.quarter]
        if len(flipped_chosen) != len(chosen):
            raise ValueError("flipped output has a different number of scales")
        maps = [merge_flipped(m, activate(f)) for m, f in zip(maps, flipped_chosen, strict=True)]
    return fuse_scales(maps)


# --------------------------------------------------------------------------- peaks and boxes


def peak_nms(heatmap: Tensor, kernel: int = 3) -> Tensor:
    """CenterNet's NMS: keep values that are the maximum of their ``kernel`` window, zero others.

    ``heatmap``: (B, 1, h, w) probabilities. Equal neighbours (plateaus) are all kept.
    """
    if kernel == 1:
        return heatmap
    pooled = F.max_pool2d(heatmap, kernel, stride=1, padding=kernel // 2)
    return heatmap * (pooled == heatmap)


def top_peaks(heatmap: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``k`` values of each (B, 1, h, w) map (CenterNet ``torch.topk`` over the flat map).

    Returns ``scores, rows, cols``, each (B, K) with ``K = min(k, h * w)``, scores descending.
    """
    batch, _, _, width = heatmap.shape
    flat = heatmap.reshape(batch, -1)
    scores, index = flat.topk(min(k, flat.shape[1]), dim=1)
    return scores, torch.div(index, width, rounding_mode="floor"), index % width


def cell_centers(rows: Tensor, cols: Tensor, stride: float) -> tuple[Tensor, Tensor]:
    """Network-input coordinates ``(cx, cy)`` of the centres of map cells ``(rows, cols)``."""
    return (cols.float() + 0.5) * stride, (rows.float() + 0.5) * stride


def center_cells(
    cx: Tensor, cy: Tensor, stride: float, height: int, width: int
) -> tuple[Tensor, Tensor]:
    """Map cell ``(rows, cols)`` containing input point ``(cx, cy)``, clamped to the map.

    The inverse of :func:`cell_centers`; training puts a person's heatmap peak, size and
    emotion targets at this cell (BENet 3.4: the box centre).
    """
    cols = torch.floor(cx / stride).long().clamp(0, width - 1)
    rows = torch.floor(cy / stride).long().clamp(0, height - 1)
    return rows, cols


def peak_boxes(size: Tensor, rows: Tensor, cols: Tensor, stride: float) -> Tensor:
    """Boxes (B, K, 4) x1, y1, x2, y2 in input pixels for peaks at ``(rows, cols)`` (B, K).

    Centre: the peak cell's centre; width, height: the size maps (input pixels, clamped >= 0)
    at the peak (CenterNet box regression without the offset head).
    """
    batch, _, _, width = size.shape
    index = (rows * width + cols)[:, None, :].expand(batch, 2, -1)
    wh = size.reshape(batch, 2, -1).gather(2, index).clamp_min(0.0)  # (B, 2, K)
    cx, cy = cell_centers(rows, cols, stride)
    half_w, half_h = wh[:, 0] * 0.5, wh[:, 1] * 0.5
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


# --------------------------------------------------------------------------- emotion scores


def box_cells(boxes: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Map cells covered by boxes given in map pixels: ``x0, y0, x1, y1`` (ends exclusive).

    Rule: a cell belongs to the box when its centre does, ``x1_box <= j + 0.5 < x2_box``
    (same for rows). A box covering no cell centre (thin or tiny) gets the one cell containing
    its centre. Then everything is clamped to the map, keeping at least one cell, so a box
    partly or wholly outside the map reads the nearest cells.
    """
    bx0, by0, bx1, by1 = boxes.unbind(-1)

    def span(lo: Tensor, hi: Tensor, size: int) -> tuple[Tensor, Tensor]:
        start = torch.ceil(lo - 0.5)
        stop = torch.ceil(hi - 0.5)
        empty = stop <= start
        middle = torch.floor((lo + hi) * 0.5)
        start = torch.where(empty, middle, start).clamp(0, size - 1).long()
        stop = torch.where(empty, middle + 1, stop).long()
        stop = torch.maximum(stop, start + 1).clamp(max=size)
        return start, stop

    x0, x1 = span(bx0, bx1, width)
    y0, y1 = span(by0, by1, height)
    return x0, y0, x1, y1


def box_mean(maps: Tensor, boxes: Tensor) -> Tensor:
    """Mean of each map inside each box (KA section 2.2): (B, C, h, w), (B, K, 4) -> (B, K, C).

    ``boxes`` are in map pixels; cells per :func:`box_cells`. Vectorised with an integral image
    (float64 cumulative sums) and four look-ups per box; differentiable, so training can use it.
    """
    batch, channels, height, width = maps.shape
    x0, y0, x1, y1 = box_cells(boxes, height, width)
    # integral[..., i, j] = sum of maps[..., :i, :j]; built in place (large CPU allocations
    # cost more than the sums themselves).
    integral = maps.new_zeros((batch, channels, height + 1, width + 1), dtype=torch.float64)
    integral[..., 1:, 1:] = maps
    integral = integral.cumsum_(-1).cumsum_(-2).reshape(batch, channels, -1)

    def at(rows: Tensor, cols: Tensor) -> Tensor:  # (B, K) -> (B, C, K)
        index = (rows * (width + 1) + cols)[:, None, :].expand(batch, channels, -1)
        return integral.gather(2, index)

    total = at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)
    area = ((x1 - x0) * (y1 - y0)).double()[:, None, :]
    return (total / area).to(maps.dtype).transpose(1, 2)


def center_value(maps: Tensor, boxes: Tensor) -> Tensor:
    """Map values at the cell of each box centre (BENet 2.1): (B, C, h, w), (B, K, 4) -> (B, K, C).

    ``boxes`` are in map pixels (stride 1 for :func:`center_cells`).
    """
    batch, channels, height, width = maps.shape
    cx = (boxes[..., 0] + boxes[..., 2]) * 0.5
    cy = (boxes[..., 1] + boxes[..., 3]) * 0.5
    rows, cols = center_cells(cx, cy, 1.0, height, width)
    index = (rows * width + cols)[:, None, :].expand(batch, channels, -1)
    return maps.reshape(batch, channels, -1).gather(2, index).transpose(1, 2)


def extract_scores(
    maps: Tensor | np.ndarray,
    boxes: Tensor | np.ndarray,
    mode: str = "box_mean",
    stride: float = 1.0,
) -> Tensor | np.ndarray:
    """Per-box values of maps: ``mode`` "box_mean" (:func:`box_mean`) or "center".

    ``maps`` (B, C, h, w) with ``boxes`` (B, K, 4), or one image: (C, h, w) with (K, 4).
    ``boxes`` are x1, y1, x2, y2 in pixels of an input ``stride`` times finer than the map
    (``stride=1``: map pixels). Returns (B, K, C) or (K, C), numpy if ``maps`` was numpy.
    """
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"mode must be one of {', '.join(EXTRACTION_MODES)}, got {mode!r}")
    as_numpy = isinstance(maps, np.ndarray)
    maps_t = _as_tensor(maps)
    boxes_t = _as_tensor(boxes).to(device=maps_t.device, dtype=torch.float32)
    single = maps_t.ndim == 3
    if single:
        maps_t, boxes_t = maps_t[None], boxes_t[None]
    if maps_t.ndim != 4 or boxes_t.ndim != 3 or boxes_t.shape[-1] != 4:
        raise ValueError(
            "expected maps (B, C, h, w) with boxes (B, K, 4), or (C, h, w) with (K, 4); got "
            f"{tuple(_as_tensor(maps).shape)} and {tuple(_as_tensor(boxes).shape)}"
        )
    if boxes_t.shape[0] != maps_t.shape[0]:
        raise ValueError(f"{boxes_t.shape[0]} box sets for a batch of {maps_t.shape[0]} maps")
    boxes_t = boxes_t / float(stride)
    values = box_mean(maps_t, boxes_t) if mode == "box_mean" else center_value(maps_t, boxes_t)
    if single:
        values = values[0]
    return values.detach().cpu().numpy() if as_numpy else values


def read_people(
    maps: ScoreMaps, boxes: Tensor, mode: str = "box_mean"
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Emotion and continuous scores of people with ``boxes`` (B, K, 4) in input pixels.

    Returns ``{set name: (B, K, E)}`` and (B, K, 3) or None. Used for decoded boxes and, by the
    evaluator, for ground-truth boxes (ER mAP: predictions read with the annotated boxes).
    """
    emotions = {
        name: extract_scores(m, boxes, mode, maps.stride) for name, m in maps.emotions.items()
    }
    continuous = None
    if maps.continuous is not None:
        continuous = extract_scores(maps.continuous, boxes, mode, maps.stride)
    return emotions, continuous


# --------------------------------------------------------------------------- decode


@torch.no_grad()
def decode(
    output: BENetOutput | Mapping[str, Tensor | np.ndarray],
    settings: DecodeSettings | None = None,
    *,
    flipped: BENetOutput | Mapping[str, Tensor | np.ndarray] | None = None,
    primary_set: str | None = None,
) -> list[Detections]:
    """Network output for a batch -> one :class:`Detections` per image (network-input pixels).

    ``primary_set`` names the category set of ``Detections.scores`` (default: the first one);
    ``flipped`` is the output for the horizontally flipped batch (flip test).
    """
    settings = settings or DecodeSettings()
    maps = score_maps(output, settings, flipped)
    if primary_set is None:
        primary_set = next(iter(maps.emotions), "")
    elif primary_set not in maps.emotions:
        raise ValueError(
            f"no emotion maps for category set {primary_set!r}; the model has: "
            f"{', '.join(maps.emotions) or 'none'}"
        )
    peaks = peak_nms(maps.heatmap, settings.peak_kernel)
    scores, rows, cols = top_peaks(peaks, settings.top_k)
    boxes = peak_boxes(maps.size, rows, cols, maps.stride)
    emotions, continuous = read_people(maps, boxes, settings.extraction)
    counts = (scores >= settings.detection_threshold).sum(1).tolist()  # scores are sorted
    return _split(counts, boxes, scores, emotions, continuous, primary_set)


def _split(
    counts: list[int],
    boxes: Tensor,
    scores: Tensor,
    emotions: dict[str, Tensor],
    continuous: Tensor | None,
    primary_set: str,
) -> list[Detections]:
    """Batch tensors (B, K, ...) -> per-image Detections holding the first ``counts[b]`` peaks."""

    def numpy(t: Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    boxes_np, scores_np = numpy(boxes), numpy(scores)
    emotions_np = {name: numpy(v) for name, v in emotions.items()}
    continuous_np = None if continuous is None else numpy(continuous)
    result = []
    for b, n in enumerate(counts):
        sets = {name: v[b, :n] for name, v in emotions_np.items()}
        result.append(
            Detections(
                boxes=boxes_np[b, :n],
                detection_scores=scores_np[b, :n],
                scores=sets.get(primary_set, np.zeros((n, 0), np.float32)),
                continuous=None if continuous_np is None else continuous_np[b, :n],
                category_set=primary_set,
                set_scores=sets,
            )
        )
    return result


def labels_over_threshold(
    scores: np.ndarray, categories: Sequence[str], thresholds: float | Sequence[float]
) -> list[list[str]]:
    """Per person, the category names whose score is >= their threshold, highest score first.

    ``scores``: (N, E); ``thresholds``: one float for all categories or one per category.
    Ties keep the category order.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(categories):
        raise ValueError(
            f"scores must be (N, {len(categories)}) for {len(categories)} categories, "
            f"got {s.shape}"
        )
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(len(categories), float(t))
    elif t.shape != (len(categories),):
        raise ValueError(
            f"thresholds must be one number or one per category ({len(categories)}), "
            f"got {t.shape[0] if t.ndim == 1 else t.shape}"
        )
    order = np.argsort(-s, axis=1, kind="stable")
    passed = np.take_along_axis(s, order, axis=1) >= t[order]
    return [[categories[j] for j in order[n][passed[n]]] for n in range(s.shape[0])]


def _as_tensor(value: Tensor | np.ndarray) -> Tensor:
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))
