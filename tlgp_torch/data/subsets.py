"""Random index subsets of a training set (for hyperparameter transfer and hold-out checks)."""

from __future__ import annotations

import torch

__all__ = ["random_subsets", "complement"]


def random_subsets(n: int, m: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """LongTensor [k, m]: k independent subsets of m distinct indices out of range(n), sorted within each row.

    The transfer trainer fits its source models on such subsets.

    Args:
        n: size of the full set.
        m: points per subset (2 <= m <= n).
        k: number of subsets (>= 1).
        generator: the random source (seeded: same seed, same subsets).

    Raises:
        ValueError: unless 2 <= m <= n and k >= 1.

    Example:
        >>> import torch
        >>> from tlgp_torch.data import random_subsets
        >>> subsets = random_subsets(100, 10, 3, torch.Generator().manual_seed(0))
        >>> subsets.shape, bool((subsets.diff(dim=1) > 0).all())         # sorted, no repeats
        (torch.Size([3, 10]), True)
    """
    if m > n or m < 2 or k < 1:
        raise ValueError(f"need 2 <= m <= n and k >= 1, got n={n}, m={m}, k={k}")
    rows = [torch.randperm(n, generator=generator)[:m].sort().values for _ in range(k)]
    return torch.stack(rows)


def complement(n: int, index: torch.Tensor) -> torch.Tensor:
    """LongTensor of the indices in range(n) that are not in `index` (sorted), e.g. a hold-out set.

    Raises:
        ValueError: when an index lies outside [0, n).

    Example:
        >>> import torch
        >>> from tlgp_torch.data import complement
        >>> complement(6, torch.tensor([4, 1]))
        tensor([0, 2, 3, 5])
    """
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    if index.numel() and (index.min() < 0 or index.max() >= n):
        raise ValueError(f"indices must lie in [0, {n}), got range [{int(index.min())}, {int(index.max())}]")
    keep = torch.ones(n, dtype=torch.bool, device=index.device)
    keep[index] = False
    return keep.nonzero().reshape(-1)
