"""Random index subsets of a training set (for hyperparameter transfer and hold-out checks)."""

from __future__ import annotations

import torch

__all__ = ["random_subsets", "complement"]


def random_subsets(n: int, m: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """LongTensor [k, m]: k independent subsets of m distinct indices out of range(n), sorted within each row."""
    if m > n or m < 2 or k < 1:
        raise ValueError(f"need 2 <= m <= n and k >= 1, got n={n}, m={m}, k={k}")
    rows = [torch.randperm(n, generator=generator)[:m].sort().values for _ in range(k)]
    return torch.stack(rows)


def complement(n: int, index: torch.Tensor) -> torch.Tensor:
    """LongTensor of the indices in range(n) that are not in `index` (sorted)."""
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    if index.numel() and (index.min() < 0 or index.max() >= n):
        raise ValueError(f"indices must lie in [0, {n}), got range [{int(index.min())}, {int(index.max())}]")
    keep = torch.ones(n, dtype=torch.bool, device=index.device)
    keep[index] = False
    return keep.nonzero().reshape(-1)
