"""ALF features for FFLUX models: connectivity, ALF choice and differentiable 3N-6 features (torch, no ase)."""

from tlgp_torch.features.alf import choose_alf, priority_order
from tlgp_torch.features.alf_features import alf_features, non_frame_atoms
from tlgp_torch.features.connectivity import BOND_TOLERANCE, connectivity, fragments
from tlgp_torch.features.elements import COVALENT_RADII, MASSES, SYMBOLS, atomic_number, atomic_numbers, parse_atom_name

__all__ = [
    "BOND_TOLERANCE",
    "COVALENT_RADII",
    "MASSES",
    "SYMBOLS",
    "alf_features",
    "atomic_number",
    "atomic_numbers",
    "choose_alf",
    "connectivity",
    "fragments",
    "non_frame_atoms",
    "parse_atom_name",
    "priority_order",
]
