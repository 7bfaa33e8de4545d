"""Covalent-radius connectivity: atoms i, j are bonded when |r_i - r_j| < tolerance * (R_i + R_j)."""
from __future__ import annotations

import torch

from tlgp_torch.features.elements import COVALENT_RADII, atomic_numbers

__all__ = ["BOND_TOLERANCE", "connectivity", "fragments"]

BOND_TOLERANCE = 1.2


def connectivity(numbers, positions, tolerance: float = BOND_TOLERANCE) -> torch.Tensor:
    """Bool adjacency [N, N] (no self bonds) from atomic numbers and positions [N, 3] in angstrom.

    Atoms i and j are bonded when |r_i - r_j| < tolerance (R_i + R_j), R the covalent radii (Cordero 2008).

    Args:
        numbers: N atomic numbers or element symbols.
        positions: [N, 3] in angstrom.
        tolerance: factor on the sum of covalent radii.

    Raises:
        ValueError: for an unknown element or positions that are not [N, 3].

    Example:
        >>> import torch
        >>> numbers = ["C", "O", "H", "H", "H", "H"]                         # methanol, H3 on the oxygen
        >>> positions = torch.tensor([[-0.047, 0.664, 0.0], [-0.047, -0.757, 0.0], [-0.987, -1.060, 0.0],
        ...                           [-1.083, 0.970, 0.0], [0.435, 1.094, 0.888], [0.435, 1.094, -0.888]],
        ...                          dtype=torch.float64)                     # angstrom
        >>> from tlgp_torch.features import connectivity
        >>> connectivity(numbers, positions).sum(-1).tolist()        # bonds per atom
        [4, 2, 1, 1, 1, 1]
    """
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
    """Connected components (0-based atom indices, each sorted; ordered by their first atom) of an adjacency
    [N, N] (e.g. from connectivity): the molecules of a complex.

    Example:
        >>> import torch
        >>> from tlgp_torch.features import fragments
        >>> adjacency = torch.tensor([[0, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)
        >>> fragments(adjacency)
        [[0, 2], [1]]
    """
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
