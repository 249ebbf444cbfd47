"""ABAW-style training extras: distillation (eq. 8-10, 13), task discriminator, adaptive gamma."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_train import SMOKE, TINY

from caer_ros.model.checkpoint import save_model_file
from caer_ros.model.inference_settings import InferenceSettings
from caer_ros.model.network import build_model
from training.config import ConfigError, DistillConfig, load_config
from training.objectives.distillation import DistillationExtra, distillation_terms, soft_label_loss
from training.objectives.multitask import TaskDiscriminator, emotion_task
from training.train import Trainer

MIXED = ["model.categories=[emotic,heco]", "data.train=[emotic,heco]",
         "data.val=[emotic,heco]", "emotion_loss.heco=ce", "model.continuous=true"]


# ----------------------------------------------------------------------------- losses

def test_soft_label_loss_by_hand():
    s = torch.tensor([[1.0, -2.0, 0.5]])
    t = torch.tensor([[0.0, 1.0, 2.0]])
    temperature = 2.0
    soft = np.exp(t.numpy() / 2) / np.exp(t.numpy() / 2).sum()
    log_p = s.numpy() / 2 - np.log(np.exp(s.numpy() / 2).sum())
    expected = -(soft * log_p).sum() * 4
    assert soft_label_loss(s, t, "ce", temperature).item() == pytest.approx(expected, rel=1e-6)
    q = 1 / (1 + np.exp(-t.numpy() / 2))
    p = 1 / (1 + np.exp(-s.numpy() / 2))
    # sigmoid sets: scaled by T, not T^2 (see training.objectives.distillation)
    expected = -(q * np.log(p) + (1 - q) * np.log(1 - p)).sum() * 2
    assert soft_label_loss(s, t, "bce", temperature).item() == pytest.approx(expected, rel=1e-6)
    # the student that equals its teacher is at the minimum: zero gradient
    for kind in ("ce", "bce"):
        x = t.clone().requires_grad_(True)
        soft_label_loss(x, t, kind, temperature).backward()
        assert x.grad.abs().max() < 1e-6
    values = torch.tensor([[0.1, 2.0, -1.0], [1.0, 0.0, 0.5], [-0.5, 1.0, 2.0]])
    assert soft_label_loss(values, values, "ccc", 1.0).item() == pytest.approx(0.0, abs=1e-5)
    assert soft_label_loss(torch.zeros(0, 3), torch.zeros(0, 3), "ce", 2.0).item() == 0.0


def test_soft_labels_follow_the_teachers_scores_not_the_students_loss():
    """A softmax-scored teacher (a HECO set trained with ``ce``) read with a sigmoid would teach
    scores it never gives: logits [2, 0, 0] are 0.79, 0.11, 0.11, not 0.88, 0.5, 0.5. Each
    side is read as its own model scores the set: a sigmoid (bce) student learns the teacher's
    softmax scores per category; a softmax (ce) student learns a sigmoid teacher's scores
    normalised over the set. Either way the student that publishes its teacher's scores is
    at the minimum."""
    t = torch.tensor([[2.0, 0.0, 0.0], [0.5, -1.0, 1.5]])
    s = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.3, -0.2]])
    temperature = 2.0
    soft_max = np.exp(t.numpy() / 2) / np.exp(t.numpy() / 2).sum(axis=1, keepdims=True)
    soft_sig = 1 / (1 + np.exp(-t.numpy() / 2))
    p = 1 / (1 + np.exp(-s.numpy() / 2))
    bce = -(soft_max * np.log(p) + (1 - soft_max) * np.log(1 - p)).sum(axis=1).mean() * 2
    got = soft_label_loss(s, t, "bce", temperature, teacher_scores="softmax").item()
    assert got == pytest.approx(bce, rel=1e-6)
    assert got != pytest.approx(soft_label_loss(s, t, "bce", temperature).item(), rel=1e-3)
    normalised = soft_sig / soft_sig.sum(axis=1, keepdims=True)
    log_q = s.numpy() / 2 - np.log(np.exp(s.numpy() / 2).sum(axis=1, keepdims=True))
    ce = -(normalised * log_q).sum(axis=1).mean() * 4
    got = soft_label_loss(s, t, "ce", temperature, teacher_scores="sigmoid").item()
    assert got == pytest.approx(ce, rel=1e-6)
    # the same scoring on both sides is the old reading (teacher_scores None: the student's)
    for kind, scores in (("ce", "softmax"), ("bce", "sigmoid")):
        assert soft_label_loss(s, t, kind, temperature, scores).item() == pytest.approx(
            soft_label_loss(s, t, kind, temperature).item(), rel=1e-7)
    # at the minimum: a sigmoid student publishing the softmax teacher's scores, a softmax
    # student publishing the sigmoid teacher's normalised scores
    for kind, scores, student in (
            ("bce", "softmax", 2 * torch.logit(torch.from_numpy(soft_max))),
            ("ce", "sigmoid", 2 * torch.log(torch.from_numpy(normalised)))):
        x = student.float().clone().requires_grad_(True)
        soft_label_loss(x, t, kind, temperature, scores).backward()
        assert x.grad.abs().max() < 1e-6, (kind, scores)
    with pytest.raises(ValueError, match="softmax or sigmoid"):
        soft_label_loss(s, t, "bce", 1.0, teacher_scores="linear")


def _rows(n: int, e: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, e)).astype(np.float32))


@pytest.mark.parametrize("on_labelled", [False, True])
def test_distillation_uses_the_teacher_only_where_labels_are_missing(on_labelled):
    """Missing labels: people 0, 2, 5 have no heco label, 1, 3, 4 have one. The unlabelled term
    reads only the unlabelled people's teacher rows (and trains only those student rows); with
    ``labelled: false`` nothing reads the labelled people's teacher rows at all."""
    config = DistillConfig(teacher="x.pt", temperature=2.0, beta=0.9, labelled=on_labelled)
    has = torch.tensor([False, True, False, True, True, False])
    student = _rows(6, 8, 0).requires_grad_(True)
    teacher = _rows(6, 8, 1)
    kinds = {"heco": "ce"}

    def terms(t: torch.Tensor) -> dict[str, torch.Tensor]:
        return distillation_terms({"heco": student}, {"heco": t}, {"heco": has}, kinds, config,
                                  {"heco": 2.0})

    base = terms(teacher)
    assert set(base) == {"kd.q.heco"} | ({"kd.q.heco.labelled"} if on_labelled else set())
    # the term is beta * gamma * the mean loss over the unlabelled people
    expected = 0.9 * 2.0 * soft_label_loss(student[~has], teacher[~has], "ce", 2.0)
    assert base["kd.q.heco"].item() == pytest.approx(expected.item(), rel=1e-6)
    changed_labelled = teacher.clone()
    changed_labelled[has, 0] += 5.0  # (softmax ignores a shift of the whole row)
    after = terms(changed_labelled)
    assert after["kd.q.heco"].item() == pytest.approx(base["kd.q.heco"].item(), rel=1e-7)
    if on_labelled:
        assert after["kd.q.heco.labelled"].item() != pytest.approx(
            base["kd.q.heco.labelled"].item(), rel=1e-3)
    changed_unlabelled = teacher.clone()
    changed_unlabelled[~has, 0] += 5.0
    assert terms(changed_unlabelled)["kd.q.heco"].item() != pytest.approx(
        base["kd.q.heco"].item(), rel=1e-3)
    base["kd.q.heco"].backward()
    rows_with_grad = student.grad.abs().sum(dim=1) > 0
    assert torch.equal(rows_with_grad, ~has)


