"""Knowledge distillation with soft labels for incomplete labels (ABAW-KD, eq. 8-10 and 13).

Paper: papers/abaw-multitask-kd-task-discriminator.txt. Algorithm 1 trains a *teacher* on the
supervised losses, then a *student* on eq. 13::

    Loss_i = gamma_i (alpha L^S_i + L^D_i) + delta L^T + sum_{j != i} beta gamma_j L^D_j

Here a *task* is a category set of the model (``emotic``: EMOTIC's 26, ``heco``: HECO's 8) or
the continuous head (``continuous``: valence, arousal, dominance), and a sample of the mixed
EMOTIC + HECO data is labelled for its own set only. The teacher is any trained caer_ros model
file. Algorithm 1's first stage trains it on *every* task with the supervised losses
(``python -m training.train`` with the student's own config, without ``distill``), so it fills
the missing labels in both directions: EMOTIC scores on the HECO images, HECO scores on the
EMOTIC images. The student is trained with a ``distill`` config section
(:class:`DistillConfig`):

- on people **without** a label for task ``j`` (HECO images for ``emotic``, EMOTIC images for
  ``heco``, people without valence/arousal/dominance for ``continuous``) the student's
  bottom-up scores learn the teacher's: ``beta gamma_j L^D_j`` (terms ``kd.<scale>.<task>``);
- on people **with** a label, eq. 13's ``L^D_i`` as well when ``distill.labelled`` is true
  (terms ``kd.<scale>.<task>.labelled``); ``labelled: false`` uses the teacher only where
  labels are missing;
- ``alpha`` weighs the supervised terms of **every** emotion task (eq. 13's ``alpha L^S_i``,
  applied by the trainer to the bottom-up, in-box variance, continuous, person-centric and
  background terms), not only of the tasks the teacher covers: otherwise the distillation arm
  would also reweight some supervision against the rest. ``teacher: null`` keeps alpha alone,
  without a teacher (no ``kd`` terms): the control arm that separates the teacher's knowledge
  from alpha's reweighting.

Distillation losses, on the emotion maps read for each person as the supervised bottom-up loss
reads them (``bu_reading``: at the centre, or the box mean), per person. Temperature ``T`` is
1 (none) unless configured: the paper uses no temperature (its ``t_img = 2`` is a clip length
of two seconds), and at ``T = 1`` every scaling below is 1. With ``T != 1`` the logits are
divided by ``T`` and the loss multiplied by ``T^2`` for softmax sets (Hinton et al.: their
gradients shrink as ``1 / T^2``) and by ``T`` for sigmoid sets: where a soft label saturates
(a confident teacher), a sigmoid's gradient shrinks only as ``1 / T`` and ``T^2`` would make
it ``T`` times larger than at ``T = 1``; where it does not (logits near 0) the gradient
shrinks as ``1 / T^2`` and ``T`` under-weights it by ``T``. No single factor is right for
both, which is one more reason to leave ``T`` at 1:

- multi-label sets (focal or BCE supervision): binary cross-entropy between
  ``sigmoid(s / T)`` and the soft labels ``sigmoid(t / T)`` (eq. 10), summed over categories;
- single-label sets (``ce``): cross-entropy between ``softmax(s / T)`` and ``softmax(t / T)``
  (eq. 9);
- continuous: ``1 - CCC(sigmoid(s), sigmoid(t))`` per dimension (eq. 8; no temperature).

(The soft labels as written are for a teacher that scores the set as the student does;
the last paragraph says what a teacher scoring it otherwise gives.)

Each is a mean over its people in this process's batch. Only tasks the teacher has are
distilled. The teacher runs frozen, in eval mode, under ``torch.no_grad``, on the student's
batch (re-normalised if its input normalisation differs); its maps are resized to the
student's grid when their sizes differ.

Each side is read as its own model scores the set (``ModelConfig.scores``, stored in every
model file): the student's loss follows the student's scores (its ``emotion_loss``), the soft
labels follow the *teacher's*. They need not agree: a teacher trained with ``emotion_loss: ce``
on HECO scores it with a softmax, a student trained with focal scores it with a sigmoid (and
the public BENet's HECO maps are sigmoid-scored). Reading a softmax teacher's logits with a
sigmoid would teach scores it never gives (logits ``[2, 0, 0]``: 0.88, 0.5, 0.5 instead of
0.79, 0.11, 0.11). So the soft labels are the teacher's published scores at ``T``:
``softmax(t / T)`` or ``sigmoid(t / T)`` (:func:`teacher_soft_labels`); a sigmoid (bce) student
learns each category's probability from either, and a softmax (ce) student learns a
sigmoid teacher's scores normalised over the set (the distribution its cross-entropy compares
with).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from caer_ros.model.checkpoint import ModelFileError, load_model_file
from caer_ros.model.output import BENetOutput, ScaleOutput
from training.config import ConfigError, DistillConfig, TrainConfig
from training.objectives.benet import read_people
from training.objectives.multitask import ccc_loss

CONTINUOUS = "continuous"


STUDENT_SCORES = {"ce": "softmax", "bce": "sigmoid"}  # the scores each loss kind compares


def teacher_soft_labels(teacher: Tensor, scores: str, temperature: float = 1.0) -> Tensor:
    """(N, E) teacher logits as the teacher scores the set (``scores``: its model file's
    ``softmax`` or ``sigmoid``), at temperature ``T``: ``softmax(t / T)`` over E, or
    ``sigmoid(t / T)`` per category."""
    t = float(temperature)
    if scores == "softmax":
        return torch.softmax(teacher / t, dim=1)
    if scores == "sigmoid":
        return torch.sigmoid(teacher / t)
    raise ValueError(f"teacher scores must be softmax or sigmoid, got {scores!r}")


def soft_label_loss(student: Tensor, teacher: Tensor, kind: str, temperature: float,
                    teacher_scores: str | None = None) -> Tensor:
    """Distillation loss of (N, E) student logits against (N, E) teacher logits: ``kind`` ``ce``
    (a softmax student, eq. 9), ``bce`` (a sigmoid student, per category, eq. 10) or ``ccc``
    (``1 - CCC`` of the sigmoids, eq. 8). ``teacher_scores``: how the teacher scores the set
    (``softmax`` or ``sigmoid``, :func:`teacher_soft_labels`); None: as the student does. A
    softmax student of a sigmoid teacher learns the teacher's scores normalised over E (see
    the module docstring). Sum over E, mean over N (``ccc``: mean of the E dimensions); N = 0
    gives a graph-connected 0."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         f"logits differ")
    if kind not in (*STUDENT_SCORES, "ccc"):
        raise ValueError(f"distillation kind must be ce, bce or ccc, got {kind!r}")
    if len(student) == 0:
        return student.sum() * 0.0
    teacher = teacher.detach().to(student)
    if kind == "ccc":
        return ccc_loss(torch.sigmoid(student), torch.sigmoid(teacher))
    t = float(temperature)
    soft = teacher_soft_labels(teacher, teacher_scores or STUDENT_SCORES[kind], t)
    if kind == "ce":
        if teacher_scores == "sigmoid":  # per-category scores -> a distribution over E
            soft = soft / soft.sum(dim=1, keepdim=True).clamp(min=1e-12)
        per_person = -(soft * torch.log_softmax(student / t, dim=1)).sum(dim=1)
        return per_person.mean() * t * t
    per_person = F.binary_cross_entropy_with_logits(student / t, soft,
                                                    reduction="none").sum(dim=1)
    return per_person.mean() * t


