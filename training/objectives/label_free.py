"""Label-free distillation of a teacher's maps into a student (issue 31; :mod:`training.distill`).

Knowledge amalgamation in its original form needs no labels: the teachers' outputs are the
targets (KA paper, section 1). Here the teacher is a whole caer_ros model (BENet converted from
the authors' release, or any model file) run by its own deployed inference graph
(:class:`~caer_ros.inference.graph.InferenceGraph` in torch or ONNX Runtime: its activation,
scale fusion and flip test), so the student learns what the teacher *publishes*. No person
boxes or labels are read anywhere.

:func:`teacher_maps` turns the graph's outputs into targets on one of the student's grids
(:class:`TeacherMaps`):

- the person-centre heatmap (probabilities): max-pooled to the student's grid when the
  teacher's is finer (a peak keeps its height; by an integer factor or adaptively), resized
  bilinearly when it is coarser;
- the box sizes at each cell's strongest teacher pixel, in the student map's pixels;
- the emotion and continuous maps (probabilities, from the graph's row prefix sums), average
  pooled or resized;
- ``people``: 1 inside the boxes of the teacher's people (peaks at or above its detection
  threshold), 0 elsewhere: where the emotion maps are read.

:func:`label_free_terms` are the student's losses against them, each a mean so that the
weights are comparable across batch and image sizes:

- ``heatmap``: the quality focal loss of Generalized Focal Loss (Li et al., 2020), binary
  cross-entropy to the soft target scaled by ``|sigmoid(s) - t|^2`` (CenterNet's focal loss
  needs exact 1s at the centres, which a teacher's probabilities are not), summed over the grid
  and divided by the number of teacher people (at least 1), as CenterNet divides by its centres;
- ``size``: L1 to the teacher's sizes, weighted by the teacher's heatmap (cells where it is
  under 0.1 carry nothing), as CenterNet trains sizes at the centres only;
- ``emotions.<set>``: per cell, the KL divergence from the teacher's probabilities (binary per
  category and summed over the categories, as the supervised multi-label losses sum them, for
  a sigmoid-scored set; over the categories for a softmax-scored one:
  ``ModelConfig.scores``, the student scores a set as its teacher does), i.e. the
  cross-entropy minus the target's own entropy, weighted by ``region``: ``box``, 1 inside
  the teacher's people and ``background`` elsewhere; ``centre``, the teacher's centre
  heatmap (at least ``background``), so that the cells where a centre-reading student
  reads its emotions count most;
- ``continuous``: the binary KL divergence of valence, arousal and dominance, summed, weighted
  the same.

At a ``temperature`` T above 1 (Hinton et al., 2015), the emotion and continuous terms compare
both sides' logits divided by T (the teacher's recovered from its probabilities, :func:`soften`)
and are scaled by T^2, so that their gradients keep their size: small probability differences
between people, which decide the ranking that ER mAP scores, then weigh more.

Every term is 0 where the student's maps equal the teacher's (so a falling loss is read
directly as agreement) and 0, still connected to the graph, when it has nothing to learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from caer_ros.inference.graph_outputs import CONTINUOUS_SUMS, EMOTION_SUMS, HEATMAP, SIZE
from caer_ros.model.config import ModelConfig
from caer_ros.model.output import ScaleOutput

SIZE_FLOOR = 0.1  # teacher heat under which a cell's size is not learnt


@dataclass
class TeacherMaps:
    """The teacher's outputs on one student grid (module docstring)."""

    heatmap: Tensor  # (B, 1, h, w) probabilities
    size: Tensor  # (B, 2, h, w) width, height in this grid's pixels
    emotions: dict[str, Tensor]  # set -> (B, E, h, w) probabilities
    continuous: Tensor | None  # (B, 3, h, w) probabilities
    people: Tensor  # (B, 1, h, w) 1 inside the teacher's people's boxes
    count: int  # teacher people in the batch

    def _map(self, convert) -> TeacherMaps:
        return TeacherMaps(convert(self.heatmap), convert(self.size),
                           {k: convert(v) for k, v in self.emotions.items()},
                           None if self.continuous is None else convert(self.continuous),
                           convert(self.people), self.count)

    def to(self, device: torch.device) -> TeacherMaps:
        """On ``device``, in float32."""
        return self._map(lambda t: t.to(device, torch.float32))

    def half(self) -> TeacherMaps:
        """In float16 (to keep many of them)."""
        return self._map(lambda t: t.half())


