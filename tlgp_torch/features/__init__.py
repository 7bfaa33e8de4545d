"""ALF features for FFLUX models: connectivity, ALF choice and differentiable 3N-6 features (torch, no ase)."""

from .alf import choose_alf, priority_order
from .alf_features import alf_features, non_frame_atoms
from .connectivity import BOND_TOLERANCE, connectivity, fragments
from .elements import ANGSTROM_TO_BOHR, COVALENT_RADII, HARTREE_TO_EV, MASSES, SYMBOLS, atomic_number, atomic_numbers
from .elements import parse_atom_name

__all__ = [
    "ANGSTROM_TO_BOHR",
    "BOND_TOLERANCE",
    "COVALENT_RADII",
    "HARTREE_TO_EV",
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
