"""Physical constants and unit conversions (CODATA 2018, as ase.units), written once for the whole package.

Model files and training sets are in atomic units: features in bohr and radians, energies in Hartree,
charges and multipoles in atomic units. Errors are reported in kJ/mol for energies.

Example:
    >>> from tlgp_torch.units import HARTREE_TO_KJMOL
    >>> round(0.001 * HARTREE_TO_KJMOL, 4)
    2.6255
"""
BOHR_IN_ANGSTROM = 0.529177210903             # CODATA 2018 Bohr radius, angstrom
ANGSTROM_TO_BOHR = 1.0 / BOHR_IN_ANGSTROM
HARTREE_TO_EV = 27.211386245988               # CODATA 2018, as ase.units.Hartree
HARTREE_TO_KJMOL = 2625.4996394799            # CODATA 2018 (FEREBUS prints 2625.4996)

__all__ = ["ANGSTROM_TO_BOHR", "BOHR_IN_ANGSTROM", "HARTREE_TO_EV", "HARTREE_TO_KJMOL"]
