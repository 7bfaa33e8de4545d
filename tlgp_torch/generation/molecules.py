"""Starting geometries: ASE g2 / s22 collections, SMILES (RDKit ETKDG) or xyz files, checked before use."""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field

import numpy as np
import torch

from tlgp_torch.features.elements import SYMBOLS, atomic_number
from tlgp_torch.generation.dependencies import require
from tlgp_torch.generation.errors import MoleculeError

__all__ = ["Molecule", "check_geometry", "load_molecule", "read_xyz"]

MIN_DISTANCE = 0.5  # angstrom; closer atoms are "overlapping"


@dataclass
class Molecule:
    """Atoms of one molecule (or complex): atomic numbers, positions [N, 3] in angstrom, charge and uhf.

    Attributes:
        numbers: N atomic numbers.
        positions: numpy array [N, 3] in angstrom.
        charge: total charge (e).
        uhf: number of unpaired electrons.
        source: where it came from (the config's source string).
        notes: remarks made while preparing it.

    Example:
        >>> import numpy as np
        >>> from tlgp_torch.generation import Molecule
        >>> water = Molecule(numbers=[8, 1, 1], positions=np.zeros((3, 3)))
        >>> water.symbols, water.atom_names
        (['O', 'H', 'H'], ['O1', 'H2', 'H3'])
    """

    numbers: list[int]
    positions: np.ndarray
    charge: int = 0
    uhf: int = 0
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def symbols(self) -> list[str]:
        """Element symbols."""
        return [SYMBOLS[z] for z in self.numbers]

    @property
    def atom_names(self) -> list[str]:
        """FFLUX atom names: symbol + 1-based index (C1, C2, O3, H4, ...)."""
        return [f"{s}{i}" for i, s in enumerate(self.symbols, start=1)]


def _numbers(symbols, where: str) -> list[int]:
    out = []
    for i, s in enumerate(symbols, start=1):
        try:
            out.append(atomic_number(s))
        except ValueError as err:
            raise MoleculeError(f"{where}: atom {i}: {err}") from None
    return out


