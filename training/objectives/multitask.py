"""Building blocks of the ABAW-style multitask extensions.

Paper: papers/abaw-multitask-kd-task-discriminator.txt.

- :func:`ccc` and :func:`ccc_loss`: the concordance correlation coefficient (section 3.2)
  ``CCC = 2 rho s_y s_p / (s_y^2 + s_p^2 + (mu_y - mu_p)^2) = 2 cov / (var_y + var_p + dmu^2)``
  (population moments) and the supervision loss ``1 - CCC`` per dimension;
- :class:`GradientReversal` / :func:`reverse_gradient`: identity forward, gradient multiplied by
  ``-delta`` backward (the task discriminator's gradient reversal layer, section 3.1);
- :func:`delta_schedule`: ``delta`` constant, or ramped linearly 0 -> 1 over training (4.2);
- :class:`TaskWeights`: ``gamma_i = exp(0.5 n_i)``, ``n_i`` the number of validations without
  improvement of task ``i``'s validation metric (:mod:`training.evaluation.task_metrics`; eq. 13,
  after
  Deng et al.), capped at the paper's patience of 5 (it stops training after 5 epochs without
  improvement), so gamma_i <= exp(2.5) ~ 12.2;
- :class:`TaskDiscriminator` and :class:`DiscriminatorExtra`: the task discriminator (section
  3.1, eq. 11) on the shared backbone features, behind the gradient reversal layer, as a
  trainer extra (:mod:`training.objectives.extras`).

Tasks here are the model's category sets (a sample of EMOTIC + HECO is labelled for one set,
like an ABAW sample for one of VA / EXPR / AU) and ``continuous``. The discriminator predicts
the set of each sample from its features; the reversed gradient pushes the backbone towards
features that do not tell the sets apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn


def ccc(prediction, target) -> np.ndarray | float:
    """CCC of each column of (N, D) arrays (a float for 1-D inputs). Population moments; a
    column where both sides are constant and equal gives 1, constant but different gives 0."""
    p = np.asarray(prediction, np.float64)
    y = np.asarray(target, np.float64)
    if p.shape != y.shape or p.ndim not in (1, 2):
        raise ValueError(f"prediction {p.shape} and target {y.shape} must be equal (N,) or (N, D)")
    flat = p.ndim == 1
    p, y = (p[:, None], y[:, None]) if flat else (p, y)
    if len(p) == 0:
        raise ValueError("CCC needs at least one sample")
    mp, my = p.mean(axis=0), y.mean(axis=0)
    cov = ((p - mp) * (y - my)).mean(axis=0)
    denominator = p.var(axis=0) + y.var(axis=0) + (mp - my) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(denominator > 0, 2 * cov / np.where(denominator > 0, denominator, 1),
                         1.0)
    return float(value[0]) if flat else value


def ccc_loss(prediction: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - CCC`` per column of (N, D) tensors, averaged over the D dimensions (differentiable;
    ``eps`` keeps a constant batch finite). N < 2 gives a graph-connected 0."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target "
                         f"{tuple(target.shape)} differ")
    if prediction.ndim == 1:
        prediction, target = prediction[:, None], target[:, None]
    if prediction.shape[0] < 2:
        return prediction.sum() * 0.0
    y = target.to(prediction)
    mp, my = prediction.mean(dim=0), y.mean(dim=0)
    cov = ((prediction - mp) * (y - my)).mean(dim=0)
    denominator = prediction.var(dim=0, unbiased=False) + y.var(dim=0, unbiased=False) \
        + (mp - my) ** 2
    return (1 - 2 * cov / (denominator + eps)).mean()


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, delta: float) -> Tensor:
        ctx.delta = delta
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.delta * grad, None


def reverse_gradient(x: Tensor, delta: float = 1.0) -> Tensor:
    """Identity forward; backward multiplies the gradient by ``-delta``."""
    return _Reverse.apply(x, float(delta))


class GradientReversal(torch.nn.Module):
    """:func:`reverse_gradient` as a module; ``delta`` may be changed during training."""

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        self.delta = float(delta)

    def forward(self, x: Tensor) -> Tensor:
        return reverse_gradient(x, self.delta)


def delta_schedule(kind: str, progress: float, value: float = 1.0) -> float:
    """``constant``: ``value``; ``ramp``: ``value`` x ``progress`` (0 at the start, ``value``
    at the end of training; ``progress`` in [0, 1], clipped)."""
    if kind == "constant":
        return float(value)
    if kind == "ramp":
        return float(value) * min(max(float(progress), 0.0), 1.0)
    raise ValueError(f"delta schedule must be 'constant' or 'ramp', got {kind!r}")


class TaskWeights:
    """``gamma_i = exp(0.5 n_i)``; :meth:`update` after each validation with each task's score
    (higher is better): a task that improved on its best resets ``n_i`` to 0, one that did not
    adds 1, up to ``patience`` (the paper stops training there, so gamma never exceeds
    ``exp(0.5 patience)``). A task without a score this time (no usable validation person)
    keeps its count. :attr:`exhausted`: every task has reached ``patience``."""

    def __init__(self, tasks: Iterable[str], patience: int = 5) -> None:
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        self.patience = patience
        self.stale = dict.fromkeys(tasks, 0)
        self.best = dict.fromkeys(self.stale, -math.inf)

    def update(self, scores: dict[str, float]) -> dict[str, float]:
        for task in self.stale:
            if task not in scores or not math.isfinite(scores[task]):
                continue
            if scores[task] > self.best[task]:
                self.best[task] = scores[task]
                self.stale[task] = 0
            else:
                self.stale[task] = min(self.stale[task] + 1, self.patience)
        return self.weights()

    @property
    def exhausted(self) -> bool:
        """Every task that has had a score went ``patience`` validations without improving
        (the paper's stop); false while none has had one."""
        scored = [t for t in self.stale if self.best[t] > -math.inf]
        return bool(scored) and all(self.stale[t] >= self.patience for t in scored)

    def weights(self) -> dict[str, float]:
        return {task: math.exp(0.5 * n) for task, n in self.stale.items()}

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"stale": dict(self.stale), "best": dict(self.best)}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        self.stale = {k: int(v) for k, v in state["stale"].items()}
        self.best = {k: float(v) for k, v in state["best"].items()}


