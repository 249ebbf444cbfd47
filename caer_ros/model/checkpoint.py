"""The caer_ros model file: weights plus everything needed to use them (DESIGN.md, node contract).

A model file is a ``torch.save`` of a dict holding only tensors and plain data::

    {"format": "caer_ros.model", "version": 1,
     "config": ModelConfig.to_dict(),          # architecture, categories, input size
     "inference": InferenceSettings.to_dict(), # thresholds, extraction, decoding defaults
     "state_dict": {name: tensor},
     "meta": {"trained": bool, "seed": int | None, "created_by": str, ...}}

It is always read with ``torch.load(..., weights_only=True)``, so a file can never run code.
Every problem with a file (missing, truncated, foreign, refused, incompatible) raises one
exception class, :class:`ModelFileError`, with a one-line message naming the file.

This module imports torch only where a file is read or written (:func:`import_torch`), so
:class:`ModelFileError` and :class:`ModelFile` serve the ONNX path on a robot without PyTorch.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from caer_ros import __version__
from caer_ros.atomic_file import atomic_write
from caer_ros.model.config import ModelConfig
from caer_ros.model.inference_settings import InferenceSettings

if TYPE_CHECKING:
    from torch import Tensor

    from caer_ros.model.network import BENet

FORMAT = "caer_ros.model"
VERSION = 1
_KEYS = {"format", "version", "config", "inference", "state_dict", "meta"}
TORCH_NEEDED = ("a .pt model file needs PyTorch (pip install torch); use an .onnx export on a "
                "robot without it")


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.path}: {self.problem}")


@dataclass(frozen=True)
class ModelFile:
    """The plain-data part of a model file."""

    path: str
    config: ModelConfig
    inference: InferenceSettings
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION


def import_torch(path: str | os.PathLike) -> ModuleType:
    """torch, for reading or writing the PyTorch file ``path``; without it (or with a torch
    that fails to import) a :class:`ModelFileError` naming the file says so (:data:`TORCH_NEEDED`).
    """
    try:
        import torch
    except (ImportError, OSError) as error:  # OSError: a torch whose native libraries fail
        missing = isinstance(error, ModuleNotFoundError) and error.name == "torch"
        reason = "" if missing else f" (import torch failed: {error})"
        raise ModelFileError(path, TORCH_NEEDED + reason) from None
    return torch


def _check_plain(value: Any, where: str) -> None:
    """Meta data must be plain: None, bool, int, float, str, lists and str-keyed dicts."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise ValueError(f"{where} is a {type(value).__name__}; only plain data may be stored")


def default_meta(seed: int | None = None, trained: bool = False) -> dict[str, Any]:
    return {"trained": trained, "seed": seed, "created_by": f"caer_ros {__version__}"}


