"""The FFLUX kernel as a gpytorch Kernel: ARD RBF with wrapped differences on the periodic features."""
from __future__ import annotations

import gpytorch
import torch

from tlgp_torch.kernels.formula import lengthscale_to_theta, rbf_matrix, wrap_angle


class CyclicRBFKernel(gpytorch.kernels.Kernel):
    r"""ARD RBF kernel whose `cyclic` dimensions use wrapped differences (the FFLUX kernel in gpytorch's form).

    .. math::

        k(x, x') = exp(-1/2 sum_d (delta_d / l_d)^2) = exp(-sum_d theta_d delta_d^2),   theta_d = 1 / (2 l_d^2),

    with delta_d = x_d - x'_d, or wrap_angle(x_d - x'_d) in [-pi, pi] where cyclic[d] is True (the ALF phi
    features; see `tlgp_torch.data.cyclic_feature_mask`). Like gpytorch's RBFKernel it has unit amplitude: wrap
    it in a ScaleKernel for an outputscale. The lengthscale has the units of its feature (bohr or radians).

    Args:
        cyclic: bool mask [D] of the periodic features, or None (a plain ARD RBF kernel). Its length must equal
            ard_num_dims when both are given.
        **kwargs: gpytorch Kernel arguments: ard_num_dims (D), batch_shape, active_dims, lengthscale_prior,
            lengthscale_constraint, eps.

    Raises:
        ValueError: when cyclic and ard_num_dims disagree on D.
        NotImplementedError: when called with last_dim_is_batch=True.

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import CyclicRBFKernel
        >>> kernel = CyclicRBFKernel(cyclic=torch.tensor([False, True]), ard_num_dims=2).double()
        >>> kernel.lengthscale = torch.tensor([[1.0, 0.5]])
        >>> x = torch.tensor([[0.0, 3.0], [1.0, -3.0]], dtype=torch.float64)
        >>> K = kernel(x).to_dense().detach()     # kernels return LinearOperators
        >>> round(float(K[0, 1]), 4)              # theta = (0.5, 2): exp(-(0.5 * 1^2 + 2 * (6 - 2 pi)^2))
        0.5167
        >>> kernel(x, diag=True).detach()
        tensor([1., 1.], dtype=torch.float64)
    """

    has_lengthscale = True

    def __init__(self, cyclic: torch.Tensor | None = None, **kwargs):
        super().__init__(**kwargs)
        if cyclic is not None:
            cyclic = torch.as_tensor(cyclic, dtype=torch.bool)
            if self.ard_num_dims is not None and cyclic.numel() != self.ard_num_dims:
                raise ValueError(f"cyclic mask has {cyclic.numel()} entries but ard_num_dims={self.ard_num_dims}")
        self.register_buffer("cyclic", cyclic if cyclic is not None else torch.zeros(0, dtype=torch.bool))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, last_dim_is_batch: bool = False,
                **params):
        """k(x1, x2) [..., n, m] for x1 [..., n, D] and x2 [..., m, D], or its diagonal [..., n] when diag=True."""
        if last_dim_is_batch:
            raise NotImplementedError("CyclicRBFKernel does not support last_dim_is_batch")
        theta = lengthscale_to_theta(self.lengthscale).squeeze(-2)
        cyclic = self.cyclic if self.cyclic.numel() else None
        if diag:
            if cyclic is None:
                delta2 = (x1 - x2).pow(2)
            else:
                delta = x1 - x2
                delta2 = torch.where(cyclic, wrap_angle(delta), delta).pow(2)
            return torch.exp(-(delta2 * theta.unsqueeze(-2)).sum(-1))
        return rbf_matrix(x1, x2, theta, cyclic)
