"""The FFLUX kernel as a gpytorch Kernel: ARD RBF with wrapped differences on the periodic features."""
from __future__ import annotations

import gpytorch
import torch

from tlgp_torch.kernels.formula import lengthscale_to_theta, rbf_matrix, wrap_angle


class CyclicRBFKernel(gpytorch.kernels.Kernel):
    """ARD RBF kernel exp(-1/2 sum_d (delta_d / l_d)^2) whose `cyclic` dimensions use wrapped differences."""

    has_lengthscale = True

    def __init__(self, cyclic: torch.Tensor | None = None, **kwargs):
        super().__init__(**kwargs)
        if cyclic is not None:
            cyclic = torch.as_tensor(cyclic, dtype=torch.bool)
            if self.ard_num_dims is not None and cyclic.numel() != self.ard_num_dims:
                raise ValueError(f"cyclic mask has {cyclic.numel()} entries but ard_num_dims={self.ard_num_dims}")
        self.register_buffer("cyclic", cyclic if cyclic is not None else torch.zeros(0, dtype=torch.bool))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
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
