"""In-place Cholesky helpers for one n x n buffer (LAPACK works on the column-major view A.mT without a copy)."""
from __future__ import annotations

import torch


def cholesky_in_place(A: torch.Tensor) -> int:
    """Overwrite the lower triangle of A.mT with the Cholesky factor of the symmetric A; returns LAPACK's info
    (0: success, k > 0: the order-k leading minor is not positive definite)."""
    info = torch.empty((), dtype=torch.int32, device=A.device)
    torch.linalg.cholesky_ex(A.mT, out=(A.mT, info))
    return int(info)


def factor_solve(L: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """(L L^T)^-1 rhs from a lower factor L [..., n, n] (lower triangle read only) by two triangular solves;
    unlike torch.cholesky_solve, L is not copied."""
    z = torch.linalg.solve_triangular(L, rhs, upper=False)
    return torch.linalg.solve_triangular(L.mT, z, upper=True)


def gls_from_solves(centre: float | torch.Tensor, sol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GLS mean centre + 1'R^-1 r / 1'R^-1 1 and weights R^-1 (y - mean) from sol [..., N, 2] = R^-1 [r, 1] with
    r = y - centre; the mean has sol's batch shape."""
    delta = sol[..., 0].sum(-1) / sol[..., 1].sum(-1)
    return centre + delta, sol[..., 0] - delta.unsqueeze(-1) * sol[..., 1]