def emotion_task(term: str) -> str | None:
    """The task a loss term belongs to (``bu.q.emotic`` -> ``emotic``, ``pc.heco`` -> ``heco``,
    ``cont.h`` -> ``continuous``); None for detection terms."""
    parts = term.split(".")
    if parts[0] == "cont":
        return "continuous"
    if parts[0] in ("bu", "var", "pc", "bg"):
        return parts[-1]
    return None


class TaskDiscriminator(nn.Module):
    """Global average of every backbone branch, concatenated -> gradient reversal -> Linear,
    ReLU, Linear -> one logit per task."""

    def __init__(self, widths: Iterable[int], tasks: int, hidden: int = 128) -> None:
        super().__init__()
        widths = list(widths)
        self.reverse = GradientReversal(1.0)
        self.classifier = nn.Sequential(nn.Linear(sum(widths), hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, tasks))

    def forward(self, features: list[Tensor]) -> Tensor:
        pooled = torch.cat([f.float().mean(dim=(2, 3)) for f in features], dim=1)
        return self.classifier(self.reverse(pooled))


class DiscriminatorExtra:
    """The trainer's task-discriminator extra: term ``disc.task`` = cross-entropy of the
    predicted set of every sample of the batch (eq. 11).

    ``delta`` (constant, or ramped 0 -> delta with the training progress) scales the reversed
    gradient that reaches the backbone, which is what eq. 13's ``delta L^T`` does to the shared
    features; the discriminator itself learns from the unscaled loss, so it is a trained
    adversary from the first step even while a ramp keeps delta near 0.
    """

    name = "disc"
    in_validation = False

    def __init__(self, config, widths: Iterable[int]) -> None:
        self.config = config.discriminator
        self.tasks = list(config.model.categories)
        self.module = TaskDiscriminator(widths, len(self.tasks), self.config.hidden)
        self.set_progress(0.0)

    def terms(self, output, images: Tensor, batch) -> dict[str, Tensor]:
        logits = self.module(output.features)
        labels = torch.tensor([self.tasks.index(s) for s in batch.category_sets],
                              device=logits.device)
        return {"disc.task": torch.nn.functional.cross_entropy(logits, labels)}

    def set_progress(self, progress: float) -> None:
        self.module.reverse.delta = delta_schedule(self.config.schedule, progress,
                                                   self.config.delta)

    def set_task_weights(self, weights: dict[str, float]) -> None:
        pass

    def supervised_factors(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, float]:
        return {"delta": self.module.reverse.delta}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.module.reverse.delta = float(state.get("delta", self.module.reverse.delta))