# ----------------------------------------------------------------------------- discriminator

def test_discriminator_reverses_and_scales_the_backbone_gradient():
    torch.manual_seed(0)
    features = [torch.randn(4, 8, 6, 6, requires_grad=True), torch.randn(4, 16, 3, 3,
                                                                          requires_grad=True)]
    disc = TaskDiscriminator([8, 16], tasks=2, hidden=5)
    labels = torch.tensor([0, 1, 1, 0])
    torch.nn.functional.cross_entropy(disc(features), labels).backward()
    reversed_grads = [f.grad.clone() for f in features]
    disc_grads = [p.grad.clone() for p in disc.parameters()]
    for f in features:
        f.grad = None
    disc.zero_grad()
    disc.reverse.delta = 0.0  # plain gradient through an identity, for reference
    pooled = torch.cat([f.mean(dim=(2, 3)) for f in features], dim=1)
    torch.nn.functional.cross_entropy(disc.classifier(pooled), labels).backward()
    for got, plain in zip(reversed_grads, [f.grad for f in features], strict=True):
        torch.testing.assert_close(got, -plain)
    # the discriminator's own gradients are not reversed
    for got, plain in zip(disc_grads, [p.grad for p in disc.parameters()], strict=True):
        torch.testing.assert_close(got, plain)


