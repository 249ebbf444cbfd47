"""Decoding, host side: the inference graph's maps -> people (boxes, detection and emotion scores).

The one decode path shared by the ROS node, ``caer-infer`` and the evaluator. The map-wide work
(activation, flip test, scale fusion, row prefix sums) runs inside the network's graph
(:mod:`caer_ros.inference.graph`, in torch or ONNX Runtime); what is left here is small and
per-person, in numpy and OpenCV, one image at a time:

1. :func:`peak_nms` and :func:`top_peaks` - CenterNet peak extraction (Zhou et al. 2019,
   section 4): local maxima (a grey dilation, i.e. a stride-1 max-pool), then the top-K above
   the detection threshold.
2. :func:`peak_boxes` - box width/height read from the size map at the peaks (BENet 2.2,
   KA 2.2), centred on the peak cell; on an input-resolution heatmap (``peak_resolution``
   ``input``) :func:`pixel_boxes`, BENet's public rule: whole-pixel corners.
3. :func:`read_people` / :func:`read_scores` - each person's emotion scores from the emotion
   maps: the mean inside the box (KA section 2.2) or the value at the person's centre, the
   peak (BENet sections 2.1 and 3.4; with input-resolution peaks, the value the maps'
   bilinear upsampling to the input has there: :func:`point_values`). Given boxes work the
   same way, read at their centres (the evaluator passes ground truth).

:func:`find_people` runs 1-3 on a :class:`SummedMaps` (the tests' torch-side reference
decoder, ``test/helpers/torch_decode.py``, runs the graph's steps in torch before it).

Map-pixel convention (training targets must use the same, see :func:`center_cells`): a map of
stride ``s`` has cell ``(row i, column j)`` covering network-input pixels
``[j*s, (j+1)*s) x [i*s, (i+1)*s)`` in continuous coordinates (pixel ``k`` covers
``[k, k+1)``). A box centre ``(cx, cy)`` falls in cell ``(floor(cy/s), floor(cx/s))``; a
detected peak at cell ``(i, j)`` decodes to centre ``((j + 0.5) * s, (i + 0.5) * s)``. There is
no offset head, so decoded centres are quantised to the cell centre (error <= s/2).

Box mean: a box covers the cells whose centre lies inside it (:func:`box_cells`). With the
row prefix sums ``S`` of a map (``S[i] = sum of rows < i``), the box's column sums are
``S[y1] - S[y0]`` (two rows per person), summed over the box's columns: the cost grows with
the box width, not its area.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from caer_ros.inference.graph_outputs import (
    CONTINUOUS_SUMS,
    EMOTION_SUMS,
    HEATMAP,
    SIZE,
)
from caer_ros.inference.preprocess import Letterbox
from caer_ros.model.inference_settings import EXTRACTIONS, InferenceSettings

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class SummedMaps:
    """The inference graph's outputs for a batch, as numpy arrays (see
    :mod:`caer_ros.inference.graph`): what people are read from."""

    stride: int  # network-input pixels per cell of the heatmap and size maps
    heatmap: np.ndarray  # (B, 1, h, w) person-centre probability
    size: np.ndarray  # (B, 2, h, w) box width, height in network-input pixels
    emotion_sums: dict[str, np.ndarray]  # set name -> (B, E, h_e + 1, w_e) row prefix sums
    continuous_sums: np.ndarray | None = None  # (B, 3, h_e + 1, w_e) row prefix sums
    # network-input pixels per cell of the emotion and continuous maps (None: ``stride``)
    emotion_stride: int | None = None

    def __post_init__(self) -> None:
        if self.emotion_stride is None:
            self.emotion_stride = self.stride

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray | Tensor], stride: int,
                     emotion_stride: int | None = None) -> SummedMaps:
        """Wrap the graph's named outputs (numpy arrays, or torch tensors on any device);
        ``stride`` is the heatmap's, ``emotion_stride`` the emotion maps' (default the same).
        """
        arrays = {name: as_numpy(value) for name, value in outputs.items()}
        missing = [name for name in (HEATMAP, SIZE) if name not in arrays]
        if missing:
            raise ValueError(f"graph outputs lack {missing}; got {sorted(arrays)}")
        maps = cls(
            stride=int(stride),
            heatmap=arrays[HEATMAP],
            size=arrays[SIZE],
            emotion_sums={name[len(EMOTION_SUMS):]: value for name, value in arrays.items()
                          if name.startswith(EMOTION_SUMS)},
            continuous_sums=arrays.get(CONTINUOUS_SUMS),
            emotion_stride=int(emotion_stride or stride),
        )
        maps._check()
        return maps

    @property
    def batch(self) -> int:
        return self.heatmap.shape[0]

    def image(self, index: int) -> SummedMaps:
        """The maps of one image of the batch, as a batch of one (views, no copies)."""
        pick = slice(index, index + 1)
        return SummedMaps(
            stride=self.stride,
            heatmap=self.heatmap[pick],
            size=self.size[pick],
            emotion_sums={k: v[pick] for k, v in self.emotion_sums.items()},
            continuous_sums=None if self.continuous_sums is None else self.continuous_sums[pick],
            emotion_stride=self.emotion_stride,
        )

    def emotion_maps(self, name: str) -> np.ndarray:
        """The (B, E, h, w) emotion probabilities of set ``name`` (row differences)."""
        return np.diff(self.emotion_sums[name], axis=2)

    def _check(self) -> None:
        if self.heatmap.ndim != 4 or self.heatmap.shape[1] != 1:
            raise ValueError(f"heatmap must be (B, 1, h, w), got {self.heatmap.shape}")
        batch, _, height, width = self.heatmap.shape
        if self.size.shape != (batch, 2, height, width):
            raise ValueError(f"size must be {(batch, 2, height, width)}, got {self.size.shape}")
        sums = dict(self.emotion_sums)
        if self.continuous_sums is not None:
            sums["continuous"] = self.continuous_sums
        ratio = self.emotion_stride / self.stride
        rows, cols = height / ratio, width / ratio
        if rows != int(rows) or cols != int(cols):
            raise ValueError(f"a ({height}, {width}) heatmap of stride {self.stride} has no "
                             f"grid of stride {self.emotion_stride}")
        rows, cols = int(rows), int(cols)
        for name, value in sums.items():
            if value.ndim != 4 or value.shape[0] != batch or value.shape[2:] != (rows + 1, cols):
                raise ValueError(f"{name} sums must be (B, C, {rows + 1}, {cols}) for a "
                                 f"({height}, {width}) heatmap of stride {self.stride}, got "
                                 f"{value.shape}")


@dataclass
class Detections:
    """The people found in one image, sorted by detection score, highest first.

    :func:`find_people` gives boxes in network-input pixels; a predictor maps them to image
    pixels with :meth:`to_image`.
    """

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    detection_scores: np.ndarray  # (N,) float32, heatmap probability at the peak
    scores: np.ndarray  # (N, E) float32 in 0..1, the primary category set
    continuous: np.ndarray | None = None  # (N, 3) valence, arousal, dominance in 0..1
    category_set: str = ""  # name of the primary set ("" when the model has no emotion maps)
    set_scores: dict[str, np.ndarray] = field(default_factory=dict)  # every set, (N, E_set)

    def __len__(self) -> int:
        return len(self.detection_scores)

    def to_image(self, placement: Letterbox) -> Detections:
        """The same people with boxes in image pixels (``Letterbox.to_original``, clipped),
        leaving out those whose box lies wholly in the letterbox border: clipped, it has no
        width or height, no pixel of that "person" is in the image (and a tracker could never
        match it again)."""
        boxes = placement.to_original(self.boxes).astype(np.float32).reshape(-1, 4)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return dataclasses.replace(
            self,
            boxes=boxes[keep],
            detection_scores=self.detection_scores[keep],
            scores=self.scores[keep],
            continuous=None if self.continuous is None else self.continuous[keep],
            set_scores={name: values[keep] for name, values in self.set_scores.items()},
        )


# --------------------------------------------------------------------------- peaks and boxes


def peak_nms(heatmap: np.ndarray, kernel: int = 3) -> np.ndarray:
    """CenterNet's NMS on one (h, w) map: keep values that are the maximum of their ``kernel``
    window (a max-pool with stride 1; OpenCV's dilation), zero the others.

    Equal neighbours (plateaus) are all kept.
    """
    heat = np.ascontiguousarray(heatmap, dtype=np.float32)
    if kernel == 1:
        return heat.copy()
    pooled = cv2.dilate(heat, np.ones((kernel, kernel), np.uint8))  # border: ignored
    return np.where(pooled == heat, heat, np.float32(0.0))


def top_peaks(peaks: np.ndarray, k: int, threshold: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` highest values of an (h, w) map after :func:`peak_nms` that are >= ``threshold``
    (and > 0: zero cells are suppressed ones).

    Returns ``scores, rows, cols``, each (K,) with ``K <= k``, scores descending (equal scores
    in raster order).
    """
    flat = peaks.reshape(-1)
    candidates = np.flatnonzero(flat >= threshold if threshold > 0 else flat > 0)
    return _highest(flat, candidates, k, peaks.shape[1])


def peak_cells(heatmap: np.ndarray, kernel: int, k: int, threshold: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`top_peaks` of :func:`peak_nms` of an (h, w) map in one pass (the suppressed map
    is never written): what :func:`find_people` runs on every frame."""
    heat = np.ascontiguousarray(heatmap, dtype=np.float32)
    flat = heat.reshape(-1)
    keep = flat >= threshold if threshold > 0 else flat > 0
    if kernel > 1:
        keep &= (cv2.dilate(heat, np.ones((kernel, kernel), np.uint8)) == heat).reshape(-1)
    return _highest(flat, np.flatnonzero(keep), k, heat.shape[1])


def _highest(flat: np.ndarray, candidates: np.ndarray, k: int, width: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` highest of ``flat[candidates]``: scores descending (ties in raster order),
    rows, cols of a map ``width`` wide."""
    values = flat[candidates]
    if k <= 0:
        candidates, values = candidates[:0], values[:0]
    elif len(candidates) > k:
        part = np.argpartition(-values, k - 1)[:k]
        candidates, values = candidates[part], values[part]
    order = np.lexsort((candidates, -values))
    rows, cols = np.divmod(candidates[order], width)
    return values[order].astype(np.float32), rows, cols


def cell_centers(rows: np.ndarray, cols: np.ndarray, stride: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Network-input coordinates ``(cx, cy)`` of the centres of map cells ``(rows, cols)``."""
    return ((np.asarray(cols, np.float64) + 0.5) * stride,
            (np.asarray(rows, np.float64) + 0.5) * stride)


def center_cells(cx: np.ndarray, cy: np.ndarray, stride: float, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Map cell ``(rows, cols)`` containing input point ``(cx, cy)``, clamped to the map.

    The inverse of :func:`cell_centers`; training puts a person's heatmap peak, size and
    emotion targets at this cell (BENet 3.4: the box centre).
    """
    cols = np.clip(np.floor(np.asarray(cx, np.float64) / stride), 0, width - 1)
    rows = np.clip(np.floor(np.asarray(cy, np.float64) / stride), 0, height - 1)
    return rows.astype(np.intp), cols.astype(np.intp)


def peak_boxes(size: np.ndarray, rows: np.ndarray, cols: np.ndarray, stride: float
               ) -> np.ndarray:
    """Boxes (K, 4) x1, y1, x2, y2 in input pixels for peaks at ``(rows, cols)`` of one image.

    ``size``: (2, h, w) width, height in input pixels. Centre: the peak cell's centre; width,
    height: the size map (clamped >= 0) at the peak (CenterNet box regression without the offset
    head).
    """
    half_w, half_h = np.maximum(size[:, rows, cols].astype(np.float64), 0.0) * 0.5
    cx, cy = cell_centers(rows, cols, stride)
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def pixel_boxes(size: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Boxes (K, 4) for peaks at input pixels ``(rows, cols)`` by BENet's public rule: with
    ``(w, h)`` the size at the peak (clamped >= 0), the corners are the whole numbers
    ``trunc(c - w / 2), trunc(r - h / 2), trunc(c + w / 2), trunc(r + h / 2)`` in pixel-centre
    coordinates (``trunc`` toward zero, as an integer cast), returned in this module's
    convention (pixel ``k`` covers ``[k, k + 1)``: plus 0.5)."""
    half_w, half_h = np.maximum(size[:, rows, cols].astype(np.float64), 0.0) * 0.5
    c, r = np.asarray(cols, np.float64), np.asarray(rows, np.float64)
    corners = np.stack([c - half_w, r - half_h, c + half_w, r + half_h], axis=-1)
    return np.trunc(corners) + 0.5


# --------------------------------------------------------------------------- emotion scores


def box_cells(boxes: np.ndarray, height: int, width: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Map cells covered by (K, 4) boxes given in map pixels: ``x0, y0, x1, y1`` (ends
    exclusive), each (K,).

    Rule: a cell belongs to the box when its centre does, ``x1_box <= j + 0.5 < x2_box``
    (same for rows). A box covering no cell centre (thin or tiny) gets the one cell containing
    its centre. Then everything is clamped to the map, keeping at least one cell, so a box
    partly or wholly outside the map reads the nearest cells.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)

    def span(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop = np.ceil(lo - 0.5), np.ceil(hi - 0.5)
        empty = stop <= start
        middle = np.floor((lo + hi) * 0.5)
        start = np.clip(np.where(empty, middle, start), 0, size - 1)
        stop = np.where(empty, middle + 1, stop)
        stop = np.minimum(np.maximum(stop, start + 1), size)
        return start.astype(np.intp), stop.astype(np.intp)

    x0, x1 = span(b[:, 0], b[:, 2], width)
    y0, y1 = span(b[:, 1], b[:, 3], height)
    return x0, y0, x1, y1


def box_means(sums: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mean of each map inside each box (KA section 2.2): (C, h + 1, w) row prefix sums of the
    maps and (K, 4) boxes in map pixels -> (K, C) float32. Cells per :func:`box_cells`."""
    channels, rows_plus_one, width = sums.shape
    x0, y0, x1, y1 = box_cells(boxes, rows_plus_one - 1, width)
    if len(x0) == 0:
        return np.zeros((0, channels), np.float32)
    # Only the box's own columns of its two prefix-sum rows are read (not whole rows): the
    # maps are megabytes, out of the cache after the network's run, so reads are the cost.
    widths = x1 - x0
    offsets = np.arange(int(widths.max()))
    columns = np.minimum(x0[:, None] + offsets, width - 1)  # (K, W), padded with repeats
    inside = offsets < widths[:, None]  # (K, W)
    band = sums[:, y1[:, None], columns] - sums[:, y0[:, None], columns]  # (C, K, W)
    total = np.einsum("ckw,kw->kc", band.astype(np.float64), inside.astype(np.float64))
    area = (widths * (y1 - y0)).astype(np.float64)
    return (total / area[:, None]).astype(np.float32)


def cell_values(sums: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Map values at the cells containing map points ``(x, y)`` (K,) each: (C, h + 1, w) row
    prefix sums -> (K, C) float32."""
    _, rows_plus_one, width = sums.shape
    rows, cols = center_cells(x, y, 1.0, rows_plus_one - 1, width)
    return (sums[:, rows + 1, cols] - sums[:, rows, cols]).T.astype(np.float32)


def point_values(sums: np.ndarray, x: np.ndarray, y: np.ndarray, stride: int) -> np.ndarray:
    """What the maps, bilinearly upsampled ``stride`` times to the input's resolution
    (``align_corners=False``, as :func:`caer_ros.inference.graph.upsampled`), hold at the input
    pixels containing the points ``(x, y)`` (K,) each in input pixels: (C, h + 1, w) row prefix
    sums -> (K, C) float32, without upsampling the maps.

    Per axis, input pixel ``p`` reads map coordinate ``(p + 0.5) / stride - 0.5`` (clamped at
    0), between cells ``floor`` of it and the next (the last cell repeats), as torch's
    bilinear interpolation does.
    """
    _, rows_plus_one, width = sums.shape
    height = rows_plus_one - 1

    def axis(value: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pixel = np.clip(np.floor(np.asarray(value, np.float64)), 0, cells * stride - 1)
        source = np.maximum((pixel + 0.5) / stride - 0.5, 0.0)
        low = np.minimum(np.floor(source), cells - 1).astype(np.intp)
        high = np.minimum(low + 1, cells - 1)
        return low, high, (source - low)[None, :]

    x0, x1, fx = axis(x, width)
    y0, y1, fy = axis(y, height)

    def cell(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return (sums[:, rows + 1, cols] - sums[:, rows, cols]).astype(np.float64)

    top = cell(y0, x0) * (1 - fx) + cell(y0, x1) * fx
    bottom = cell(y1, x0) * (1 - fx) + cell(y1, x1) * fx
    return (top * (1 - fy) + bottom * fy).T.astype(np.float32)


def read_scores(sums: np.ndarray, boxes: np.ndarray, mode: str = "box_mean",
                stride: float = 1.0, centers: np.ndarray | None = None,
                bilinear: bool = False) -> np.ndarray:
    """Per-box values of one image's maps given as row prefix sums (C, h + 1, w), for (K, 4)
    boxes in pixels of an input ``stride`` times finer than the map -> (K, C) float32.

    ``center`` mode reads at ``centers`` (K, 2) x, y in input pixels (default: the box
    centres): the cell there, or with ``bilinear`` the input pixel there of the maps'
    bilinear upsampling (:func:`point_values`)."""
    if mode not in EXTRACTIONS:
        raise ValueError(f"mode must be one of {', '.join(EXTRACTIONS)}, got {mode!r}")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if mode == "box_mean":
        return box_means(sums, b / float(stride))
    if centers is None:
        x, y = (b[:, 0] + b[:, 2]) * 0.5, (b[:, 1] + b[:, 3]) * 0.5
    else:
        points = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
        x, y = points[:, 0], points[:, 1]
    if bilinear:
        return point_values(sums, x, y, int(stride))
    return cell_values(sums, x / float(stride), y / float(stride))


def read_people(maps: SummedMaps, boxes: np.ndarray, mode: str = "box_mean",
                centers: np.ndarray | None = None, bilinear: bool = False
                ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Emotion and continuous scores of people with ``boxes`` (B, K, 4) in input pixels.

    Returns ``{set name: (B, K, E)}`` and (B, K, 3) or None. Used for decoded boxes and, by the
    evaluator, for ground-truth boxes (ER mAP: predictions read with the annotated boxes).
    ``centers`` (B, K, 2) and ``bilinear``: where and how ``center`` mode reads
    (:func:`read_scores`).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 3 or boxes.shape[0] != maps.batch or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be ({maps.batch}, K, 4), got {boxes.shape}")

    def read(sums: np.ndarray) -> np.ndarray:
        return np.stack([read_scores(sums[b], boxes[b], mode, maps.emotion_stride,
                                     None if centers is None else centers[b], bilinear)
                         for b in range(maps.batch)])

    emotions = {name: read(sums) for name, sums in maps.emotion_sums.items()}
    continuous = None if maps.continuous_sums is None else read(maps.continuous_sums)
    return emotions, continuous


# --------------------------------------------------------------------------- people


def find_people(
    maps: SummedMaps,
    settings: InferenceSettings,
    *,
    detection_threshold: float | None = None,
    max_people: int | None = None,
    primary_set: str | None = None,
) -> list[Detections]:
    """Steps 1-3 for each image of the batch -> one :class:`Detections` each (input pixels).

    ``detection_threshold`` and ``max_people`` override ``settings.detection_threshold`` and
    cap ``settings.top_k``; ``primary_set`` names the category set of ``Detections.scores``
    (default: the first one).
    """
    threshold = settings.detection_threshold if detection_threshold is None \
        else float(detection_threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"detection_threshold must be in [0, 1], got {detection_threshold!r}")
    k = settings.top_k
    if max_people is not None:
        if isinstance(max_people, bool) or int(max_people) != max_people or max_people < 0:
            raise ValueError(f"max_people must be an integer >= 0, got {max_people!r}")
        k = min(k, int(max_people))
    primary = _primary_set(maps, primary_set)
    whole_pixels = settings.peak_resolution == "input"
    if whole_pixels and maps.stride != 1:
        raise ValueError(f"peak_resolution 'input' needs an input-resolution heatmap, got "
                         f"stride {maps.stride}")
    people = []
    for b in range(maps.batch):
        scores, rows, cols = peak_cells(maps.heatmap[b, 0], settings.peak_kernel, k, threshold)
        boxes = pixel_boxes(maps.size[b], rows, cols) if whole_pixels \
            else peak_boxes(maps.size[b], rows, cols, maps.stride)
        centers = np.stack(cell_centers(rows, cols, maps.stride), axis=-1)
        emotions, continuous = read_people(maps.image(b), boxes[None], settings.extraction,
                                           centers[None], whole_pixels)
        sets = {name: values[0] for name, values in emotions.items()}
        people.append(Detections(
            boxes=boxes.astype(np.float32),
            detection_scores=scores,
            scores=sets.get(primary, np.zeros((len(scores), 0), np.float32)),
            continuous=None if continuous is None else continuous[0],
            category_set=primary,
            set_scores=sets,
        ))
    return people


def labels_over_threshold(
    scores: np.ndarray, categories: Sequence[str], thresholds: float | Sequence[float],
    single_label: bool = False, top_needs_threshold: bool = False,
) -> list[list[str]]:
    """Per person, the category names whose score is >= their threshold, highest score first.

    ``scores``: (N, E); ``thresholds``: one float for all categories or one per category.
    Ties keep the category order. ``single_label`` (a set where each person has one category,
    HECO): the top category alone, whatever its score, or only when it reaches its threshold
    with ``top_needs_threshold``.
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
    if single_label:
        order, passed = order[:, :1], passed[:, :1] | (not top_needs_threshold)
    return [[categories[j] for j in order[n][passed[n]]] for n in range(s.shape[0])]


def _primary_set(maps: SummedMaps, primary_set: str | None) -> str:
    if primary_set is None:
        return next(iter(maps.emotion_sums), "")
    if primary_set not in maps.emotion_sums:
        raise ValueError(
            f"no emotion maps for category set {primary_set!r}; the model has: "
            f"{', '.join(maps.emotion_sums) or 'none'}"
        )
    return primary_set


def as_numpy(value: Tensor | np.ndarray) -> np.ndarray:
    """``value`` as a numpy array (a torch tensor copied to the host, half precision as float32).
    Without torch imported nothing is a tensor: an ONNX model's host side runs without it."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype in (torch.float16, torch.bfloat16) else value).numpy()
    return np.asarray(value)
