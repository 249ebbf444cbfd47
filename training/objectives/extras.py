"""Extra training terms beside BENet's objective: distillation, task discriminator, amalgamation.

An *extra* adds named, already weighted loss terms computed from the student's output, the
batch images and the batch. The trainer (:mod:`training.train`) builds the extras the config
asks for (:func:`build_extras`) and runs them inside :class:`TrainingNet`'s forward, so a
trainable extra (the task discriminator, the amalgamation module) is part of the module that
DDP wraps: its gradients are averaged over the processes like the network's. Its parameters
are optimised with the network's and saved in ``last.ckpt``, never in the model files (which
hold BENet alone).

The :class:`Extra` protocol:

- ``name``: prefix of its terms (``kd``, ``disc``, ``ka``) and its key in ``last.ckpt``;
- ``module``: trainable parameters, or None;
- ``in_validation``: whether its terms count in the validation total (which picks best.pt);
- ``terms(output, images, batch)``: ``{"<name>.<term>": scalar}``, each a mean over this
  process's batch (DDP averages the gradients of the processes). Terms named
  ``diag.<...>`` (:data:`DIAGNOSTIC`) are diagnostics: reported with the validation losses,
  never added to a loss or to the validation total;
- ``set_progress(progress)``: the fraction of training done, 0..1 (for ramped weights);
- ``set_task_weights(weights)``: the current gamma_i per emotion task (adaptive weights);
- ``supervised_factors()``: task -> factor of that task's supervised bottom-up terms (eq.
  13's alpha for the tasks a distillation teacher covers; empty for the others);
- ``state_dict()`` / ``load_state_dict(state)``: state that is not a parameter.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn

from caer_ros.model.output import BENetOutput
from training.config import ConfigError, TrainConfig

DIAGNOSTIC = "diag."  # prefix of reported-only terms (not optimised, not in totals)


def is_diagnostic(term: str) -> bool:
    return term.startswith(DIAGNOSTIC)


class Extra(Protocol):
    name: str
    module: nn.Module | None
    in_validation: bool

    def terms(self, output: BENetOutput, images: Tensor, batch: Any) -> dict[str, Tensor]: ...

    def set_progress(self, progress: float) -> None: ...

    def set_task_weights(self, weights: dict[str, float]) -> None: ...

    def supervised_factors(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainingNet(nn.Module):
    """BENet plus the extras' trainable modules: ``forward(images, batch)`` returns the
    network's output and the extras' terms (none when ``batch`` is None)."""

    def __init__(self, model: nn.Module, extras: list[Extra]) -> None:
        super().__init__()
        self.model = model
        self.extra_modules = nn.ModuleDict(
            {e.name: e.module for e in extras if e.module is not None})
        self.extras = list(extras)

    def forward(self, images: Tensor, batch: Any = None, validation: bool = False
                ) -> tuple[BENetOutput, dict[str, Tensor]]:
        output = self.model(images)
        terms: dict[str, Tensor] = {}
        if batch is not None:
            for extra in self.extras:
                if not validation or extra.in_validation:
                    terms.update(extra.terms(output, images, batch))
        return output, terms


def build_extras(config: TrainConfig, model: nn.Module, device: torch.device) -> list[Extra]:
    """The extras ``config`` asks for, on ``device`` (teachers loaded, modules built)."""
    extras: list[Extra] = []
    if config.distill is not None:
        from training.objectives.distillation import DistillationExtra

        extras.append(DistillationExtra(config, device))
    if config.discriminator is not None:
        from training.objectives.multitask import DiscriminatorExtra

        extras.append(DiscriminatorExtra(config, model.backbone.out_channels))
    if config.amalgamation is not None:
        from training.objectives.amalgamation import AmalgamationExtra

        try:
            extras.append(AmalgamationExtra(
                config.amalgamation,
                list(model.backbone.out_channels), config.model.input_mean,
                config.model.input_std, device))
        except (OSError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"amalgamation: {exc}") from None
    for extra in extras:
        if extra.module is not None:
            extra.module.to(device)
    return extras
