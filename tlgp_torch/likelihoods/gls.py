"""In-place Cholesky helpers for one n x n buffer (LAPACK works on the column-major view A.mT without a copy),
and the generalised-least-squares (GLS) mean and weights of the FFLUX model from two solves.

Example:
    >>> import torch
    >>> R = torch.tensor([[4.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
    >>> A = R.clone()
    >>> cholesky_in_place(A)
    0
    >>> L = A.mT.tril()            # the factor sits in the lower triangle of the column-major view
    >>> bool(torch.allclose(L @ L.mT, R))
    True
"""
from __future__ import annotations

import torch


def cholesky_in_place(A: torch.Tensor) -> int:
    """Overwrite the lower triangle of A.mT with the Cholesky factor of the symmetric A; returns LAPACK's info
    (0: success, k > 0: the order-k leading minor is not positive definite).

    Example:
        >>> import torch
        >>> cholesky_in_place(torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64))   # indefinite
        2
    """
    info = torch.empty((), dtype=torch.int32, device=A.device)
    torch.linalg.cholesky_ex(A.mT, out=(A.mT, info))
    return int(info)


def factor_solve(L: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """(L L^T)^-1 rhs from a lower factor L [..., n, n] (lower triangle read only) by two triangular solves;
    unlike torch.cholesky_solve, L is not copied. rhs is [..., n, k]; returns [..., n, k].

    Example:
        >>> import torch
        >>> R = torch.tensor([[4.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
        >>> rhs = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
        >>> bool(torch.allclose(factor_solve(torch.linalg.cholesky(R), rhs), torch.linalg.solve(R, rhs)))
        True
    """
    z = torch.linalg.solve_triangular(L, rhs, upper=False)
    return torch.linalg.solve_triangular(L.mT, z, upper=True)


def gls_from_solves(centre: float | torch.Tensor, sol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GLS mean centre + 1'R^-1 r / 1'R^-1 1 and weights R^-1 (y - mean) from sol [..., N, 2] = R^-1 [r, 1] with
    r = y - centre; the mean has sol's batch shape.

    Subtracting a centre near the mean first (e.g. mean(y)) avoids cancellation against a large offset of y.

    Example:
        >>> import torch
        >>> R = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
        >>> y = torch.tensor([3.0, 5.0], dtype=torch.float64)
        >>> sol = torch.linalg.solve(R, torch.stack([y - 4.0, torch.ones(2, dtype=torch.float64)], -1))
        >>> mean, w = gls_from_solves(4.0, sol)
        >>> round(float(mean), 9), [round(v, 9) for v in w.tolist()]   # this R: the GLS mean is the plain mean
        (4.0, [-2.0, 2.0])
    """
    delta = sol[..., 0].sum(-1) / sol[..., 1].sum(-1)
    return centre + delta, sol[..., 0] - delta.unsqueeze(-1) * sol[..., 1]
