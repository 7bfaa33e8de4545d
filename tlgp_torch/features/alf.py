"""Atomic local frame (ALF) choice: X and P by CIP-like mass priority over covalent-radius connectivity."""
from __future__ import annotations

import torch

from tlgp_torch.features.connectivity import BOND_TOLERANCE, connectivity
from tlgp_torch.features.elements import MASSES, atomic_numbers

__all__ = ["choose_alf", "priority_order"]


def _neighbours(adjacency: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(row).flatten().tolist() for row in adjacency]


def _priority_key(start: int, exclude: set[int], nbrs: list[list[int]], masses: list[float]) -> tuple[float, ...]:
    """Cumulative mass of `start` and its bond shells (walking away from `exclude`), one entry per shell."""
    seen = set(exclude) | {start}
    shell, total, key = [start], masses[start], [masses[start]]
    while shell:
        shell = sorted({j for i in shell for j in nbrs[i] if j not in seen})
        seen.update(shell)
        total += sum(masses[j] for j in shell)
        key.append(total)
    return tuple(key)


def priority_order(candidates: list[int], exclude: set[int], nbrs: list[list[int]], masses: list[float]) -> list[int]:
    """Candidates by decreasing priority (shell by shell until the tie breaks); remaining ties: lower index first.

    The priority of a candidate is the list of cumulative masses of it and its bond shells, walking away from
    the atoms in `exclude`; lists are compared shell by shell (Cahn-Ingold-Prelog-like).

    Args:
        candidates: 0-based atom indices to rank.
        exclude: atoms the shells must not walk through (the central atom, and X when ranking P).
        nbrs: neighbour lists of every atom (from the adjacency).
        masses: atomic masses of every atom (u).

    Returns:
        The candidates, highest priority first.

    Example:
        >>> from tlgp_torch.features import priority_order
        >>> nbrs = [[1, 3, 4, 5], [0, 2], [1], [0], [0], [0]]          # methanol: C0 O1 H2 H3 H4 H5
        >>> masses = [12.011, 15.999, 1.008, 1.008, 1.008, 1.008]
        >>> priority_order([1, 3, 4, 5], {0}, nbrs, masses)         # O first, then the tied H by index
        [1, 3, 4, 5]
    """
    keys = {c: _priority_key(c, exclude, nbrs, masses) for c in candidates}
    depth = max((len(k) for k in keys.values()), default=0)
    padded = {c: k + (k[-1],) * (depth - len(k)) for c, k in keys.items()}
    return sorted(candidates, key=lambda c: (tuple(-v for v in padded[c]), c))


def choose_alf(numbers, positions, adjacency: torch.Tensor | None = None,
               tolerance: float = BOND_TOLERANCE) -> torch.Tensor:
    """ALF (C, X, P) of every atom as a LongTensor [N, 3] of 0-based indices (add 1 for FEREBUS files).

    X = the highest-priority neighbour of C; P = the next one, or, when C has a single neighbour, the
    highest-priority neighbour of X other than C. Priority = summed atomic masses of the atom and its bond
    shells (away from C), expanded until the tie breaks; remaining ties go to the lower index. Atoms with too
    few bonded atoms (isolated atoms, diatomic fragments) fall back to the nearest atoms by distance.

    Args:
        numbers: N atomic numbers or element symbols.
        positions: [N, 3] in angstrom (only used for connectivity and the fallback).
        adjacency: bool [N, N] bonds to use instead of covalent-radius connectivity.
        tolerance: connectivity factor on the sum of covalent radii.

    Returns:
        LongTensor [N, 3]: row c is (c, X, P).

    Raises:
        ValueError: for fewer than 3 atoms or an unknown element.

    Example:
        >>> import torch
        >>> numbers = ["C", "O", "H", "H", "H", "H"]                         # methanol, H3 on the oxygen
        >>> positions = torch.tensor([[-0.047, 0.664, 0.0], [-0.047, -0.757, 0.0], [-0.987, -1.060, 0.0],
        ...                           [-1.083, 0.970, 0.0], [0.435, 1.094, 0.888], [0.435, 1.094, -0.888]],
        ...                          dtype=torch.float64)                     # angstrom
        >>> from tlgp_torch.features import choose_alf
        >>> alf = choose_alf(numbers, positions)
        >>> alf[:3].tolist()                # C: (O, first H of C); O: (C, H); H on O: (O, C)
        [[0, 1, 3], [1, 0, 2], [2, 1, 0]]
        >>> (alf[0] + 1).tolist()           # 1-based, as the ALF line of a .model file
        [1, 2, 4]
    """
    z = atomic_numbers(numbers)
    n = len(z)
    if n < 3:
        raise ValueError(f"an ALF needs at least 3 atoms, got {n}")
    pos = torch.as_tensor(positions, dtype=torch.float64)
    adj = connectivity(z, pos, tolerance) if adjacency is None else adjacency.bool()
    nbrs = _neighbours(adj)
    masses = [MASSES[k] for k in z]
    dist = torch.cdist(pos, pos)
    alf = []
    for c in range(n):
        by_distance = [j for j in torch.argsort(dist[c], stable=True).tolist() if j != c]
        ranked = priority_order(nbrs[c], {c}, nbrs, masses)
        x = ranked[0] if ranked else by_distance[0]
        if len(ranked) >= 2:
            p = ranked[1]
        else:
            second = priority_order([j for j in nbrs[x] if j != c], {c, x}, nbrs, masses)
            p = second[0] if second else next(j for j in by_distance if j != x)
        alf.append((c, x, p))
    return torch.tensor(alf, dtype=torch.long)
