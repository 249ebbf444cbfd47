"""BENet's total loss (eq. 7) on a routed batch, normalised so that DDP gives the 1-process result.

``L_TOT = L_DET + L_CAT`` (BENet 3.4):

- ``L_DET`` (eq. 4): at 1/4 and 1/2, the centre focal loss (eq. 1) plus 0.1 x the size L1
  (eq. 2), on the samples routed to ``det``; both normalised by their number of people;
- ``L_CAT`` (eq. 6): the emotion loss (eq. 5 focal by default, or KA's BCE / CE by config) of
  the bottom-up maps read at the ground-truth centres at 1/4 and 1/2 (samples routed to ``bu``),
  of the person-centric head (``pc``: the extracted subject's labels) and of the background
  head (``bg``: per category, the maximum over the image's people), per category set;
- with ``bu_reading: box_mean`` (KA 2.1), the bottom-up maps are read as the mean inside each
  ground-truth box instead of at its centre, and the in-box variance (KA eq. 3) of the routed
  people's maps is added per set (``var.q.<set>``, times ``variance_weight``);
- with a continuous head (``model.continuous``), valence/arousal/dominance at the same centres
  (``cont.q``, ``cont.h``; ``continuous_loss``: ``ccc`` = 1 - CCC per dimension, or ``l2``).

Normalisation. Every term is a mean over its own population (people, or samples for pc/bg) of
the **global** batch: each process computes its local sum ``loss_local x n_local`` and divides by
``n_global`` (the counts of all processes, summed with one all-reduce before the forward pass);
DDP then averages the gradients over the ``world`` processes, so the terms are multiplied by
``world``. With one process this is the plain batch mean (CCC is a statistic of the whole
batch, not a mean over people: under DDP each process's CCC is weighted by its share of the
people, close to but not exactly the 1-process value; ``l2`` is exact). Samples that train
no term still reach every output through a zero-weighted sum, so every parameter takes part
in backward (DDP needs that) and no output is left out of the graph.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from caer_ros.model.output import BENetOutput
from training.config import TrainConfig
from training.data.batches import Batch
from training.data.targets import ScaleTargets, read_at_centers
from training.objectives.losses import (
    bce_loss,
    box_means,
    center_focal_loss,
    in_box_variance,
    multilabel_focal_loss,
    single_label_ce_loss,
    size_l1_loss,
)
from training.objectives.multitask import ccc_loss

LAMBDA_SIZE = 0.1  # BENet eq. 3
EMOTION_LOSS_FUNCTIONS = {"focal": multilabel_focal_loss, "bce": bce_loss,
                          "ce": single_label_ce_loss}


def term_names(config: TrainConfig, half: bool) -> list[tuple[str, str]]:
    """``(term, task)`` pairs of the config, in a fixed order (the counts vector's)."""
    scales = ["q", "h"] if half else ["q"]
    names: list[tuple[str, str]] = []
    sets = list(config.model.categories)
    if "det" in config.tasks:
        names += [(f"det.{s}", "det") for s in scales]
    if "bu" in config.tasks:
        names += [(f"bu.{s}.{c}", "bu") for s in scales for c in sets]
        if config.bu_reading == "box_mean":
            names += [(f"var.{s}.{c}", "bu") for s in scales for c in sets]
        if config.model.continuous:
            names += [(f"cont.{s}", "bu") for s in scales]
    for task in ("pc", "bg"):
        if task in config.tasks:
            names += [(f"{task}.{c}", task) for c in sets]
    return names


def local_counts(batch: Batch, names: list[tuple[str, str]]) -> dict[str, int]:
    """Population of each term in this process's batch: people (bu), samples (pc, bg); for
    ``det`` the heatmap's positive cells (eq. 1's N: two people on one cell make one) and, under
    ``<name>#people``, the people (eq. 2's N)."""
    counts = {}
    people = np.array([len(b) for b in batch.boxes])
    for name, task in names:
        routed = batch.route(task).numpy()
        if task == "det":
            heat = batch.targets[("q", "h").index(name.split(".")[1])].heatmap
            counts[name] = int((heat[torch.from_numpy(routed)] == 1).sum())
            counts[f"{name}#people"] = int(people[routed].sum())
            continue
        if name.startswith("cont."):
            known = [np.isfinite(c).all(axis=1) for c in batch.continuous]
            counts[name] = int(sum(k.sum() for k, r in zip(known, routed, strict=True) if r))
            continue
        set_name = name.rsplit(".", 1)[1]
        of_set = np.array([c == set_name for c in batch.category_sets])
        chosen = routed & of_set
        counts[name] = int(people[chosen].sum()) if task == "bu" else int(chosen.sum())
    return counts


def global_counts(counts: dict[str, int], device: torch.device) -> dict[str, int]:
    """``counts`` summed over the DDP processes (itself without DDP)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return dict(counts)
    vector = torch.tensor(list(counts.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(vector)
    return {k: int(round(v)) for k, v in zip(counts, vector.tolist(), strict=True)}


def _subset_targets(t: ScaleTargets, index: Tensor) -> ScaleTargets:
    return ScaleTargets(t.stride, *(getattr(t, n)[index] for n in (
        "heatmap", "sizes", "indices", "rows", "cols", "mask", "boxes", "labels")))


def compute_losses(output: BENetOutput, batch: Batch, config: TrainConfig,
                   counts: dict[str, int], totals: dict[str, int], world: int = 1,
                   term_weights: dict[str, float] | None = None
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """The total loss (eq. 7, scaled for DDP, see the module docstring) and each term's value
    normalised by its global population (for logging; unscaled by ``world`` and by
    ``term_weights``, the factors of the total: ABAW's gamma_i and alpha, 1 when absent)."""
    device = output.quarter.heatmap.device
    anchor = sum(v.float().sum() for v in output.flat().values()) * 0.0
    terms: dict[str, Tensor] = {}
    scales = dict(zip(("q", "h"), output.scales(), strict=False))
    targets = dict(zip(("q", "h"), batch.targets, strict=False))
    person_sample = torch.from_numpy(batch.person_samples()).to(device)
    sets = np.array(batch.category_sets)

    def weight(name: str) -> float:
        return counts[name] / max(totals[name], 1)

    for name, route in term_names(config, output.half is not None):
        parts = name.split(".")
        task = parts[0]
        routed = batch.route(route).to(device)
        if task == "det":
            scale, t = scales[parts[1]], targets[parts[1]]
            index = torch.nonzero(routed).flatten()
            if not len(index):
                terms[name] = (scale.heatmap.sum() + scale.size.sum()).float() * 0.0
                continue
            sub = _subset_targets(t.to(device), index)
            heat = scale.heatmap[index].float()
            center = center_focal_loss(heat, sub.heatmap) * max(counts[name], 1) \
                / max(totals[name], 1)
            size = size_l1_loss(scale.size[index].float(), sub.sizes, sub.indices, sub.mask) \
                * weight(f"{name}#people")
            terms[name] = center + LAMBDA_SIZE * size
            continue
        if task == "cont":
            terms[name] = _continuous_term(scales[parts[1]], targets[parts[1]], batch, routed,
                                           person_sample, config) * weight(name)
            continue
        set_name = parts[-1]
        of_set = torch.from_numpy(sets == set_name).to(device)
        loss_fn = EMOTION_LOSS_FUNCTIONS[config.loss_of(set_name)]
        if task == "var":
            scale, t = scales[parts[1]], targets[parts[1]]
            chosen = (routed & of_set).to(t.mask.device)
            terms[name] = config.variance_weight * in_box_variance(
                scale.emotions[set_name].float(), t.boxes, t.mask & chosen[:, None]) \
                * weight(name)
            continue
        if task == "bu":
            scale, t = scales[parts[1]], targets[parts[1]]
            logits = read_people(scale.emotions[set_name].float(), t, config.bu_reading)
            chosen = (routed & of_set)[person_sample]
            labels = _rows([lab for lab, ok in zip(batch.labels, (routed & of_set).tolist(),
                                                   strict=True) if ok],
                           logits.shape[1], device)
            terms[name] = loss_fn(logits[chosen], labels) * weight(name)
            continue
        heads = output.person_centric if task == "pc" else output.background
        logits = heads[set_name].float()
        chosen = routed & of_set
        labels = _rows([lab[None] for lab, ok in zip(batch.head_labels, chosen.tolist(),
                                                     strict=True) if ok],
                       logits.shape[1], device)
        terms[name] = loss_fn(logits[chosen], labels) * weight(name)
    weights = term_weights or {}
    total = anchor + sum((v * weights.get(k, 1.0) for k, v in terms.items()),
                         torch.zeros((), device=device)) * world
    return total, {k: v.detach() for k, v in terms.items()}


def read_people(maps: Tensor, targets: ScaleTargets, reading: str) -> Tensor:
    """Every real person's (N, C) values of (B, C, h, w) maps: at the box centre (``center``)
    or the mean inside the box (``box_mean``), people in :func:`read_at_centers` order."""
    return box_means(maps, targets) if reading == "box_mean" else read_at_centers(maps, targets)


def _continuous_term(scale, targets: ScaleTargets, batch: Batch, routed: Tensor,
                     person_sample: Tensor, config: TrainConfig) -> Tensor:
    """Valence/arousal/dominance at the centres of the bu samples' people with all three
    annotated: sigmoid of the continuous maps against ``(value - 1) / 9`` (the datasets' 1..10
    scale mapped to the 0..1 the node publishes); ``1 - CCC`` per dimension (ABAW) or L2."""
    device = scale.heatmap.device
    values = np.concatenate([*batch.continuous, np.zeros((0, 3), np.float32)])
    known = torch.from_numpy(np.isfinite(values).all(axis=1)).to(device)
    chosen = routed[person_sample] & known
    predicted = torch.sigmoid(read_people(scale.continuous.float(), targets,
                                          config.bu_reading)[chosen])
    target = torch.from_numpy(np.nan_to_num((values - 1.0) / 9.0)).to(device)[chosen]
    if config.continuous_loss == "l2":
        return ((predicted - target) ** 2).sum(dim=1).mean() if len(target) \
            else predicted.sum() * 0.0
    return ccc_loss(predicted, target)


def _rows(parts: list[np.ndarray], width: int, device: torch.device) -> Tensor:
    if not parts:
        return torch.zeros((0, width), device=device)
    return torch.from_numpy(np.concatenate(parts).astype(np.float32)).to(device)