def test_emotion_tasks():
    assert emotion_task("bu.q.emotic") == "emotic"
    assert emotion_task("pc.heco") == "heco"
    assert emotion_task("cont.h") == "continuous"
    assert emotion_task("det.q") is None


# ----------------------------------------------------------------------------- config

def _teacher(tmp_path, categories, continuous=True, overrides=(), spread=False):
    """A teacher model file; ``spread``: its emotion logits spread over -3..3 across each set's
    categories (an untrained head's are all near 0, where a softmax and a normalised sigmoid
    nearly agree)."""
    config = load_config(SMOKE, [*TINY, f"model.categories={categories}",
                                 f"data.train={categories}", f"data.val={categories}",
                                 f"model.continuous={str(continuous).lower()}",
                                 *overrides]).model
    model = build_model(config, seed=5)
    if spread:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.startswith("emotion.") and "_outputs." in name and \
                        name.endswith(".3.bias"):
                    parameter.copy_(torch.linspace(-3.0, 3.0, len(parameter)))
    path = tmp_path / "teacher.pt"
    save_model_file(path, model, InferenceSettings.for_model(config))
    return path


def test_a_partial_teacher_distils_its_own_tasks_and_alpha_alone_has_no_teacher(tmp_path):
    """A HECO-only teacher teaches HECO and the continuous head, not EMOTIC; alpha weighs the
    supervision of every student task either way; ``teacher: null`` keeps alpha alone (the
    control arm): no teacher, no distillation term."""
    device = torch.device("cpu")
    heco_only = _teacher(tmp_path, "[heco]")
    extra = DistillationExtra(load_config(SMOKE, [*TINY, *MIXED,
                                                  f"distill={{teacher: {heco_only}}}"]), device)
    assert extra.tasks == ["heco", "continuous"]
    assert extra.supervised_factors() == {"emotic": 10.0, "heco": 10.0, "continuous": 10.0}
    assert extra.config.temperature == 1.0  # no temperature unless configured
    alone = DistillationExtra(load_config(SMOKE, [*TINY, *MIXED,
                                                  "distill={teacher: null, alpha: 4.0}"]), device)
    assert alone.teacher is None and alone.tasks == []
    assert alone.supervised_factors() == {"emotic": 4.0, "heco": 4.0, "continuous": 4.0}
    assert alone.terms(None, torch.zeros(1, 3, 64, 64), None) == {}


