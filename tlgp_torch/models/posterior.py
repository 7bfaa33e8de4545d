"""FFLUX predictions from weights: y(x) = mu + sum_i w_i k(x, x_i), w = R^-1 (y - mu 1)."""
from __future__ import annotations

import torch

from tlgp_torch.kernels.formula import fill_rbf_matrix, rbf_matrix
from tlgp_torch.likelihoods.gls import cholesky_in_place, factor_solve, gls_from_solves


def _factor_in_place(x: torch.Tensor, theta: torch.Tensor, nugget: float, cyclic: torch.Tensor | None) -> torch.Tensor:
    """One n x n buffer whose column-major view holds the lower Cholesky factor of K(x, x) + nugget I."""
    n = x.shape[0]
    A = fill_rbf_matrix(torch.empty(n, n, dtype=x.dtype, device=x.device), x, theta, cyclic)
    A.diagonal().add_(float(nugget))
    info = cholesky_in_place(A)
    if info:
        raise torch.linalg.LinAlgError(f"kernel matrix + nugget {float(nugget):.3g} I is not positive definite "
                                       f"(order-{info} leading minor); raise the nugget")
    return A.mT


def fflux_weights(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, mean: float | torch.Tensor,
                  nugget: float | torch.Tensor, cyclic: torch.Tensor | None = None) -> torch.Tensor:
    """Weights w = (K + nugget I)^-1 (y - mean) for x [..., N, D], y [..., N], theta [..., D]."""
    r = y - torch.as_tensor(mean, dtype=x.dtype, device=x.device).unsqueeze(-1)
    if x.dim() == 2:  # one model: one n x n buffer, factorised in place (LAPACK works on the column-major view)
        return factor_solve(_factor_in_place(x, theta, nugget, cyclic), r.unsqueeze(-1)).squeeze(-1)
    K = rbf_matrix(x, x, theta, cyclic)
    nug = torch.as_tensor(nugget, dtype=x.dtype, device=x.device).reshape(-1, 1, 1) if K.dim() == 3 else nugget
    R = K + nug * torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
    L = torch.linalg.cholesky(R)
    return torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)


def fflux_gls_weights(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, nugget: float,
                      cyclic: torch.Tensor | None = None, centre: float | None = None) -> tuple[float, torch.Tensor]:
    """GLS mean 1'R^-1 y / 1'R^-1 1 and weights R^-1 (y - mean) of one model (x [N, D], y [N]) from one in-place
    Cholesky factor; centre (default: the sample mean) is subtracted first, so a value near the GLS mean avoids
    cancellation against y's offset."""
    c = float(y.mean()) if centre is None else float(centre)
    mean, w = gls_from_solves(c, factor_solve(_factor_in_place(x, theta, nugget, cyclic),
                                              torch.stack([y - c, torch.ones_like(y)], -1)))
    return float(mean), w


def fflux_predict(x_new: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, theta: torch.Tensor,
                  mean: float | torch.Tensor, cyclic: torch.Tensor | None = None, chunk: int = 4096) -> torch.Tensor:
    """Predictions at x_new [..., M, D] from training x [..., N, D] and weights [..., N] (chunked over M)."""
    out = []
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).unsqueeze(-1)
    for s in range(0, x_new.shape[-2], chunk):
        k = rbf_matrix(x_new[..., s:s + chunk, :], x, theta, cyclic)
        out.append((k @ weights.unsqueeze(-1)).squeeze(-1) + m)
    return torch.cat(out, -1)
