r"""The FFLUX kernel, written once: an ARD RBF with periodic (wrapped) differences on the ALF phi features.

.. math::

    k(x, x') = exp(-sum_d theta_d delta_d^2),    theta_d = 1 / (2 l_d^2),

with delta_d = x_d - x'_d, or, for a periodic feature (1-based index 3, 6, 9, ..., see
`tlgp_torch.data.cyclic_feature_mask`), delta_d = wrap_angle(x_d - x'_d) in [-pi, pi]. There is no factor 1/2 in
the exponent and no amplitude (FEREBUS convention); `lengthscale_to_theta` converts gpytorch lengthscales l.
Features are in bohr and radians, so theta_d is in bohr^-2 or rad^-2.

Example:
    >>> import torch
    >>> from tlgp_torch.kernels import rbf_matrix
    >>> x = torch.tensor([[0.0, 3.0], [1.0, -3.0]], dtype=torch.float64)   # feature 2 is an angle
    >>> theta = torch.tensor([0.5, 2.0], dtype=torch.float64)
    >>> K = rbf_matrix(x, x, theta, cyclic=torch.tensor([False, True]))
    >>> round(float(K[0, 1]), 4)     # exp(-(0.5 * 1^2 + 2 * (6 - 2 pi)^2))
    0.5167
"""
from __future__ import annotations

import math
from typing import Optional

import torch


def wrap_angle(delta: torch.Tensor) -> torch.Tensor:
    """Wrap angle differences into [-pi, pi] as FEREBUS does: sign(d) * (mod(|d| + pi, 2 pi) - pi).

    Args:
        delta: angle differences (radians), any shape.

    Returns:
        The wrapped differences, same shape and dtype: delta - 2 pi k with the integer k that brings them into
        [-pi, pi]. TorchScript-compatible (the exported potential uses it).

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import wrap_angle
        >>> wrap_angle(torch.tensor([0.5, 3.5, -3.5, 7.0]))
        tensor([ 0.5000, -2.7832,  2.7832,  0.7168])
    """
    return torch.sign(delta) * (torch.remainder(delta.abs() + math.pi, 2.0 * math.pi) - math.pi)  # scriptable


def wrap_correction(delta: torch.Tensor) -> torch.Tensor:
    """wrap_angle(delta)^2 - delta^2: exactly 0 where |delta| <= pi (no wrap), so a periodic feature that never
    wraps gives bit-for-bit the numbers of a plain one.

    For pi < |delta| <= 3 pi (any two angles of one period, e.g. ALF phi in (-pi, pi]) this is -4 pi (|delta| - pi),
    written in four in-place passes (about 5x faster than the general formula, which larger |delta| fall back to).

    Args:
        delta: plain angle differences (radians), any shape.

    Returns:
        The correction (radians^2), same shape; add theta_d times it to a plain squared distance.

    Example:
        >>> import torch
        >>> corr = wrap_correction(torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> [round(v, 4) for v in corr.abs().tolist()]    # 0 (no wrap), 16 - (4 - 2 pi)^2
        [0.0, 10.7871]
    """
    out = delta.abs().sub_(math.pi).clamp_min_(0.0).mul_(-4.0 * math.pi)
    if out.numel() and bool(out.min() < -8.0 * math.pi**2):  # some |delta| > 3 pi: more than one period apart
        out = torch.where(delta.abs() > math.pi, wrap_angle(delta).pow(2) - delta.pow(2), torch.zeros_like(delta))
    return out


def scaled_sq_dist(
    x1: torch.Tensor, x2: torch.Tensor, theta: torch.Tensor, cyclic: torch.Tensor | None = None
) -> torch.Tensor:
    """The scaled squared distance sum_d theta_d delta_d^2 of every pair of points (delta_d wrapped where cyclic).

    Every feature goes through one matmul; periodic ones then add theta_d wrap_correction(delta_d), which is
    zero for pairs that do not wrap. The result therefore does not depend on which periodic features are
    flagged as possibly wrapping (e.g. on which other data sets share a batch). Clamped at 0 (the matmul form
    |a|^2 + |b|^2 - 2 a.b can round slightly below).

    Args:
        x1: points [..., n, D] (bohr / radians).
        x2: points [..., m, D].
        theta: inverse squared length scales [..., D] (theta = 1 / (2 l^2)); batch dimensions broadcast.
        cyclic: bool mask [D] of the periodic features, or None for none.

    Returns:
        Distances [..., n, m] (dimensionless).

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import scaled_sq_dist
        >>> x1 = torch.tensor([[0.0, 3.0]], dtype=torch.float64)
        >>> x2 = torch.tensor([[1.0, -3.0]], dtype=torch.float64)
        >>> theta = torch.tensor([0.5, 2.0], dtype=torch.float64)
        >>> scaled_sq_dist(x1, x2, theta)               # 0.5 * 1 + 2 * 36
        tensor([[72.5000]], dtype=torch.float64)
        >>> round(float(scaled_sq_dist(x1, x2, theta, torch.tensor([False, True]))), 4)   # 6 wraps to 6 - 2 pi
        0.6604
    """
    theta = theta.unsqueeze(-2)  # [..., 1, D]
    s = theta.sqrt()
    a, b = x1 * s, x2 * s
    # |a|^2 + |b|^2 - 2 a.b in one fused batched matmul, then in place
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2], theta.shape[:-2])
    a = a.expand(*batch, *a.shape[-2:]).reshape(-1, *a.shape[-2:])
    b = b.expand(*batch, *b.shape[-2:]).reshape(-1, *b.shape[-2:])
    sq = a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(-2)
    dist = torch.baddbmm(sq, a, b.transpose(-1, -2), alpha=-2.0).clamp_min_(0.0)
    dist = dist.reshape(*batch, *dist.shape[-2:])
    if cyclic is not None and bool(cyclic.any()):
        for d in torch.nonzero(cyclic, as_tuple=False).flatten().tolist():
            corr = wrap_correction(x1[..., :, d].unsqueeze(-1) - x2[..., :, d].unsqueeze(-2))
            dist += theta[..., d].unsqueeze(-1) * corr
        dist.clamp_min_(0.0)
    return dist


