"""BENet's public model as its parity fixtures describe it (test/data/benet_reference/).

The fixtures hold the public model's outputs for weights made by a documented rule from its
state-dict keys (``keys_<layout>.tsv``): :func:`rule_state_dict` draws them the same way, and
:func:`write_archive_file` writes them as each kind of file of the released archive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1] / "data" / "benet_reference"
LAYOUTS = ("emotic", "emotic_heco")
ARCHIVE_SHAPES = ("plain", "module", "checkpoint")


def keys_file(layout: str) -> Path:
    return DATA / f"keys_{layout}.tsv"


def fixture(layout: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"parity_{layout}.npz") as data:
        return {name: data[name] for name in data.files}


def rule_state_dict(layout: str, seed: int = 2023) -> dict[str, torch.Tensor]:
    """The public state dict of ``layout`` with the fixture rule's weights: one RandomState,
    the keys file's rows in order, a draw per row by its kind (README of the fixtures)."""
    random = np.random.RandomState(seed)
    state: dict[str, torch.Tensor] = {}
    for line in keys_file(layout).read_text().splitlines()[1:]:
        key, shape_text, dtype = line.split("\t")
        shape = tuple(int(v) for v in shape_text.split(",")) if shape_text else ()
        if dtype == "int64":
            state[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        if key.endswith("running_var"):
            values = 0.5 + random.random_sample(shape)
        elif key.endswith("running_mean"):
            values = 0.1 * random.standard_normal(shape)
        elif len(shape) == 1 and key.endswith(".weight"):
            values = 0.5 + 0.5 * random.random_sample(shape)
        elif len(shape) == 1:
            values = 0.05 * random.standard_normal(shape)
        else:
            values = random.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        state[key] = torch.from_numpy(np.asarray(values, dtype=np.float32))
    return state


def write_archive_file(state: dict[str, torch.Tensor], shape: str, path: Path) -> Path:
    """``state`` as one kind of file of the archive: ``plain`` (``model_best.pth.tar``),
    ``module`` (DDP's ``module.`` prefix, as ``final_state0.pth.tar``) or ``checkpoint``
    (``checkpoint.pth.tar``: a dict with ``state_dict``, ``optimizer``, epochs and a numpy
    ``best_perf``, as training scripts often store it)."""
    prefixed = {f"module.{k}": v for k, v in state.items()}
    data = {
        "plain": state,
        "module": prefixed,
        "checkpoint": {"epoch": 30, "best_epoch": 27, "best_perf": np.float64(0.2871),
                       "state_dict": prefixed,
                       "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3,
                                                                     "params": [0, 1]}]}},
    }[shape]
    torch.save(data, path)
    return path


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """Max absolute error over max magnitude (the fixtures' measure)."""
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))
