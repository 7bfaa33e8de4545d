"""TOML experiment configs -> validated dataclasses and ready-to-use trainers.

Allowed keys of [model], [train], [train.stop], [train.dl] and [train.tl] come from the dataclass fields of
FitSettings, StoppingRule, DirectTrainer and TransferTrainer, and their types from the field annotations.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .device import resolve_device
from .optim import StoppingRule
from .submit import SubmitConfig
from .training import DirectTrainer, FitSettings, TransferTrainer
from .training.iterative import IterativeSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "ConfigError", "DataConfig", "TrainConfig", "load_config"]

METHODS = ("tl", "dl")
MODEL_KEYS = ("convention", "likelihood", "nugget", "noise_floor", "mean")
_FIT = {f.name for f in dataclasses.fields(FitSettings)}
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(FitSettings) if f.name not in (*MODEL_KEYS, "stop", "dtype"))
DL_KEYS = tuple(f.name for f in dataclasses.fields(DirectTrainer) if f.name not in _FIT)
TL_KEYS = tuple(f.name for f in dataclasses.fields(TransferTrainer) if f.name not in _FIT)
ENV_DATA_DIR = "TLGP_DATA_DIR"


class ConfigError(ValueError):
    """A config file is invalid: unknown key, wrong type or bad value (the message says which)."""


@dataclass
class DataConfig:
    """[data]: where the ICHOR CSVs are and which atoms / properties to model."""

    system: str
    atoms: list[str]
    properties: list[str]
    dir: pathlib.Path = pathlib.Path(".")
    train: str = "{system}_{atom}_TRAINING_SET.csv"
    validation: str = "{system}_{atom}_VALIDATION_SET.csv"
    n_atoms: int | None = None
    alf: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    dir_source: str = "[data] dir"  # which setting chose `dir` (for error messages)


@dataclass
class TrainConfig:
    """[train] and its sub-tables, as keyword arguments of the trainer dataclasses."""

    method: str = "tl"
    settings: dict[str, Any] = field(default_factory=dict)  # FitSettings fields from [train]
    stop: dict[str, Any] = field(default_factory=dict)      # StoppingRule fields
    dl: dict[str, Any] = field(default_factory=dict)        # DirectTrainer-only fields
    tl: dict[str, Any] = field(default_factory=dict)        # TransferTrainer-only fields


@dataclass
class Config:
    """A whole experiment config."""

    data: DataConfig
    model: dict[str, Any] = field(default_factory=dict)     # FitSettings fields from [model]
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir_pattern: str = "runs/{system}"
    path: pathlib.Path | None = None
    submit: SubmitConfig = field(default_factory=SubmitConfig)

    def _settings(self, seed: int | None) -> dict[str, Any]:
        kw = {**self.model, **self.train.settings, "stop": StoppingRule(**self.train.stop)}
        return kw if seed is None else {**kw, "seed": int(seed)}

    def direct_trainer(self, seed: int | None = None) -> DirectTrainer:
        """DirectTrainer from [model], [train], [train.stop] and [train.dl] (optionally another seed)."""
        return DirectTrainer(**self._settings(seed), **self.train.dl)

    def transfer_trainer(self, seed: int | None = None) -> TransferTrainer:
        """TransferTrainer from [model], [train], [train.stop] and [train.tl] (optionally another seed)."""
        tl = dict(self.train.tl)
        if isinstance(tl.get("source_stop"), dict):
            tl["source_stop"] = StoppingRule(**tl["source_stop"])
        if isinstance(tl.get("iterative"), dict):
            tl["iterative"] = IterativeSettings(**tl["iterative"])
        return TransferTrainer(**self._settings(seed), **tl)

    def trainer(self, method: str | None = None, seed: int | None = None) -> DirectTrainer | TransferTrainer:
        """The trainer for `method` ("tl" or "dl"; default [train] method)."""
        method = (method or self.train.method).lower()
        if method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
        return self.transfer_trainer(seed) if method == "tl" else self.direct_trainer(seed)

    def jobs(self, properties: list[str] | None = None) -> list[tuple[str, str]]:
        """(atom, property) of every model of the config, atom-major (the order shards partition)."""
        return [(atom, prop) for atom in self.data.atoms for prop in (properties or self.data.properties)]

    def checkpoint_path(self, out: pathlib.Path, atom: str, prop: str) -> pathlib.Path:
        """Where `tlgp train` writes the model of (atom, prop) under the output folder `out`."""
        return pathlib.Path(out) / "models" / f"{self.data.system}_{prop}_{atom}.pt"

    def _data_file(self, pattern: str, atom: str) -> pathlib.Path:
        return self.data.dir / pattern.format(system=self.data.system, atom=atom)

    def train_path(self, atom: str) -> pathlib.Path:
        """Existing training-set CSV of `atom` (FileNotFoundError naming the resolved path otherwise)."""
        path = self._data_file(self.data.train, atom)
        if not path.is_file():
            raise FileNotFoundError(
                f"training set not found: {path} (data folder {self.data.dir}, from {self.data.dir_source}; "
                f"point to the CSV folder with --data-dir or {ENV_DATA_DIR})")
        return path

    def validation_path(self, atom: str) -> pathlib.Path | None:
        """Validation-set CSV of `atom`, or None when the file does not exist."""
        path = self._data_file(self.data.validation, atom)
        return path if path.is_file() else None

    def output_dir(self, override: str | os.PathLike | None = None) -> pathlib.Path:
        """Output folder: `override` (CLI --out) or [output] dir, relative to the current directory."""
        return pathlib.Path(override) if override is not None else pathlib.Path(
            self.output_dir_pattern.format(system=self.data.system))


# ---------------------------------------------------------------- validation helpers

def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0])}" if len(set(args)) == 1 else "list"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "table"
    if hint is pathlib.Path:
        return "str (path)"
    return getattr(hint, "__name__", str(hint))


def _check(value: Any, hint: Any, where: str) -> Any:
    """value converted to `hint` (int -> float, list -> tuple), or ConfigError naming `where` and the type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = ConfigError(f"{where}: expected {_type_name(hint)}, got {type(value).__name__} ({value!r})")
    if origin in (typing.Union, types.UnionType):  # TOML has no null: try each non-None member in order
        members = [a for a in args if a is not type(None)]
        exact = [a for a in members if a in (int, float) and type(value) is a]  # int 600 vs float 0.3
        for arg in exact + members:
            try:
                return _check(value, arg, where)
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
            items = [_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        elif len(value) != len(args):
            raise bad
        else:
            items = [_check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {_check(k, args[0], where): _check(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise bad
        return _table(value, f"[{where}]", *_fields(hint))
    raise ConfigError(f"{where}: cannot be set from a config file")


def _table(table: dict, name: str, allowed: tuple[str, ...], hints: dict[str, Any]) -> dict[str, Any]:
    """Type-checked copy of a TOML table; unknown keys raise ConfigError naming the key, table and allowed keys."""
    if not isinstance(table, dict):
        raise ConfigError(f"{name} must be a table, got {type(table).__name__}")
    out = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r} in {name}; allowed keys: {', '.join(allowed) or '(none)'}")
        out[key] = _check(value, hints[key], f"{name.strip('[]')}.{key}")
    return out


def _fields(cls: type, names: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(field names, their resolved type hints) of a dataclass, all fields or the given ones."""
    names = names or tuple(f.name for f in dataclasses.fields(cls))
    hints = typing.get_type_hints(cls)
    return names, {n: hints[n] for n in names}


def _pattern(value: str, key: str) -> str:
    try:
        value.format(system="S", atom="A")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"data.{key}: bad file pattern {value!r} ({err}); use {{system}} and {{atom}}") from None
    return value


def _data(raw: dict, base: pathlib.Path, data_dir: str | os.PathLike | None) -> DataConfig:
    names = tuple(f.name for f in dataclasses.fields(DataConfig) if f.name != "dir_source")
    kw = _table(raw, "[data]", *_fields(DataConfig, names))
    for key in ("system", "atoms", "properties"):
        if key not in kw:
            raise ConfigError(f"missing key {key!r} in [data]")
    for key in ("atoms", "properties"):
        if not kw[key] or len(set(kw[key])) != len(kw[key]):
            raise ConfigError(f"data.{key} must be a non-empty list without repeats, got {kw[key]}")
    for atom, alf in kw.get("alf", {}).items():
        if min(alf) < 1:
            raise ConfigError(f"data.alf.{atom}: atom indices are 1-based, got {list(alf)}")
    for key in ("train", "validation"):
        if key in kw:
            _pattern(kw[key], key)
    env = os.environ.get(ENV_DATA_DIR)
    if data_dir is not None:
        kw["dir"], kw["dir_source"] = pathlib.Path(data_dir).resolve(), "--data-dir"
    elif env:
        kw["dir"], kw["dir_source"] = pathlib.Path(env).resolve(), ENV_DATA_DIR
    else:
        kw["dir"] = (base / kw.get("dir", pathlib.Path("."))).resolve()
    return DataConfig(**kw)


def _train(raw: dict) -> TrainConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"[train] must be a table, got {type(raw).__name__}")
    raw = dict(raw)
    sub = {k: raw.pop(k, {}) for k in ("stop", "dl", "tl")}
    method = _check(raw.pop("method", "tl"), str, "train.method").lower()
    if method not in METHODS:
        raise ConfigError(f"train.method must be one of {METHODS}, got {method!r}")
    names, hints = _fields(FitSettings, TRAIN_KEYS)
    settings = _table(raw, "[train]", ("method", *names, "stop", "dl", "tl"), hints)
    return TrainConfig(method=method, settings=settings,
                       stop=_table(sub["stop"], "[train.stop]", *_fields(StoppingRule)),
                       dl=_table(sub["dl"], "[train.dl]", *_fields(DirectTrainer, DL_KEYS)),
                       tl=_table(sub["tl"], "[train.tl]", *_fields(TransferTrainer, TL_KEYS)))


def read_toml(path: str | os.PathLike, tables: tuple[str, ...], required: str) -> dict:
    """Parsed TOML file holding only the allowed top-level tables, the required one among them."""
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


def load_config(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Config:
    """Read and validate a TOML config; data folder from `data_dir` > $TLGP_DATA_DIR > [data] dir."""
    path = pathlib.Path(path)
    raw = read_toml(path, ("data", "model", "train", "output", "submit"), "data")
    try:
        data = _data(raw["data"], path.resolve().parent, data_dir)
        model = _table(raw.get("model", {}), "[model]", *_fields(FitSettings, MODEL_KEYS))
        train = _train(raw.get("train", {}))
        output = _table(raw.get("output", {}), "[output]", ("dir",), {"dir": str})
        out_pattern = output.get("dir", "runs/{system}")
        try:
            out_pattern.format(system="S")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"output.dir: bad pattern {out_pattern!r} ({err}); use {{system}}") from None
        submit = SubmitConfig(**_table(raw.get("submit", {}), "[submit]", *_fields(SubmitConfig)))
        cfg = Config(data=data, model=model, train=train, output_dir_pattern=out_pattern, path=path, submit=submit)
        cfg.direct_trainer(), cfg.transfer_trainer()  # the trainers check values (ranges, choices)
        resolve_device(cfg.train.settings.get("device", "auto"))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (ValueError, TypeError, RuntimeError) as err:  # from the trainers and resolve_device
        raise ConfigError(f"{path}: {err}") from None
    return cfg
