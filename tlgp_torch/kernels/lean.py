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
    """FFLUX kernel exp(-sum_d theta_d Delta_d^2) of x [N, D] with itself, differentiable in log theta [D]; its
    autograd graph holds only the returned [N, N] matrix (temporaries are block_rows x N)."""
    check_kernel_inputs(x, log_theta)
    cyc = cyclic if cyclic is not None and cyclic.numel() and bool(cyclic.any()) else None
    return _LeanKernelMatrix.apply(log_theta, x, cyc, block_rows or block_rows_for(x))




