"""TOML reading and type checking against dataclass fields (file and key named in every error)."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import types
import typing
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A config file is invalid: unknown key, wrong type or bad value (the message says which).

    A ValueError; load_config prefixes the message with the file.

    Example:
        >>> from tlgp_torch.config import ConfigError
        >>> issubclass(ConfigError, ValueError)
        True
    """


def type_name(hint: Any) -> str:
    """A TOML user's name for a type hint (for error messages and docs/configuration.md).

    Example:
        >>> type_name(tuple[float, float]), type_name(int | None), type_name(list[str])
        ('list of 2 float', 'int', 'list of str')
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        return f"list of {len(args)} {type_name(args[0])}" if len(set(args)) == 1 else "list"
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "table"
    if hint is pathlib.Path:
        return "str (path)"
    return getattr(hint, "__name__", str(hint))


def check_value(value: Any, hint: Any, where: str) -> Any:
    """value converted to `hint` (int -> float, list -> tuple), or ConfigError naming `where` and the type.

    Example:
        >>> check_value([1, 2], tuple[int, int], "train.init_range")
        (1, 2)
        >>> check_value("a", int, "train.seed")
        Traceback (most recent call last):
        ...
        tlgp_torch.config.toml.ConfigError: train.seed: expected int, got str ('a')
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = ConfigError(f"{where}: expected {type_name(hint)}, got {type(value).__name__} ({value!r})")
    if origin in (typing.Union, types.UnionType):  # TOML has no null: try each non-None member in order
        members = [a for a in args if a is not type(None)]
        exact = [a for a in members if a in (int, float) and type(value) is a]  # int 600 vs float 0.3
        for arg in exact + members:
            try:
                return check_value(value, arg, where)
            except ConfigError:
                continue
        raise bad
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value  # an int stays an int: TransferTrainer reads source_size 300 as points, 0.5 as a fraction
        raise bad
    if hint in (int, str, bool):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise bad
    if hint is pathlib.Path:
        if isinstance(value, str):
            return pathlib.Path(value)
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise bad
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            items = [check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        elif len(value) != len(args):
            raise bad
        else:
            items = [check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {check_value(k, args[0], where): check_value(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise bad
        return read_table(value, f"[{where}]", *field_hints(hint))
    raise ConfigError(f"{where}: cannot be set from a config file")


def read_table(table: dict, name: str, allowed: tuple[str, ...], hints: dict[str, Any]) -> dict[str, Any]:
    """Type-checked copy of a TOML table; unknown keys raise ConfigError naming the key, table and allowed keys.

    Args:
        table: the parsed TOML table.
        name: its name for messages, e.g. "[train.stop]".
        allowed: the allowed keys.
        hints: key -> type hint (field_hints gives both from a dataclass).

    Example:
        >>> from tlgp_torch.optim import StoppingRule
        >>> read_table({"rtol": 1e-5}, "[train.stop]", *field_hints(StoppingRule))
        {'rtol': 1e-05}
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{name} must be a table, got {type(table).__name__}")
    out = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r} in {name}; allowed keys: {', '.join(allowed) or '(none)'}")
        out[key] = check_value(value, hints[key], f"{name.strip('[]')}.{key}")
    return out


def field_hints(cls: type, names: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(field names, their resolved type hints) of a dataclass, all fields or the given ones.

    Example:
        >>> from tlgp_torch.optim import StoppingRule
        >>> field_hints(StoppingRule, ("rtol", "max_iter"))
        (('rtol', 'max_iter'), {'rtol': <class 'float'>, 'max_iter': <class 'int'>})
    """
    names = names or tuple(f.name for f in dataclasses.fields(cls))
    hints = typing.get_type_hints(cls)
    return names, {n: hints[n] for n in names}


def read_toml(path: str | os.PathLike, tables: tuple[str, ...], required: str) -> dict:
    r"""Parsed TOML file holding only the allowed top-level tables, the required one among them.

    Raises:
        FileNotFoundError: when path does not exist.
        ConfigError: naming the file, for invalid TOML, an unknown table or a missing required one.

    Example:
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "a.toml"
        ...     _ = path.write_text("[data]\nsystem = 'WATER'\n")
        ...     read_toml(path, ("data", "model"), "data")
        {'data': {'system': 'WATER'}}
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    for key in raw:
        if key not in tables:
            raise ConfigError(f"{path}: unknown table [{key}]; allowed tables: {', '.join(tables)}")
    if required not in raw:
        raise ConfigError(f"{path}: missing table [{required}]")
    return raw
