"""Training losses of the papers, one small function each, on torch tensors.

BENet (``papers/benet-bottom-up-caer.txt``) section 3.4:

- :func:`center_focal_loss` - eq. 1, CenterNet's focal loss on the centre heatmap;
- :func:`size_l1_loss` - eq. 2, L1 on box width/height at the centres;
- :func:`detection_loss` - eq. 3, ``lambda_center * eq. 1 + lambda_size * eq. 2`` at one
  resolution (eq. 4 sums it over the 1/4 and 1/2 outputs; the trainer does that);
- :func:`multilabel_focal_loss` - eq. 5, binary focal loss per emotion.

Knowledge amalgamation (``papers/knowledge-amalgamation-single-shot-caer.txt``) section 3.2:

- :func:`bce_loss` - eq. 1, multi-label binary cross-entropy on logits;
- :func:`single_label_ce_loss` - eq. 2, softmax cross-entropy, one label per person;
- :func:`in_box_variance` - eq. 3, variance of the emotion maps inside each person's box.

Every input is raw logits (the network's maps, see :mod:`caer_ros.model.output`); logs of
probabilities are computed as ``logsigmoid(x)`` and ``logsigmoid(-x)`` (stable for any logit).
Every loss is differentiable and gives a finite 0 (connected to the inputs' graph) when there
are no people, except :func:`center_focal_loss`, which then still penalises the heatmap's false
positives (CenterNet's convention: divide by ``max(N, 1)``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from caer_ros.inference.decode import box_cells
from training.data.targets import ScaleTargets

LAMBDA_CENTER = 1.0  # BENet eq. 3
LAMBDA_SIZE = 0.1  # BENet eq. 3


def center_focal_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0
                      ) -> Tensor:
    """BENet eq. 1 (CenterNet's focal loss) on heatmap ``logits`` and a Gaussian ``target`` of
    the same shape (peaks exactly 1):

    ``-1/N sum_xy [(1 - p)^alpha log p if Y = 1 else (1 - Y)^beta p^alpha log(1 - p)]``,
    ``p = sigmoid(logits)``, ``N`` the number of cells with ``Y = 1`` (one per person), over
    the whole batch; ``N = 0`` divides by 1.
    """
    target = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    positive = target == 1
    pos = (1 - p).pow(alpha) * F.logsigmoid(logits)
    neg = (1 - target).pow(beta) * p.pow(alpha) * F.logsigmoid(-logits)
    total = torch.where(positive, pos, neg).sum()
    return -total / positive.sum().clamp(min=1).to(logits.dtype)


def size_l1_loss(size_map: Tensor, target_sizes: Tensor, indices: Tensor, mask: Tensor
                 ) -> Tensor:
    """BENet eq. 2: ``1/N sum_k |S_hat(p_k) - s_k|_1`` - the size map (B, 2, h, w) read at each
    person's centre cell (flat ``indices`` (B, K)), against ``target_sizes`` (B, K, 2), summed
    over width and height, mean over the real people (``mask`` (B, K))."""
    batch = size_map.shape[0]
    index = indices.to(size_map.device).long()
    picked = size_map.reshape(batch, 2, -1).gather(2, index[:, None, :].expand(-1, 2, -1))
    error = (picked.transpose(1, 2) - target_sizes.to(size_map)).abs().sum(dim=-1)  # (B, K)
    keep = mask.to(size_map.device, torch.bool)
    return torch.where(keep, error, torch.zeros_like(error)).sum() / keep.sum().clamp(min=1)


class DetectionLoss(NamedTuple):
    """BENet eq. 3 at one resolution and its two terms (for logging)."""

    total: Tensor
    center: Tensor
    size: Tensor


def detection_loss(heatmap_logits: Tensor, size_map: Tensor, targets: ScaleTargets,
                   lambda_center: float = LAMBDA_CENTER, lambda_size: float = LAMBDA_SIZE
                   ) -> DetectionLoss:
    """BENet eq. 3: ``lambda_center * L_center (eq. 1) + lambda_size * L_size (eq. 2)`` for
    one resolution's heatmap (B, 1, h, w) and size map (B, 2, h, w) (a
    :class:`~caer_ros.model.output.ScaleOutput`'s ``heatmap`` and ``size``)."""
    device = heatmap_logits.device
    center = center_focal_loss(heatmap_logits, targets.heatmap.to(device))
    size = size_l1_loss(size_map, targets.sizes, targets.indices, targets.mask)
    return DetectionLoss(lambda_center * center + lambda_size * size, center, size)


def multilabel_focal_loss(logits: Tensor, labels: Tensor, alpha: float = 2.0) -> Tensor:
    """BENet eq. 5, the multi-label binary focal loss on (N, E) ``logits`` and 0/1 ``labels``:

    ``-1/N sum_n sum_i [Y (1 - p)^alpha log p + (1 - Y) p^alpha log(1 - p)]``,
    ``p = sigmoid(logits)``: summed over the E emotions, mean over the N people.
    """
    y = labels.to(logits)
    p = torch.sigmoid(logits)
    per_label = (y * (1 - p).pow(alpha) * F.logsigmoid(logits)
                 + (1 - y) * p.pow(alpha) * F.logsigmoid(-logits))
    return -per_label.sum() / max(logits.shape[0], 1)


def bce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """KA eq. 1, multi-label binary cross-entropy on (N, E) ``logits`` and 0/1 ``labels``:
    ``-1/N sum_n sum_i [log sigmoid(x) if Y = 1 else log(1 - sigmoid(x))]`` (sum over E, mean
    over the N people)."""
    total = F.binary_cross_entropy_with_logits(logits, labels.to(logits), reduction="sum")
    return total / max(logits.shape[0], 1)


def single_label_ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """KA eq. 2, softmax cross-entropy when each person has one emotion: ``-1/N sum_n
    log softmax(x_n)[c_n]`` for (N, E) ``logits``; ``labels`` are the (N,) class indices or
    (N, E) one-hot rows (their argmax is taken)."""
    classes = labels.argmax(dim=-1) if labels.ndim == 2 else labels
    total = F.cross_entropy(logits, classes.to(logits.device).long(), reduction="sum")
    return total / max(logits.shape[0], 1)


def _box_masks(maps: Tensor, boxes: Tensor | np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
    """Separable cell masks of (B, K, 4) boxes in map pixels over (B, E, h, w) maps: rows
    (B, K, h), columns (B, K, w) and the cell count (B, K, 1). The cells of a box are those the
    decoder averages (:func:`caer_ros.inference.decode.box_cells`: cell centre inside the box,
    at least one cell)."""
    batch, _, height, width = maps.shape
    b = np.asarray(boxes.detach().cpu().numpy() if isinstance(boxes, Tensor) else boxes,
                   np.float64).reshape(batch, -1, 4)
    count = b.shape[1]
    x0, y0, x1, y1 = (torch.from_numpy(v.reshape(batch, count)).to(maps.device)
                      for v in box_cells(b.reshape(-1, 4), height, width))
    rows = torch.arange(height, device=maps.device)
    cols = torch.arange(width, device=maps.device)
    in_rows = ((rows >= y0[..., None]) & (rows < y1[..., None])).to(maps.dtype)
    in_cols = ((cols >= x0[..., None]) & (cols < x1[..., None])).to(maps.dtype)
    return in_rows, in_cols, (in_rows.sum(-1) * in_cols.sum(-1))[..., None]


def box_means(maps: Tensor, targets: ScaleTargets) -> Tensor:
    """KA 2.1: the mean of (B, E, h, w) maps inside every real person's box -> (N, E), people
    in the order of :func:`training.data.targets.read_at_centers`. Differentiable in ``maps``."""
    if maps.shape[0] == 0 or targets.boxes.shape[1] == 0:
        return maps.new_zeros((0, maps.shape[1]))
    in_rows, in_cols, area = _box_masks(maps, targets.boxes)
    mean = torch.einsum("bkh,bkw,behw->bke", in_rows, in_cols, maps) / area
    return mean[targets.mask.to(maps.device)]


def in_box_variance(maps: Tensor, boxes: Tensor | np.ndarray, mask: Tensor | None = None
                    ) -> Tensor:
    """KA eq. 3: ``1/N_P sum_i (P_i - P_bar)^2`` - the variance of each emotion map's values
    inside each person's box, averaged over the people and the E maps.

    ``maps`` (E, h, w) with ``boxes`` (K, 4), or (B, E, h, w) with (B, K, 4) and an optional
    ``mask`` (B, K) of real people; boxes are x1, y1, x2, y2 in map pixels, cells as in
    :func:`_box_masks`. Vectorised with separable row/column masks: the box sums of ``x`` and
    ``x^2`` are two einsums (``B K E (h + w)`` memory, no per-box loop); maps are first shifted
    by their detached mean so ``E[x^2] - E[x]^2`` does not cancel.
    """
    if maps.ndim == 3:
        maps = maps[None]
        boxes = boxes[None]
        mask = None if mask is None else mask[None]
    batch = maps.shape[0]
    count = np.asarray(boxes.shape)[1] if len(boxes.shape) > 1 else 0
    keep = torch.ones((batch, count), dtype=torch.bool, device=maps.device) if mask is None \
        else mask.to(maps.device, torch.bool)
    if count == 0 or not bool(keep.any()):
        return maps.sum() * 0.0
    in_rows, in_cols, area = _box_masks(maps, boxes)
    x = maps - maps.detach().mean(dim=(-2, -1), keepdim=True)
    mean = torch.einsum("bkh,bkw,behw->bke", in_rows, in_cols, x) / area
    mean_sq = torch.einsum("bkh,bkw,behw->bke", in_rows, in_cols, x * x) / area
    variance = (mean_sq - mean * mean).clamp(min=0)  # (B, K, E)
    chosen = variance[keep]  # (N, E)
    return chosen.mean() if chosen.numel() else maps.sum() * 0.0
