"""Covalent-radius connectivity: atoms i, j are bonded when |r_i - r_j| < tolerance * (R_i + R_j)."""
from __future__ import annotations

import torch

from tlgp_torch.features.elements import COVALENT_RADII, atomic_numbers

__all__ = ["BOND_TOLERANCE", "connectivity", "fragments"]

BOND_TOLERANCE = 1.2


def connectivity(numbers, positions, tolerance: float = BOND_TOLERANCE) -> torch.Tensor:
    """Bool adjacency [N, N] (no self bonds) from atomic numbers and positions [N, 3] in angstrom."""
    z = atomic_numbers(numbers)
    pos = torch.as_tensor(positions, dtype=torch.float64)
    if pos.shape != (len(z), 3):
        raise ValueError(f"positions must be [{len(z)}, 3] (angstrom), got {tuple(pos.shape)}")
    radii = torch.tensor([COVALENT_RADII[k] for k in z], dtype=torch.float64)
    dist = torch.cdist(pos, pos)
    bonded = dist < tolerance * (radii[:, None] + radii[None, :])
    bonded.fill_diagonal_(False)
    return bonded


def fragments(adjacency: torch.Tensor) -> list[list[int]]:
    """Connected components (0-based atom indices, each sorted; ordered by their first atom)."""
    n = adjacency.shape[0]
    label = [-1] * n
    out = []
    for start in range(n):
        if label[start] >= 0:
            continue
        label[start] = len(out)
        comp, stack = [start], [start]
        while stack:
            i = stack.pop()
            for j in torch.nonzero(adjacency[i]).flatten().tolist():
                if label[j] < 0:
                    label[j] = len(out)
                    comp.append(j)
                    stack.append(j)
        out.append(sorted(comp))
    return out
