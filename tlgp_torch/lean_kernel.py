"""The FFLUX kernel of the iterative path without autograd buffers: one dense matrix, or none at all.

Autograd through rbf_matrix keeps its intermediates: the squared distances, the exponential and one n x n
wrap correction per periodic feature, about 17 n x n buffers on ethanol (D=21, 6 periodic). lean_kernel_matrix
fills K row block by row block and its backward contracts the incoming n x n gradient G with K and the squared
differences block by block: d/d log theta_d = -theta_d sum_ij G_ij K_ij Delta2_ij,d. BlockedKernelOperator
stores no n x n matrix: every product recomputes the kernel a row block at a time, and so does the derivative.
"""
from __future__ import annotations

import torch
from linear_operator.operators import LinearOperator

from .kernels import SqDistContraction, block_rows_for, cyclic_indices, fill_rbf_matrix, rbf_matrix, wrap_correction

__all__ = ["BlockedKernelOperator", "lean_kernel_matrix"]


def _cyclic_mask(cyc: tuple[int, ...], d: int, device) -> torch.Tensor | None:
    if not cyc:
        return None
    mask = torch.zeros(d, dtype=torch.bool, device=device)
    mask[list(cyc)] = True
    return mask


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
    _check(x, log_theta)
    cyc = cyclic if cyclic is not None and cyclic.numel() and bool(cyclic.any()) else None
    return _LeanKernelMatrix.apply(log_theta, x, cyc, block_rows or block_rows_for(x))


def _check(x: torch.Tensor, log_theta: torch.Tensor) -> None:
    if x.dim() != 2 or log_theta.shape != x.shape[-1:]:
        raise ValueError(f"the FFLUX kernel operators take x [N, D] and log_theta [D], got {tuple(x.shape)} and "
                         f"{tuple(log_theta.shape)}")


class BlockedKernelOperator(LinearOperator):
    """The FFLUX kernel of x [N, D] as a linear operator that stores no N x N matrix: products and their
    log-theta derivatives recompute it block_rows rows at a time (memory O(N block_rows))."""

    def __init__(self, x: torch.Tensor, log_theta: torch.Tensor, cyclic: tuple[int, ...] = (),
                 block_rows: int | None = None):
        _check(x, log_theta)
        block_rows = int(block_rows or block_rows_for(x))
        super().__init__(x, log_theta, cyclic=tuple(int(c) for c in cyclic), block_rows=block_rows)
        self.x, self.log_theta, self.cyc, self.block_rows = x, log_theta, tuple(int(c) for c in cyclic), block_rows
        self._mask = _cyclic_mask(self.cyc, x.shape[1], x.device)

    def _rows(self, i: int, theta: torch.Tensor) -> torch.Tensor:
        return rbf_matrix(self.x[i:i + self.block_rows], self.x, theta, self._mask)

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        theta = self.log_theta.exp()
        vec = rhs.dim() == 1
        r = rhs.unsqueeze(-1) if vec else rhs
        out = torch.cat([self._rows(i, theta) @ r for i in range(0, self.x.shape[0], self.block_rows)], -2)
        return out.squeeze(-1) if vec else out

    def _bilinear_derivative(self, left_vecs: torch.Tensor, right_vecs: torch.Tensor):
        theta = self.log_theta.detach().exp()
        # columns (and any batch of them) are summed over: u^T K v = sum_ij K_ij (U V^T)_ij
        left = left_vecs.unsqueeze(-1) if left_vecs.dim() == 1 else left_vecs
        right = right_vecs.unsqueeze(-1) if right_vecs.dim() == 1 else right_vecs
        n = self.x.shape[0]
        left, right = left.reshape(-1, n, left.shape[-1]), right.reshape(-1, n, right.shape[-1])
        left, right = left.transpose(0, 1).reshape(n, -1), right.transpose(0, 1).reshape(n, -1)
        acc = SqDistContraction(self.x, self.cyc)
        for i in range(0, n, self.block_rows):
            j = i + self.block_rows
            acc.add(i, (left[i:j] @ right.mT).mul_(self._rows(i, theta)))
        return None, -theta * acc.total()

    def _diagonal(self) -> torch.Tensor:
        return torch.ones(self.x.shape[0], dtype=self.x.dtype, device=self.x.device)  # exp(0)

    def _get_indices(self, row_index, col_index, *batch_indices) -> torch.Tensor:
        theta = self.log_theta.exp()
        delta = self.x[row_index] - self.x[col_index]
        sq = delta.square()
        for d in self.cyc:
            sq[..., d] = sq[..., d] + wrap_correction(delta[..., d])
        return (sq * theta).sum(-1).neg().exp()

    def _size(self) -> torch.Size:
        return torch.Size((self.x.shape[0], self.x.shape[0]))

    def _transpose_nonbatch(self) -> "BlockedKernelOperator":
        return self

    def to_dense(self) -> torch.Tensor:
        """The kernel as a dense [N, N] tensor (small N: tests and debugging)."""
        return rbf_matrix(self.x, self.x, self.log_theta.exp(), self._mask)
