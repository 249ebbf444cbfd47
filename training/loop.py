"""The one training loop: BENet training (:mod:`training.train`, knowledge amalgamation and the
ABAW extensions included) and teacher training (:mod:`training.train_teacher`) both run it.

The loop owns what every training shares:

- the run folder (``out``): one training at a time (:mod:`training.run_folder`);
- the length: ``epochs``, a time budget (``budget_minutes``: training time, summed over
  resumptions) and a step limit (``max_steps``), whichever ends first; a job may also end it
  (early stop);
- the data order: :func:`training.data.batches.epoch_batches` (seed, epoch, DDP rank), so the
  run does not depend on the process or worker count and a resume replays it exactly;
- validation every ``val_every`` epochs, at the last epoch and when the run stops early;
- the files: ``best.pt`` (``best_by``: the lowest validation loss or the highest validation
  metric), ``final.pt``, ``history.json`` (every epoch), ``config.yaml``, and ``last.ckpt``
  (the training state, written atomically at every epoch end and every ``checkpoint_every``
  steps): running the same command again resumes from it exactly; a finished run is left
  alone unless a larger ``epochs`` / ``budget_minutes`` / ``max_steps`` gives it work;
  ``restart`` starts over; a config changed in anything but :attr:`LoopSettings.resumable`
  is refused;
- DDP agreement (process 0 decides when to stop, so every process stops at the same step),
  TensorBoard scalars (``out/tensorboard``) and progress bars.

:func:`prepare_for_training` puts a job's model on its device (DDP under ``torchrun``) with
the optimiser every job uses (Adam, without the biases BatchNorm cancels).

What differs is a :class:`Job`: the model, its objective and optimiser step, its batches, its
validation and metric, its model files and its wrap-up.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from caer_ros.atomic_file import atomic_write
from training.config import BEST_BY, ConfigError
from training.data.batches import DataError, epoch_batches
from training.distributed import DistributedContext, synchronise_batchnorm
from training.run_folder import RunFolderBusy, RunFolderLock, report_removed

STATE_FORMAT = "caer_ros.training_state"


@dataclass(frozen=True)
class LoopSettings:
    """The run settings the loop reads from a job's config (module docstring)."""

    out: str
    epochs: int
    batch_size: int
    seed: int = 0
    workers: int = 2
    budget_minutes: float | None = None
    max_steps: int | None = None
    val_every: int = 1
    checkpoint_every: int = 0
    log_every: int = 10
    best_by: str = "loss"
    # config keys that may change between a run and its resumption (not what is learnt)
    resumable: frozenset[str] = frozenset({"epochs", "budget_minutes", "max_steps", "workers",
                                           "log_every", "checkpoint_every", "val_every"})


@dataclass
class TrainState:
    """What ``last.ckpt`` holds besides the job's own state (weights, optimiser, ...)."""

    epoch: int = 0  # the epoch in progress (or next to start)
    step: int = 0  # steps of ``epoch`` already done
    global_step: int = 0
    best_val_loss: float = math.inf
    best_val_metric: float = -math.inf  # best_by: metric
    elapsed_s: float = 0.0  # training time so far, over every resumption
    history: list[dict[str, Any]] = field(default_factory=list)
    task_weights: dict[str, Any] = field(default_factory=dict)  # a job's adaptive weights
    early_stopped: bool = False  # the job ended the run (Validation.stop)
    finished: bool = False  # the run ended and wrote its final files


@dataclass
class Validation:
    """One validation, as a job reports it to the loop."""

    loss: float  # the total validation loss (best_by: loss picks the lowest)
    metric: float | None  # the validation metric (best_by: metric picks the highest); None
    record: dict[str, Any]  # added to the epoch's history record; its ``val``: the validation
    #                         values (the numbers go to TensorBoard, under ``val/``)
    best_meta: dict[str, Any] = field(default_factory=dict)  # added to best.pt's meta
    stop: bool = False  # end the run after this validation (early stop)


