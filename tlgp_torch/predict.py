"""FFLUX predictions from weights: y(x) = mu + sum_i w_i k(x, x_i), w = R^-1 (y - mu 1)."""
from __future__ import annotations

import torch

from .kernels import rbf_matrix


def fflux_weights(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, mean: float | torch.Tensor,
                  nugget: float | torch.Tensor, cyclic: torch.Tensor | None = None) -> torch.Tensor:
    """Weights w = (K + nugget I)^-1 (y - mean) for x [..., N, D], y [..., N], theta [..., D]."""
    K = rbf_matrix(x, x, theta, cyclic)
    nug = torch.as_tensor(nugget, dtype=x.dtype, device=x.device).reshape(-1, 1, 1) if K.dim() == 3 else nugget
    R = K + nug * torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
    L = torch.linalg.cholesky(R)
    r = y - torch.as_tensor(mean, dtype=x.dtype, device=x.device).unsqueeze(-1)
    return torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)


def fflux_predict(x_new: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, theta: torch.Tensor,
                  mean: float | torch.Tensor, cyclic: torch.Tensor | None = None, chunk: int = 4096) -> torch.Tensor:
    """Predictions at x_new [..., M, D] from training x [..., N, D] and weights [..., N] (chunked over M)."""
    out = []
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).unsqueeze(-1)
    for s in range(0, x_new.shape[-2], chunk):
        k = rbf_matrix(x_new[..., s:s + chunk, :], x, theta, cyclic)
        out.append((k @ weights.unsqueeze(-1)).squeeze(-1) + m)
    return torch.cat(out, -1)