@pytest.mark.parametrize("teacher_loss, student_loss", [("ce", "focal"), ("focal", "ce")])
def test_the_extra_reads_the_teacher_by_the_teachers_scores(synthetic_dataset, tmp_path,
                                                            monkeypatch, teacher_loss,
                                                            student_loss):
    """A HECO teacher trained with ``ce`` scores HECO with a softmax (its model file's
    ``scores``); a student trained with focal learns those softmax scores with its sigmoid loss,
    not the teacher's logits read with a sigmoid; and the other way round. EMOTIC (sigmoid on
    both sides) is unchanged."""
    import torch.nn.functional as F

    import training.objectives.distillation as distillation
    from training.data.batches import CaerDataset, config_split, make_collate

    teacher = _teacher(tmp_path, "[emotic,heco]", continuous=False,
                       overrides=[f"emotion_loss.heco={teacher_loss}"], spread=True)
    config = load_config(SMOKE, [*TINY, "model.categories=[emotic,heco]",
                                 "data.train=[emotic,heco]", "data.val=[emotic,heco]",
                                 f"emotion_loss.heco={student_loss}",
                                 f"distill={{teacher: {teacher}, labelled: false}}"],
                         synthetic_dataset)
    extra = DistillationExtra(config, torch.device("cpu"))
    teacher_scores = "softmax" if teacher_loss == "ce" else "sigmoid"
    assert extra.teacher_scores == {"emotic": "sigmoid", "heco": teacher_scores}
    assert extra.kinds == {"emotic": "bce", "heco": "ce" if student_loss == "ce" else "bce"}

    calls = []
    real = distillation.soft_label_loss

    def recorded(student, teacher, kind, temperature, scores=None):
        value = real(student, teacher, kind, temperature, scores)
        calls.append((student.detach(), teacher.detach(), kind, scores, value.detach()))
        return value

    monkeypatch.setattr(distillation, "soft_label_loss", recorded)
    records, _ = config_split(config, "train")
    dataset = CaerDataset(records, config, train=False)
    batch = make_collate(dataset.input_size)([dataset[(0, i)] for i in range(len(dataset))])
    student = build_model(config.model, seed=1).eval()
    with torch.no_grad():
        terms = extra.terms(student(batch.images), batch.images, batch)
    assert {"kd.q.heco", "kd.q.emotic"} <= set(terms)
    heco = [c for c in calls if c[0].shape[1] == len(config.model.categories["heco"])]
    assert heco and all(len(c[0]) for c in heco)  # HECO taught on the EMOTIC images' people
    for s, t, kind, scores, value in heco:
        assert (kind, scores) == (extra.kinds["heco"], teacher_scores)
        if teacher_loss == "ce":  # a sigmoid student of a softmax teacher
            soft = torch.softmax(t, dim=1)
            expected = F.binary_cross_entropy_with_logits(s, soft, reduction="none").sum(1)
            misread = F.binary_cross_entropy_with_logits(s, torch.sigmoid(t),
                                                         reduction="none").sum(1)
        else:  # a softmax student of a sigmoid teacher
            soft = torch.sigmoid(t)
            log_q = torch.log_softmax(s, dim=1)
            expected = -(soft / soft.sum(1, keepdim=True) * log_q).sum(1)
            misread = -(torch.softmax(t, dim=1) * log_q).sum(1)
        assert value.item() == pytest.approx(expected.mean().item(), rel=1e-5)
        assert value.item() != pytest.approx(misread.mean().item(), rel=1e-3)
    emotic = [c for c in calls if c[0].shape[1] == len(config.model.categories["emotic"])]
    assert emotic and all(c[2:4] == ("bce", "sigmoid") for c in emotic)


