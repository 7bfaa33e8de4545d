"""Exports of trained models: FEREBUS .model files for FFLUX, and torch potentials for MD (ASE, TorchScript)."""
from tlgp_torch.export.ferebus import to_ferebus_model
from tlgp_torch.export.molecule import MoleculeExport, check_fflux_molecule, export_molecule, trained_models
from tlgp_torch.export.potential import FFLUXPotential, energy_and_forces
from tlgp_torch.export.saving import load_potential, save_potential

__all__ = ["FFLUXCalculator", "FFLUXPotential", "MoleculeExport", "check_fflux_molecule", "energy_and_forces",
           "export_molecule", "load_potential", "save_potential", "to_ferebus_model", "trained_models"]


def __getattr__(name: str):
    """FFLUXCalculator imports ase (the qm extra) only when asked for."""
    if name == "FFLUXCalculator":
        from tlgp_torch.export.ase_calculator import FFLUXCalculator
        return FFLUXCalculator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
