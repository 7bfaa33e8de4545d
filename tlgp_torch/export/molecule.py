"""Export a molecule's trained models: one folder FFLUX can point at (.model files) plus torch potentials."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Sequence

from tlgp_torch.export.ferebus import FFLUX_ENERGY, map_fflux_energy, to_ferebus_model, write_fflux_model
from tlgp_torch.export.potential import CHARGE_PROPERTY, ENERGY_PROPERTIES, FFLUXPotential
from tlgp_torch.export.saving import potential_metadata, save_potential
from tlgp_torch.features.elements import parse_atom_name
from tlgp_torch.io.atomic import atomic_write_text
from tlgp_torch.io.checkpoint import load_checkpoint
from tlgp_torch.io.ferebus_model import FerebusModel, ferebus_model_filename

__all__ = ["MoleculeExport", "check_fflux_molecule", "export_molecule", "trained_models"]


@dataclass
class MoleculeExport:
    """What export_molecule wrote.

    Attributes:
        folder: dest/SYSTEM, the folder FFLUX points at.
        model_files: the .model files, one per (atom, property).
        potential_files: SYSTEM.pt / SYSTEM.pt2.
        notes: what was skipped and why (e.g. no energy models, so no torch potential).

    Example:
        >>> import pathlib
        >>> from tlgp_torch.export import MoleculeExport
        >>> MoleculeExport(pathlib.Path("out/WATER")).model_files
        []
    """

    folder: pathlib.Path
    model_files: list[pathlib.Path] = field(default_factory=list)
    potential_files: list[pathlib.Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_fflux_molecule(models: Sequence[FerebusModel]) -> None:
    """Raise ValueError unless FFLUX can load the set: one atom count, D = 3N-6 features and an ALF
    (atom, x-axis, xy-plane; 1-based) of the atom itself per model, every atom has every property, one N for all
    models.

    Args:
        models: the FerebusModels of one molecule.

    Raises:
        ValueError: naming what is missing or inconsistent (atom count, missing (atom, property) pairs, sizes).

    Example:
        >>> import torch
        >>> from tlgp_torch.io.toy import water_stand_in_models
        >>> models = water_stand_in_models()          # O1, H2, H3 x (iqa, q00): small stand-ins
        >>> from tlgp_torch.export import check_fflux_molecule
        >>> check_fflux_molecule(models)                  # complete: no error
        >>> check_fflux_molecule(models[:-1])
        Traceback (most recent call last):
        ...
        ValueError: FFLUX needs a model of every atom for every property; missing: H3 q00
    """
    if not models:
        raise ValueError("no models to export")
    n_atoms = {m.n_atoms for m in models}
    if len(n_atoms) != 1:
        raise ValueError(f"the models disagree on the number of atoms: {sorted(n_atoms)}")
    n = n_atoms.pop()
    for m in models:
        index = parse_atom_name(m.atom)[1]
        if index > n:
            raise ValueError(f"{m.atom} {m.property}: atom index {index} but the molecule has {n} atoms "
                             "(number_of_atoms; [data] n_atoms)")
        if m.n_features != 3 * n - 6:
            raise ValueError(f"{m.atom} {m.property}: {m.n_features} features, but {n} atoms give 3N-6 = {3 * n - 6} "
                             "ALF features (check [data] n_atoms and the training set)")
        if m.alf[0] != index or len(set(m.alf)) != 3 or not all(1 <= a <= n for a in m.alf):
            raise ValueError(f"{m.atom} {m.property}: ALF {list(m.alf)} must be 3 distinct 1-based atom indices "
                             f"in 1..{n}, the first the atom itself ({index}) (check [data] alf)")
    have = {(parse_atom_name(m.atom)[1], m.property) for m in models}
    props = sorted({m.property for m in models})
    names = {parse_atom_name(m.atom)[1]: m.atom for m in models}
    missing = [f"{names.get(i, f'atom {i}')} {p}" for i in range(1, n + 1) for p in props if (i, p) not in have]
    if missing:
        raise ValueError("FFLUX needs a model of every atom for every property; missing: " + ", ".join(missing))
    sizes = {m.n_points for m in models}
    if len(sizes) != 1:
        by_size = {s: [f"{m.atom} {m.property}" for m in models if m.n_points == s] for s in sorted(sizes)}
        raise ValueError(f"FFLUX needs one training-set size per molecule; found {by_size}")


def export_molecule(models: Sequence[FerebusModel], dest: pathlib.Path, formats: Sequence[str] = ("ferebus", "pt",
                    "pt2"), overwrite: bool = False, fflux_energy: str | None = None) -> MoleculeExport:
    """Write dest/SYSTEM/ with {SYSTEM}_{property}_{ATOM}.model files, SYSTEM.pt / .pt2 and manifest.json.

    The .model files are what FFLUX / DL_FFLUX read; the torch potentials (energy and q00 models only) are for
    ASE and MD engines; manifest.json lists every model, its ALF and kernel, and the units.

    The folder is written whole or not at all: files go to a hidden staging folder dest/.SYSTEM.partial-*, which
    is renamed to dest/SYSTEM at the end (a process killed mid-way leaves no half-written file in dest/SYSTEM; the
    next export removes the stale staging folder).

    Args:
        models: the FerebusModels of one molecule (checked with check_fflux_molecule).
        dest: parent folder; the files go to dest/SYSTEM (underscores removed from SYSTEM).
        formats: any of "ferebus" (.model files), "pt" (TorchScript) and "pt2" (torch.export, slow to trace).
        overwrite: replace the files of a non-empty dest/SYSTEM.
        fflux_energy: property written as iqa in the .model files (map_fflux_energy), e.g. "energy" for GFN2-xTB
            models; recorded in manifest.json. None: every model under its own name.

    Returns:
        A MoleculeExport listing what was written.

    Raises:
        ValueError: for an unknown format or a set FFLUX cannot load.
        FileExistsError: when dest/SYSTEM is not empty and overwrite is False.

    Example:
        >>> import torch
        >>> from tlgp_torch.io.toy import water_stand_in_models
        >>> models = water_stand_in_models()          # O1, H2, H3 x (iqa, q00): small stand-ins
        >>> import pathlib, tempfile
        >>> from tlgp_torch.export import export_molecule
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     written = export_molecule(models, pathlib.Path(tmp), formats=("ferebus", "pt"))
        ...     files = sorted(path.name for path in written.folder.iterdir())
        >>> files
        ['WATER.pt', 'WATER_iqa_H2.model', 'WATER_iqa_H3.model', 'WATER_iqa_O1.model', 'WATER_q00_H2.model',
         'WATER_q00_H3.model', 'WATER_q00_O1.model', 'manifest.json']
    """
    unknown = set(formats) - {"ferebus", "pt", "pt2"}
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}: use ferebus, pt, pt2")
    check_fflux_molecule(models)
    fflux_models = map_fflux_energy(models, fflux_energy)
    system = models[0].system.replace("_", "")
    dest = pathlib.Path(dest)
    folder = dest / system
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder} exists and is not empty (use --overwrite to replace its files)")
    dest.mkdir(parents=True, exist_ok=True)
    for stale in [*dest.glob(f".{system}.partial-*"), *dest.glob(f".{system}.old-*")]:  # an export killed earlier
        shutil.rmtree(stale, ignore_errors=True)
    stage = pathlib.Path(tempfile.mkdtemp(dir=dest, prefix=f".{system}.partial-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes it private; the export folder gets the usual permissions
    try:
        out = _write_molecule(models, fflux_models, stage, system, formats, fflux_energy)
        if folder.exists():
            old = pathlib.Path(tempfile.mkdtemp(dir=dest, prefix=f".{system}.old-"))
            folder.rename(old / system)
            stage.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(folder)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    out.folder = folder
    out.model_files = [folder / p.name for p in out.model_files]
    out.potential_files = [folder / p.name for p in out.potential_files]
    return out


def _write_molecule(models: Sequence[FerebusModel], fflux_models: Sequence[FerebusModel], folder: pathlib.Path,
                    system: str, formats: Sequence[str], fflux_energy: str | None) -> MoleculeExport:
    """export_molecule's files, written into `folder` (the staging folder)."""
    out = MoleculeExport(folder)
    if "ferebus" in formats:
        out.model_files = [write_fflux_model(m, folder) for m in fflux_models]
        if fflux_energy is None and any(m.property == "energy" for m in models):
            out.notes.append("energy models written as *_energy_*.model: FFLUX reads energies only as iqa; "
                             "--fflux-energy energy (config: [export] fflux_energy) writes them as *_iqa_*.model")
    torch_formats = [f for f in formats if f in ("pt", "pt2")]
    meta = None
    if torch_formats:
        if not any(m.property in ENERGY_PROPERTIES for m in models):
            out.notes.append(f"no energy models ({' or '.join(ENERGY_PROPERTIES)}): no torch potential written")
        else:
            keep = [m for m in models if m.property in ENERGY_PROPERTIES + (CHARGE_PROPERTY,)]
            potential = FFLUXPotential(keep)
            meta = potential_metadata(potential)
            for fmt in torch_formats:
                out.potential_files.append(save_potential(potential, folder / f"{system}.{fmt}"))
    entries = []
    for m, f in zip(models, fflux_models):
        entries.append({"atom": m.atom, "property": m.property, "alf": list(m.alf), "kernel": m.kernel_type,
                        "file": ferebus_model_filename(f.system, f.property, f.atom) if out.model_files else None,
                        **({"fflux_property": f.property} if f.property != m.property else {}),
                        **({"trainer": m.metadata["trainer"]} if "trainer" in m.metadata else {})})
    manifest = {"system": system, "n_atoms": models[0].n_atoms, "n_training_points": models[0].n_points,
                "fflux_energy": None if fflux_energy is None else {"property": fflux_energy,
                                                                   "written_as": FFLUX_ENERGY},
                "models": entries,
                "potential": {"files": [p.name for p in out.potential_files], **(meta or {})},
                "units": {"features": "bohr, radians", "iqa/energy": "Hartree", "q00": "e"}}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return out


