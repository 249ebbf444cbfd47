"""One way to read and write every config: dataclasses <-> plain data, guided by field types.

Every config section of the project is a frozen dataclass that inherits :class:`ConfigData`:
the model (:mod:`caer_ros.model.config`), the inference settings
(:mod:`caer_ros.model.inference_settings`), the training config and its sections
(:mod:`training.config`), the teacher classifier (:mod:`training.teachers.models`) and the
teacher training run (:mod:`training.train_teacher`). ``to_dict()`` writes one as plain data
(dicts, lists, strings, numbers, bools, None: what model files, checkpoints and YAML hold);
``from_dict()`` reads plain data back:

- a key the dataclass has no field for is an error naming it and the known ones; a missing
  required field is an error naming it;
- a field whose type is a dataclass (also ``X | None`` and ``str | X``) reads a mapping into it,
  recursively; its fields are named by their dotted path in messages (``optim.lr``);
- ``tuple[...]`` fields take lists, ``dict[...]`` fields are read value by value;
- scalars are type-checked: ``int`` refuses bools and floats, ``float`` takes any real number
  (kept as written), ``bool`` only true/false, ``str`` only strings, ``None`` only where the
  type allows it; ``Any`` is taken as it is;
- then the dataclass is built, so its ``__post_init__`` checks ranges and choices with
  messages that name the field. Errors are raised as the top-level class's error type: where
  that is a subclass of ``ValueError`` (training's ``ConfigError``), a nested section's plain
  ``ValueError`` is converted and prefixed with the section's path (``augment: ...``); where it
  is ``ValueError`` itself (the model file's sections), it passes unchanged.

Class attributes name a section in messages: ``config_name`` ("unknown *model config* key(s)"),
``config_keys`` (the noun: ``keys``, ``key(s)``, ``setting(s)``), ``config_path`` (the prefix
of its fields' names when read on its own) and ``config_error`` (the exception class).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, ClassVar, TypeVar, Union

T = TypeVar("T", bound="ConfigData")


class ConfigData:
    """Mixin for config dataclasses: :meth:`to_dict` / :meth:`from_dict` by field types."""

    config_name: ClassVar[str] = "config"
    config_keys: ClassVar[str] = "keys"
    config_path: ClassVar[str] = ""
    config_error: ClassVar[type[Exception]] = ValueError

    def to_dict(self) -> dict[str, Any]:
        """Plain data: every field, nested sections as dicts, tuples as lists."""
        return to_dict(self)

    @classmethod
    def from_dict(cls: type[T], data: Any) -> T:
        """Read plain data written by :meth:`to_dict` (or by hand); see the module docstring."""
        return from_dict(cls, data)


def plain(value: Any) -> Any:
    """``value`` as plain data (dataclasses as dicts, tuples as lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def to_dict(instance: Any) -> dict[str, Any]:
    """A dataclass instance as plain data, field by field."""
    return {f.name: plain(getattr(instance, f.name)) for f in dataclasses.fields(instance)}


def from_dict(cls: type[T], data: Any, path: str | None = None,
              error: type[Exception] | None = None) -> T:
    """Read the dataclass ``cls`` from the mapping ``data`` (module docstring). ``path``: the
    prefix of field names in messages (default ``cls.config_path``); ``error``: the exception
    raised (default ``cls.config_error``)."""
    path = cls.config_path if path is None else path
    error = error or cls.config_error
    what = cls.config_name
    check_keys(cls, data, error)
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in data
               and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"incomplete {what}: {', '.join(path + m for m in missing)} missing")
    hints = _hints(cls)
    values = {name: _read(hints[name], value, path + name, error)
              for name, value in data.items()}
    try:
        return cls(**values)
    except error:
        raise
    except (TypeError, ValueError) as exc:
        where = path.rstrip(".")
        raise error(f"{where}: {exc}" if where else str(exc)) from None


def check_keys(cls: type[ConfigData], data: Any, error: type[Exception] | None = None) -> None:
    """Raise unless ``data`` is a mapping whose keys are all fields of ``cls``."""
    error = error or cls.config_error
    if not isinstance(data, dict):
        raise error(f"{cls.config_name} must be a mapping, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise error(f"unknown {cls.config_name} {cls.config_keys} {unknown}; "
                    f"known: {sorted(known)}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(kind: Any) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if kind is type(None):
        return "null"
    if isinstance(kind, type) and issubclass(kind, ConfigData):
        return "a mapping"
    origin = typing.get_origin(kind)
    if origin is tuple or origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    return getattr(kind, "__name__", str(kind))


class _Mismatch(Exception):
    """A value that is not of the expected type (internal: tried member by member)."""


def _read(kind: Any, value: Any, where: str, error: type[Exception]) -> Any:
    try:
        return _convert(kind, value, where, error)
    except _Mismatch:
        raise error(f"{where} must be {_describe(kind)}, got {value!r}") from None


def _convert(kind: Any, value: Any, where: str, error: type[Exception]) -> Any:
    if kind is Any:
        return value
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        members = typing.get_args(kind)
        if value is None:
            if type(None) in members:
                return None
            raise _Mismatch
        for member in members:  # the first member the value fits
            if member is not type(None):
                try:
                    return _convert(member, value, where, error)
                except _Mismatch:
                    continue
        raise _Mismatch
    if isinstance(kind, type) and issubclass(kind, ConfigData):
        if isinstance(value, kind):
            return value
        if not isinstance(value, dict):
            raise _Mismatch
        return from_dict(kind, value, where + ".", error)
    if origin is tuple or origin is list:
        if not isinstance(value, tuple | list):
            return value  # left to the dataclass's own check, whose message is precise
        args = typing.get_args(kind) or (Any,)
        if origin is list or args[-1] is Ellipsis:  # list[X], tuple[X, ...]
            member_kinds = [args[0]] * len(value)
        elif len(args) == len(value):  # tuple[X, Y]
            member_kinds = list(args)
        else:  # the wrong length: left to the dataclass's own check
            member_kinds = [Any] * len(value)
        items = [_read(k, v, f"{where}[{i}]", error)
                 for i, (k, v) in enumerate(zip(member_kinds, value, strict=True))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            return value  # left to the dataclass's own check
        args = typing.get_args(kind)
        member = args[1] if len(args) == 2 else Any
        return {k: _read(member, v, f"{where}.{k}", error) for k, v in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            raise _Mismatch
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Mismatch
        return value
    if kind is str:
        if not isinstance(value, str):
            raise _Mismatch
        return value
    if kind is type(None):
        if value is not None:
            raise _Mismatch
        return None
    return value
