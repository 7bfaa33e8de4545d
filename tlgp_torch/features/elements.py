"""Element data the feature code needs (symbols, masses, covalent radii), so it imports without ase."""
from __future__ import annotations

import re

__all__ = ["COVALENT_RADII", "MASSES", "SYMBOLS", "atomic_number", "atomic_numbers",
           "parse_atom_name"]


# Z: (symbol, standard atomic mass in u, covalent radius in angstrom; Cordero et al. 2008, as in ase.data)
_TABLE = {
    1: ("H", 1.008, 0.31), 2: ("He", 4.002602, 0.28), 3: ("Li", 6.94, 1.28), 4: ("Be", 9.0121831, 0.96),
    5: ("B", 10.81, 0.84), 6: ("C", 12.011, 0.76), 7: ("N", 14.007, 0.71), 8: ("O", 15.999, 0.66),
    9: ("F", 18.998403163, 0.57), 10: ("Ne", 20.1797, 0.58), 11: ("Na", 22.98976928, 1.66),
    12: ("Mg", 24.305, 1.41), 13: ("Al", 26.9815385, 1.21), 14: ("Si", 28.085, 1.11),
    15: ("P", 30.973761998, 1.07), 16: ("S", 32.06, 1.05), 17: ("Cl", 35.45, 1.02), 18: ("Ar", 39.948, 1.06),
    35: ("Br", 79.904, 1.20), 53: ("I", 126.90447, 1.39),
}
SYMBOLS = {z: v[0] for z, v in _TABLE.items()}
MASSES = {z: v[1] for z, v in _TABLE.items()}
COVALENT_RADII = {z: v[2] for z, v in _TABLE.items()}
_BY_SYMBOL = {s.lower(): z for z, s in SYMBOLS.items()}


def atomic_number(symbol: str | int) -> int:
    """Atomic number of an element symbol (case-insensitive) or a checked int; ValueError names unknown ones.

    Supported: H to Ar, Br and I.

    Example:
        >>> from tlgp_torch.features import atomic_number
        >>> atomic_number("cl"), atomic_number(8)
        (17, 8)
    """
    if isinstance(symbol, int) and not isinstance(symbol, bool):
        if symbol in _TABLE:
            return symbol
        raise ValueError(f"unknown element Z={symbol}: supported elements are {', '.join(SYMBOLS.values())}")
    z = _BY_SYMBOL.get(str(symbol).strip().lower())
    if z is None:
        raise ValueError(f"unknown element {symbol!r}: supported elements are {', '.join(SYMBOLS.values())}")
    return z


def atomic_numbers(symbols) -> list[int]:
    """Atomic numbers of a sequence of symbols or ints; the error names the 1-based atom index.

    Example:
        >>> from tlgp_torch.features import atomic_numbers
        >>> atomic_numbers(["O", 1, "h"])
        [8, 1, 1]
        >>> atomic_numbers(["O", "Xx"])
        Traceback (most recent call last):
        ...
        ValueError: atom 2: unknown element 'Xx': supported elements are ...
    """
    out = []
    for i, s in enumerate(symbols, start=1):
        try:
            out.append(atomic_number(s if isinstance(s, str) else int(s)))
        except ValueError as err:
            raise ValueError(f"atom {i}: {err}") from None
    return out


_ATOM_NAME = re.compile(r"([A-Za-z]{1,2})(\d+)")


def parse_atom_name(name: str) -> tuple[int, int]:
    """(atomic number, 1-based index) of an FFLUX atom name such as 'C1', 'H10' or 'Cl3'.

    Example:
        >>> from tlgp_torch.features import parse_atom_name
        >>> parse_atom_name("Cl3"), parse_atom_name("H10")
        ((17, 3), (1, 10))
    """
    m = _ATOM_NAME.fullmatch(name.strip())
    if m is None or int(m.group(2)) < 1:
        raise ValueError(f"atom name {name!r} is not an element symbol followed by a 1-based index (e.g. 'C1')")
    return atomic_number(m.group(1)), int(m.group(2))
