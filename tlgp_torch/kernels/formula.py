"""FFLUX RBF kernels: ARD RBF with periodic (wrapped) differences on the ALF phi features."""
from __future__ import annotations

import math

import torch


def wrap_angle(delta: torch.Tensor) -> torch.Tensor:
    """Wrap angle differences into [-pi, pi] as FEREBUS does: sign(d) * (mod(|d| + pi, 2 pi) - pi)."""
    return torch.sign(delta) * (torch.remainder(delta.abs() + math.pi, 2.0 * math.pi) - math.pi)  # scriptable


def wrap_correction(delta: torch.Tensor) -> torch.Tensor:
    """wrap_angle(delta)^2 - delta^2: exactly 0 where |delta| <= pi (no wrap), so a periodic feature that never
    wraps gives bit-for-bit the numbers of a plain one.

    For pi < |delta| <= 3 pi (any two angles of one period, e.g. ALF phi in (-pi, pi]) this is -4 pi (|delta| - pi),
    written in four in-place passes (about 5x faster than the general formula, which larger |delta| fall back to).
    """
    out = delta.abs().sub_(math.pi).clamp_min_(0.0).mul_(-4.0 * math.pi)
    if out.numel() and bool(out.min() < -8.0 * math.pi**2):  # some |delta| > 3 pi: more than one period apart
        out = torch.where(delta.abs() > math.pi, wrap_angle(delta).pow(2) - delta.pow(2), torch.zeros_like(delta))
    return out


def scaled_sq_dist(
    x1: torch.Tensor, x2: torch.Tensor, theta: torch.Tensor, cyclic: torch.Tensor | None = None
) -> torch.Tensor:
    """sum_d theta_d delta_d^2 for all pairs ([..., n, D], [..., m, D], theta [..., D]) -> [..., n, m].

    Every feature goes through one matmul; periodic ones then add theta_d wrap_correction(delta_d), which is
    zero for pairs that do not wrap. The result therefore does not depend on which periodic features are
    flagged as possibly wrapping (e.g. on which other data sets share a batch).
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


def rbf_matrix(
    x1: torch.Tensor, x2: torch.Tensor, theta: torch.Tensor, cyclic: torch.Tensor | None = None
) -> torch.Tensor:
    """FFLUX kernel exp(-sum_d theta_d delta_d^2) between two point sets (theta = 1 / (2 l^2))."""
    return scaled_sq_dist(x1, x2, theta, cyclic).neg_().exp_()


def block_rows_for(x: torch.Tensor) -> int:
    """Rows per block of an x [N, D] kernel so that one block_rows x N temporary takes about 16 MB on the CPU
    (cache-friendly) or 256 MB on a GPU (big enough to fill it)."""
    n = x.shape[-2]
    block_bytes = 2**24 if x.device.type == "cpu" else 2**28
    return max(1, min(n, block_bytes // (n * x.element_size())))


def fill_rbf_matrix(out: torch.Tensor, x: torch.Tensor, theta: torch.Tensor, cyclic: torch.Tensor | None = None,
                    block_rows: int | None = None) -> torch.Tensor:
    """Write the FFLUX kernel of x [N, D] with itself into out [N, N], row block by row block (temporaries are
    block_rows x N, never N x N; default block_rows_for(x))."""
    bs = block_rows or block_rows_for(x)
    for i in range(0, x.shape[0], bs):
        out[i:i + bs] = rbf_matrix(x[i:i + bs], x, theta, cyclic)
    return out


def cyclic_indices(cyclic: torch.Tensor | None) -> tuple[int, ...]:
    """The periodic features of a cyclic mask [D] as a tuple of indices (empty for None)."""
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
    """Convert GPyTorch lengthscales l to FFLUX theta = 1 / (2 l^2)."""
    return 0.5 / lengthscale.pow(2)


def theta_to_lengthscale(theta: torch.Tensor) -> torch.Tensor:
    """Convert FFLUX theta to GPyTorch lengthscales l = sqrt(1 / (2 theta))."""
    return (0.5 / theta).sqrt()


def cyclic_mask(cyc: tuple[int, ...], d: int, device: torch.device | str | None = None) -> torch.Tensor | None:
    """Boolean mask [D] with True at the 0-based periodic feature indices `cyc` (None when there are none)."""
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
