"""Output files of a generation run: per-atom ICHOR CSVs, extended xyz, provenance.json and a README."""
from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import torch

from tlgp_torch.data.dataset import AtomDataset
from tlgp_torch.features import alf_features
from tlgp_torch.features.elements import SYMBOLS
from tlgp_torch.io.atomic import atomic_write_text
from tlgp_torch.io.ichor_csv import write_ichor_csv
from tlgp_torch.units import ANGSTROM_TO_BOHR

__all__ = ["LABEL_NOTE", "PROPERTIES", "write_atom_csvs", "write_extxyz", "write_json"]

PROPERTIES = ["energy", "q00"]
LABEL_NOTE = ("energy = GFN2-xTB atom-resolved energy (Hartree, tblite) and q00 = GFN2-xTB Mulliken charge (e). "
              "These are NOT IQA energies or QTAIM charges: they stand in for them in tests and demos.")


def write_atom_csvs(out: pathlib.Path, system: str, atom_names: list[str], positions: np.ndarray, alf: torch.Tensor,
                    energies: np.ndarray, charges: np.ndarray, kind: str) -> list[pathlib.Path]:
    """One {SYSTEM}_{ATOM}_{KIND}_SET.csv per atom: ALF features (bohr, rad), energy (Ha) and q00 (e)."""
    x = alf_features(torch.from_numpy(positions * ANGSTROM_TO_BOHR), alf)  # [F, N, 3N-6]
    if not torch.isfinite(x).all():
        raise ValueError("non-finite ALF features (collinear frame atoms?)")
    paths = []
    for a, name in enumerate(atom_names):
        y = torch.from_numpy(np.stack([energies[:, a], charges[:, a]], axis=1))
        data = AtomDataset(x=x[:, a].contiguous(), y=y, property_names=PROPERTIES, system=system, atom=name)
        paths.append(write_ichor_csv(data, out / f"{system}_{name}_{kind}_SET.csv"))
    return paths


def write_extxyz(path: pathlib.Path, numbers: list[int], positions: np.ndarray, energy: np.ndarray,
                 energies: np.ndarray, charges: np.ndarray, info: list[dict]) -> pathlib.Path:
    """Extended xyz (ase.io.read reads it): positions in angstrom, GFN2 energies in Hartree, Mulliken charges in e."""
    lines = []
    props = "Properties=species:S:1:pos:R:3:atomic_energy_hartree:R:1:mulliken_charge:R:1"
    for f in range(positions.shape[0]):
        extra = " ".join(f"{k}={v}" for k, v in info[f].items())
        lines.append(str(len(numbers)))
        lines.append(f'{props} energy_hartree={float(energy[f])!r} {extra} method=GFN2-xTB pbc="F F F"')
        for z, p, e, q in zip(numbers, positions[f], energies[f], charges[f]):
            lines.append(f"{SYMBOLS[z]:<2} {p[0]:18.12f} {p[1]:18.12f} {p[2]:18.12f} {float(e)!r} {float(q)!r}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_json(path: pathlib.Path, doc: dict) -> pathlib.Path:
    """Pretty JSON (lists of numbers on one line), atomically."""
    text = json.dumps(doc, indent=2, default=str)
    text = re.sub(r"\[\s+([-+\d.eE,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    return atomic_write_text(path, text + "\n")
