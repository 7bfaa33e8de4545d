"""TOML experiment configs -> validated dataclasses and ready-to-use trainers.

Allowed keys of [model], [train], [train.stop], [train.dl] and [train.tl] come from the dataclass fields of
FitSettings, StoppingRule, DirectTrainer and TransferTrainer, and their types from the field annotations.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any

from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.runtime.device import resolve_device
from tlgp_torch.runtime.submit import SubmitConfig
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.iterative import IterativeSettings
from tlgp_torch.training.settings import FitSettings
from tlgp_torch.training.transfer import TransferTrainer

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

from tlgp_torch.config.toml import ConfigError, check_value, field_hints, read_table, read_toml

__all__ = ["Config", "ConfigError", "DataConfig", "ExportConfig", "TrainConfig", "load_config"]

METHODS = ("tl", "dl")
MODEL_KEYS = ("convention", "likelihood", "nugget", "noise_floor", "mean")
_FIT = {f.name for f in dataclasses.fields(FitSettings)}
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(FitSettings) if f.name not in (*MODEL_KEYS, "stop", "dtype"))
DL_KEYS = tuple(f.name for f in dataclasses.fields(DirectTrainer) if f.name not in _FIT)
TL_KEYS = tuple(f.name for f in dataclasses.fields(TransferTrainer) if f.name not in _FIT)
ENV_DATA_DIR = "TLGP_DATA_DIR"




@dataclass
class DataConfig:
    """[data]: where the ICHOR CSVs are and which atoms / properties to model.

    Attributes:
        system: system name as in the file names (e.g. "WATER").
        atoms: atom names to model (e.g. ["O1", "H2"]).
        properties: properties to model per atom (e.g. ["iqa", "q00"]).
        dir: folder of the CSVs (relative paths resolve against the config file's folder; --data-dir and
            $TLGP_DATA_DIR override it).
        train: training-set file pattern with {system} and {atom}.
        validation: validation-set file pattern (a missing validation file is allowed).
        n_atoms: atoms in the molecule (for the export; default (D + 6) / 3).
        alf: atom -> 1-based (C, X, P) of its ALF (for the export, when checkpoints lack it).
        dir_source: which setting chose `dir` (for error messages).

    Example:
        >>> from tlgp_torch.config import DataConfig
        >>> DataConfig(system="WATER", atoms=["O1"], properties=["iqa"]).train.format(system="WATER", atom="O1")
        'WATER_O1_TRAINING_SET.csv'
    """

    system: str                  # system name as in the file names, e.g. "METHANOL"
    atoms: list[str]             # atoms to model, e.g. ["C1", "H2"]
    properties: list[str]        # property columns to model per atom, e.g. ["iqa", "q00"]
    dir: pathlib.Path = pathlib.Path(".")  # CSV folder, relative to the config file; --data-dir, $TLGP_DATA_DIR win
    train: str = "{system}_{atom}_TRAINING_SET.csv"       # training-set file name pattern
    validation: str = "{system}_{atom}_VALIDATION_SET.csv"  # validation-set pattern (a missing file is allowed)
    n_atoms: int | None = None   # atoms in the molecule, for the export (unset: (D + 6) / 3)
    alf: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # atom = [C, X, P], 1-based, for the export
    dir_source: str = "[data] dir"  # which setting chose `dir` (for error messages)


@dataclass
class TrainConfig:
    """[train] and its sub-tables, as keyword arguments of the trainer dataclasses.

    Attributes:
        method: "tl" (TransferTrainer) or "dl" (DirectTrainer).
        settings: FitSettings fields from [train] (optimizer, lr, seed, device, ...).
        stop: StoppingRule fields from [train.stop].
        dl: DirectTrainer-only fields from [train.dl].
        tl: TransferTrainer-only fields from [train.tl].

    Example:
        >>> from tlgp_torch.config import TrainConfig
        >>> TrainConfig(method="dl", dl={"restarts": 2}).dl
        {'restarts': 2}
    """

    method: str = "tl"                                        # "tl" (TransferTrainer) or "dl" (DirectTrainer)
    settings: dict[str, Any] = field(default_factory=dict)  # FitSettings fields from [train]
    stop: dict[str, Any] = field(default_factory=dict)      # StoppingRule fields
    dl: dict[str, Any] = field(default_factory=dict)        # DirectTrainer-only fields
    tl: dict[str, Any] = field(default_factory=dict)        # TransferTrainer-only fields


@dataclass
class ExportConfig:
    """[export]: how `tlgp train` and `tlgp export` write FFLUX .model files.

    Example:
        >>> ExportConfig(fflux_energy="energy")      # [export] fflux_energy = "energy": GFN2 energy models as iqa
        ExportConfig(fflux_energy='energy')
    """

    fflux_energy: str | None = None  # property written as iqa (FFLUX's only energy name), e.g. "energy" for GFN2


@dataclass
class Config:
    """A whole experiment config: what load_config returns.

    Attributes:
        data: the [data] table.
        model: FitSettings fields from [model] (convention, likelihood, nugget, noise_floor, mean).
        train: the [train] tables.
        output_dir_pattern: [output] dir, with {system} (default "runs/{system}").
        path: the TOML file it came from.
        submit: the [submit] table.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.config import load_config
        >>> text = '''
        ... [data]
        ... system = "WATER"
        ... atoms = ["O1", "H2"]
        ... properties = ["iqa"]
        ... [train]
        ... method = "dl"
        ... seed = 3
        ... [train.dl]
        ... restarts = 2
        ... '''
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "water.toml"
        ...     _ = path.write_text(text)
        ...     cfg = load_config(path)
        >>> cfg.jobs()                                   # one model per (atom, property)
        [('O1', 'iqa'), ('H2', 'iqa')]
        >>> trainer = cfg.trainer()                      # [train] method = "dl"
        >>> type(trainer).__name__, trainer.restarts, trainer.seed
        ('DirectTrainer', 2, 3)
        >>> str(cfg.checkpoint_path(cfg.output_dir(), "O1", "iqa"))
        'runs/WATER/models/WATER_iqa_O1.pt'
    """

    data: DataConfig
    model: dict[str, Any] = field(default_factory=dict)     # FitSettings fields from [model]
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir_pattern: str = "runs/{system}"  # [output] dir: output folder, {system} replaced; --out wins
    path: pathlib.Path | None = None
    submit: SubmitConfig = field(default_factory=SubmitConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def _settings(self, seed: int | None) -> dict[str, Any]:
        kw = {**self.model, **self.train.settings, "stop": StoppingRule(**self.train.stop)}
        return kw if seed is None else {**kw, "seed": int(seed)}

    def direct_trainer(self, seed: int | None = None) -> DirectTrainer:
        """DirectTrainer from [model], [train], [train.stop] and [train.dl] (optionally another seed)."""
        return DirectTrainer(**self._settings(seed), **self.train.dl)

    def transfer_trainer(self, seed: int | None = None) -> TransferTrainer:
        """TransferTrainer from [model], [train], [train.stop] and [train.tl] (optionally another seed)."""
        tl = dict(self.train.tl)
        if isinstance(tl.get("source_stop"), dict):  # keys left out keep TransferTrainer's source defaults
            default = next(f for f in dataclasses.fields(TransferTrainer) if f.name == "source_stop").default_factory()
            tl["source_stop"] = dataclasses.replace(default, **tl["source_stop"])
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









def _pattern(value: str, key: str) -> str:
    try:
        value.format(system="S", atom="A")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"data.{key}: bad file pattern {value!r} ({err}); use {{system}} and {{atom}}") from None
    return value


def _data(raw: dict, base: pathlib.Path, data_dir: str | os.PathLike | None) -> DataConfig:
    names = tuple(f.name for f in dataclasses.fields(DataConfig) if f.name != "dir_source")
    kw = read_table(raw, "[data]", *field_hints(DataConfig, names))
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
    method = check_value(raw.pop("method", "tl"), str, "train.method").lower()
    if method not in METHODS:
        raise ConfigError(f"train.method must be one of {METHODS}, got {method!r}")
    names, hints = field_hints(FitSettings, TRAIN_KEYS)
    settings = read_table(raw, "[train]", ("method", *names, "stop", "dl", "tl"), hints)
    return TrainConfig(method=method, settings=settings,
                       stop=read_table(sub["stop"], "[train.stop]", *field_hints(StoppingRule)),
                       dl=read_table(sub["dl"], "[train.dl]", *field_hints(DirectTrainer, DL_KEYS)),
                       tl=read_table(sub["tl"], "[train.tl]", *field_hints(TransferTrainer, TL_KEYS)))




def load_config(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Config:
    """Read and validate a TOML config; data folder from `data_dir` > $TLGP_DATA_DIR > [data] dir.

    Tables: [data] (required), [model], [train] with [train.stop], [train.dl], [train.tl], [output], [submit];
    every key, type and default is in docs/configuration.md. Values are checked by building both trainers.

    Args:
        path: the TOML file.
        data_dir: folder of the CSVs, overriding $TLGP_DATA_DIR and [data] dir (the CLI's --data-dir).

    Returns:
        A validated Config.

    Raises:
        FileNotFoundError: when path does not exist.
        ConfigError: naming the file and the key: invalid TOML, unknown table or key (with the allowed ones),
            wrong type, or a value a trainer rejects.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.config import load_config
        >>> text = '''
        ... [data]
        ... system = "WATER"
        ... atoms = ["O1", "H2"]
        ... properties = ["iqa"]
        ... [train]
        ... method = "dl"
        ... seed = 3
        ... [train.dl]
        ... restarts = 2
        ... '''
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "water.toml"
        ...     _ = path.write_text(text)
        ...     cfg = load_config(path)
        >>> cfg.data.system, cfg.train.method, cfg.train.dl
        ('WATER', 'dl', {'restarts': 2})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "bad.toml"
        ...     _ = path.write_text(text.replace("seed = 3", "seeds = 3"))
        ...     try:
        ...         load_config(path)
        ...     except ValueError as err:             # a ConfigError
        ...         print(str(err).split(": ", 1)[1])
        unknown key 'seeds' in [train]; allowed keys: method, ...
    """
    path = pathlib.Path(path)
    raw = read_toml(path, ("data", "model", "train", "output", "submit", "export"), "data")
    try:
        data = _data(raw["data"], path.resolve().parent, data_dir)
        model = read_table(raw.get("model", {}), "[model]", *field_hints(FitSettings, MODEL_KEYS))
        train = _train(raw.get("train", {}))
        output = read_table(raw.get("output", {}), "[output]", ("dir",), {"dir": str})
        out_pattern = output.get("dir", "runs/{system}")
        try:
            out_pattern.format(system="S")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"output.dir: bad pattern {out_pattern!r} ({err}); use {{system}}") from None
        submit = SubmitConfig(**read_table(raw.get("submit", {}), "[submit]", *field_hints(SubmitConfig)))
        export = ExportConfig(**read_table(raw.get("export", {}), "[export]", *field_hints(ExportConfig)))
        if export.fflux_energy is not None and export.fflux_energy not in data.properties:
            raise ConfigError(f"export.fflux_energy: {export.fflux_energy!r} is not one of data.properties "
                              f"{data.properties}")
        cfg = Config(data=data, model=model, train=train, output_dir_pattern=out_pattern, path=path, submit=submit,
                     export=export)
        cfg.direct_trainer(), cfg.transfer_trainer()  # the trainers check values (ranges, choices)
        resolve_device(cfg.train.settings.get("device", "auto"))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (ValueError, TypeError, RuntimeError) as err:  # from the trainers and resolve_device
        raise ConfigError(f"{path}: {err}") from None
    return cfg