class Job:
    """What a training run gives the loop; :mod:`training.train` and
    :mod:`training.train_teacher` implement it. Methods run in every DDP process unless said."""

    train_size: int  # number of training samples
    loop: TrainingLoop | None = None  # the loop running the job (set by the loop)

    def config_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (``config.yaml``, checked on resume)."""
        raise NotImplementedError

    def upgrade_config(self, old: dict[str, Any]) -> dict[str, Any]:
        """``last.ckpt``'s config as this version writes it (before the resume check)."""
        return old

    def train_batches(self, batches: list[list[Any]]) -> Iterable[Any]:
        """The loaded batches of these sample keys (``(epoch, index)`` lists)."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimiser step; the logged values of the global batch (``total`` or ``loss``
        first: the progress bar shows it)."""
        raise NotImplementedError

    def validate(self, record: dict[str, Any]) -> Validation:
        """Validate the model; ``record`` is the epoch's history record so far."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The job's part of ``last.ckpt``: tensors and plain data only."""
        raise NotImplementedError

    def load_state_dict(self, data: dict[str, Any], path: Path) -> None:
        """Restore :meth:`state_dict` from ``last.ckpt`` (``path``, for messages)."""
        raise NotImplementedError

    def save_model(self, name: str, meta: dict[str, Any]) -> None:
        """Write the model file ``out/name`` (process 0 only)."""
        raise NotImplementedError

    def epoch_line(self, record: dict[str, Any], validation: Validation,
                   state: TrainState) -> str:
        """The line printed after a validation (process 0 only)."""
        raise NotImplementedError

    def before_training(self) -> None:
        """Runs once, before the first step of a new run (process 0 only)."""

    def finish(self) -> None:
        """Wrap-up after ``final.pt`` (process 0 only), e.g. calibration."""

    def log_images(self, writer: Any, step: int) -> None:
        """TensorBoard images after a validation (process 0 only)."""


