"""The FFLUX kernel as a linear_operator recomputed one row block at a time (no n x n storage)."""
from __future__ import annotations

import torch
from linear_operator.operators import LinearOperator

from tlgp_torch.kernels.formula import (
    SqDistContraction,
    block_rows_for,
    check_kernel_inputs,
    cyclic_mask,
    rbf_matrix,
    wrap_correction,
)


class BlockedKernelOperator(LinearOperator):
    """The FFLUX kernel K_ij = exp(-sum_d theta_d Delta_ij,d^2) of x [N, D] as a linear_operator LinearOperator
    that stores no N x N matrix: products and their log-theta derivatives recompute it block_rows rows at a time
    (memory O(N block_rows)).

    It plugs into linear_operator's CG / Lanczos solves (`add_diagonal`, `solve`, `inv_quad_logdet`); gradients
    reach log_theta through the derivative d(u^T K v)/d log theta_d = -theta_d sum_ij u_i v_j K_ij Delta_ij,d^2.

    Args:
        x: points [N, D] (bohr / radians).
        log_theta: log theta [D] (theta = 1 / (2 l^2)); may require grad.
        cyclic: 0-based indices of the periodic features (differences wrapped into [-pi, pi]).
        block_rows: rows per recomputed block (default `block_rows_for(x)`).

    Raises:
        ValueError: unless x is [N, D] and log_theta is [D].

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import BlockedKernelOperator, rbf_matrix
        >>> x = torch.rand(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> log_theta = torch.zeros(3, dtype=torch.float64)
        >>> K = BlockedKernelOperator(x, log_theta, cyclic=(2,), block_rows=3)
        >>> K.shape
        torch.Size([8, 8])
        >>> v = torch.ones(8, 1, dtype=torch.float64)
        >>> dense = rbf_matrix(x, x, log_theta.exp(), torch.tensor([False, False, True]))
        >>> bool(torch.allclose(K @ v, dense @ v))
        True
    """

    def __init__(self, x: torch.Tensor, log_theta: torch.Tensor, cyclic: tuple[int, ...] = (),
                 block_rows: int | None = None):
        check_kernel_inputs(x, log_theta)
        block_rows = int(block_rows or block_rows_for(x))
        super().__init__(x, log_theta, cyclic=tuple(int(c) for c in cyclic), block_rows=block_rows)
        self.x, self.log_theta, self.cyc, self.block_rows = x, log_theta, tuple(int(c) for c in cyclic), block_rows
        self._mask = cyclic_mask(self.cyc, x.shape[1], x.device)

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

    def _transpose_nonbatch(self) -> BlockedKernelOperator:
        return self

    def to_dense(self) -> torch.Tensor:
        """The kernel as a dense [N, N] tensor (small N: tests and debugging)."""
        return rbf_matrix(self.x, self.x, self.log_theta.exp(), self._mask)
