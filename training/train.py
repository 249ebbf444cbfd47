"""BENet multitask training: ``python -m training.train --config training/configs/NAME.yaml``.

::

    python -m training.train --config training/configs/benet_bu_det_pc_bg.yaml --data /data/emotic
    python -m training.train --config training/configs/synthetic_smoke.yaml --data DIR epochs=3
    torchrun --nproc_per_node 2 -m training.train --config ... --data ...   # data-parallel

Trains with Adam (lr 1e-3 by default, BENet 4.1) on the config's tasks and pre-transforms
(:mod:`training.data.batches`, :mod:`training.objectives.benet`). The run folder (``out``)
receives:

- ``best.pt``: the model file with the lowest total validation loss (BENet's *best model*;
  ``best_by: metric``: the highest mean validation metric of the emotion tasks instead),
  ``final.pt``: the one at the end (*final model*); both are model files the node,
  ``caer-infer`` and ``python -m training.evaluate`` accept, with the config's ``inference``
  settings and per-category thresholds calibrated on the validation split
  (:mod:`training.evaluation.calibrate`);
- ``last.ckpt``: the training state (weights, Adam, AMP scaler, epoch, step, best loss, elapsed
  time), written atomically at every epoch end and every ``checkpoint_every`` steps. Starting
  the same command again resumes from it exactly where it stopped (the data order and every
  augmentation draw depend only on the seed, the epoch and the sample); ``--restart`` starts
  over instead. A run that finished (its epochs done, its time budget or ``max_steps`` used,
  or stopped early by ``early_stop``) is left alone: the same command says so and changes
  nothing; a larger ``epochs``, ``budget_minutes`` or ``max_steps`` continues it;
- ``history.json`` (per-epoch losses, and at each validation every emotion task's metric,
  ``val_metrics``: :mod:`training.evaluation.task_metrics`), ``config.yaml`` (the resolved
  config) and ``tensorboard/`` (scalars and emotion-map images; ``tensorboard --logdir out``).

One training at a time owns the run folder (:mod:`training.run_folder`): a second one into the
same ``out`` is refused with a line naming the first's process, and the temporary files of a
write that a kill interrupted are removed when the next run starts.

Mixed precision (AMP, float16) is used on CUDA when ``amp`` is true; CPU trains in float32.
Under ``torchrun`` (gloo on CPU, NCCL on CUDA) the global batch ``batch_size`` is split over
the processes and BatchNorm is synchronised (:mod:`training.distributed`), so N processes
train the same model as one, to float tolerance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from caer_ros.atomic_file import atomic_write
from caer_ros.inference.graph import probabilities
from caer_ros.model.checkpoint import save_model_file
from caer_ros.model.network import build_model
from training import distributed
from training.config import ConfigError, TrainConfig, load_config
from training.data.batches import (
    CaerDataset,
    DataError,
    epoch_batches,
    load_split,
    loader,
    print_reports,
)
from training.evaluation.calibrate import calibrate_model_file
from training.evaluation.task_metrics import TaskMetrics
from training.objectives.benet import compute_losses, global_counts, local_counts, term_names
from training.objectives.extras import TrainingNet, build_extras, is_diagnostic
from training.objectives.multitask import TaskWeights, emotion_task
from training.run_folder import RunFolderBusy, RunFolderLock, report_removed

STATE_FORMAT = "caer_ros.training_state"
# Keys that may change between a run and its resumption (they do not change what is learnt).
RESUMABLE_CHANGES = {"epochs", "budget_minutes", "max_steps", "workers", "log_every",
                     "checkpoint_every", "val_every"}


@dataclass
class TrainState:
    """What ``last.ckpt`` holds besides the weights and optimiser state."""

    epoch: int = 0  # the epoch in progress (or next to start)
    step: int = 0  # steps of ``epoch`` already done
    global_step: int = 0
    best_val_loss: float = math.inf
    best_val_metric: float = -math.inf  # best_by: metric
    elapsed_s: float = 0.0  # training time so far, over every resumption
    history: list[dict[str, Any]] = field(default_factory=list)
    task_weights: dict[str, Any] = field(default_factory=dict)  # TaskWeights state (adaptive)
    early_stopped: bool = False  # early_stop: every task went task_patience validations stale
    finished: bool = False  # the run ended and wrote its final files


class Trainer:
    """One training run (see the module docstring). ``run()`` returns the history."""

    def __init__(self, config: TrainConfig, restart: bool = False, progress: bool = True
                 ) -> None:
        self.config = config
        self.out = Path(config.out)
        self.progress = progress
        self.ctx = distributed.setup(config.device)
        self.amp = config.amp and self.ctx.device.type == "cuda"
        torch.set_flush_denormal(True)
        self.train_records, reports = load_split(config, "train")
        self.val_records, val_reports = load_split(config, "val")
        if self.ctx.main:
            print_reports(reports + val_reports)
        self.train_set = CaerDataset(self.train_records, config, train=True)
        self.val_set = CaerDataset(self.val_records, config, train=False)
        self.names = term_names(config, config.model.half_resolution)
        self.model = build_model(config.model, seed=config.seed)
        if config.init_backbone is not None:
            self._init_backbone(config.init_backbone)
        self.extras = build_extras(config, self.model, self.ctx.device)
        self.training_net = TrainingNet(self.model, self.extras)
        if self.ctx.enabled:
            distributed.synchronise_batchnorm(self.training_net, self.ctx.device)
        self.training_net.to(self.ctx.device)
        self.task_weights: TaskWeights | None = None
        if config.task_weights == "adaptive":
            self.task_weights = TaskWeights(self._emotion_tasks(), config.task_patience)
        frozen = {id(p) for p in biases_before_batchnorm(self.training_net)}
        trained = [p for p in self.training_net.parameters()
                   if id(p) not in frozen and p.requires_grad]
        if config.optim.name == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                trained, lr=config.optim.lr, momentum=config.optim.momentum,
                weight_decay=config.optim.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(trained, lr=config.optim.lr,
                                              weight_decay=config.optim.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.state = TrainState()
        self.lock = RunFolderLock(self.out)
        busy = None
        if self.ctx.main:
            try:
                report_removed(self.lock.acquire())
            except RunFolderBusy as exc:
                busy = str(exc)
        if self._agreed(busy is not None):
            raise RunFolderBusy(busy or f"{self.out} is in use by another process")
        try:
            self.ctx.barrier()
            if restart:
                if self.ctx.main:
                    (self.out / "last.ckpt").unlink(missing_ok=True)
                self.ctx.barrier()
            elif (self.out / "last.ckpt").exists():
                self._resume()
            # a finished run is left alone unless a larger budget or epochs gives it work
            self.finished = self.state.finished and not self._work_left()
            self._apply_task_weights()
            self.net: torch.nn.Module = self.training_net
            if self.ctx.enabled:
                ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
                self.net = torch.nn.parallel.DistributedDataParallel(self.training_net,
                                                                     device_ids=ids)
            self.writer = self._writer() if self.ctx.main and not self.finished else None
        except BaseException:
            self.lock.release()
            raise

    def _budget_used(self) -> bool:
        minutes = self.config.budget_minutes
        return minutes is not None and self.state.elapsed_s >= minutes * 60.0

    def _steps_done(self) -> bool:
        return self.config.max_steps is not None \
            and self.state.global_step >= self.config.max_steps

    def _work_left(self) -> bool:
        return self.state.epoch < self.config.epochs and not self._budget_used() \
            and not self._steps_done() and not self.state.early_stopped

    def finished_message(self) -> str:
        """What the command says about a run it found finished."""
        config, state = self.config, self.state
        why = (f"its {config.budget_minutes:g}-minute budget is used" if self._budget_used()
               else f"its {config.max_steps} steps are done" if self._steps_done()
               else "stopped early: no task improved for task_patience validations"
               if state.early_stopped else f"{state.epoch} of {config.epochs} epochs done")
        files = ", ".join(n for n in ("best.pt", "final.pt", "history.json")
                          if (self.out / n).exists())
        more = "" if state.early_stopped else \
            "Raise epochs, budget_minutes or max_steps to continue it, or "
        return (f"{self.out} is a finished run ({why}); its files ({files}) are left as they "
                f"are. {more}{'p' if more else 'P'}ass --restart to start over.")

    def close(self) -> None:
        """Let other trainings use the run folder (done at the end of :meth:`run`)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.lock.release()

    # ----------------------------------------------------------------- checkpoints
    def _state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": {**self.state.__dict__, "best_val_loss": float(self.state.best_val_loss)},
            "extras": {e.name: {"module": None if e.module is None else
                                {k: v.detach().cpu() for k, v in e.module.state_dict().items()},
                                "state": e.state_dict()} for e in self.extras},
        }

    def save_state(self) -> None:
        if self.ctx.main:
            with atomic_write(self.out / "last.ckpt") as stream:
                torch.save(self._state_dict(), stream)
        self.ctx.barrier()

    def _resume(self) -> None:
        path = self.out / "last.ckpt"
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(f"{path}: cannot read the training state ({exc}); "
                            f"use --restart to start over") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise DataError(f"{path}: not a caer_ros training state; use --restart")
        old, new = data["config"], self.config.to_dict()
        changed = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
        if changed:
            raise ConfigError(f"{path} was written with a different config ({', '.join(changed)}"
                              f" differ); use --restart or another out folder")
        self.model.load_state_dict(data["model"])
        for extra in self.extras:
            saved = data.get("extras", {}).get(extra.name)
            if saved is None:
                raise DataError(f"{path} has no state for {extra.name}; use --restart")
            if extra.module is not None:
                extra.module.load_state_dict(saved["module"])
            extra.load_state_dict(saved["state"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scaler.load_state_dict(data["scaler"])
        self.state = TrainState(**data["state"])
        if self.task_weights is not None and self.state.task_weights:
            self.task_weights.load_state_dict(self.state.task_weights)
        if self.ctx.main:
            print(f"resuming {path}: epoch {self.state.epoch + 1}, step {self.state.step}",
                  flush=True)

    def save_model(self, name: str, extra: dict[str, Any]) -> Path:
        meta = {"trained": True, "seed": self.config.seed, "epoch": self.state.epoch,
                "global_step": self.state.global_step, "tasks": list(self.config.tasks),
                "out": str(self.out), **extra}
        return save_model_file(self.out / name, self.model, self.config.inference, meta=meta)

    # ----------------------------------------------------------------- logging
    def _writer(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("tensorboard is not installed: no TensorBoard logs", file=sys.stderr)
            return None
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.state.global_step)

    def _log_scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def _log_maps(self, step: int) -> None:
        """The first validation image, its centre heatmap and its primary emotion maps."""
        if self.writer is None or not len(self.val_set):
            return
        item = self.val_set.item(0, 0)
        images = torch.from_numpy(item.image)[None].to(self.ctx.device)
        self.model.eval()
        with torch.no_grad():
            out = self.model(images, classifiers=False)
        mean = torch.tensor(self.config.model.input_mean)[:, None, None]
        std = torch.tensor(self.config.model.input_std)[:, None, None]
        self.writer.add_image("val/input", (images[0].cpu() * std + mean).clamp(0, 1), step)
        self.writer.add_image("val/center_heatmap", torch.sigmoid(out.quarter.heatmap[0]).cpu(),
                              step)
        set_name = self.config.model.primary_set
        maps = probabilities(out.quarter.emotions[set_name][:1],
                             set_name in self.config.model.softmax_sets)[0].cpu()[:, None]
        self.writer.add_images(f"val/emotion_maps_{set_name}", maps, step)

    # ----------------------------------------------------------------- steps
    def _forward_losses(self, batch: Any, net: torch.nn.Module, world: int
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, int]]:
        counts = local_counts(batch, self.names)
        totals = global_counts(counts, self.ctx.device)
        images = batch.images.to(self.ctx.device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        with autocast:
            output, extra_terms = net(images, batch)
        loss, terms = compute_losses(output, batch, self.config, counts, totals, world,
                                     self.term_weights)
        for name, value in extra_terms.items():  # per-process means: DDP averages them
            if not is_diagnostic(name):
                loss = loss + value.float()
            terms[name] = value.detach()
        return loss, terms, totals

    def train_step(self, batch: Any) -> dict[str, float]:
        self.net.train()
        for extra in self.extras:
            extra.set_progress(self._progress())
        loss, terms, _ = self._forward_losses(batch, self.net, self.ctx.world)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step "
                                     f"{self.state.global_step}; lower optim.lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values = {"total": loss.detach() / self.ctx.world, **terms}
        if self.ctx.enabled:  # every process's share, summed: the global batch's terms
            vector = torch.stack([v.float() for v in values.values()])
            torch.distributed.all_reduce(vector)
            values = dict(zip(values, vector, strict=True))
        return {k: float(v) for k, v in values.items()}

    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        """Mean of every term over the whole validation split (all processes), and ``total``;
        each emotion task's validation metric (:mod:`training.evaluation.task_metrics`)."""
        self.training_net.eval()
        batches = epoch_batches(len(self.val_set), self.config.batch_size, self.config.seed, 0,
                                self.ctx.rank, self.ctx.world, shuffle=False, drop_last=False)
        sums = {name: 0.0 for name, _ in self.names}
        counts = {name: 0.0 for name, _ in self.names}
        extra_names = [e.name for e in self.extras if e.in_validation]
        task_metrics = TaskMetrics(self.config)
        with torch.no_grad():
            for batch in tqdm(loader(self.val_set, batches, self.config.workers),
                              total=len(batches), desc="validation", unit="batch", leave=False,
                              disable=not (self.progress and self.ctx.main)):
                local = local_counts(batch, self.names)
                images = batch.images.to(self.ctx.device)
                output, extra_terms = self.training_net(
                    images, batch if extra_names else None, validation=True)
                _, terms = compute_losses(output, batch, self.config, local, local, 1)
                task_metrics.add(output, batch)
                for name in extra_terms:  # per-batch means, weighted by the batch size
                    sums.setdefault(name, 0.0)
                    counts.setdefault(name, 0.0)
                    local[name] = len(batch)
                    terms[name] = extra_terms[name]
                for name in sums:
                    n = local[name]
                    sums[name] += float(terms[name]) * n
                    counts[name] += n
        if self.ctx.enabled:
            vector = torch.tensor([*sums.values(), *counts.values()], dtype=torch.float64)
            torch.distributed.all_reduce(vector)
            k = len(sums)
            sums = dict(zip(sums, vector[:k].tolist(), strict=True))
            counts = dict(zip(counts, vector[k:].tolist(), strict=True))
        means = {name: sums[name] / counts[name] for name in sums if counts[name] > 0}
        if not means:
            raise DataError(f"validation gave no loss term: none of the {len(self.val_set)} "
                            f"validation images trains any of the tasks {list(self.config.tasks)}")
        means["total"] = sum(v for k, v in means.items() if not is_diagnostic(k))
        task_metrics.gather()
        return means, task_metrics.result()

    # ----------------------------------------------------------------- loop
    def run(self) -> list[dict[str, Any]]:
        config, state = self.config, self.state
        if self.finished:
            self.close()
            return state.history
        budget_s = None if config.budget_minutes is None else config.budget_minutes * 60.0
        state.finished = False
        # killed after the budget ran out, after the last step or after an early stop
        out_of_time = self._agreed(self._budget_used()) or self._steps_done() \
            or state.early_stopped
        try:
            if state.global_step == 0 and self.ctx.main:
                self._probe_teachers()
            while state.epoch < config.epochs and not out_of_time:
                batches = epoch_batches(len(self.train_set), config.batch_size, config.seed,
                                        state.epoch, self.ctx.rank, self.ctx.world)
                remaining = batches[state.step:]
                bar = tqdm(total=len(batches), initial=state.step,
                           desc=f"epoch {state.epoch + 1}/{config.epochs}", unit="batch",
                           disable=not (self.progress and self.ctx.main), dynamic_ncols=True)
                sums: dict[str, float] = {}
                started = time.perf_counter()
                for batch in loader(self.train_set, remaining, config.workers,
                                    self.ctx.device.type == "cuda"):
                    values = self.train_step(batch)
                    state.step += 1
                    state.global_step += 1
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0.0) + v
                    if state.global_step % config.log_every == 0:
                        self._log_scalars("train", values, state.global_step)
                    bar.set_postfix(loss=f"{values['total']:.3f}")
                    bar.update(1)
                    now = time.perf_counter()
                    state.elapsed_s += now - started
                    started = now
                    if budget_s is not None and self._agreed(state.elapsed_s >= budget_s):
                        out_of_time = True
                        break
                    if self._steps_done():  # the same step in every process
                        out_of_time = True
                        break
                    if config.checkpoint_every and state.global_step % config.checkpoint_every \
                            == 0 and state.step < len(batches):
                        self.save_state()
                bar.close()
                done_steps = max(state.step, 1)
                record: dict[str, Any] = {
                    "epoch": state.epoch + 1, "steps": state.step,
                    "train": {k: v / done_steps for k, v in sums.items()},
                    "elapsed_s": round(state.elapsed_s, 1)}
                if not out_of_time or state.step >= len(batches):  # the epoch is complete
                    state.epoch += 1
                    state.step = 0
                if out_of_time or state.epoch % config.val_every == 0 \
                        or state.epoch >= config.epochs:
                    val, task_metrics = self.validate()
                    record["val"] = val
                    record["val_metrics"] = task_metrics
                    if collapse_ratio(val) is not None:
                        record["collapse_ratio"] = collapse_ratio(val)
                    if self.task_weights is not None:
                        record["task_weights"] = self.task_weights.update(task_metrics)
                        state.task_weights = self.task_weights.state_dict()
                        self._apply_task_weights()
                        if config.early_stop and self.task_weights.exhausted:
                            state.early_stopped = out_of_time = True
                            record["early_stopped"] = True
                    self._log_scalars("val", val, state.global_step)
                    self._log_maps(state.global_step)
                    metric = float(np.mean(list(task_metrics.values()))) \
                        if task_metrics else math.nan
                    if self._improved(val["total"], metric) and self.ctx.main:
                        self.save_model("best.pt", {"val_loss": val["total"], "kind": "best",
                                                    "val_metric": metric if task_metrics
                                                    else None,
                                                    "epoch": record["epoch"]})
                    if self.ctx.main:
                        train_loss = record["train"].get("total", 0.0)
                        ratio = collapse_ratio(val)
                        best = f"best {state.best_val_loss:.4f}" if config.best_by == "loss" \
                            else f"metric {metric:.4f}  best {state.best_val_metric:.4f}"
                        print(f"epoch {record['epoch']}: train {train_loss:.4f}"
                              f"  val {val['total']:.4f}  {best}"
                              + ("" if ratio is None else f"  KA collapse ratio {ratio:.3f}"),
                              flush=True)
                state.history.append(record)
                self.save_state()
            if self.ctx.main:
                self.save_model("final.pt", {"kind": "final",
                                             "stopped_by_budget": self._budget_used(),
                                             "steps": state.global_step,
                                             "early_stopped": state.early_stopped})
                if config.calibrate:
                    for name in ("best.pt", "final.pt"):
                        if (self.out / name).exists():
                            calibrate_model_file(self.out / name, self.val_records,
                                                 self.progress)
                with atomic_write(self.out / "history.json") as stream:
                    stream.write(json.dumps(state.history, indent=1).encode())
                with atomic_write(self.out / "config.yaml") as stream:
                    stream.write(yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
            self.ctx.barrier()
            state.finished = True
            self.save_state()
        finally:
            self.close()
        return state.history

    # ----------------------------------------------------------------- multitask
    def _improved(self, loss: float, metric: float) -> bool:
        """Record a validation's total loss and mean task metric (NaN: none); whether it is the
        best so far by ``best_by``."""
        state = self.state
        if self.config.best_by == "metric":
            better = metric > state.best_val_metric  # False for NaN
            if better:
                state.best_val_metric = metric
        else:
            better = loss < state.best_val_loss
        state.best_val_loss = min(state.best_val_loss, loss)
        return better

    def _probe_teachers(self) -> None:
        """KA: each teacher's linear probe on the student's training images, printed (with a
        warning when it carries little) and written to ``teacher_probe.json``."""
        from training.objectives.amalgamation import AmalgamationExtra
        from training.teachers.probe import probe_teacher

        for extra in self.extras:
            if not isinstance(extra, AmalgamationExtra) or not extra.config.probe_images:
                continue
            found = []
            for spec, teacher in zip(extra.config.teachers, extra.teachers, strict=True):
                try:
                    results = probe_teacher(teacher, self.train_records,
                                            self.config.model.input_size, spec,
                                            images=extra.config.probe_images,
                                            device=self.ctx.device)
                except ValueError as error:  # too few people to probe
                    print(f"teacher probe {spec}: skipped ({error})", flush=True)
                    continue
                for result in results:
                    print(result.line(), flush=True)
                    found.append({"teacher": spec, **dataclasses.asdict(result),
                                  "carries_little": result.carries_little})
            with atomic_write(self.out / "teacher_probe.json") as stream:
                stream.write(json.dumps(found, indent=1).encode())

    def _init_backbone(self, spec: str) -> None:
        from caer_ros.model.weights import BackboneWeightsError, load_backbone_weights

        try:
            report = load_backbone_weights(self.model, spec)
        except (BackboneWeightsError, OSError) as exc:
            raise DataError(f"init_backbone: {exc}") from None
        if self.ctx.main:
            print(f"init_backbone: {report.summary()}", flush=True)

    def _emotion_tasks(self) -> list[str]:
        """The tasks gamma_i applies to: the category sets trained, and ``continuous``."""
        found = {emotion_task(name) for name, _ in self.names}
        return [t for t in [*self.config.model.categories, "continuous"] if t in found]

    def _apply_task_weights(self) -> None:
        """Loss-term factors of eq. 13: gamma_i on every term of task i (adaptive weights) and
        alpha (``distill.alpha``) on every supervised term of every emotion task."""
        gammas = self.task_weights.weights() if self.task_weights is not None else {}
        alphas: dict[str, float] = {}
        for extra in self.extras:
            extra.set_task_weights(gammas)
            alphas.update(extra.supervised_factors())
        weights = {}
        for name, _ in self.names:
            task = emotion_task(name)
            weights[name] = gammas.get(task, 1.0) * alphas.get(task, 1.0)
        self.term_weights = weights

    def _progress(self) -> float:
        """Fraction of the training done, for ramped weights: of the epochs, of the time budget
        or of ``max_steps``, whichever limit is nearest (the one that will end the run)."""
        config, state = self.config, self.state
        per_epoch = max(len(self.train_set) // max(config.batch_size, 1), 1)
        done = [(state.epoch + state.step / per_epoch) / config.epochs]
        if config.budget_minutes is not None:  # process 0's clock, so every process agrees
            done.append(self._from_main(state.elapsed_s) / (60.0 * config.budget_minutes))
        if config.max_steps is not None:
            done.append(state.global_step / config.max_steps)
        return min(max(done), 1.0)

    def _from_main(self, value: float) -> float:
        """``value`` as process 0 has it (itself without DDP)."""
        if not self.ctx.enabled:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        torch.distributed.broadcast(tensor, 0)
        return float(tensor.item())

    def _agreed(self, flag: bool) -> bool:
        """``flag`` as decided by process 0 (so every process stops at the same step)."""
        if not self.ctx.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.broadcast(value, 0)
        return bool(value.item())


def collapse_ratio(validation: dict[str, float]) -> float | None:
    """KA's collapse diagnostic (:mod:`training.objectives.amalgamation`): eq. 7's validation
    loss over its value for zero student features; None without knowledge amalgamation."""
    feat, zero = validation.get("diag.ka.feat"), validation.get("diag.ka.feat_zero")
    if feat is None or zero is None:
        return None
    return feat / zero if zero > 0 else math.inf


def biases_before_batchnorm(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Biases of convolutions directly followed by BatchNorm (in an ``nn.Sequential``).

    BatchNorm subtracts the batch mean, so such a bias has no effect in training and its true
    gradient is exactly 0. Adam divides the gradient by its own running magnitude, which turns
    float rounding noise (~1e-9) into full ``lr``-sized steps: left in the optimiser these biases
    drift at random, the BatchNorm running means chase them, and two runs that differ only in
    summation order (one process vs. DDP) end with different eval-mode models. The trainer
    leaves them out of the optimiser: they keep their initial values.
    """
    found = []
    for module in model.modules():
        children = list(module.children()) if isinstance(module, torch.nn.Sequential) else []
        for first, second in zip(children, children[1:], strict=False):
            if isinstance(first, torch.nn.Conv2d) and first.bias is not None \
                    and isinstance(second, torch.nn.BatchNorm2d):
                found.append(first.bias)
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train BENet (multitask) from a YAML config; key=value overrides it.")
    parser.add_argument("--config", type=Path, help="YAML config (training/configs/*.yaml)")
    parser.add_argument("--data", type=Path, help="dataset folder (sets data.root)")
    parser.add_argument("--out", help="run folder (sets out)")
    parser.add_argument("--restart", action="store_true",
                        help="ignore a training state in the run folder and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. epochs=5 optim.lr=1e-4")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    context = None
    try:
        config = load_config(args.config, overrides, args.data)
        trainer = Trainer(config, restart=args.restart, progress=not args.no_progress)
        context = trainer.ctx
        if trainer.finished:
            if context.main:
                print(trainer.finished_message())
            trainer.close()
            return 0
        history = trainer.run()
    except (ConfigError, DataError, FloatingPointError, RunFolderBusy) as exc:
        print(f"training.train: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if context is not None:
            distributed.teardown(context)
    if context.main:
        last = history[-1] if history else {}
        print(f"done: {config.out}/best.pt and final.pt"
              + (f" (last val loss {last['val']['total']:.4f})" if "val" in last else ""))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