def distillation_terms(student: dict[str, Tensor], teacher: dict[str, Tensor],
                       labelled: dict[str, Tensor], kinds: dict[str, str],
                       config: DistillConfig, gammas: dict[str, float], scale: str = "q",
                       teacher_scores: dict[str, str] | None = None) -> dict[str, Tensor]:
    """Eq. 13's distillation terms at one resolution.

    ``student`` / ``teacher``: task -> (N, E) logits of the same N people; ``labelled``:
    task -> (N,) bool, whether each person has a ground truth for the task; ``kinds``: task ->
    ``ce`` / ``bce`` / ``ccc`` (the student's side); ``gammas``: task -> gamma (1 when absent);
    ``teacher_scores``: category set -> the teacher's ``softmax`` / ``sigmoid`` (a set not
    named: as the student's kind). Returns ``kd.<scale>.<task>`` = ``beta gamma L^D`` over the
    unlabelled people and, when ``config.labelled``, ``kd.<scale>.<task>.labelled`` =
    ``gamma L^D`` over the labelled ones.
    """
    terms: dict[str, Tensor] = {}
    teacher_scores = teacher_scores or {}
    for task, s in student.items():
        has = labelled[task].to(s.device)
        gamma = gammas.get(task, 1.0)
        scored = teacher_scores.get(task)
        loss = soft_label_loss(s[~has], teacher[task][~has], kinds[task], config.temperature,
                               scored)
        terms[f"kd.{scale}.{task}"] = config.beta * gamma * loss
        if config.labelled:
            loss = soft_label_loss(s[has], teacher[task][has], kinds[task], config.temperature,
                                   scored)
            terms[f"kd.{scale}.{task}.labelled"] = gamma * loss
    return terms


