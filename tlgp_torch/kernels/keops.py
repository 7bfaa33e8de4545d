"""The FFLUX kernel as a KeOps symbolic matrix (optional extra `keops`): O(N) memory for the iterative path.

gpytorch's CG + Lanczos only needs kernel matrix products. With pykeops installed, CyclicRBFKeOpsKernel gives
them without ever storing the N x N kernel (nor the autograd buffers of its hyperparameter gradient): what is
left grows as N (CG vectors, the rows the pivoted Cholesky picks landmarks from, and the N x rank Nystroem
block of the preconditioner). Periodic features use the wrapped difference
delta - 2 pi floor((delta + pi) / 2 pi), which squares to FEREBUS's wrap_angle(delta)^2.
"""
from __future__ import annotations

import math

import torch
from gpytorch.kernels.keops.keops_kernel import KeOpsKernel, _use_keops
from linear_operator.operators import KernelLinearOperator

from tlgp_torch.kernels.cyclic_rbf import CyclicRBFKernel
from tlgp_torch.kernels.formula import rbf_matrix

__all__ = ["CyclicRBFKeOpsKernel", "keops_available"]

DENSE_BELOW_ROWS = 64  # kernel blocks with fewer rows or columns are computed densely (small, and linear_operator
                       # needs real tensors for diagonals and pivoted-Cholesky rows)


def keops_available() -> bool:
    """True when pykeops imports (its compiler is only exercised at the first kernel product).

    Example:
        >>> from tlgp_torch.kernels.keops import keops_available
        >>> keops_available() in (True, False)
        True
    """
    try:
        import pykeops  # noqa: F401
        from pykeops.torch import LazyTensor  # noqa: F401
    except ImportError:
        return False
    return True


def _covar_func(x1: torch.Tensor, x2: torch.Tensor, inv_l: torch.Tensor, periodic: torch.Tensor):
    """exp(-1/2 sum_d (wrap_d(x1_d - x2_d) / l_d)^2) as a KeOps LazyTensor; inv_l [..., 1, D], periodic [..., 1, D]
    0/1. Thin blocks (a diagonal, the rows a pivoted Cholesky asks for) come back dense, as linear_operator needs."""
    if min(x1.shape[-2], x2.shape[-2]) < DENSE_BELOW_ROWS:
        cyclic = periodic.reshape(-1, periodic.shape[-1])[0] > 0
        return rbf_matrix(x1, x2, 0.5 * inv_l.squeeze(-2).square(), cyclic if bool(cyclic.any()) else None)
    from pykeops.torch import LazyTensor
    xi = LazyTensor(x1[..., :, None, :])
    xj = LazyTensor(x2[..., None, :, :])
    il = LazyTensor(inv_l[..., None, :, :])
    delta = xi - xj
    if bool(periodic.any()):
        mask = LazyTensor(periodic[..., None, :, :].to(x1))
        delta = delta + mask * (delta.mod(2.0 * math.pi, -math.pi) - delta)
    return (-0.5 * (delta * il).sqnorm2()).exp()


class CyclicRBFKeOpsKernel(KeOpsKernel, CyclicRBFKernel):
    """CyclicRBFKernel whose full kernel matrices are KeOps symbolic operators (matrix products without N x N
    storage) once gpytorch runs iteratively (N >= max_cholesky_size); dense, like CyclicRBFKernel, otherwise.

    Same formula and arguments as CyclicRBFKernel: k(x, x') = exp(-1/2 sum_d (delta_d / l_d)^2), delta_d wrapped
    into [-pi, pi] on the cyclic features.

    Raises:
        ImportError: when pykeops is not installed (extra `keops`).

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels.keops import CyclicRBFKeOpsKernel
        >>> kernel = CyclicRBFKeOpsKernel(cyclic=torch.tensor([False, True]), ard_num_dims=2).double()
        >>> x = torch.rand(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> kernel(x).to_dense().shape          # small N: computed densely, no KeOps compilation
        torch.Size([5, 5])
    """

    def __init__(self, cyclic: torch.Tensor | None = None, **kwargs):
        if not keops_available():
            raise ImportError("CyclicRBFKeOpsKernel needs pykeops: pip install 'tlgp_torch[keops]' "
                              "(or run the iterative path with keops='off')")
        super().__init__(cyclic=cyclic, **kwargs)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, last_dim_is_batch: bool = False,
                **params):
        """k(x1, x2) as a KeOps-backed KernelLinearOperator [..., n, m] when gpytorch runs iteratively and both
        sides are large; otherwise CyclicRBFKernel's dense result (and always for diag / last_dim_is_batch)."""
        if diag or last_dim_is_batch or not _use_keops(x1, x2):
            return super().forward(x1, x2, diag=diag, last_dim_is_batch=last_dim_is_batch, **params)
        periodic = self.cyclic if self.cyclic.numel() else torch.zeros(x1.shape[-1], dtype=torch.bool,
                                                                       device=x1.device)
        periodic = periodic.to(x1.dtype).expand(*self.lengthscale.shape[:-2], 1, x1.shape[-1])
        return KernelLinearOperator(x1, x2, covar_func=_covar_func, inv_l=self.lengthscale.reciprocal(),
                                    periodic=periodic)
