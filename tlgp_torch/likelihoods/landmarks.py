"""Landmarks of a Nystroem preconditioner: greedy pivoted Cholesky with a tie rule that no last bit can change.

linear_operator's pivoted Cholesky takes ``torch.max`` of the residual diagonal. The FFLUX kernel's diagonal is all
ones, so the first pivot is a tie that the CPU's vector unit breaks, and last-bit differences between two forms of
the same kernel (dense, row-blocked, KeOps) pick other landmarks later on. Here residuals within ``rtol`` (relative
to the largest diagonal entry) of the largest one count as equal and the lowest index among them wins.
"""
from __future__ import annotations

from typing import Callable

import torch
from linear_operator import to_linear_operator
from linear_operator.operators import LinearOperator

__all__ = ["LANDMARK_RTOL", "pivoted_landmarks"]

# Residuals this close (relative to max diag K) are a tie. Kernel forms differ by ~1e-16 relative per entry and
# rank-m updates add m such roundings, so 1e-9 is far above any last-bit difference; a pivot whose residual is
# within 1e-9 of the best adds a column that is as good to 1e-9 relative, so the preconditioner loses nothing.
LANDMARK_RTOL = 1e-9


def pivoted_landmarks(matrix: torch.Tensor | LinearOperator, rank: int, *, rtol: float = LANDMARK_RTOL,
                      row: Callable[[int], torch.Tensor] | None = None,
                      diagonal: torch.Tensor | None = None) -> torch.Tensor:
    """Indices [rank] of the landmarks that greedy pivoted Cholesky picks from a PSD matrix K [N, N].

    Step m takes the pivot p = min{i free : d_i >= max_j d_j - rtol max(diag K)} of the residual diagonal
    d = diag(K - L L^T), then appends the column l = (K[:, p] - L L[p]^T) / sqrt(d_p) to L. Once every free residual
    is within rtol of zero (K is exhausted to that precision) the remaining landmarks are the free indices in
    ascending order. The landmarks are thus the same on every CPU and for every exact form of K.

    Args:
        matrix: K [N, N], a tensor or a linear operator (no batch dimensions).
        rank: number of landmarks wanted; at most N are returned.
        rtol: residuals closer than rtol * max(diag K) count as tied.
        row: optional function i -> K[i, :] [N] (e.g. a kernel's forward on one point); defaults to indexing K.
        diagonal: optional diag K [N]; defaults to matrix.diagonal().

    Returns:
        Long tensor [min(rank, N)] of distinct row indices of K, on K's device.

    Example:
        >>> K = torch.ones(4, 4, dtype=torch.float64) * 0.5 + 0.5 * torch.eye(4, dtype=torch.float64)
        >>> pivoted_landmarks(K, 2).tolist()  # every diagonal ties: lowest index first
        [0, 1]
    """
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be one square matrix [N, N], got shape {tuple(matrix.shape)}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    n = matrix.shape[-1]
    rank = min(int(rank), n)
    if row is None:
        if isinstance(matrix, torch.Tensor):
            def row(i: int) -> torch.Tensor:
                return matrix[i]
        else:
            op = to_linear_operator(matrix)

            def row(i: int) -> torch.Tensor:
                return op[torch.tensor([i], device=op.device), :].to_dense()[0]
    with torch.no_grad():
        diag = (matrix.diagonal() if diagonal is None else diagonal).detach().clone()
        tol = rtol * float(diag.abs().max())
        free = torch.ones(n, dtype=torch.bool, device=diag.device)
        L = torch.zeros(rank, n, dtype=diag.dtype, device=diag.device)
        chosen: list[int] = []
        for m in range(rank):
            resid = diag.masked_fill(~free, -torch.inf)
            top = float(resid.max())
            if top <= tol:
                break  # K is exhausted to rtol: the rest follow in index order
            p = int(torch.nonzero(resid >= top - tol)[0, 0])
            chosen.append(p)
            free[p] = False
            col = row(p).to(diag) - L[:m].mT @ L[:m, p]
            col = col / col[p].clamp_min(tol).sqrt()
            L[m] = col
            diag -= col.square()
        rest = torch.nonzero(free).flatten()[: rank - len(chosen)]
        return torch.cat([torch.tensor(chosen, dtype=torch.long, device=diag.device), rest])
