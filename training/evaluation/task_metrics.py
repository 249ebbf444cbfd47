"""Each emotion task's validation metric, for the adaptive task weights (ABAW-KD eq. 13).

The paper counts, per task, the epochs in which the task's *validation performance* did not
improve (gamma_i = exp(0.5 n_i)); its performance is the ABAW metric of the task. Here a task
is a category set of the model or ``continuous``, scored on the validation people that the
bottom-up head is trained on, read from the 1/4 emotion maps as the bottom-up loss reads them
(``bu_reading``) and activated as the model publishes them (``ModelConfig.scores``):

- multi-label sets (EMOTIC): ER mAP (:func:`training.evaluation.metrics.er_map`);
- single-label sets (HECO, :data:`caer_ros.labels.SINGLE_LABEL_SETS`, and any set scored with
  a softmax): macro F1 over all classes (:func:`training.evaluation.metrics.macro_f1`);
- ``continuous``: the mean CCC of valence, arousal and dominance.

ER mAP and macro F1 are in 0..1, the CCC in -1..1; higher is better. A task without a usable
person in the validation split (or without a positive label, for ER mAP) gets no metric;
:class:`TaskMetrics` leaves it out.
"""

from __future__ import annotations

import numpy as np
import torch

from caer_ros.inference.graph import probabilities
from caer_ros.labels import SINGLE_LABEL_SETS
from caer_ros.model.output import BENetOutput
from training.config import TrainConfig
from training.data.batches import Batch
from training.evaluation import metrics
from training.objectives.benet import read_people
from training.objectives.multitask import ccc

CONTINUOUS = "continuous"


class TaskMetrics:
    """Collects the people's scores over the validation batches (:meth:`add`), then gives each
    task's metric (:meth:`result`); :meth:`gather` merges the processes' collections (DDP)."""

    def __init__(self, config: TrainConfig) -> None:
        self.reading = config.bu_reading
        self.softmax = config.model.softmax_sets
        self.sets = list(config.model.categories) if "bu" in config.tasks else []
        self.continuous = config.model.continuous and "bu" in config.tasks
        self.scores: dict[str, list[np.ndarray]] = {name: [] for name in self.sets}
        self.labels: dict[str, list[np.ndarray]] = {name: [] for name in self.sets}
        if self.continuous:
            self.scores[CONTINUOUS], self.labels[CONTINUOUS] = [], []

    def add(self, output: BENetOutput, batch: Batch) -> None:
        """The bottom-up people of ``batch`` with their labels, read from ``output``."""
        targets = batch.targets[0]
        routed = batch.route("bu").cpu().numpy()
        person_sample = batch.person_samples()
        sets = np.array(batch.category_sets)
        for name in self.sets:
            chosen = (routed & (sets == name))
            if not chosen.any():
                continue
            read = read_people(output.quarter.emotions[name].float(), targets, self.reading)
            scores = probabilities(read, name in self.softmax).cpu().numpy()
            self.scores[name].append(scores[chosen[person_sample]])
            self.labels[name].append(np.concatenate(
                [lab for lab, ok in zip(batch.labels, chosen, strict=True) if ok]))
        if self.continuous:
            values = np.concatenate([*batch.continuous, np.zeros((0, 3), np.float32)])
            known = routed[person_sample] & np.isfinite(values).all(axis=1)
            if known.any():
                read = read_people(output.quarter.continuous.float(), targets, self.reading)
                self.scores[CONTINUOUS].append(torch.sigmoid(read).cpu().numpy()[known])
                self.labels[CONTINUOUS].append((values[known] - 1.0) / 9.0)

    def gather(self) -> None:
        """Every process's people, in every process (under DDP; nothing otherwise)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        mine = (self.scores, self.labels)
        everyone: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everyone, mine)
        self.scores = {k: [a for s, _ in everyone for a in s[k]] for k in self.scores}
        self.labels = {k: [a for _, lab in everyone for a in lab[k]] for k in self.labels}

    def result(self) -> dict[str, float]:
        """Task -> metric in 0..1 (the module docstring), for the tasks that have one."""
        out: dict[str, float] = {}
        for task, parts in self.scores.items():
            if not parts:
                continue
            scores = np.concatenate(parts)
            labels = np.concatenate(self.labels[task])
            try:
                single = task in SINGLE_LABEL_SETS or task in self.softmax
                out[task] = task_metric(task, scores, labels, single)
            except ValueError:  # e.g. no positive label: no metric for this task
                continue
        return out


def task_metric(task: str, scores: np.ndarray, labels: np.ndarray, single_label: bool
                ) -> float:
    """One task's metric: mean CCC (``continuous``), macro F1 (``single_label``) or ER mAP."""
    if task == CONTINUOUS:
        return float(np.mean(ccc(scores, labels)))
    if single_label:
        return metrics.macro_f1(scores, labels)[0]
    return metrics.er_map(scores, labels)[0]