class TrainingLoop:
    """Run ``job`` under ``settings`` (module docstring). Taking the run folder, checking and
    loading ``last.ckpt`` happen here; :meth:`run` trains; :attr:`finished` says the run found
    nothing to do (then :meth:`run` prints :meth:`finished_message` and changes nothing)."""

    def __init__(self, settings: LoopSettings, job: Job, ctx: DistributedContext,
                 restart: bool = False, progress: bool = True) -> None:
        if settings.best_by not in BEST_BY:
            raise ConfigError(f"best_by must be {' or '.join(BEST_BY)}, got {settings.best_by!r}")
        self.settings = settings
        self.job = job
        job.loop = self
        self.ctx = ctx
        self.out = Path(settings.out)
        self.progress = progress
        self.state = TrainState()
        self.writer: Any = None
        self.lock = RunFolderLock(self.out)
        busy = None
        if ctx.main:
            try:
                report_removed(self.lock.acquire())
            except RunFolderBusy as exc:
                busy = str(exc)
        if self.agreed(busy is not None):
            raise RunFolderBusy(busy or f"{self.out} is in use by another process")
        try:
            ctx.barrier()
            if restart:
                if ctx.main:
                    (self.out / "last.ckpt").unlink(missing_ok=True)
                ctx.barrier()
            elif (self.out / "last.ckpt").exists():
                self._resume()
            # a finished run is left alone unless a larger budget or epochs gives it work
            self.finished = self.state.finished and not self._work_left()
            if ctx.main and not self.finished:
                self.writer = self._writer()
                with atomic_write(self.out / "config.yaml") as stream:
                    stream.write(yaml.safe_dump(job.config_dict(), sort_keys=False).encode())
        except BaseException:
            self.lock.release()
            raise

    # ----------------------------------------------------------------- limits
    def budget_used(self) -> bool:
        minutes = self.settings.budget_minutes
        return minutes is not None and self.state.elapsed_s >= minutes * 60.0

    def steps_done(self) -> bool:
        return self.settings.max_steps is not None \
            and self.state.global_step >= self.settings.max_steps

    def _work_left(self) -> bool:
        return self.state.epoch < self.settings.epochs and not self.budget_used() \
            and not self.steps_done() and not self.state.early_stopped

    def progress_fraction(self) -> float:
        """Fraction of the training done, for ramped weights: of the epochs, of the time budget
        or of ``max_steps``, whichever limit is nearest (the one that will end the run)."""
        settings, state = self.settings, self.state
        per_epoch = max(self.job.train_size // max(settings.batch_size, 1), 1)
        done = [(state.epoch + state.step / per_epoch) / settings.epochs]
        if settings.budget_minutes is not None:  # process 0's clock, so every process agrees
            done.append(self.from_main(state.elapsed_s) / (60.0 * settings.budget_minutes))
        if settings.max_steps is not None:
            done.append(state.global_step / settings.max_steps)
        return min(max(done), 1.0)

    def finished_message(self) -> str:
        """What the command says about a run it found finished."""
        settings, state = self.settings, self.state
        why = (f"its {settings.budget_minutes:g}-minute budget is used" if self.budget_used()
               else f"its {settings.max_steps} steps are done" if self.steps_done()
               else "stopped early: no task improved for task_patience validations"
               if state.early_stopped else f"{state.epoch} of {settings.epochs} epochs done")
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

    # ----------------------------------------------------------------- last.ckpt
    def save_state(self) -> None:
        if self.ctx.main:
            data = {"format": STATE_FORMAT, "config": self.job.config_dict(),
                    "state": {**self.state.__dict__,
                              "best_val_loss": float(self.state.best_val_loss)},
                    **self.job.state_dict()}
            with atomic_write(self.out / "last.ckpt") as stream:
                torch.save(data, stream)
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
        old, new = self.job.upgrade_config(data["config"]), self.job.config_dict()
        changed = sorted(k for k in new
                         if k not in self.settings.resumable and old.get(k) != new[k])
        if changed:
            raise ConfigError(f"{path} was written with a different config ({', '.join(changed)}"
                              f" differ); use --restart or another out folder")
        self.job.load_state_dict(data, path)
        self.state = TrainState(**data["state"])
        if self.ctx.main:
            print(f"resuming {path}: epoch {self.state.epoch + 1}, step {self.state.step}",
                  flush=True)

    # ----------------------------------------------------------------- logging
    def _writer(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("tensorboard is not installed: no TensorBoard logs", file=sys.stderr)
            return None
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.state.global_step)

    def log_scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def _write_history(self) -> None:
        with atomic_write(self.out / "history.json") as stream:
            stream.write(json.dumps(self.state.history, indent=1).encode())

    # ----------------------------------------------------------------- the loop
    def run(self) -> list[dict[str, Any]]:
        """Train until a limit ends the run; the history (one record per epoch)."""
        state = self.state
        if self.finished:
            if self.ctx.main:
                print(self.finished_message(), flush=True)
            self.close()
            return state.history
        state.finished = False
        # killed after the budget ran out, after the last step or after an early stop
        stop = self.agreed(self.budget_used()) or self.steps_done() or state.early_stopped
        try:
            if state.global_step == 0 and self.ctx.main:
                self.job.before_training()
            while state.epoch < self.settings.epochs and not stop:
                stop = self._epoch()
            if self.ctx.main:
                self.job.save_model("final.pt", {"kind": "final",
                                                 "stopped_by_budget": self.budget_used(),
                                                 "steps": state.global_step,
                                                 "early_stopped": state.early_stopped})
                self.job.finish()
                self._write_history()
            self.ctx.barrier()
            state.finished = True
            self.save_state()
        finally:
            self.close()
        return state.history

    def _epoch(self) -> bool:
        """Train (the rest of) one epoch and validate when due; whether the run stops."""
        settings, state = self.settings, self.state
        batches = epoch_batches(self.job.train_size, settings.batch_size, settings.seed,
                                state.epoch, self.ctx.rank, self.ctx.world)
        bar = tqdm(total=len(batches), initial=state.step,
                   desc=f"epoch {state.epoch + 1}/{settings.epochs}", unit="batch",
                   disable=not (self.progress and self.ctx.main), dynamic_ncols=True)
        sums: dict[str, float] = {}
        stop = False
        started = time.perf_counter()
        budget_s = None if settings.budget_minutes is None else settings.budget_minutes * 60.0
        for batch in self.job.train_batches(batches[state.step:]):
            values = self.job.train_step(batch)
            state.step += 1
            state.global_step += 1
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if state.global_step % settings.log_every == 0:
                self.log_scalars("train", values, state.global_step)
            bar.set_postfix(loss=f"{next(iter(values.values())):.3f}")
            bar.update(1)
            now = time.perf_counter()
            state.elapsed_s += now - started
            started = now
            if budget_s is not None and self.agreed(state.elapsed_s >= budget_s):
                stop = True
                break
            if self.steps_done():  # the same step in every process
                stop = True
                break
            if settings.checkpoint_every and state.global_step % settings.checkpoint_every \
                    == 0 and state.step < len(batches):
                self.save_state()
        bar.close()
        done_steps = max(state.step, 1)
        record: dict[str, Any] = {
            "epoch": state.epoch + 1, "steps": state.step,
            "train": {k: v / done_steps for k, v in sums.items()},
            "elapsed_s": round(state.elapsed_s, 1)}
        if not stop or state.step >= len(batches):  # the epoch is complete
            state.epoch += 1
            state.step = 0
        if stop or state.epoch % settings.val_every == 0 or state.epoch >= settings.epochs:
            stop = self._validate(record) or stop
        state.history.append(record)
        if self.ctx.main:
            self._write_history()
        self.save_state()
        return stop

    def _validate(self, record: dict[str, Any]) -> bool:
        """Validate, keep best.pt, log and print; whether the job ends the run."""
        state = self.state
        validation = self.job.validate(record)
        record.update(validation.record)
        if validation.stop:
            state.early_stopped = True
        self.log_scalars("val", validation.record.get("val", {}), state.global_step)
        if self.writer is not None:
            self.job.log_images(self.writer, state.global_step)
        if self._improved(validation.loss, validation.metric) and self.ctx.main:
            self.job.save_model("best.pt", {"kind": "best", **validation.best_meta,
                                            "epoch": record["epoch"]})
        if self.ctx.main:
            print(self.job.epoch_line(record, validation, state), flush=True)
        return validation.stop

    def _improved(self, loss: float, metric: float | None) -> bool:
        """Record a validation's loss and metric (None: none); whether it is the best so far
        by ``best_by``."""
        state = self.state
        if self.settings.best_by == "metric":
            better = metric is not None and metric > state.best_val_metric  # False for NaN
            if better:
                state.best_val_metric = metric
        else:
            better = loss < state.best_val_loss
        state.best_val_loss = min(state.best_val_loss, loss)
        return better

    # ----------------------------------------------------------------- DDP
    def from_main(self, value: float) -> float:
        """``value`` as process 0 has it (itself without DDP)."""
        if not self.ctx.enabled:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        torch.distributed.broadcast(tensor, 0)
        return float(tensor.item())

    def agreed(self, flag: bool) -> bool:
        """``flag`` as decided by process 0 (so every process stops at the same step)."""
        if not self.ctx.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.broadcast(value, 0)
        return bool(value.item())


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


def prepare_for_training(model: torch.nn.Module, ctx: DistributedContext, lr: float,
                         weight_decay: float
                         ) -> tuple[torch.nn.Module, torch.optim.Adam]:
    """``model`` on the context's device (BatchNorm synchronised and wrapped in DDP under
    ``torchrun``) and an Adam over its parameters except :func:`biases_before_batchnorm`; the
    module the training steps call and the optimiser."""
    frozen = {id(p) for p in biases_before_batchnorm(model)}
    if ctx.enabled:
        synchronise_batchnorm(model, ctx.device)
    model.to(ctx.device)
    net: torch.nn.Module = model
    if ctx.enabled:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = torch.optim.Adam([p for p in model.parameters() if id(p) not in frozen],
                                 lr=lr, weight_decay=weight_decay)
    return net, optimizer
