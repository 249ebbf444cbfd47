"""Start a model from another model file (``init_from``): fine-tuning on a lab's own data.

:func:`load_init_model` copies into a freshly built model every tensor of the file that fits:

- the same name and shape (backbone, person detector, every head of a category set both have):
  *loaded*;
- an emotion output of a set the file does not have (the lab's ``own``): taken from the file's
  set that shares the most category names, renamed (``...outputs.emotic.0`` for
  ``...outputs.own.0``). A tensor of the same shape loads whole; one whose first dimension is
  the set's categories (the last convolution of each emotion output, the person-centric and
  background classifiers) loads the rows of the categories whose names match (case ignored):
  each new category that matches a name of the file's set starts where the file's left it,
  the others start fresh;
- anything else is *new* (as built, e.g. a layer whose width follows the number of
  categories), and the file's tensors no tensor took are *skipped*.

The :class:`InitReport` says which, by part of the network and by category; nothing loading at
all is an error (the file is for another network).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from caer_ros.model.checkpoint import read_model_file


class InitError(ValueError):
    """A model file nothing of which fits the model."""


@dataclass
class InitReport:
    """What :func:`load_init_model` did (module docstring)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    categories: dict[str, str] = field(default_factory=dict)  # "set.name" -> "from set.name"/"new"

    def summary(self) -> str:
        def parts(names: list[str]) -> str:
            counts = Counter(_part(n) for n in names)
            return ", ".join(f"{part} {n}" for part, n in sorted(counts.items())) or "none"

        lines = [f"init_from {self.source}: loaded {len(self.loaded)} tensors "
                 f"({parts(self.loaded)}); new {len(self.new)} ({parts(self.new)}); "
                 f"skipped {len(self.skipped)} of the file's ({parts(self.skipped)})"]
        if self.categories:
            lines.append("categories: " + ", ".join(f"{k} <- {v}"
                                                     for k, v in self.categories.items()))
        return "\n".join(lines)


def _part(name: str) -> str:
    """The part of the network a tensor belongs to: ``backbone``, ``detector``, ``emotion``
    (the bottom-up head), ``person_centric``, ``background``, ..."""
    return name.split(".", 1)[0]


def _renamed(key: str, new_set: str, old_set: str) -> str:
    return re.sub(rf"(?<=\.){re.escape(new_set)}(?=\.)", old_set, key)


def _closest_set(names: tuple[str, ...], sets: dict[str, tuple[str, ...]]) -> tuple[str, int]:
    folded = {n.casefold() for n in names}
    scored = [(sum(n.casefold() in folded for n in other), -i, name)
              for i, (name, other) in enumerate(sets.items())]
    shared, _, name = max(scored)
    return name, shared


def load_init_model(model: nn.Module, path: str | Path) -> InitReport:
    """Load what fits of the model file ``path`` into ``model`` (module docstring). Raises
    :class:`~caer_ros.model.checkpoint.ModelFileError` for a file that is not a model file,
    :class:`InitError` when nothing fits."""
    info, source = read_model_file(path)
    report = InitReport(str(path))
    target = model.state_dict()
    new_sets: dict[str, tuple[str, ...]] = dict(model.config.categories)
    file_sets: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in info.config.categories.items()}
    taken: set[str] = set()
    updated: dict[str, torch.Tensor] = {}
    mapping: dict[str, tuple[str, dict[int, int]]] = {}  # new set -> (file set, rows)
    for set_name, names in new_sets.items():
        if set_name in file_sets and file_sets[set_name] == names:
            continue
        old_set, shared = _closest_set(names, file_sets)
        old_names = file_sets[old_set]
        folded = [n.casefold() for n in old_names]
        rows = {i: folded.index(n.casefold()) for i, n in enumerate(names)
                if n.casefold() in folded}
        mapping[set_name] = (old_set, rows)
        for i, name in enumerate(names):
            report.categories[f"{set_name}.{name}"] = \
                f"{old_set}.{old_names[rows[i]]}" if i in rows else "new"
    per_category = {name: _per_category(model, name) for name in mapping}
    for key, value in target.items():
        if key in source and source[key].shape == value.shape and \
                not any(f".{s}." in key for s in mapping):
            updated[key] = source[key]
            taken.add(key)
            report.loaded.append(key)
            continue
        done = False
        for set_name, (old_set, rows) in mapping.items():
            if f".{set_name}." not in key and not key.endswith(f".{set_name}"):
                continue
            old_key = _renamed(key, set_name, old_set)
            old = source.get(old_key)
            if old is None:
                break
            if key in per_category[set_name]:  # one row per category of the set
                if value.shape[1:] == old.shape[1:] and rows:
                    updated[key], done = _rows(value, old, rows), True
            elif old.shape == value.shape:  # a layer whose size does not follow the set
                updated[key], done = old, True
            if done:
                taken.add(old_key)
            break
        (report.loaded if done else report.new).append(key)
    report.skipped = [k for k in source if k not in taken]
    if not report.loaded:
        raise InitError(f"init_from {path}: no tensor of the file fits the model (another "
                        f"network?)")
    model.load_state_dict({**target, **updated})
    return report


def _per_category(model: nn.Module, set_name: str) -> set[str]:
    """The tensors of ``model`` with one row per category of ``set_name``: those whose first
    dimension grows by exactly two in the same network built with two more categories."""
    from caer_ros.model.network import build_model

    config = model.config
    names = tuple(config.categories[set_name])
    wider = dataclasses.replace(config, categories={**config.categories,
                                                    set_name: (*names, "~probe1", "~probe2")})
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    return {k for k, v in build_model(wider).state_dict().items()
            if k in shapes and v.dim() >= 1 and v.shape[0] == shapes[k][0] + 2}


def _rows(value: torch.Tensor, old: torch.Tensor, rows: dict[int, int]) -> torch.Tensor:
    """``value`` with its rows ``i`` replaced by ``old``'s rows ``rows[i]``."""
    out = value.clone()
    for i, j in rows.items():
        out[i] = old[j]
    return out

