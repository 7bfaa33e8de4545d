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
    """[molecule]: system name (FEREBUS: letters and digits), source ('g2:', 's22:', 'smiles:', 'xyz:'), charge, uhf.

    Attributes:
        system: name used in the file names (letters and digits only).
        source: 'g2:NAME' or 's22:NAME' (ASE collections), 'smiles:SMILES' (RDKit) or 'xyz:PATH'.
        charge: total charge (e).
        uhf: number of unpaired electrons.
        optimize: relax the starting geometry with GFN2-xTB first.
        seed: RDKit embedding seed (SMILES sources).

    Example:
        >>> from tlgp_torch.generation import MoleculeSpec
        >>> MoleculeSpec(system="WATER", source="g2:H2O").charge
        0
    """

    system: str            # name in the file names: letters and digits only (FEREBUS)
    # "g2:CH3CH2OH" (ASE's G2 set), "s22:NAME", "smiles:CCO" or "xyz:FILE" (relative to the config file)
    source: str
    charge: int = 0        # total charge (e)
    uhf: int = 0           # unpaired electrons
    optimize: bool = True  # optimise the geometry with the QM method before sampling
    seed: int = 0  # RDKit embedding seed (SMILES sources)


@dataclass(frozen=True)
class SamplingSpec:
    """[sampling]: Langevin MD ("md") or normal-mode sampling ("normal_modes") at a temperature (K), seeded.

    Attributes:
        method: "md" or "normal_modes".
        temperature: K.
        seed: random seed of the sampling.
        trajectories: independent MD runs (or normal-mode chunks); validation gets its own ones.
        timestep_fs: MD time step (fs).
        stride_fs: time between kept MD frames (fs).
        equilibration_ps: MD time discarded at the start of each trajectory (ps).
        friction: Langevin friction (1/fs).
        min_wavenumber: normal modes below this (cm^-1) are frozen.
        oversample: frames sampled per frame kept (room for dropped frames and duplicates).
        duplicate_tolerance: frames whose interatomic distances all differ by less (angstrom) are duplicates.

    Example:
        >>> from tlgp_torch.generation import SamplingSpec
        >>> SamplingSpec(method="normal_modes", temperature=500.0).md.temperature
        500.0
    """

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
    """[split]: number of training and validation conformations.

    Example:
        >>> from tlgp_torch.generation import SplitSpec
        >>> SplitSpec()
        SplitSpec(train=2000, validation=500)
    """

    train: int = 2000       # training conformations (rows of each atom's training CSV)
    validation: int = 500   # validation conformations (from their own trajectories)


@dataclass
class GenerationConfig:
    """A whole data-generation config: what load_generation_config returns.

    Attributes:
        molecule: the [molecule] table.
        sampling: the [sampling] table.
        split: the [split] table.
        qm: the [qm] table (tblite settings).
        out_dir: folder the CSVs, xyz files, provenance and cache go to.
        workers: processes (0: one per core).
        path: the TOML file it came from.

    Example:
        >>> from tlgp_torch.generation import GenerationConfig, MoleculeSpec
        >>> GenerationConfig(molecule=MoleculeSpec(system="WATER", source="g2:H2O")).system
        'WATER'
    """

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
    """Short sha256 of dataclasses / JSON-able values: the cache key of a computation (16 hex digits).

    Example:
        >>> config_hash(SplitSpec(), 1) == config_hash(SplitSpec(), 1) != config_hash(SplitSpec(train=10), 1)
        True
    """
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
    """Read and validate a data-generation TOML; relative paths (output dir, xyz sources) resolve against its folder.

    Tables: [molecule] (required), [sampling], [split], [qm], [output] (dir with {system} or {system_lower},
    workers); unknown keys are errors.

    Args:
        path: the TOML file.
        out_dir: output folder overriding [output] dir.

    Returns:
        A validated GenerationConfig.

    Raises:
        FileNotFoundError: when path does not exist.
        ConfigError: naming the file and key for unknown keys, wrong types or bad values.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.generation import load_generation_config
        >>> text = '''
        ... [molecule]
        ... system = "WATER"
        ... source = "g2:H2O"
        ... [sampling]
        ... method = "normal_modes"
        ... trajectories = 2
        ... [split]
        ... train = 4
        ... validation = 2
        ... [output]
        ... dir = "data/{system}"
        ... '''
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name) / "water.toml"
        >>> _ = path.write_text(text)
        >>> cfg = load_generation_config(path)
        >>> cfg.system, cfg.sampling.method, cfg.split.train, cfg.out_dir.name
        ('WATER', 'normal_modes', 4, 'WATER')
        >>> tmp.cleanup()
    """
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