def test_config_errors(synthetic_dataset, tmp_path):
    with pytest.raises(ConfigError, match="discriminator needs at least two category sets"):
        load_config(SMOKE, [*TINY, "discriminator={delta: 1.0}"])
    with pytest.raises(ConfigError, match="discriminator.schedule must be constant or ramp"):
        load_config(SMOKE, [*TINY, *MIXED, "discriminator={schedule: linear}"])
    with pytest.raises(ConfigError, match="distill.temperature must be a number > 0"):
        load_config(SMOKE, [*TINY, "distill={teacher: t.pt, temperature: 0}"])
    with pytest.raises(ConfigError, match="task_weights must be fixed or adaptive"):
        load_config(SMOKE, [*TINY, "task_weights=sometimes"])
    config = load_config(SMOKE, [*TINY, "distill={teacher: " + str(tmp_path / "none.pt") + "}",
                                 "out=" + str(tmp_path / "run")], synthetic_dataset)
    with pytest.raises(ConfigError, match="distill.teacher.*none.pt"):
        Trainer(config, progress=False)
    other = _teacher(tmp_path, "[heco]")
    config = load_config(SMOKE, [*TINY, "model.continuous=false", f"distill={{teacher: {other}}}",
                                 "out=" + str(tmp_path / "run")], synthetic_dataset)
    with pytest.raises(ConfigError, match="has none of the student's tasks"):
        Trainer(config, progress=False)


# ----------------------------------------------------------------------------- trainer