def trained_models(cfg, out: pathlib.Path, properties: Sequence[str] | None = None) -> list[FerebusModel]:
    r"""FerebusModels of every (atom, property) of a config from the checkpoints `tlgp train` wrote under out.

    The ALF and atom count come from the checkpoint metadata, else from [data] alf and n_atoms of the config
    (n_atoms defaults to (D + 6) / 3).

    Args:
        cfg: the Config the models were trained with.
        out: the output folder of `tlgp train` (checkpoints under out/models).
        properties: the properties to export (default: the config's).

    Returns:
        One FerebusModel per (atom, property), atom-major.

    Raises:
        ValueError: listing the (atom, property) pairs without a checkpoint, or an atom without an ALF.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.config import load_config
        >>> from tlgp_torch.export import trained_models
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "water.toml"
        ...     _ = path.write_text('[data]\nsystem = "WATER"\natoms = ["O1"]\nproperties = ["iqa"]\n')
        ...     try:
        ...         trained_models(load_config(path), pathlib.Path(tmp) / "runs")
        ...     except ValueError as err:
        ...         print(str(err).split(" (run")[0].split(": ")[-1])       # nothing trained yet
        O1 iqa
    """
    ckpt = {job: cfg.checkpoint_path(out, *job) for job in cfg.jobs(properties)}
    missing = [f"{atom} {prop}" for (atom, prop), path in ckpt.items() if not path.is_file()]
    if missing:
        raise ValueError(f"no trained model under {out / 'models'} for: {', '.join(missing)} "
                         f"(run `tlgp train {cfg.path}` first, with the same --out)")
    models = []
    for (atom, prop), path in ckpt.items():
        result, meta = load_checkpoint(path)
        alf, cfg_alf = meta.get("alf"), cfg.data.alf.get(atom)
        if alf is not None and cfg_alf is not None and list(alf) != list(cfg_alf):
            raise ValueError(f"{atom}: [data] alf of {cfg.path} is {list(cfg_alf)}, but {path.name} was trained with "
                             f"ALF {list(alf)} (its features follow that frame): retrain, or restore the ALF")
        alf = alf or cfg_alf
        if alf is None:
            raise ValueError(f"{atom}: no ALF in the checkpoint or in [data] alf of {cfg.path}")
        d = int(result.theta.numel())
        n_ckpt = meta.get("n_atoms")
        if n_ckpt is not None and cfg.data.n_atoms is not None and int(n_ckpt) != cfg.data.n_atoms:
            raise ValueError(f"{atom} {prop}: [data] n_atoms of {cfg.path} is {cfg.data.n_atoms}, but {path.name} "
                             f"was trained with {n_ckpt} atoms ({d} features)")
        n_atoms = n_ckpt or cfg.data.n_atoms or (d + 6) // 3
        models.append(to_ferebus_model(result, cfg.data.system, atom, prop, alf, n_atoms))
    return models
