"""Assemble a data set from cached work units: drop failed frames and near-duplicates, split, write every file."""
from __future__ import annotations

import pathlib
from dataclasses import asdict

import numpy as np

from tlgp_torch.features.alf import choose_alf
from tlgp_torch.generation.checks import near_duplicates
from tlgp_torch.generation.config import GenerationConfig
from tlgp_torch.generation.errors import GenerationError
from tlgp_torch.generation.molecules import Molecule
from tlgp_torch.generation.report import GenerationReport
from tlgp_torch.generation.runner import load_npz
from tlgp_torch.generation.writers import LABEL_NOTE, PROPERTIES, write_atom_csvs, write_extxyz, write_json
from tlgp_torch.io.atomic import atomic_write_text

__all__ = ["assemble"]


def assemble(cfg: GenerationConfig, mol: Molecule, ref: dict, tasks: list[dict], cache: pathlib.Path, run_key: str,
             report: GenerationReport, versions: dict[str, str]) -> None:
    """Pool the cached work units, drop failed frames and near-duplicates, split, and write every output file."""
    system, out = cfg.system, cfg.out_dir
    pools: dict[str, list[tuple[dict, int]]] = {"training": [], "validation": []}
    data = {}
    task_wall = {}
    for t in tasks:
        z = load_npz(cache / f"task_{t['task']:03d}.npz", t["key"])
        if z is None:
            raise GenerationError(f"cache file for work unit {t['task']} is missing or stale; rerun the command")
        data[t["task"]] = z
        task_wall[t["task"]] = float(z["wall_s"])
        report.n_sampled += len(z["ok"])
        report.drops += [str(s).split("\t", 1)[1] for s in z["drops"]]
        pools[t["role"]] += [(t, i) for i in np.nonzero(z["ok"])[0].tolist()]
    rows = pools["training"] + pools["validation"]
    positions = (np.stack([data[t["task"]]["positions"][i] for t, i in rows]) if rows
                 else np.empty((0, len(mol.numbers), 3)))
    dup = near_duplicates(positions, cfg.sampling.duplicate_tolerance)
    report.n_duplicates = int(dup.sum())
    n_tr = len(pools["training"])
    keep = {"training": [r for r, d in zip(rows[:n_tr], dup[:n_tr]) if not d],
            "validation": [r for r, d in zip(rows[n_tr:], dup[n_tr:]) if not d]}
    rng = np.random.default_rng([cfg.sampling.seed, 2 ** 20])
    chosen = {}
    for role, want in (("training", cfg.split.train), ("validation", cfg.split.validation)):
        have = len(keep[role])
        if have < want:
            raise GenerationError(
                f"only {have} usable {role} frames for the {want} requested ({report.n_sampled} sampled in all, "
                f"{len(report.drops)} dropped, {report.n_duplicates} near-duplicates): raise [sampling] oversample")
        idx = np.sort(rng.choice(have, size=want, replace=False)) if want else np.array([], dtype=int)
        chosen[role] = [keep[role][i] for i in idx]

    alf = choose_alf(mol.numbers, ref["positions"])
    names = mol.atom_names
    report.alf = {n: (alf[a] + 1).tolist() for a, n in enumerate(names)}
    files = []
    for role, kind, tag in (("training", "TRAINING", "training"), ("validation", "VALIDATION", "validation")):
        sel = chosen[role]
        if not sel:
            continue
        get = lambda key: np.stack([data[t["task"]][key][i] for t, i in sel])  # noqa: E731
        pos, en, q, etot = get("positions"), get("energies"), get("charges"), get("energy")
        for arr, what in ((en, "atomic energies"), (q, "charges"), (etot, "energies")):
            if not np.isfinite(arr).all():
                raise GenerationError(f"non-finite {what} in the {role} set (a bug: failed frames should be dropped)")
        files += [p.name for p in write_atom_csvs(out, system, names, pos, alf, en, q, kind)]
        info = [{"work_unit": t["task"], "frame": i} | ({"time_fs": float(data[t["task"]]["times"][i])}
                                                        if cfg.sampling.method == "md" else {}) for t, i in sel]
        files.append(write_extxyz(out / f"{system}_{tag}.xyz", mol.numbers, pos, etot, en, q, info).name)
    report.n_train, report.n_validation = len(chosen["training"]), len(chosen["validation"])
    files.append(write_readme(cfg, report).name)
    report.files = files + ["provenance.json"]
    s = cfg.sampling
    doc = {
        "key": run_key, "system": system, "atoms": names, "alf": report.alf, "properties": PROPERTIES,
        "labels": LABEL_NOTE,
        "method": {"qm": cfg.qm.method, "program": "tblite", **asdict(cfg.qm), "charge": mol.charge, "uhf": mol.uhf},
        "molecule": {"source": cfg.molecule.source, "optimized": cfg.molecule.optimize,
                     "reference_energy_hartree": float(ref["energy"]),
                     "reference_positions_angstrom": np.asarray(ref["positions"]).round(10).tolist()},
        "sampling": asdict(s), "temperature_K": s.temperature, "seed": s.seed,
        "split": {"train": cfg.split.train, "validation": cfg.split.validation,
                  "rule": "validation frames come from their own trajectories / chunks; random subsets of the "
                          "usable frames after near-duplicate removal"},
        "counts": {"sampled": report.n_sampled, "dropped": len(report.drops), "duplicates": report.n_duplicates,
                   "train": report.n_train, "validation": report.n_validation},
        "dropped": report.drops, "work_unit_wall_s": task_wall,
        "units": {"features": "bohr and radians (FFLUX ALF)", "energy": "Hartree", "q00": "e",
                  "xyz positions": "angstrom"},
        "versions": versions, "config": str(cfg.path) if cfg.path else None, "files": report.files,
    }
    write_json(out / "provenance.json", doc)


def write_readme(cfg: GenerationConfig, report: GenerationReport) -> pathlib.Path:
    """README.md of a generated set: what the labels are (GFN2-xTB, not IQA) and how the set was made."""
    s = cfg.sampling
    how = (f"Langevin MD at {s.temperature:g} K ({s.timestep_fs:g} fs steps, a frame every {s.stride_fs:g} fs after "
           f"{s.equilibration_ps:g} ps)" if s.method == "md" else
           f"normal-mode sampling at {s.temperature:g} K (modes below {s.min_wavenumber:g} cm-1 frozen)")
    text = (f"# {cfg.system}: GFN2-xTB data made by tlgp_torch (`tlgp data generate`)\n\n"
            f"{LABEL_NOTE}\n\n"
            f"Source {cfg.molecule.source}; {how}; seed {s.seed}. {report.n_train} training and {report.n_validation} "
            f"validation conformations. Features: FFLUX ALF features (bohr, radians); ALF per atom (1-based) in "
            f"provenance.json. Geometries with labels: {cfg.system}_training.xyz / {cfg.system}_validation.xyz "
            f"(extended xyz, angstrom).\n")
    return atomic_write_text(cfg.out_dir / "README.md", text)