def test_trainer_with_distillation_discriminator_and_adaptive_weights(synthetic_dataset,
                                                                       tmp_path):
    """Student on EMOTIC + HECO with Algorithm 1's teacher (every task: both sets and the
    continuous head), a ramped task discriminator and adaptive gamma: the teacher's scores are
    distilled in both directions (EMOTIC onto HECO images, HECO onto EMOTIC images), alpha
    weighs every supervised emotion term and gamma every term of its task, the teacher stays
    frozen, and the run resumes from last.ckpt with its extras."""
    teacher = _teacher(tmp_path, "[emotic,heco]")
    before = torch.load(teacher, weights_only=True)["state_dict"]
    out = tmp_path / "run"
    overrides = [*TINY, *MIXED, "tasks=[bu,det]", "batch_size=4", "epochs=2",
                 f"distill={{teacher: {teacher}, alpha: 3.0, beta: 0.5}}",
                 "discriminator={delta: 1.0, schedule: ramp, hidden: 16}",
                 "task_weights=adaptive", "calibrate=false", f"out={out}"]
    trainer = Trainer(load_config(SMOKE, overrides, synthetic_dataset), progress=False)
    assert trainer.term_weights["bu.q.heco"] == 3.0  # alpha: every supervised emotion task
    assert trainer.term_weights["bu.q.emotic"] == 3.0
    assert trainer.term_weights["cont.q"] == 3.0  # ... and the continuous head
    assert trainer.term_weights["det.q"] == 1.0
    history = trainer.run()
    train = history[0]["train"]
    assert {"kd.q.heco", "kd.q.heco.labelled", "kd.q.emotic", "kd.q.emotic.labelled",
            "kd.q.continuous", "disc.task"} <= set(train)
    assert train["kd.q.emotic"] > 0 and train["kd.q.heco"] > 0  # both directions taught
    assert all(math.isfinite(v) for v in history[0]["train"].values())
    assert "disc.task" not in history[0]["val"]  # adversarial terms do not pick best.pt
    weights = history[-1]["task_weights"]
    assert set(weights) == {"emotic", "heco", "continuous"}
    assert all(w in (1.0, math.exp(0.5), math.exp(1.0)) for w in weights.values())
    after = torch.load(teacher, weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    # delta ramped to the end of training
    assert trainer.extras[1].module.reverse.delta == pytest.approx(1.0, abs=0.26)
    state = torch.load(out / "last.ckpt", weights_only=True)
    assert set(state["extras"]) == {"kd", "disc"}
    assert state["state"]["task_weights"]["stale"].keys() == weights.keys()
    # resuming with one more epoch restores the discriminator and the gammas
    resumed = Trainer(load_config(SMOKE, [*overrides, "epochs=3"], synthetic_dataset),
                      progress=False)
    assert resumed.task_weights.stale == trainer.task_weights.stale
    disc = resumed.extras[1].module.state_dict()
    for k, v in trainer.extras[1].module.state_dict().items():
        assert torch.equal(v, disc[k])
    assert len(resumed.run()) == 3
    assert json.loads((out / "history.json").read_text())[-1]["epoch"] == 3


def test_max_steps_end_the_run_and_the_delta_ramp_spans_the_real_run(synthetic_dataset,
                                                                      tmp_path):
    """With ``epochs: 1000`` a ramp over nominal epochs would keep delta near 0; the ramp runs
    over the limit that ends the run: ``max_steps`` (here 4: delta is 3/4 at the last step) or
    the time budget (half the budget used: 0.5). Each validation records every task's metric
    (what adaptive gamma counts)."""
    out = tmp_path / "run"
    overrides = [*TINY, *MIXED, "tasks=[bu,det]", "batch_size=4", "epochs=1000",
                 "max_steps=4", "discriminator={delta: 1.0, schedule: ramp, hidden: 16}",
                 "calibrate=false", f"out={out}"]
    trainer = Trainer(load_config(SMOKE, overrides, synthetic_dataset), progress=False)
    history = trainer.run()
    assert trainer.state.global_step == 4 and history[-1]["steps"] == 4
    # the 4th step ended the first epoch (16 images, batches of 4): the epoch is complete
    assert (trainer.state.epoch, trainer.state.step, len(history)) == (1, 0, 1)
    assert trainer.extras[0].module.reverse.delta == pytest.approx(3 / 4)
    metrics = history[-1]["val_metrics"]
    assert set(metrics) == {"emotic", "heco", "continuous"}
    assert all(-1.0 <= v <= 1.0 for v in metrics.values())
    assert torch.load(out / "final.pt", weights_only=True)["meta"]["steps"] == 4
    again = Trainer(load_config(SMOKE, overrides, synthetic_dataset), progress=False)
    assert again.finished and "its 4 steps are done" in again.finished_message()
    again.close()

    budgeted = load_config(SMOKE, [*overrides, "max_steps=null", "budget_minutes=10",
                                   f"out={tmp_path / 'budget'}"], synthetic_dataset)
    trainer = Trainer(budgeted, progress=False)
    trainer.state.elapsed_s = 300.0  # half the budget used, a tiny fraction of the epochs
    assert trainer._progress() == pytest.approx(0.5)
    trainer.close()


def test_early_stop_ends_the_run_when_no_task_improves(synthetic_dataset, tmp_path,
                                                       monkeypatch):
    """Adaptive gamma with early_stop and a patience of 1: validation metrics that never
    improve after the first validation stop the run at the second (the paper's stop), with
    gamma at its cap; the same command then leaves the finished run alone."""
    import training.train as train_module

    monkeypatch.setattr(train_module.TaskMetrics, "result",
                        lambda self: {"emotic": 0.5, "heco": 0.5, "continuous": 0.1})
    out = tmp_path / "run"
    overrides = [*TINY, *MIXED, "tasks=[bu,det]", "batch_size=8", "epochs=50",
                 "task_weights=adaptive", "task_patience=1", "early_stop=true",
                 "calibrate=false", f"out={out}"]
    trainer = Trainer(load_config(SMOKE, overrides, synthetic_dataset), progress=False)
    history = trainer.run()
    assert len(history) == 2 and history[-1]["early_stopped"]
    assert history[-1]["task_weights"] == pytest.approx(dict.fromkeys(
        ["emotic", "heco", "continuous"], math.exp(0.5)))
    again = Trainer(load_config(SMOKE, overrides, synthetic_dataset), progress=False)
    assert again.finished and "stopped early" in again.finished_message()
    assert "Raise epochs" not in again.finished_message()
    again.close()
    with pytest.raises(ConfigError, match="early_stop needs task_weights: adaptive"):
        load_config(SMOKE, [*TINY, "early_stop=true"])
    with pytest.raises(ConfigError, match="adaptive needs the bu task"):
        load_config(SMOKE, [*TINY, "task_weights=adaptive", "tasks=[det]"])
