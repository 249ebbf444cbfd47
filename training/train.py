"""BENet multitask training: ``python -m training.train --config training/configs/NAME.yaml``.

::

    python -m training.train --config training/configs/benet_bu_det_pc_bg.yaml --data /data/emotic
    python -m training.train --config training/configs/synthetic_smoke.yaml --data DIR epochs=3
    torchrun --nproc_per_node 2 -m training.train --config ... --data ...   # data-parallel

Trains with Adam (lr 1e-3 by default, BENet 4.1) on the config's tasks and pre-transforms
(:mod:`training.data.batches`, :mod:`training.objectives.benet`). :class:`Trainer` is the BENet
job of the project's one training loop (:mod:`training.loop`: epochs, budget, validation, the
files below, resume, DDP agreement), which teacher training runs too. The run folder (``out``)
receives:

- ``best.pt``: the model file with the lowest total validation loss (BENet's *best model*;
  ``best_by: metric``: the highest mean validation metric of the emotion tasks instead),
  ``final.pt``: the one at the end (*final model*); both are model files the node,
  ``caer-infer`` and ``python -m training.evaluate`` accept, with the config's ``inference``
  settings and per-category thresholds calibrated on the training split, its images as they
  are (no augmentation; :mod:`training.evaluation.calibrate`): thresholds are fitted on
  training data, while validation picks ``best.pt``;
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
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from caer_ros.atomic_file import atomic_write
from caer_ros.config_data import plain
from caer_ros.inference.graph import probabilities
from caer_ros.model.checkpoint import save_model_file
from caer_ros.model.config import ModelConfig
from caer_ros.model.inference_settings import InferenceSettings
from caer_ros.model.network import build_model
from training import distributed
from training.config import ConfigError, TrainConfig, load_config
from training.data.batches import (
    CaerDataset,
    DataError,
    config_split,
    epoch_batches,
    loader,
    print_reports,
)
from training.evaluation.calibrate import calibrate_model_file
from training.evaluation.task_metrics import TaskMetrics
from training.loop import (
    Job,
    LoopSettings,
    TrainingLoop,
    TrainState,
    Validation,
    biases_before_batchnorm,
)
from training.objectives.benet import compute_losses, global_counts, local_counts, term_names
from training.objectives.extras import TrainingNet, build_extras, is_diagnostic
from training.objectives.multitask import TaskWeights, emotion_task
from training.run_folder import RunFolderBusy


class Trainer(Job):
    """One BENet training run (see the module docstring): the BENet job of the one training
    loop (:mod:`training.loop`). ``run()`` returns the history."""

    def __init__(self, config: TrainConfig, restart: bool = False, progress: bool = True
                 ) -> None:
        self.config = config
        self.out = Path(config.out)
        self.progress = progress
        self.ctx = distributed.setup(config.device)
        self.amp = config.amp and self.ctx.device.type == "cuda"
        torch.set_flush_denormal(True)
        self.train_records, reports = config_split(config, "train")
        self.val_records, val_reports = config_split(config, "val")
        if self.ctx.main:
            print_reports(reports + val_reports)
        self.train_set = CaerDataset(self.train_records, config, train=True)
        self.val_set = CaerDataset(self.val_records, config, train=False)
        self.train_size = len(self.train_set)
        self.names = term_names(config, config.model.half_resolution)
        self.model = build_model(config.model, seed=config.seed)
        if config.init_backbone is not None:
            self._init_backbone(config.init_backbone)
        if config.init_from is not None and (restart or not (self.out / "last.ckpt").exists()):
            self._init_from(config.init_from)  # a resumed run takes its weights from last.ckpt
        if config.freeze_backbone_steps and config.init_from is None and \
                config.init_backbone is None and self.ctx.main:
            print(f"freeze_backbone_steps {config.freeze_backbone_steps}: not applied, the "
                  f"backbone starts from no weights (no init_from or init_backbone)", flush=True)
        self.extras = build_extras(config, self.model, self.ctx.device)
        self.training_net = TrainingNet(self.model, self.extras)
        # found before the BatchNorms are synchronised (CUDA's SyncBatchNorm is no BatchNorm2d)
        frozen = {id(p) for p in biases_before_batchnorm(self.training_net)}
        if self.ctx.enabled:
            distributed.synchronise_batchnorm(self.training_net, self.ctx.device)
        self.training_net.to(self.ctx.device)
        self.task_weights: TaskWeights | None = None
        if config.task_weights == "adaptive":
            self.task_weights = TaskWeights(self._emotion_tasks(), config.task_patience)
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
        settings = LoopSettings(
            out=config.out, epochs=config.epochs, batch_size=config.batch_size,
            seed=config.seed, workers=config.workers, budget_minutes=config.budget_minutes,
            max_steps=config.max_steps, val_every=config.val_every,
            checkpoint_every=config.checkpoint_every, log_every=config.log_every,
            best_by=config.best_by)
        self.loop = TrainingLoop(settings, self, self.ctx, restart=restart, progress=progress)
        try:
            if self.task_weights is not None and self.state.task_weights:
                self.task_weights.load_state_dict(self.state.task_weights)
            self._apply_task_weights()
            self.net: torch.nn.Module = self.training_net
            if self.ctx.enabled:
                ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
                self.net = torch.nn.parallel.DistributedDataParallel(self.training_net,
                                                                     device_ids=ids)
        except BaseException:
            self.loop.close()
            raise

    # ----------------------------------------------------------------- the loop's
    @property
    def state(self) -> TrainState:
        return self.loop.state

    @property
    def finished(self) -> bool:
        return self.loop.finished

    def finished_message(self) -> str:
        """What the command says about a run it found finished."""
        return self.loop.finished_message()

    def run(self) -> list[dict[str, Any]]:
        return self.loop.run()

    def close(self) -> None:
        """Let other trainings use the run folder (done at the end of :meth:`run`)."""
        self.loop.close()

    def _progress(self) -> float:
        return self.loop.progress_fraction()

    # ----------------------------------------------------------------- the job
    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def upgrade_config(self, old: dict[str, Any]) -> dict[str, Any]:
        """A ``last.ckpt`` config from before ``inference`` was a whole settings section (it
        held the overrides only, e.g. ``{"extraction": "center"}``) reads as those overrides
        resolved for the model, so such a run still resumes; a ``model`` section written before
        a field existed reads with that field's default."""
        model = old.get("model")
        if isinstance(model, dict):
            try:
                old = {**old, "model": plain(ModelConfig.from_dict(model))}
            except (TypeError, ValueError):
                pass
        inference = old.get("inference")
        if not isinstance(inference, dict):
            return old
        try:
            resolved = InferenceSettings.for_model(self.config.model, **inference)
        except (TypeError, ValueError):
            return old
        return {**old, "inference": resolved.to_dict()}

    def train_batches(self, batches: list[list[Any]]) -> Any:
        return loader(self.train_set, batches, self.config.workers,
                      self.ctx.device.type == "cuda")

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "extras": {e.name: {"module": None if e.module is None else
                                {k: v.detach().cpu() for k, v in e.module.state_dict().items()},
                                "state": e.state_dict()} for e in self.extras},
        }

    def load_state_dict(self, data: dict[str, Any], path: Path) -> None:
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

    def save_model(self, name: str, meta: dict[str, Any]) -> None:
        state = self.state
        meta = {"trained": True, "seed": self.config.seed, "epoch": state.epoch,
                "global_step": state.global_step, "tasks": list(self.config.tasks),
                "out": str(self.out), **meta}
        if "coco" in self.config.data.train:  # the scale training.evaluate reads it with
            meta["continuous_range"] = [float(v) for v in self.config.data.continuous_range]
        save_model_file(self.out / name, self.model, self.config.inference, meta=meta)

    def before_training(self) -> None:
        self._probe_teachers()

    def finish(self) -> None:
        if self.config.calibrate:
            for name in ("best.pt", "final.pt"):
                if (self.out / name).exists():
                    # fitted on training data (the validation split picks best.pt)
                    calibrate_model_file(self.out / name, self.train_records, self.progress,
                                         split="train")

    def validate(self, record: dict[str, Any]) -> Validation:
        val, task_metrics = self.validate_terms()
        fields: dict[str, Any] = {"val": val, "val_metrics": task_metrics}
        ratio = collapse_ratio(val)
        if ratio is not None:
            fields["collapse_ratio"] = ratio
        stop = False
        if self.task_weights is not None:
            fields["task_weights"] = self.task_weights.update(task_metrics)
            self.state.task_weights = self.task_weights.state_dict()
            self._apply_task_weights()
            if self.config.early_stop and self.task_weights.exhausted:
                stop = fields["early_stopped"] = True
        metric = float(np.mean(list(task_metrics.values()))) if task_metrics else None
        return Validation(loss=val["total"], metric=metric, record=fields,
                          best_meta={"val_loss": val["total"], "val_metric": metric},
                          stop=stop)

    def epoch_line(self, record: dict[str, Any], validation: Validation,
                   state: TrainState) -> str:
        train_loss = record["train"].get("total", 0.0)
        metric = math.nan if validation.metric is None else validation.metric
        best = f"best {state.best_val_loss:.4f}" if self.config.best_by == "loss" \
            else f"metric {metric:.4f}  best {state.best_val_metric:.4f}"
        ratio = record.get("collapse_ratio")
        return (f"epoch {record['epoch']}: train {train_loss:.4f}  val {validation.loss:.4f}"
                f"  {best}" + ("" if ratio is None else f"  KA collapse ratio {ratio:.3f}"))

    def log_images(self, writer: Any, step: int) -> None:
        """The first validation image, its centre heatmap and its primary emotion maps."""
        if not len(self.val_set):
            return
        item = self.val_set.item(0, 0)
        images = torch.from_numpy(item.image)[None].to(self.ctx.device)
        self.model.eval()
        with torch.no_grad():
            out = self.model(images, classifiers=False)
        mean = torch.tensor(self.config.model.input_mean)[:, None, None]
        std = torch.tensor(self.config.model.input_std)[:, None, None]
        writer.add_image("val/input", (images[0].cpu() * std + mean).clamp(0, 1), step)
        writer.add_image("val/center_heatmap", torch.sigmoid(out.quarter.heatmap[0]).cpu(),
                         step)
        set_name = self.config.model.primary_set
        maps = probabilities(out.quarter.emotions[set_name][:1],
                             set_name in self.config.model.softmax_sets)[0].cpu()[:, None]
        writer.add_images(f"val/emotion_maps_{set_name}", maps, step)

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
        if self._backbone_frozen():
            self.model.backbone.eval()  # only the heads learn: the backbone's statistics too
        for extra in self.extras:
            extra.set_progress(self._progress())
        loss, terms, _ = self._forward_losses(batch, self.net, self.ctx.world)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step "
                                     f"{self.state.global_step}; lower optim.lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self._backbone_frozen():
            for parameter in self.model.backbone.parameters():  # Adam leaves these alone
                parameter.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values = {"total": loss.detach() / self.ctx.world, **terms}
        if self.ctx.enabled:  # every process's share, summed: the global batch's terms
            vector = torch.stack([v.float() for v in values.values()])
            torch.distributed.all_reduce(vector)
            values = dict(zip(values, vector, strict=True))
        return {k: float(v) for k, v in values.items()}

    def validate_terms(self) -> tuple[dict[str, float], dict[str, float]]:
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

    # ----------------------------------------------------------------- multitask
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

    def _backbone_frozen(self) -> bool:
        """Whether this step trains the heads alone (``freeze_backbone_steps``, for a backbone
        that starts from weights)."""
        started = self.config.init_from is not None or self.config.init_backbone is not None
        return started and self.state.global_step < self.config.freeze_backbone_steps

    def _init_from(self, path: str) -> None:
        """Fine-tuning: every tensor of the model file that fits (:mod:`training.finetune`)."""
        from caer_ros.model.checkpoint import ModelFileError
        from training.finetune import InitError, load_init_model

        try:
            report = load_init_model(self.model, Path(path).expanduser())
        except (InitError, ModelFileError, OSError) as exc:
            raise DataError(" ".join(str(exc).split())) from None
        if self.ctx.main:
            print(report.summary(), flush=True)

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


def collapse_ratio(validation: dict[str, float]) -> float | None:
    """KA's collapse diagnostic (:mod:`training.objectives.amalgamation`): eq. 7's validation
    loss over its value for zero student features; None without knowledge amalgamation."""
    feat, zero = validation.get("diag.ka.feat"), validation.get("diag.ka.feat_zero")
    if feat is None or zero is None:
        return None
    return feat / zero if zero > 0 else math.inf


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
        history = trainer.run()  # a finished run: says so and changes nothing
    except (ConfigError, DataError, FloatingPointError, RunFolderBusy) as exc:
        print(f"training.train: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if context is not None:
            distributed.teardown(context)
    if context.main and not trainer.finished:
        last = history[-1] if history else {}
        print(f"done: {config.out}/best.pt and final.pt"
              + (f" (last val loss {last['val']['total']:.4f})" if "val" in last else ""))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
