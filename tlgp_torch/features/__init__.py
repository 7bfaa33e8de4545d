"""ALF features for FFLUX models: connectivity, ALF choice and differentiable 3N-6 features (torch, no ase)."""

from .alf import choose_alf, priority_order
from .alf_features import alf_features, non_frame_atoms
from .connectivity import BOND_TOLERANCE, connectivity, fragments
from .elements import ANGSTROM_TO_BOHR, COVALENT_RADII, MASSES, SYMBOLS, atomic_number, atomic_numbers

__all__ = [
    "ANGSTROM_TO_BOHR",
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
    "priority_order",
]