class DistillationExtra:
    """The trainer's distillation extra (:mod:`training.objectives.extras`): a frozen teacher model
    (none
    with ``distill.teacher: null``: alpha alone, the control arm)."""

    name = "kd"
    in_validation = False
    module = None

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        assert config.distill is not None
        self.config = config.distill
        self.reading = config.bu_reading
        # eq. 13's alpha L^S_i: every emotion task the student is supervised on
        self.supervised = [*config.model.categories,
                           *([CONTINUOUS] if config.model.continuous else [])]
        self.gammas: dict[str, float] = {}
        self.tasks: list[str] = []
        self.kinds: dict[str, str] = {}
        self.teacher_scores: dict[str, str] = {}
        self.teacher = None
        if self.config.teacher is None:
            return
        path = Path(self.config.teacher)
        try:
            teacher, info = load_model_file(path, map_location=device)
        except ModelFileError as exc:
            raise ConfigError(f"distill.teacher: {exc}") from None
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        student_sets = config.model.categories
        self.tasks = [name for name in student_sets if name in info.config.categories]
        for name in self.tasks:
            if info.config.categories[name] != student_sets[name]:
                raise ConfigError(f"distill.teacher {path}: its {name!r} categories differ from "
                                  f"the student's")
        if config.model.continuous and info.config.continuous:
            self.tasks.append(CONTINUOUS)
        if not self.tasks:
            raise ConfigError(f"distill.teacher {path}: the teacher has none of the student's "
                              f"tasks (student sets {list(student_sets)}, teacher sets "
                              f"{list(info.config.categories)})")
        # each side read as its own model scores the set (module docstring): the student's
        # loss by the student's emotion_loss (its scores follow it), the soft labels by the
        # teacher's scores
        self.kinds = {name: ("ce" if config.loss_of(name) == "ce" else "bce")
                      for name in self.tasks if name != CONTINUOUS}
        self.teacher_scores = {name: info.config.scores[name]
                               for name in self.tasks if name != CONTINUOUS}
        if CONTINUOUS in self.tasks:
            self.kinds[CONTINUOUS] = "ccc"
        mean_s = torch.tensor(config.model.input_mean, device=device)[:, None, None]
        std_s = torch.tensor(config.model.input_std, device=device)[:, None, None]
        mean_t = torch.tensor(info.config.input_mean, device=device)[:, None, None]
        std_t = torch.tensor(info.config.input_std, device=device)[:, None, None]
        # images_t = (images * std_s + mean_s - mean_t) / std_t
        self._scale, self._shift = std_s / std_t, (mean_s - mean_t) / std_t

    def supervised_factors(self) -> dict[str, float]:
        """``alpha`` for every emotion task of the student (eq. 13's ``alpha L^S_i``)."""
        return dict.fromkeys(self.supervised, self.config.alpha)

    def teacher_output(self, images: Tensor) -> BENetOutput:
        with torch.no_grad():
            return self.teacher(images * self._scale + self._shift, classifiers=False)

    def terms(self, output: BENetOutput, images: Tensor, batch: Any) -> dict[str, Tensor]:
        if self.teacher is None:
            return {}
        taught = self.teacher_output(images.detach())
        person_sample = torch.from_numpy(batch.person_samples())
        routed = batch.route("bu").cpu()[person_sample]
        sets = np.array(batch.category_sets)
        values = np.concatenate([*batch.continuous, np.zeros((0, 3), np.float32)])
        labelled_rows = {name: torch.from_numpy(sets == name)[person_sample]
                         for name in self.tasks if name != CONTINUOUS}
        if CONTINUOUS in self.tasks:
            labelled_rows[CONTINUOUS] = torch.from_numpy(np.isfinite(values).all(axis=1))
        terms: dict[str, Tensor] = {}
        for key, scale, targets in zip(("q", "h"), output.scales(), batch.targets, strict=False):
            source = _same_stride(taught, scale.stride)
            student, teacher = {}, {}
            for task in self.tasks:
                s_maps, t_maps = _maps(scale, task), _maps(source, task)
                if t_maps.shape[-2:] != s_maps.shape[-2:]:
                    t_maps = F.interpolate(t_maps.float(), size=s_maps.shape[-2:],
                                           mode="bilinear", align_corners=False)
                keep = routed.to(s_maps.device)
                student[task] = read_people(s_maps.float(), targets, self.reading)[keep]
                teacher[task] = read_people(t_maps.float(), targets, self.reading)[keep]
            labelled = {task: rows[routed] for task, rows in labelled_rows.items()}
            terms.update(distillation_terms(student, teacher, labelled, self.kinds,
                                            self.config, self.gammas, key,
                                            self.teacher_scores))
        return terms

    def set_progress(self, progress: float) -> None:
        pass

    def set_task_weights(self, weights: dict[str, float]) -> None:
        self.gammas = dict(weights)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _same_stride(output: BENetOutput, stride: int) -> ScaleOutput:
    for scale in output.scales():
        if scale.stride == stride:
            return scale
    return output.quarter


def _maps(scale: ScaleOutput, task: str) -> Tensor:
    if task == CONTINUOUS:
        if scale.continuous is None:
            raise ValueError("the model has no continuous head")
        return scale.continuous
    return scale.emotions[task]
