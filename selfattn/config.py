"""Typed configs: dataclasses validated in ``__post_init__``, dotted ``key=value`` overrides
checked against the declared fields and types, and JSON round trips.

    cfg = apply_overrides(recipe_config, ["model.n_layer=4", "train.lr=3e-4"])

Choices are plain strings so a config always serialises; every config class validates itself,
so a bad value fails at once with the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config key or value that is not allowed (a ValueError, so callers can catch either)."""


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {tuple(choices)}")


def check_range(name: str, value, lo=None, hi=None, *, lo_open=False, hi_open=False) -> None:
    ok = True
    if lo is not None:
        ok &= value > lo if lo_open else value >= lo
    if hi is not None:
        ok &= value < hi if hi_open else value <= hi
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ConfigError(f"{name}={value!r} is out of range; allowed {left}{lo}, {hi}{right}")


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_scalar(text: str, typ, key: str):
    """Parse ``text`` as ``typ`` (bool, int, float, str, Optional[...], tuple[int, ...])."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        errors = []
        for a in args:
            try:
                return _parse_scalar(text, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}={text!r}: expected {typ}")
    if origin in (tuple, list):
        (inner, *_rest) = typing.get_args(typ) or (str,)
        parts = [p for p in text.strip("()[]").split(",") if p.strip()]
        seq = [_parse_scalar(p.strip(), inner, key) for p in parts]
        return tuple(seq) if origin is tuple else seq
    if typ is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}={text!r}: expected a bool (true/false)")
    if typ is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected an int") from None
    if typ is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected a float") from None
    if typ is str:
        return text
    raise ConfigError(f"{key}: cannot parse a value of type {typ} from the command line")


def apply_overrides(cfg, overrides: list[str]):
    """Return a copy of dataclass ``cfg`` with ``a.b=value`` overrides applied and re-validated."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. model.n_layer=4)")
        key, text = item.split("=", 1)
        path = key.strip().split(".")
        obj, node = cfg, data
        for i, part in enumerate(path):
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"unknown config key {key!r}: {'.'.join(path[:i])} has no sub-keys")
            hints = _field_types(type(obj))
            if part not in hints:
                known = ", ".join(sorted(f.name for f in dataclasses.fields(obj)))
                where = ".".join(path[:i]) or "the config"
                raise ConfigError(f"unknown config key {key!r}; {where} has: {known}")
            if i == len(path) - 1:
                if dataclasses.is_dataclass(getattr(obj, part)):
                    raise ConfigError(f"config key {key!r} is a section; set one of its fields")
                node[part] = _parse_scalar(text.strip(), hints[part], key)
            else:
                obj, node = getattr(obj, part), node[part]
    return from_dict(type(cfg), data)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict):
    """Build dataclass ``cls`` from a dict (nested dataclasses too); unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(data) - names
    if extra:
        raise ConfigError(f"{cls.__name__}: unknown keys {sorted(extra)}; allowed: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ) and isinstance(value, dict):
            value = from_dict(typ, value)
        elif typing.get_origin(typ) is tuple and isinstance(value, list):
            value = tuple(value)
        if not _is_instance(value, typ):
            # checked before construction, so __post_init__ never sees a value of the wrong type
            raise ConfigError(f"{cls.__name__}.{name}={value!r} has the wrong type; expected {typ}")
        kwargs[name] = value
    return cls(**kwargs)


def _is_instance(v, typ) -> bool:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(v, a) for a in typing.get_args(typ))
    if typ is type(None):
        return v is None
    if origin in (tuple, list):
        return isinstance(v, origin)
    if origin is dict:
        return isinstance(v, dict)
    if typ is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if typ is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if typ is Any:
        return True
    if dataclasses.is_dataclass(typ):
        return isinstance(v, typ)
    return isinstance(v, typ)


def save_json(cfg, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")


def load_json(cls, path: str | Path):
    return from_dict(cls, json.loads(Path(path).read_text()))
