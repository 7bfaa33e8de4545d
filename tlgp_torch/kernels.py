"""FFLUX RBF kernels: ARD RBF with periodic (wrapped) differences on the ALF phi features."""
from __future__ import annotations

import math

import gpytorch
import torch

TWO_PI = 2.0 * math.pi


def wrap_angle(delta: torch.Tensor) -> torch.Tensor:
    """Wrap angle differences into [-pi, pi] as FEREBUS does: sign(d) * (mod(|d| + pi, 2 pi) - pi)."""
    return torch.sign(delta) * (torch.remainder(delta.abs() + math.pi, TWO_PI) - math.pi)


def scaled_sq_dist(
    x1: torch.Tensor, x2: torch.Tensor, theta: torch.Tensor, cyclic: torch.Tensor | None = None
) -> torch.Tensor:
    """sum_d theta_d delta_d^2 for all pairs ([..., n, D], [..., m, D], theta [..., D]) -> [..., n, m].

    Non-periodic dimensions go through one matmul; periodic ones are wrapped elementwise.
    """
    theta = theta.unsqueeze(-2)  # [..., 1, D]
    if cyclic is None or not bool(cyclic.any()):
        lin = torch.ones(x1.shape[-1], dtype=torch.bool, device=x1.device)
    else:
        lin = ~cyclic.to(x1.device)
    dist = x1.new_zeros(torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2], theta.shape[:-2]) + (x1.shape[-2], x2.shape[-2]))
    if bool(lin.any()):
        s = theta[..., lin].sqrt()
        a, b = x1[..., lin] * s, x2[..., lin] * s
        dist = dist + (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(-2) - 2.0 * a @ b.transpose(-1, -2))
        dist = dist.clamp_min(0.0)
    if cyclic is not None and bool(cyclic.any()):
        for d in torch.nonzero(cyclic, as_tuple=False).flatten().tolist():
            delta = wrap_angle(x1[..., :, d].unsqueeze(-1) - x2[..., :, d].unsqueeze(-2))
            dist = dist + theta[..., d].unsqueeze(-1) * delta.pow(2)
    return dist


def rbf_matrix(
    x1: torch.Tensor, x2: torch.Tensor, theta: torch.Tensor, cyclic: torch.Tensor | None = None
) -> torch.Tensor:
    """FFLUX kernel exp(-sum_d theta_d delta_d^2) between two point sets (theta = 1 / (2 l^2))."""
    return torch.exp(-scaled_sq_dist(x1, x2, theta, cyclic))


def lengthscale_to_theta(lengthscale: torch.Tensor) -> torch.Tensor:
    """Convert GPyTorch lengthscales l to FFLUX theta = 1 / (2 l^2)."""
    return 0.5 / lengthscale.pow(2)


def theta_to_lengthscale(theta: torch.Tensor) -> torch.Tensor:
    """Convert FFLUX theta to GPyTorch lengthscales l = sqrt(1 / (2 theta))."""
    return (0.5 / theta).sqrt()


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
