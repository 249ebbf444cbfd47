"""Building blocks of the ABAW-style multitask extensions.

Paper: papers/abaw-multitask-kd-task-discriminator.txt.

- :func:`ccc` and :func:`ccc_loss`: the concordance correlation coefficient (section 3.2)
  ``CCC = 2 rho s_y s_p / (s_y^2 + s_p^2 + (mu_y - mu_p)^2) = 2 cov / (var_y + var_p + dmu^2)``
  (population moments) and the supervision loss ``1 - CCC`` per dimension;
- :class:`GradientReversal` / :func:`reverse_gradient`: identity forward, gradient multiplied by
  ``-delta`` backward (the task discriminator's gradient reversal layer, section 3.1);
- :func:`delta_schedule`: ``delta`` constant, or ramped linearly 0 -> 1 over training (4.2);
- :class:`TaskWeights`: ``gamma_i = exp(0.5 n_i)``, ``n_i`` the number of epochs without
  validation improvement of task ``i`` (eq. 13, after Deng et al.).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor


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
    adds 1."""

    def __init__(self, tasks: Iterable[str]) -> None:
        self.stale = dict.fromkeys(tasks, 0)
        self.best = dict.fromkeys(self.stale, -math.inf)

    def update(self, scores: dict[str, float]) -> dict[str, float]:
        for task in self.stale:
            if task not in scores:
                raise KeyError(f"no validation score for task {task!r}")
            if scores[task] > self.best[task]:
                self.best[task] = scores[task]
                self.stale[task] = 0
            else:
                self.stale[task] += 1
        return self.weights()

    def weights(self) -> dict[str, float]:
        return {task: math.exp(0.5 * n) for task, n in self.stale.items()}

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"stale": dict(self.stale), "best": dict(self.best)}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        self.stale = {k: int(v) for k, v in state["stale"].items()}
        self.best = {k: float(v) for k, v in state["best"].items()}
