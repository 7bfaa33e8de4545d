"""The FFLUX kernel of the iterative path without autograd buffers: one dense matrix, or none at all.

Autograd through rbf_matrix keeps its intermediates: the squared distances, the exponential and one n x n
wrap correction per periodic feature, about 17 n x n buffers on ethanol (D=21, 6 periodic). lean_kernel_matrix
fills K row block by row block and its backward contracts the incoming n x n gradient G with K and the squared
differences block by block: d/d log theta_d = -theta_d sum_ij G_ij K_ij Delta2_ij,d. BlockedKernelOperator
stores no n x n matrix: every product recomputes the kernel a row block at a time, and so does the derivative.
"""
from __future__ import annotations

import torch

from tlgp_torch.kernels.formula import (
    SqDistContraction,
    block_rows_for,
    check_kernel_inputs,
    cyclic_indices,
    fill_rbf_matrix,
)

__all__ = ["lean_kernel_matrix"]


class _LeanKernelMatrix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_theta: torch.Tensor, x: torch.Tensor, cyclic: torch.Tensor | None,
                block_rows: int) -> torch.Tensor:
        theta = log_theta.exp()
        K = fill_rbf_matrix(x.new_empty(x.shape[0], x.shape[0]), x, theta, cyclic, block_rows)
        ctx.save_for_backward(K, x, theta)
        ctx.cyc, ctx.block_rows = cyclic_indices(cyclic), block_rows
        return K

    @staticmethod
    def backward(ctx, G: torch.Tensor):
        K, x, theta = ctx.saved_tensors
        acc = SqDistContraction(x, ctx.cyc)
        for i in range(0, x.shape[0], ctx.block_rows):
            acc.add(i, G[i:i + ctx.block_rows] * K[i:i + ctx.block_rows])
        return -theta * acc.total(), None, None, None


def lean_kernel_matrix(log_theta: torch.Tensor, x: torch.Tensor, cyclic: torch.Tensor | None = None,
                       block_rows: int | None = None) -> torch.Tensor:
    """FFLUX kernel K_ij = exp(-sum_d theta_d Delta_ij,d^2) of x [N, D] with itself, differentiable in log theta;
    its autograd graph holds only the returned [N, N] matrix (temporaries are block_rows x N).

    The backward pass gives dL/d log theta_d = -theta_d sum_ij G_ij K_ij Delta_ij,d^2 for the incoming gradient
    G = dL/dK, contracted row block by row block (Delta wrapped on the periodic features).

    Args:
        log_theta: log theta [D] (theta = 1 / (2 l^2), bohr^-2 or rad^-2).
        x: points [N, D] (bohr / radians).
        cyclic: bool mask [D] of the periodic features, or None.
        block_rows: rows per block (default `block_rows_for(x)`: about 16 MB per temporary on the CPU).

    Returns:
        K [N, N], the same values as `rbf_matrix(x, x, log_theta.exp(), cyclic)`.

    Raises:
        ValueError: unless x is [N, D] and log_theta is [D].

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import lean_kernel_matrix, rbf_matrix
        >>> x = torch.rand(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> log_theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        >>> K = lean_kernel_matrix(log_theta, x, block_rows=2)
        >>> K.sum().backward()
        >>> u = log_theta.detach().requires_grad_()
        >>> rbf_matrix(x, x, u.exp()).sum().backward()        # plain autograd gives the same gradient
        >>> bool(torch.allclose(log_theta.grad, u.grad))
        True
    """
    check_kernel_inputs(x, log_theta)
    cyc = cyclic if cyclic is not None and cyclic.numel() and bool(cyclic.any()) else None
    return _LeanKernelMatrix.apply(log_theta, x, cyc, block_rows or block_rows_for(x))




