"""ASE Calculator on an FFLUXPotential (eager, TorchScript or torch.export): energy, forces, energies, charges."""
from __future__ import annotations

import os

import numpy as np
import torch

from tlgp_torch.export.potential import ENERGY_UNITS, LENGTH_UNITS, FFLUXPotential
from tlgp_torch.export.saving import load_potential, potential_metadata
from tlgp_torch.generation.dependencies import require

__all__ = ["FFLUXCalculator"]

_calculator = require("ase.calculators.calculator", "the ASE calculator")


class FFLUXCalculator(_calculator.Calculator):
    """ASE calculator (eV, eV/A, e) for a molecule's FFLUX GP potential.

    Forces analytic where the potential has `evaluate` (eager, TorchScript) or is a saved "forces" program
    (.pt2); by autograd through forward otherwise. Charges are computed only when ASE asks for them.

    Args:
        potential: an FFLUXPotential, or the path of one saved by save_potential (.pt or .pt2).
        metadata: potential_metadata of a scripted or exported module passed directly (read from the file or
            the FFLUXPotential otherwise).
        **kwargs: passed to ase.calculators.calculator.Calculator.

    Raises:
        ValueError: without metadata for a scripted or exported module; at `calculate`, when the Atoms'
            atomic numbers differ from the potential's (same atoms in the same order are needed).

    Example:
        >>> import torch
        >>> from tlgp_torch.io.toy import water_stand_in_models
        >>> models = water_stand_in_models()          # O1, H2, H3 x (iqa, q00): small stand-ins
        >>> positions = torch.tensor([[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]],
        ...                          dtype=torch.float64)    # [F=1, N=3, 3] angstrom: O, H, H
        >>> from ase import Atoms
        >>> from tlgp_torch.export import FFLUXPotential
        >>> pot = FFLUXPotential(models)                            # eV and angstrom, as ASE
        >>> atoms = Atoms("OH2", positions=positions[0].numpy(), calculator=FFLUXCalculator(pot))
        >>> energy, forces = pot.energy_and_forces(positions)
        >>> abs(atoms.get_potential_energy() - float(energy[0])) < 1e-12    # the same evaluation: equal
        True
        >>> atoms.get_forces().shape, atoms.get_charges().shape     # eV/angstrom [N, 3], e [N]
        ((3, 3), (3,))
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies", "charges"]

    def __init__(self, potential: FFLUXPotential | str | os.PathLike, metadata: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(potential, (str, os.PathLike)):
            potential, metadata = load_potential(potential)
        elif isinstance(potential, FFLUXPotential):
            metadata = potential_metadata(potential)
        if not metadata or "numbers" not in metadata:
            raise ValueError("a scripted or exported potential needs its metadata (load it with load_potential)")
        self.potential, self.metadata = potential, metadata
        self.numbers = np.asarray(metadata["numbers"])
        # ASE works in angstrom and eV: factors angstrom -> the potential's length unit, its energy unit -> eV
        self._length = LENGTH_UNITS["angstrom"] / LENGTH_UNITS[metadata["length_unit"]]
        self._energy = ENERGY_UNITS["eV"] / ENERGY_UNITS[metadata["energy_unit"]]

    def calculate(self, atoms=None, properties=("energy",), system_changes=_calculator.all_changes) -> None:
        """Evaluate the potential at atoms.positions (angstrom); results in eV, eV/A and e."""
        super().calculate(atoms, properties, system_changes)
        if not np.array_equal(self.atoms.numbers, self.numbers):
            raise ValueError(f"the potential is for atomic numbers {self.numbers.tolist()}, the Atoms object has "
                             f"{self.atoms.numbers.tolist()} (same atoms, same order needed)")
        pos = torch.tensor(self.atoms.positions * self._length, dtype=torch.float64).unsqueeze(0)
        if hasattr(self.potential, "evaluate"):
            energy, forces, energies, charges = self.potential.evaluate(pos, "charges" in properties)
        elif self.metadata.get("program") == "forces":
            energy, forces, energies, charges = self.potential(pos)
        else:
            pos.requires_grad_(True)
            energy, energies, charges = self.potential(pos)
            (grad,) = torch.autograd.grad(energy.sum(), pos)
            forces = -grad
        e = float(energy[0].detach()) * self._energy
        self.results = {"energy": e, "free_energy": e,
                        "forces": (forces[0].detach().double() * self._energy * self._length).numpy(),
                        "energies": energies[0].detach().double().numpy() * self._energy}
        if not bool(torch.isnan(charges).all()) or "charges" in properties:
            self.results["charges"] = charges[0].detach().double().numpy()
