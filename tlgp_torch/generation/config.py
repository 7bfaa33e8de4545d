"""TOML configs of `tlgp data generate`: [molecule], [sampling], [split], [qm], [output]; unknown keys are errors."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
from dataclasses import dataclass, field

from tlgp_torch.config.toml import ConfigError, field_hints, read_table, read_toml
from tlgp_torch.generation.sampling import MDSettings
from tlgp_torch.generation.xtb import QMSettings

__all__ = ["GenerationConfig", "MoleculeSpec", "SamplingSpec", "SplitSpec", "config_hash", "load_generation_config"]

METHODS = ("md", "normal_modes")


@dataclass(frozen=True)
class MoleculeSpec:
    """[molecule]: system name (FEREBUS: letters and digits), source ('g2:', 's22:', 'smiles:', 'xyz:'), charge, uhf."""

    system: str            # name in the file names: letters and digits only (FEREBUS)
    # "g2:CH3CH2OH" (ASE's G2 set), "s22:NAME", "smiles:CCO" or "xyz:FILE" (relative to the config file)
    source: str
    charge: int = 0        # total charge (e)
    uhf: int = 0           # unpaired electrons
    optimize: bool = True  # optimise the geometry with the QM method before sampling
    seed: int = 0  # RDKit embedding seed (SMILES sources)


@dataclass(frozen=True)
class SamplingSpec:
    """[sampling]: Langevin MD ("md") or normal-mode sampling ("normal_modes") at a temperature (K), seeded."""

    method: str = "md"          # "md" (Langevin MD on the QM surface) or "normal_modes"
    temperature: float = 300.0  # K
    seed: int = 0               # same seed, same conformations
    trajectories: int = 5        # independent MD runs (or normal-mode chunks); validation gets its own ones
    timestep_fs: float = 0.5     # MD time step (fs)
    stride_fs: float = 10.0      # one frame kept every stride (fs)
    equilibration_ps: float = 2.0  # MD discarded at the start of each trajectory (ps)
    friction: float = 0.01       # 1/fs
    min_wavenumber: float = 150.0  # normal modes below this (cm-1) are frozen
    oversample: float = 1.1      # frames sampled per frame kept (room for dropped frames and duplicates)
    duplicate_tolerance: float = 1e-3  # angstrom, max change of any interatomic distance

    @property
    def md(self) -> MDSettings:
        """The MD part as MDSettings."""
        return MDSettings(temperature=self.temperature, timestep_fs=self.timestep_fs, stride_fs=self.stride_fs,
                          equilibration_ps=self.equilibration_ps, friction=self.friction)


@dataclass(frozen=True)
class SplitSpec:
    """[split]: number of training and validation conformations."""

    train: int = 2000       # training conformations (rows of each atom's training CSV)
    validation: int = 500   # validation conformations (from their own trajectories)


@dataclass
class GenerationConfig:
    """A whole data-generation config."""

    molecule: MoleculeSpec
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    split: SplitSpec = field(default_factory=SplitSpec)
    qm: QMSettings = field(default_factory=QMSettings)
    out_dir: pathlib.Path = pathlib.Path(".")  # [output] dir: the data set's folder
    workers: int = 0  # [output] workers: QM worker processes (0: one per core; --workers wins)
    path: pathlib.Path | None = None

    @property
    def system(self) -> str:
        """System name used in file names."""
        return self.molecule.system


def config_hash(*parts) -> str:
    """Short sha256 of dataclasses / JSON-able values: the cache key of a computation."""
    def plain(obj):
        if dataclasses.is_dataclass(obj):
            return {k: plain(v) for k, v in dataclasses.asdict(obj).items()}
        if isinstance(obj, dict):
            return {str(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        return obj
    text = json.dumps(plain(list(parts)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _validate(cfg: GenerationConfig) -> None:
    m, s, sp, qm = cfg.molecule, cfg.sampling, cfg.split, cfg.qm
    if not re.fullmatch(r"[A-Za-z0-9]+", m.system):
        raise ConfigError(f"molecule.system must be letters and digits only (FEREBUS file names), got {m.system!r}")
    if m.uhf < 0:
        raise ConfigError(f"molecule.uhf must be >= 0, got {m.uhf}")
    if s.method not in METHODS:
        raise ConfigError(f"sampling.method must be one of {METHODS}, got {s.method!r}")
    checks = [("sampling.temperature", s.temperature > 0), ("sampling.timestep_fs", s.timestep_fs > 0),
              ("sampling.stride_fs", s.stride_fs >= s.timestep_fs),
              ("sampling.equilibration_ps", s.equilibration_ps >= 0),
              ("sampling.friction", s.friction > 0), ("sampling.oversample", s.oversample >= 1),
              ("sampling.duplicate_tolerance", s.duplicate_tolerance >= 0), ("split.train", sp.train >= 1),
              ("split.validation", sp.validation >= 0), ("qm.accuracy", qm.accuracy > 0),
              ("qm.max_iterations", qm.max_iterations >= 1), ("output.workers", cfg.workers >= 0)]
    for name, ok in checks:
        if not ok:
            raise ConfigError(f"{name}: bad value (temperature, time step, friction, accuracy > 0; "
                              "stride >= time step; oversample >= 1; train >= 1; validation, workers >= 0)")
    need = 2 if sp.validation else 1
    if s.trajectories < need:
        raise ConfigError(f"sampling.trajectories must be >= {need} (validation frames come from their own "
                          f"trajectories), got {s.trajectories}")
    if qm.method not in ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"):
        raise ConfigError(f"qm.method must be a tblite method (GFN2-xTB, GFN1-xTB, IPEA1-xTB), got {qm.method!r}")


def load_generation_config(path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> GenerationConfig:
    """Read and validate a data-generation TOML; relative paths (output dir, xyz sources) resolve against its folder."""
    path = pathlib.Path(path)
    raw = read_toml(path, ("molecule", "sampling", "split", "qm", "output"), "molecule")
    try:
        mol = read_table(raw["molecule"], "[molecule]", *field_hints(MoleculeSpec))
        for key in ("system", "source"):
            if key not in mol:
                raise ConfigError(f"missing key {key!r} in [molecule]")
        sampling = read_table(raw.get("sampling", {}), "[sampling]", *field_hints(SamplingSpec))
        split = read_table(raw.get("split", {}), "[split]", *field_hints(SplitSpec))
        qm = read_table(raw.get("qm", {}), "[qm]", *field_hints(QMSettings))
        output = read_table(raw.get("output", {}), "[output]", ("dir", "workers"), {"dir": str, "workers": int})
        base = path.resolve().parent
        system = mol["system"]
        if out_dir is not None:
            out = pathlib.Path(out_dir).resolve()
        else:
            pattern = output.get("dir", "{system}")
            try:
                out = (base / pattern.format(system=system, system_lower=system.lower())).resolve()
            except (KeyError, IndexError, ValueError) as err:
                raise ConfigError(f"output.dir: bad pattern {pattern!r} ({err}); use {{system}} or {{system_lower}}")
        source = mol["source"]
        if source.lower().startswith("xyz:"):
            xyz = pathlib.Path(source[4:].strip())
            mol["source"] = "xyz:" + str(xyz if xyz.is_absolute() else (base / xyz).resolve())
        cfg = GenerationConfig(molecule=MoleculeSpec(**mol), sampling=SamplingSpec(**sampling),
                               split=SplitSpec(**split), qm=QMSettings(**qm), out_dir=out,
                               workers=output.get("workers", 0), path=path)
        _validate(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return cfg