def check_geometry(numbers: list[int], positions, where: str = "geometry", min_distance: float = MIN_DISTANCE) -> None:
    """Raise MoleculeError naming the atoms when two are closer than min_distance, or on non-finite values.

    Also raises for positions that are not [N, 3] and for fewer than 3 atoms (an ALF needs 3).

    Args:
        numbers: N atomic numbers.
        positions: [N, 3] in angstrom.
        where: what to call the geometry in the message.
        min_distance: smallest allowed interatomic distance (angstrom).

    Example:
        >>> from tlgp_torch.generation import check_geometry
        >>> check_geometry([8, 1, 1], [[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]])   # fine
        >>> check_geometry([8, 1, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.1], [1.0, 0.0, 0.0]], "water.xyz")
        Traceback (most recent call last):
        ...
        tlgp_torch.generation.errors.MoleculeError: water.xyz: overlapping atoms O1 and H2 (0.100 angstrom apart, ...)
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (len(numbers), 3):
        raise MoleculeError(f"{where}: positions must be [{len(numbers)}, 3], got {pos.shape}")
    if not np.isfinite(pos).all():
        raise MoleculeError(f"{where}: non-finite coordinates")
    if len(numbers) < 3:
        raise MoleculeError(f"{where}: FFLUX atomic local frames need at least 3 atoms, got {len(numbers)}")
    d = torch.cdist(torch.from_numpy(pos), torch.from_numpy(pos)) + torch.eye(len(numbers), dtype=torch.float64) * 1e9
    i, j = divmod(int(torch.argmin(d)), len(numbers))
    if d[i, j] < min_distance:
        names = [f"{SYMBOLS[z]}{k}" for k, z in enumerate(numbers, start=1)]
        raise MoleculeError(f"{where}: overlapping atoms {names[min(i, j)]} and {names[max(i, j)]} "
                            f"({float(d[i, j]):.3f} angstrom apart, minimum {min_distance})")


def read_xyz(path: str | os.PathLike) -> tuple[list[int], np.ndarray]:
    r"""(atomic numbers, positions in angstrom) of the first frame of an xyz file; errors name the line.

    Raises:
        MoleculeError: naming the file and line for a missing file, a bad atom count, a short file, an unknown
            element or bad coordinates.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.generation import read_xyz
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "water.xyz"
        ...     _ = path.write_text("3\nwater\nO 0 0 0.12\nH 0 0.76 -0.47\nH 0 -0.76 -0.47\n")
        ...     numbers, positions = read_xyz(path)
        >>> numbers, positions.shape
        ([8, 1, 1], (3, 3))
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise MoleculeError(f"xyz file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        n = int(lines[0].split()[0])
    except (IndexError, ValueError):
        raise MoleculeError(f"{path}, line 1: expected the number of atoms") from None
    if len(lines) < n + 2:
        raise MoleculeError(f"{path}: {n} atoms announced but only {max(len(lines) - 2, 0)} atom lines")
    numbers, pos = [], []
    for k in range(n):
        parts = lines[k + 2].split()
        where = f"{path}, line {k + 3}"
        if len(parts) < 4:
            raise MoleculeError(f"{where}: expected 'symbol x y z', got {lines[k + 2]!r}")
        numbers += _numbers([parts[0]], where)
        try:
            pos.append([float(v) for v in parts[1:4]])
        except ValueError:
            raise MoleculeError(f"{where}: bad coordinates {parts[1:4]}") from None
    return numbers, np.array(pos, dtype=np.float64)


def _from_smiles(smiles: str, seed: int) -> tuple[list[int], np.ndarray]:
    Chem = require("rdkit.Chem", "building a molecule from SMILES")
    AllChem = require("rdkit.Chem.AllChem", "building a molecule from SMILES")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise MoleculeError(f"RDKit could not parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise MoleculeError(f"RDKit ETKDG could not embed {smiles!r} in 3-D")
    AllChem.MMFFOptimizeMolecule(mol)
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    return _numbers(numbers, f"SMILES {smiles!r}"), np.array(mol.GetConformer().GetPositions(), dtype=np.float64)


def _from_collection(kind: str, name: str) -> tuple[list[int], np.ndarray]:
    collections = require("ase.collections", f"the ASE {kind} collection")
    coll = getattr(collections, kind)
    if name not in coll.names:
        near = [n for n in coll.names if name.lower() in n.lower()][:8]
        hint = f"; close: {', '.join(near)}" if near else ""
        raise MoleculeError(f"{name!r} is not in ASE's {kind} collection{hint}")
    atoms = coll[name]
    return _numbers(atoms.get_chemical_symbols(), f"{kind}:{name}"), np.array(atoms.positions, dtype=np.float64)


def load_molecule(source: str, charge: int = 0, uhf: int = 0, seed: int = 0,
                  base: str | os.PathLike | None = None) -> Molecule:
    r"""Molecule from 'g2:NAME', 's22:NAME', 'smiles:SMILES' or 'xyz:PATH' (a relative PATH resolves against base).

    g2 and s22 need ase, smiles needs rdkit (the qm extra); the geometry is checked with check_geometry.

    Args:
        source: where the geometry comes from (see above).
        charge: total charge (e).
        uhf: number of unpaired electrons.
        seed: RDKit embedding seed (SMILES).
        base: folder a relative xyz PATH resolves against.

    Raises:
        MoleculeError: for a bad source string, an unknown collection name (with close names), an unparsable
            SMILES, a bad xyz file, elements beyond Rn or overlapping atoms.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.generation import load_molecule
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (pathlib.Path(tmp) / "water.xyz").write_text("3\n\nO 0 0 0.12\nH 0 0.76 -0.47\nH 0 -0.76 -0.47\n")
        ...     water = load_molecule("xyz:water.xyz", base=tmp)
        >>> water.atom_names, water.positions.shape
        (['O1', 'H2', 'H3'], (3, 3))
    """
    kind, sep, arg = source.partition(":")
    kind = kind.strip().lower()
    if not sep or not arg.strip():
        raise MoleculeError("molecule source must be 'g2:NAME', 's22:NAME', 'smiles:SMILES' or 'xyz:PATH', "
                            f"got {source!r}")
    arg = arg.strip()
    if kind in ("g2", "s22"):
        numbers, pos = _from_collection(kind, arg)
    elif kind == "smiles":
        numbers, pos = _from_smiles(arg, seed)
    elif kind == "xyz":
        path = pathlib.Path(arg)
        numbers, pos = read_xyz(path if path.is_absolute() or base is None else pathlib.Path(base) / path)
    else:
        raise MoleculeError(f"unknown molecule source kind {kind!r} in {source!r}; use g2, s22, smiles or xyz")
    if any(z > 86 for z in numbers):
        raise MoleculeError(f"{source}: GFN2-xTB covers elements up to Rn (Z = 86)")
    check_geometry(numbers, pos, source)
    return Molecule(numbers=numbers, positions=pos, charge=int(charge), uhf=int(uhf), source=source)
