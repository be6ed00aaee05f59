"""YAML configs that map one to one onto typed dataclasses, with errors that name the file and the key."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vococore.utils.errors import VoCoError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, source: str | os.PathLike | None = None,
              where: str = "") -> T:
    """Build dataclass ``cls`` from plain data, recursing into nested dataclasses; unknown keys are errors."""
    data = data or {}
    if not isinstance(data, dict):
        raise VoCoError(f"{where or 'config'} must be a mapping, got {type(data).__name__}", source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise VoCoError(f"unknown key(s) {unknown} in {where or 'config'}; known: {sorted(fields)}", source)
    kwargs = {name: _convert(hints[name], value, source, f"{where}.{name}" if where else name)
              for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise VoCoError(f"invalid {where or 'config'}: {exc}", source) from None


def _convert(tp: Any, value: Any, source: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, source, where) if len(non_none) == 1 else value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, where)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_convert(a, v, source, where) for a, v in zip(args if args[-1:] != (...,) else
                                                                     [args[0]] * len(value), value))
    if origin is list and isinstance(value, (list, tuple)):
        return [_convert(args[0], v, source, where) for v in value] if args else list(value)
    if origin is dict and isinstance(value, dict):
        return {_convert(args[0], k, source, where): _convert(args[1], v, source, where)
                for k, v in value.items()} if args else dict(value)
    if tp is float:
        return _to_float(value, source, where)
    if tp is int and isinstance(value, bool):
        raise VoCoError(f"{where} must be an integer, got {value!r}", source)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise VoCoError(f"{where} must be {tp.__name__}, got {value!r}", source)
    if tp is Path or tp is typing.Optional[Path]:
        return Path(value)
    return value


def _to_float(value: Any, source: Any, where: str) -> float:
    """A number; strings such as ``1e-3`` too, which YAML 1.1 (PyYAML) reads as text when they lack a dot."""
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    raise VoCoError(f"{where} must be a number, got {value!r}", source)


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, numbers, strings) for a dataclass, ready for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_path(name: str | os.PathLike, kind: str = "") -> Path:
    """A config file, or the bare name of a packaged one (``pretrain_small``, ``finetune_swin_B`` ...); the error
    lists the packaged configs whose names start with ``kind``."""
    from importlib import resources

    path = Path(name)
    if path.is_file():
        return path
    configs = resources.files("vococore").joinpath("configs")
    packaged = configs.joinpath(path.name if path.name.endswith(".yaml") else f"{path.name}.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    names = sorted(p.name[:-len(".yaml")] for p in configs.iterdir()
                   if p.name.startswith(kind) and p.name.endswith(".yaml"))
    raise VoCoError(f"config file not found (packaged: {', '.join(names)})", path)


def load_config(cls: type[T], path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> T:
    """Read YAML file ``path`` into ``cls``; ``overrides`` (dotted keys) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise VoCoError("config file not found", path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise VoCoError(f"not valid YAML: {exc}", path) from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return from_dict(cls, data, path)


def save_config(obj: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config next to a run's outputs (atomically), so every run can be reproduced."""
    from vococore.utils.atomic import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        Path(tmp).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
    return Path(path)