def direct_sq_dist(x1: torch.Tensor, x2: torch.Tensor, theta: torch.Tensor,
                   cyclic: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045 (TorchScript)
    """sum_d theta_d delta_d^2 by direct differences delta = x1_i - x2_j, wrapped into [-pi, pi] where cyclic.

    The order FFLUX evaluates its models in, with no |a|^2 + |b|^2 - 2 a.b cancellation: the reference form for
    predictions that must agree with FFLUX to the last digits (scaled_sq_dist is the fast form for training).
    Memory is [..., n, m, D]; TorchScript-compatible.

    Args:
        x1: points [..., n, D] (bohr / radians).
        x2: points [..., m, D].
        theta: [..., D] (theta = 1 / (2 l^2)); batch dimensions broadcast.
        cyclic: bool mask [..., D] of the periodic features, or None.

    Returns:
        Distances [..., n, m].

    Example:
        >>> import torch
        >>> x1 = torch.tensor([[0.0, 3.0]], dtype=torch.float64)
        >>> x2 = torch.tensor([[1.0, -3.0]], dtype=torch.float64)
        >>> theta = torch.tensor([0.5, 2.0], dtype=torch.float64)
        >>> round(float(direct_sq_dist(x1, x2, theta, torch.tensor([False, True]))), 4)   # as scaled_sq_dist
        0.6604
    """
    delta = x1.unsqueeze(-2) - x2.unsqueeze(-3)  # [..., n, m, D]
    if cyclic is not None:
        delta = torch.where(cyclic.unsqueeze(-2).unsqueeze(-2), wrap_angle(delta), delta)
    return (delta * delta * theta.unsqueeze(-2).unsqueeze(-2)).sum(-1)


def rbf_matrix(
    x1: torch.Tensor, x2: torch.Tensor, theta: torch.Tensor, cyclic: torch.Tensor | None = None
) -> torch.Tensor:
    """The FFLUX kernel k(x, x') = exp(-sum_d theta_d delta_d^2) between two point sets (theta = 1 / (2 l^2)).

    Args:
        x1: points [..., n, D] (bohr / radians).
        x2: points [..., m, D].
        theta: inverse squared length scales [..., D]; batch dimensions broadcast.
        cyclic: bool mask [D] of the periodic features (differences wrapped into [-pi, pi]), or None.

    Returns:
        The kernel matrix [..., n, m], values in (0, 1] (unit amplitude, no nugget).

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import rbf_matrix
        >>> x = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> K = rbf_matrix(x, x, torch.ones(3, dtype=torch.float64))
        >>> K.shape, bool(torch.allclose(K.diagonal(), torch.ones(5, dtype=torch.float64)))
        (torch.Size([5, 5]), True)
    """
    return scaled_sq_dist(x1, x2, theta, cyclic).neg_().exp_()


def block_rows_for(x: torch.Tensor) -> int:
    """Rows per block of an x [N, D] kernel so that one block_rows x N temporary takes about 16 MB on the CPU
    (cache-friendly) or 256 MB on a GPU (big enough to fill it).

    Example:
        >>> import torch
        >>> block_rows_for(torch.zeros(100_000, 3, dtype=torch.float64))   # 2^24 bytes / (100,000 * 8 bytes)
        20
    """
    n = x.shape[-2]
    block_bytes = 2**24 if x.device.type == "cpu" else 2**28
    return max(1, min(n, block_bytes // (n * x.element_size())))


def fill_rbf_matrix(out: torch.Tensor, x: torch.Tensor, theta: torch.Tensor, cyclic: torch.Tensor | None = None,
                    block_rows: int | None = None) -> torch.Tensor:
    """Write the FFLUX kernel of x [N, D] with itself into out [N, N], row block by row block (temporaries are
    block_rows x N, never N x N; default block_rows_for(x)). Returns out.

    Example:
        >>> import torch
        >>> x = torch.rand(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> theta = torch.ones(2, dtype=torch.float64)
        >>> K = fill_rbf_matrix(torch.empty(7, 7, dtype=torch.float64), x, theta, block_rows=3)
        >>> bool(torch.allclose(K, rbf_matrix(x, x, theta)))
        True
    """
    bs = block_rows or block_rows_for(x)
    for i in range(0, x.shape[0], bs):
        out[i:i + bs] = rbf_matrix(x[i:i + bs], x, theta, cyclic)
    return out


def cyclic_indices(cyclic: torch.Tensor | None) -> tuple[int, ...]:
    """The periodic features of a cyclic mask [D] as a tuple of 0-based indices (empty for None).

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import cyclic_indices
        >>> cyclic_indices(torch.tensor([False, False, True, False, False, True]))
        (2, 5)
    """
    return () if cyclic is None or not cyclic.numel() else tuple(torch.nonzero(cyclic).flatten().tolist())


class SqDistContraction:
    """Accumulates c_d = sum_ij M_ij Delta2_ij,d over row blocks M [b, n] of an n x n matrix, without n x n x D
    temporaries (wrapped differences on the periodic features `cyc`): row i adds r_i x_id^2 - 2 x_id (M x)_id,
    column j adds c_j x_jd^2, which for a symmetric M equals the row term (symmetric=True skips the column sums)."""

    def __init__(self, x: torch.Tensor, cyc: tuple[int, ...], symmetric: bool = False):
        self.x, self.cyc, self.x2, self.symmetric = x, cyc, x.square(), symmetric
        self.rows = x.new_zeros(x.shape[1])
        self.col = None if symmetric else x.new_zeros(x.shape[0])

    def add(self, i: int, M: torch.Tensor) -> None:
        """Add the block of rows i .. i + M.shape[0]."""
        x, j = self.x, i + M.shape[0]
        xb = x[i:j]
        row_term = (M.sum(1).unsqueeze(-1) * self.x2[i:j]).sum(0)
        self.rows += (2.0 * row_term if self.symmetric else row_term) - 2.0 * (xb * (M @ x)).sum(0)
        if not self.symmetric:
            self.col += M.sum(0)
        for d in self.cyc:
            self.rows[d] += (M * wrap_correction(xb[:, d].unsqueeze(-1) - x[:, d].unsqueeze(-2))).sum()

    def total(self) -> torch.Tensor:
        """c [D]."""
        return self.rows if self.symmetric else self.rows + (self.col.unsqueeze(-1) * self.x2).sum(0)


def lengthscale_to_theta(lengthscale: torch.Tensor) -> torch.Tensor:
    """Convert GPyTorch lengthscales l to FFLUX theta = 1 / (2 l^2).

    gpytorch's RBFKernel is exp(-1/2 sum_d (delta_d / l_d)^2); FFLUX writes exp(-sum_d theta_d delta_d^2).

    Args:
        lengthscale: l, any shape (bohr or radians).

    Returns:
        theta, same shape (bohr^-2 or rad^-2).

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import lengthscale_to_theta
        >>> lengthscale_to_theta(torch.tensor([1.0, 0.5]))
        tensor([0.5000, 2.0000])
    """
    return 0.5 / lengthscale.pow(2)


def theta_to_lengthscale(theta: torch.Tensor) -> torch.Tensor:
    """Convert FFLUX theta to GPyTorch lengthscales l = sqrt(1 / (2 theta)), the inverse of lengthscale_to_theta.

    Args:
        theta: positive inverse squared length scales, any shape.

    Returns:
        l, same shape.

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import theta_to_lengthscale
        >>> theta_to_lengthscale(torch.tensor([0.5, 2.0]))
        tensor([1.0000, 0.5000])
    """
    return (0.5 / theta).sqrt()


def cyclic_mask(cyc: tuple[int, ...], d: int, device: torch.device | str | None = None) -> torch.Tensor | None:
    """Boolean mask [D] with True at the 0-based periodic feature indices `cyc` (None when there are none).

    Example:
        >>> cyclic_mask((2,), 4)
        tensor([False, False,  True, False])
    """
    if not cyc:
        return None
    mask = torch.zeros(d, dtype=torch.bool, device=device)
    mask[list(cyc)] = True
    return mask


def check_kernel_inputs(x: torch.Tensor, log_theta: torch.Tensor) -> None:
    """Raise ValueError unless x is [N, D] and log_theta is [D]."""
    if x.dim() != 2 or log_theta.shape != x.shape[-1:]:
        raise ValueError(f"the FFLUX kernel operators take x [N, D] and log_theta [D], got {tuple(x.shape)} and "
                         f"{tuple(log_theta.shape)}")
