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
    """Candidates by decreasing priority (shell by shell until the tie breaks); remaining ties: lower index first."""
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
    positions [N, 3] in angstrom (only used for connectivity and the fallback).
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
