"""Configuration: YAML -> dict -> dotted ``--set`` overrides -> strict frozen dataclasses.

Defaults live in each plugin's frozen ``Config`` dataclass. Everything else is a nested dict of overrides
that is merged in order (preset, experiment file, command line) and then validated here: unknown keys and
values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

D = TypeVar("D")


class ConfigError(ValueError):
    """A bad configuration value, key, override or file; the message says which and what to do."""


YAML_BOOL_WORDS = {False: ("off", "no", "false"), True: ("on", "yes", "true")}


def parse_value(text: str) -> Any:
    """Parse one override value with YAML rules: ``1e-3`` -> float, ``[0, 1]`` -> list, ``true`` -> bool."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads "1e-3" as a string; accept the scientific notation people type.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def parse_overrides(items: list[str]) -> dict:
    """``["method.lr=1e-3", "train.epochs=2"]`` -> ``{"method": {"lr": 0.001}, "train": {"epochs": 2}}``."""
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or "." not in key:
            raise ConfigError(
                f"bad override {item!r}: write SECTION.KEY=VALUE, e.g. --set method.lr=1e-3 "
                f"or --set \"method.train_modules=[0]\""
            )
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node[leaf] = parse_value(text.strip())
    return out


def merge(base: dict, update: dict) -> dict:
    """Deep merge: nested dicts merge, everything else in ``update`` replaces ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, not a {type(data).__name__}")
    return data


def build(cls: type[D], values: dict, where: str) -> D:
    """Build the frozen dataclass ``cls`` from ``values``; unknown keys and bad types name ``where.key``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]}"
            + (f" (and {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
            + f"; valid keys of {where}: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    for name, value in kwargs.items():
        check_bounds(fields[name], value, f"{where}.{name}")
    return cls(**kwargs)


def bounded(default: Any, low: float | None = None, high: float | None = None) -> Any:
    """A dataclass field whose value (or every item of a tuple value) must lie in [low, high]; ``build``
    refuses other values naming the key, before anything runs."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high})


def check_bounds(f: dataclasses.Field, value: Any, key: str) -> None:
    low, high = f.metadata.get("low"), f.metadata.get("high")
    for item in value if isinstance(value, tuple) else (value,):
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        if (low is not None and item < low) or (high is not None and item > high):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(f"{key} must be {span}, got {value!r}")


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type hint ``hint`` and convert lists to tuples, ints to floats."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans: take back the word typed
            spelled = [a for a in args if isinstance(a, str) and a.lower() in YAML_BOOL_WORDS[value]]
            value = spelled[0] if spelled else value
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, e.g. [0, 1], got {value!r}")
        item = args[0] if args else Any
        return tuple(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {hint}")


def to_dict(config: Any) -> dict:
    """A dataclass as a plain dict with lists instead of tuples (for YAML and hashing)."""

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
