"""training.objectives.multitask: CCC and its loss, gradient reversal, delta schedule, task
weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.objectives.multitask import (
    GradientReversal,
    TaskWeights,
    ccc,
    ccc_loss,
    delta_schedule,
    reverse_gradient,
)

Y = np.array([1.0, 2.0, 3.0, 4.0])


def test_ccc_by_hand():
    assert ccc(Y, Y) == pytest.approx(1.0)
    assert ccc(5 - Y, Y) == pytest.approx(-1.0)  # anti-correlated, same mean and spread
    # negated: cov -1.25, variances 1.25 each, means -2.5 and 2.5 -> -2.5 / 27.5
    assert ccc(-Y, Y) == pytest.approx(-2.5 / 27.5)
    # shifted by 1: cov 1.25, variances 1.25 each, mean gap 1 -> 2.5 / 3.5
    assert ccc(Y + 1, Y) == pytest.approx(2.5 / 3.5)
    # scaled by 2 (same mean 2.5 -> 5 vs 2.5): cov 2.5, var 5 and 1.25, gap 2.5^2
    assert ccc(2 * Y, Y) == pytest.approx(5.0 / (5.0 + 1.25 + 6.25))
    assert ccc(np.full(4, 3.0), np.full(4, 3.0)) == 1.0
    assert ccc(np.full(4, 3.0), Y) == pytest.approx(0.0)
    both = ccc(np.stack([Y, 5 - Y], 1), np.stack([Y, Y], 1))
    np.testing.assert_allclose(both, [1.0, -1.0])
    with pytest.raises(ValueError, match="equal"):
        ccc(Y, Y[:3])


def test_ccc_loss_matches_the_metric_and_learns():
    p = torch.tensor(np.stack([Y + 1, 2 * Y], 1), requires_grad=True)
    y = torch.tensor(np.stack([Y, Y], 1))
    loss = ccc_loss(p, y)
    expected = 1 - np.mean(ccc(np.stack([Y + 1, 2 * Y], 1), np.stack([Y, Y], 1)))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert float(ccc_loss(torch.tensor(Y), torch.tensor(Y))) == pytest.approx(0.0, abs=1e-6)
    assert float(ccc_loss(5 - torch.tensor(Y), torch.tensor(Y))) == pytest.approx(2.0)
    loss.backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    one = torch.zeros(1, 3, requires_grad=True)
    assert float(ccc_loss(one, torch.ones(1, 3)).detach()) == 0.0


def test_gradient_reversal_negates_and_scales_exactly():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.tensor([2.0, 4.0, 8.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -2.0]))
    layer = GradientReversal(1.0)
    x.grad = None
    layer(x).sum().backward()
    assert torch.equal(x.grad, -torch.ones(3))


def test_delta_schedule():
    assert delta_schedule("constant", 0.3, 0.5) == 0.5
    assert [delta_schedule("ramp", p) for p in (0, 0.5, 1, 2)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="ramp"):
        delta_schedule("cosine", 0.5)


def test_task_weights_grow_as_exp_half_n():
    weights = TaskWeights(["va", "expr"])
    assert weights.update({"va": 0.3, "expr": 0.5}) == {"va": 1.0, "expr": 1.0}
    weights.update({"va": 0.2, "expr": 0.6})
    got = weights.update({"va": 0.25, "expr": 0.6})  # va stale twice, expr once (no gain)
    assert got["va"] == pytest.approx(math.exp(1.0)) and got["expr"] == pytest.approx(
        math.exp(0.5))
    assert weights.update({"va": 0.4, "expr": 0.7})["va"] == 1.0  # improved: reset
    copy = TaskWeights(["va", "expr"])
    copy.load_state_dict(weights.state_dict())
    assert copy.weights() == weights.weights()
    weights.update({"va": 0.3})  # no expr score this time (no usable person): count kept
    assert weights.stale == {"va": 1, "expr": 0}


def test_task_weights_are_capped_at_the_papers_patience():
    """Counts stop at the patience (5: the paper stops there), so gamma never passes
    exp(2.5) ~ 12.2 however long a task stalls (it overflowed float32 past n ~ 178)."""
    weights = TaskWeights(["emotic", "heco"])
    weights.update({"emotic": 0.5, "heco": 0.5})
    for _ in range(300):
        got = weights.update({"emotic": 0.4, "heco": 0.6 if not weights.stale["heco"] else 0.1})
    assert weights.stale == {"emotic": 5, "heco": 5}
    assert got == pytest.approx({"emotic": math.exp(2.5), "heco": math.exp(2.5)})
    assert weights.exhausted
    weights.update({"emotic": 0.9, "heco": 0.1})
    assert not weights.exhausted and weights.weights()["emotic"] == 1.0
    with pytest.raises(ValueError, match="patience"):
        TaskWeights(["emotic"], patience=0)