def save_model_file(path: str | os.PathLike, model: BENet,
                    inference: InferenceSettings | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (its config and weights) with ``inference`` settings (defaults for the
    model when None) and ``meta`` (merged over :func:`default_meta`) to ``path``, atomically:
    a temporary file in the same folder is renamed over ``path`` only once complete."""
    config = model.config
    inference = inference if inference is not None else InferenceSettings.for_model(config)
    inference.check_against(config)
    full_meta = {**default_meta(), **(meta or {})}
    _check_plain(full_meta, "meta")
    data = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "inference": inference.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": full_meta,
    }
    path = Path(path)
    torch = import_torch(path)
    with atomic_write(path) as stream:
        torch.save(data, stream)
    return path


# Training checkpoints may hold numpy scalars (e.g. a ``best_perf``): plain data, rebuilt from
# a dtype and bytes, so allowed by name; every other Python object stays refused.
NUMPY_SCALARS = [np._core.multiarray.scalar, np.dtype,
                 *{type(np.dtype(kind)) for kind in ("float64", "float32", "int64", "int32",
                                                     "bool")}]


def load_plain_data(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """What a PyTorch file holds, read with ``weights_only=True`` (tensors, plain data and
    numpy scalars only: a file can never run code); every problem is a one-line
    :class:`ModelFileError` naming the file."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ModelFileError(path, "is empty (not a PyTorch file)")
    torch = import_torch(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(NUMPY_SCALARS):
            warnings.simplefilter("ignore")  # e.g. "pickle protocol 4" notes on foreign files
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(path, "no such file") from None
    except IsADirectoryError:
        raise ModelFileError(path, "is a directory, not a model file") from None
    except OSError as error:
        raise ModelFileError(path, f"cannot be read ({error.strerror or error})") from None
    except pickle.UnpicklingError as error:
        text = str(error)
        if "unsupported global" in text.lower():  # torch words it in several ways
            found = re.search(r"GLOBAL (\S+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise ModelFileError(path, f"refused: holds Python objects{what}, not only tensors "
                                       f"and plain data (a model file must not run code)") from None
        raise ModelFileError(path, "not a PyTorch file (unreadable or corrupted)") from None
    except Exception as error:  # truncated zip, random bytes: torch raises many types
        first = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:120]
        raise ModelFileError(
            path, f"not a readable PyTorch file, truncated or corrupted "
                  f"({type(error).__name__}{': ' + first if first else ''})") from None


def check_version_and_keys(path: Path, data: dict[str, Any], supported: int,
                           keys: set[str] | frozenset[str]) -> None:
    """A file's ``version`` is an integer from 1 to ``supported`` and it has every key of
    ``keys``; ModelFileError otherwise (shared by the model and teacher file formats)."""
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(path, f"invalid version {version!r}")
    if version > supported:
        raise ModelFileError(path, f"version {version} is newer than the supported {supported}; "
                                   f"update caer_ros")
    missing = sorted(set(keys) - set(data))
    if missing:
        raise ModelFileError(path, f"lacks {missing}")


def upgraded_config(config: Any) -> Any:
    """A stored config (model file or ONNX metadata) in today's terms: files written before
    ``head_layout`` existed all had the ``shared`` head layout."""
    if isinstance(config, dict) and "head_layout" not in config:
        return {**config, "head_layout": "shared"}
    return config


def read_model_file(path: str | os.PathLike,
                    map_location: Any = "cpu") -> tuple[ModelFile, dict[str, Tensor]]:
    """Read and validate a model file: its plain-data part and its state dict."""
    path = Path(path)
    data = load_plain_data(path, map_location)
    from torch import Tensor  # imported by load_plain_data

    if not isinstance(data, dict):
        raise ModelFileError(path, f"not a caer_ros model file (holds a {type(data).__name__})")
    if "format" not in data:
        if data and all(isinstance(v, Tensor) for v in data.values()):
            raise ModelFileError(path, "is a plain state_dict, not a caer_ros model file "
                                       "(load backbone weights with load_backbone_weights)")
        raise ModelFileError(path, f"not a caer_ros model file (no 'format' key; keys: "
                                   f"{sorted(map(str, data))[:6]})")
    if data["format"] != FORMAT:
        raise ModelFileError(path, f"format {data['format']!r} is not {FORMAT!r}")
    check_version_and_keys(path, data, VERSION, _KEYS)
    try:
        config = ModelConfig.from_dict(upgraded_config(data["config"]))
    except (ValueError, TypeError) as error:
        raise ModelFileError(path, f"invalid config: {error}") from None
    try:
        inference = InferenceSettings.from_dict(data["inference"])
        inference.check_against(config)
    except (ValueError, TypeError) as error:
        raise ModelFileError(path, f"invalid inference settings: {error}") from None
    state = data["state_dict"]
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ModelFileError(path, "state_dict is not a mapping of names to tensors")
    meta = data["meta"] if isinstance(data["meta"], dict) else {}
    return ModelFile(str(path), config, inference, dict(meta), data["version"]), state


def _check_state(path: Path, model: BENet, state: dict[str, Tensor]) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        raise ModelFileError(path, "state_dict does not match its config: "
                                   + ", ".join(parts) + " tensors")
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ModelFileError(path, f"state_dict does not match its config: {key!r} has "
                                       f"shape {tuple(state[key].shape)}, the model needs "
                                       f"{tuple(value.shape)}")


def load_model_file(path: str | os.PathLike,
                    map_location: Any = "cpu") -> tuple[BENet, ModelFile]:
    """Build the network a model file describes, load its weights, and return it in eval mode
    (on ``map_location`` when that names a device) with the file's plain data."""
    info, state = read_model_file(path, map_location)
    import torch  # imported by read_model_file

    from caer_ros.model.network import BENet

    model = BENet(info.config)
    _check_state(Path(path), model, state)
    model.load_state_dict(state)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval(), info
