"""Training targets of the detection and bottom-up heads at one stride (BENet 3.4, KA 3.2).

For each annotated person (box ``x1, y1, x2, y2`` in network-input pixels, emotion labels)
and a map of stride ``s`` (4 for the 1/4 outputs, 2 for the 1/2 ones):

- **centre heatmap** (CenterNet, Zhou et al. 2019, section 3): a Gaussian around the cell of
  the box centre, peak exactly 1 at that cell; where two people's Gaussians overlap the
  maximum is kept (not the sum), so every person's peak stays 1;
- **size targets** ``(w / s, h / s)``: the box width and height in map pixels (the unit of
  :class:`~caer_ros.model.output.ScaleOutput`'s ``size``), read at the centre cell by the size
  loss (BENet eq. 2) through flat ``indices`` (``row * map_width + col``) and a ``mask``;
- **centre cells** ``rows, cols`` where the emotion maps are read for the emotion losses
  (BENet eq. 5: "the N bounding boxes centers given by the ground truth"), and the **boxes in
  map pixels** for the in-box reading and variance term (KA section 2.2, eq. 3).

Cell rule: the one of the decoder (:func:`caer_ros.inference.decode.center_cells`): a centre
``(cx, cy)`` falls in cell ``(floor(cy / s), floor(cx / s))``, clamped to the map, and a peak
at ``(i, j)`` decodes to ``((j + 0.5) s, (i + 0.5) s)``; targets and decoding agree.

Radius rule (:func:`gaussian_radius`): the CenterNet idea. In map pixels, a box ``w x h`` gets
the largest radius ``r`` such that a box whose corners lie within ``r`` of the true ones still
has IoU >= ``min_overlap`` (0.7) with it, the smallest of three cases: both corners shifted the
same way (same size), both moved inward (smaller box), both moved outward (larger box). ``r`` is
floored to an integer >= 0; the Gaussian has ``sigma = (2 r + 1) / 6`` and is cut to the
``(2 r + 1)^2`` square around the centre cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from caer_ros.inference.decode import center_cells

MIN_OVERLAP = 0.7  # CenterNet's IoU for the radius rule


@dataclass
class ScaleTargets:
    """Targets of a batch (or of one image, ``B = 1``) at one stride; ``K``: the most people of
    an image of the batch, the others padded (``mask`` False, zeros elsewhere)."""

    stride: int  # network-input pixels per map cell
    heatmap: Tensor  # (B, 1, h, w) float32 centre heatmap in 0..1, peaks exactly 1
    sizes: Tensor  # (B, K, 2) float32 box width, height in map pixels
    indices: Tensor  # (B, K) int64 flat centre cell, row * w + col
    rows: Tensor  # (B, K) int64 centre cell row
    cols: Tensor  # (B, K) int64 centre cell column
    mask: Tensor  # (B, K) bool, True for real people
    boxes: Tensor  # (B, K, 4) float32 x1, y1, x2, y2 in map pixels
    labels: Tensor  # (B, K, E) float32 emotion labels (0/1 multi-label, or one-hot)

    @property
    def num_people(self) -> int:
        return int(self.mask.sum())

    def to(self, device: torch.device | str) -> ScaleTargets:
        """The same targets on ``device``."""
        return ScaleTargets(self.stride, *(getattr(self, name).to(device) for name in (
            "heatmap", "sizes", "indices", "rows", "cols", "mask", "boxes", "labels")))


def gaussian_radius(width: np.ndarray, height: np.ndarray, min_overlap: float = MIN_OVERLAP
                    ) -> np.ndarray:
    """Integer Gaussian radius (>= 0) per box of ``width x height`` map pixels (module
    docstring: the smallest of the three corner-displacement cases at IoU ``min_overlap``).

    With ``a = w + h``, ``b = w h`` and ``o = min_overlap``, IoU >= ``o`` holds up to:
    same size, shifted ``(r, r)``: ``r1 = (a - sqrt(a^2 - 4 b (1 - o) / (1 + o))) / 2``;
    shrunk by ``r`` each side: ``r2 = (a - sqrt(a^2 - 4 b (1 - o))) / 4``;
    grown by ``r`` each side: ``r3 = (-a + sqrt(a^2 + 4 b (1 - o) / o)) / 4``.
    """
    w = np.maximum(np.asarray(width, np.float64), 0.0)
    h = np.maximum(np.asarray(height, np.float64), 0.0)
    a, b, o = w + h, w * h, float(min_overlap)
    r1 = (a - np.sqrt(np.maximum(a * a - 4.0 * b * (1.0 - o) / (1.0 + o), 0.0))) / 2.0
    r2 = (a - np.sqrt(np.maximum(a * a - 4.0 * b * (1.0 - o), 0.0))) / 4.0
    r3 = (-a + np.sqrt(a * a + 4.0 * b * (1.0 - o) / o)) / 4.0
    return np.floor(np.maximum(np.minimum(np.minimum(r1, r2), r3), 0.0)).astype(np.intp)


def draw_heatmap(rows: np.ndarray, cols: np.ndarray, radii: np.ndarray, height: int,
                 width: int) -> np.ndarray:
    """(h, w) float32 map: per person a Gaussian of ``sigma = (2 r + 1) / 6`` centred on cell
    ``(row, col)``, cut to ``|di|, |dj| <= r``, value exactly 1 at the centre; the maximum where
    people overlap. Vectorised over people (``K x h x w`` work)."""
    heat = np.zeros((height, width), np.float32)
    if len(rows) == 0:
        return heat
    rows, cols, radii = (np.asarray(v, np.int64)[:, None, None] for v in (rows, cols, radii))
    di = np.arange(height)[None, :, None] - rows  # (K, h, 1)
    dj = np.arange(width)[None, None, :] - cols  # (K, 1, w)
    sigma = (2.0 * radii + 1.0) / 6.0
    gauss = np.exp(-(di * di + dj * dj) / (2.0 * sigma * sigma))
    gauss = np.where((np.abs(di) <= radii) & (np.abs(dj) <= radii), gauss, 0.0)
    return gauss.max(axis=0).astype(np.float32)


def image_targets(boxes: np.ndarray | Tensor, labels: np.ndarray | Tensor | None, stride: int,
                  map_size: tuple[int, int], min_overlap: float = MIN_OVERLAP) -> ScaleTargets:
    """Targets of one image (a batch of one): ``boxes`` (K, 4) x1, y1, x2, y2 in network-input
    pixels, ``labels`` (K, E) (None: E = 0), ``map_size`` (h, w) of the stride-``stride`` map.
    """
    b = np.asarray(_numpy(boxes), np.float64).reshape(-1, 4)
    count = len(b)
    y = np.zeros((count, 0), np.float32) if labels is None \
        else np.asarray(_numpy(labels), np.float32)
    if y.ndim != 2 or y.shape[0] != count:
        raise ValueError(f"labels must be ({count}, E) for {count} boxes, got {y.shape}")
    height, width = map_size
    s = float(stride)
    in_map = b / s
    sizes = np.stack([in_map[:, 2] - in_map[:, 0], in_map[:, 3] - in_map[:, 1]], axis=-1)
    rows, cols = center_cells((b[:, 0] + b[:, 2]) * 0.5, (b[:, 1] + b[:, 3]) * 0.5, s,
                              height, width)
    radii = gaussian_radius(sizes[:, 0], sizes[:, 1], min_overlap)
    heat = draw_heatmap(rows, cols, radii, height, width)
    return ScaleTargets(
        stride=int(stride),
        heatmap=torch.from_numpy(heat)[None, None],
        sizes=torch.from_numpy(sizes.astype(np.float32))[None],
        indices=torch.from_numpy((rows * width + cols).astype(np.int64))[None],
        rows=torch.from_numpy(rows.astype(np.int64))[None],
        cols=torch.from_numpy(cols.astype(np.int64))[None],
        mask=torch.ones((1, count), dtype=torch.bool),
        boxes=torch.from_numpy(in_map.astype(np.float32))[None],
        labels=torch.from_numpy(y)[None],
    )


def collate_targets(images: Sequence[ScaleTargets]) -> ScaleTargets:
    """Batch per-image targets (each ``B = 1``, same stride, map size and E) with different
    numbers of people: pad to the largest count with zeros and ``mask`` False."""
    if not images:
        raise ValueError("collate_targets needs at least one image")
    strides = {t.stride for t in images}
    if len(strides) != 1:
        raise ValueError(f"targets of one batch must share the stride, got {sorted(strides)}")
    most = max(t.mask.shape[1] for t in images)

    def stack(name: str) -> Tensor:
        parts = []
        for t in images:
            value = getattr(t, name)
            pad = torch.zeros((1, most - value.shape[1], *value.shape[2:]), dtype=value.dtype)
            parts.append(torch.cat([value, pad], dim=1))
        return torch.cat(parts)

    return ScaleTargets(
        stride=strides.pop(),
        heatmap=torch.cat([t.heatmap for t in images]),
        **{name: stack(name) for name in ("sizes", "indices", "rows", "cols", "mask", "boxes",
                                          "labels")},
    )


def build_targets(boxes: Sequence[np.ndarray | Tensor],
                  labels: Sequence[np.ndarray | Tensor | None], stride: int,
                  map_size: tuple[int, int], min_overlap: float = MIN_OVERLAP) -> ScaleTargets:
    """:func:`image_targets` for each image of a batch, then :func:`collate_targets`."""
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} box arrays but {len(labels)} label arrays")
    return collate_targets([image_targets(b, y, stride, map_size, min_overlap)
                            for b, y in zip(boxes, labels, strict=True)])


def read_at_centers(maps: Tensor, targets: ScaleTargets) -> Tensor:
    """The values of (B, C, h, w) maps at every real person's centre cell -> (N, C), people of
    image 0 first (BENet 3.4: emotion predictions read at the ground-truth box centres).
    Differentiable in ``maps``; N = 0 gives an empty (0, C) tensor."""
    batch, channels = maps.shape[:2]
    index = targets.indices.to(maps.device)
    picked = maps.reshape(batch, channels, -1).gather(
        2, index[:, None, :].expand(-1, channels, -1))  # (B, C, K)
    return picked.transpose(1, 2)[targets.mask.to(maps.device)]


def _numpy(value: np.ndarray | Tensor) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