def _rows(sums: np.ndarray) -> Tensor:
    """Probability maps back from the graph's row prefix sums (row ``i + 1`` minus row ``i``),
    clamped to [0, 1]: a difference of two rounded sums can fall a hair outside, where the
    KL terms' ``xlogy`` would be NaN."""
    tensor = torch.from_numpy(np.ascontiguousarray(sums, dtype=np.float32))
    return (tensor[:, :, 1:] - tensor[:, :, :-1]).clamp_(0.0, 1.0)


def _pool(maps: Tensor, grid: tuple[int, int], mode: str) -> Tensor:
    """``maps`` on ``grid``: max or average pooled by an integer factor, adaptive max or
    average pooled when shrinking by another factor, bilinear when growing."""
    h, w = maps.shape[-2:]
    if (h, w) == grid:
        return maps
    if h % grid[0] == 0 and w % grid[1] == 0 and h // grid[0] == w // grid[1]:
        k = h // grid[0]
        return F.max_pool2d(maps, k) if mode == "max" else F.avg_pool2d(maps, k)
    if h >= grid[0] and w >= grid[1]:
        pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
        return pool(maps, grid)
    return F.interpolate(maps, size=grid, mode="bilinear", align_corners=False)


def _sizes_at_peaks(heat: Tensor, size: Tensor, grid: tuple[int, int]) -> Tensor:
    """The size at each grid cell's strongest heat pixel (shrinking), or resized (growing)."""
    h, w = heat.shape[-2:]
    if (h, w) == grid:
        return size
    if h % grid[0] == 0 and w % grid[1] == 0 and h // grid[0] == w // grid[1]:
        _, index = F.max_pool2d(heat, h // grid[0], return_indices=True)
    elif h >= grid[0] and w >= grid[1]:
        _, index = F.adaptive_max_pool2d(heat, grid, return_indices=True)
    else:
        return F.interpolate(size, size=grid, mode="bilinear", align_corners=False)
    flat = size.flatten(2)
    return torch.gather(flat, 2, index.flatten(2).expand(-1, size.shape[1], -1)
                        ).view(size.shape[0], size.shape[1], *grid)


def people_mask(heat: Tensor, size: Tensor, threshold: float, kernel: int = 3,
                top_k: int = 32) -> tuple[Tensor, int]:
    """1 in the cells whose centres lie inside the boxes of the people found in ``heat``
    (local maxima at or above ``threshold``, at most ``top_k`` per image; ``size`` in grid
    pixels; a box ``[x1, x2)``), and their count."""
    b, _, h, w = heat.shape
    peaks = (heat == F.max_pool2d(heat, kernel, stride=1, padding=kernel // 2)) \
        & (heat >= threshold)
    mask = torch.zeros_like(heat)
    cols = torch.arange(w, dtype=heat.dtype) + 0.5
    rows = torch.arange(h, dtype=heat.dtype) + 0.5
    count = 0
    for i in range(b):
        ys, xs = torch.nonzero(peaks[i, 0], as_tuple=True)
        if len(ys) > top_k:
            keep = torch.topk(heat[i, 0, ys, xs], top_k).indices
            ys, xs = ys[keep], xs[keep]
        count += len(ys)
        for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
            half_w, half_h = float(size[i, 0, y, x]) / 2, float(size[i, 1, y, x]) / 2
            inside_x = (cols >= x + 0.5 - half_w) & (cols < x + 0.5 + half_w)
            inside_y = (rows >= y + 0.5 - half_h) & (rows < y + 0.5 + half_h)
            mask[i, 0] = torch.maximum(mask[i, 0],
                                       (inside_y[:, None] & inside_x[None, :]).to(heat.dtype))
    return mask, count


def teacher_maps(outputs: dict[str, np.ndarray], teacher: ModelConfig,
                 teacher_input: tuple[int, int], grid: tuple[int, int], threshold: float,
                 peak_kernel: int = 3, top_k: int = 32) -> TeacherMaps:
    """Targets on the student grid ``grid`` (h, w) from the teacher graph's ``outputs`` for
    inputs of ``teacher_input`` (H, W) pixels showing the same image (module docstring);
    ``threshold``: the teacher's detection threshold."""
    heat_full = torch.from_numpy(np.ascontiguousarray(outputs[HEATMAP], dtype=np.float32))
    size_full = torch.from_numpy(np.ascontiguousarray(outputs[SIZE], dtype=np.float32))
    heat = _pool(heat_full, grid, "max")
    # teacher-input pixels -> this grid's pixels, per axis
    scale = torch.tensor([grid[1] / teacher_input[1], grid[0] / teacher_input[0]]
                         ).view(1, 2, 1, 1)
    size = _sizes_at_peaks(heat_full, size_full, grid) * scale
    emotions = {name: _pool(_rows(outputs[EMOTION_SUMS + name]), grid, "mean")
                for name in teacher.categories}
    continuous = _pool(_rows(outputs[CONTINUOUS_SUMS]), grid, "mean") \
        if CONTINUOUS_SUMS in outputs else None
    people, count = people_mask(heat, size, threshold, peak_kernel, top_k)
    return TeacherMaps(heat, size, emotions, continuous, people, count)


def _weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    """``sum(values * weight) / sum(weight)``; 0 (still on the graph) with no weight."""
    total = weight.sum()
    if float(total) <= 0:
        return values.sum() * 0.0
    return (values * weight).sum() / total


def quality_focal(logits: Tensor, target: Tensor, count: int, beta: float = 2.0) -> Tensor:
    """Generalized Focal Loss's quality focal loss, summed and divided by ``max(count, 1)``."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * (torch.sigmoid(logits) - target).abs().pow(beta)).sum() / max(count, 1)


def binary_kl(logits: Tensor, target: Tensor) -> Tensor:
    """Per element, binary cross-entropy of ``sigmoid(logits)`` to the probabilities
    ``target`` minus the target's own entropy: the KL divergence, 0 where the student matches
    (the same gradient as the cross-entropy)."""
    entropy = torch.special.xlogy(target, target) + torch.special.xlogy(1 - target, 1 - target)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") + entropy


REGIONS = ("box", "centre")


def emotion_weight(maps: TeacherMaps, region: str = "box", background: float = 0.1) -> Tensor:
    """Per cell, the weight of the emotion and continuous terms (module docstring)."""
    if region == "box":
        return maps.people + background * (1.0 - maps.people)
    if region == "centre":
        return maps.heatmap.clamp(min=background)
    raise ValueError(f"region must be one of {REGIONS}, got {region!r}")


def soften(target: Tensor, temperature: float, softmax: bool) -> Tensor:
    """The teacher's probabilities at ``temperature`` (Hinton et al.'s distillation): its
    logits (log-probabilities for a softmax set; clamped to 1e-6 from 0 and 1) divided by the
    temperature, read again; unchanged at 1."""
    if temperature == 1.0:
        return target
    p = target.clamp(1e-6, 1.0 - 1e-6)
    if softmax:
        return torch.softmax(torch.log(p) / temperature, dim=1)
    return torch.sigmoid(torch.logit(p) / temperature)


def label_free_terms(scale: ScaleOutput, maps: TeacherMaps, config: ModelConfig,
                     background: float = 0.1, region: str = "box",
                     temperature: float = 1.0) -> dict[str, Tensor]:
    """The student's losses at one scale against the teacher's maps (module docstring)."""
    t = temperature
    terms = {"heatmap": quality_focal(scale.heatmap.float(), maps.heatmap, maps.count)}
    size_weight = maps.heatmap * (maps.heatmap >= SIZE_FLOOR)
    terms["size"] = _weighted_mean((scale.size.float() - maps.size).abs().sum(1, keepdim=True),
                                   size_weight)
    where = emotion_weight(maps, region, background)
    for name, target in maps.emotions.items():
        logits = scale.emotions[name].float() / t
        if name in config.softmax_sets:
            target = soften(target, t, softmax=True)
            entropy = torch.special.xlogy(target, target).sum(1, keepdim=True)
            per_cell = entropy - (target * F.log_softmax(logits, dim=1)).sum(1, keepdim=True)
        else:
            per_cell = binary_kl(logits, soften(target, t, softmax=False)).sum(1, keepdim=True)
        terms[f"emotions.{name}"] = _weighted_mean(per_cell, where) * t * t
    if maps.continuous is not None and scale.continuous is not None:
        per_cell = binary_kl(scale.continuous.float() / t,
                             soften(maps.continuous, t, softmax=False)).sum(1, keepdim=True)
        terms["continuous"] = _weighted_mean(per_cell, where) * t * t
    return terms
