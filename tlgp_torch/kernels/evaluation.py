"""FFLUX predictions y(q) = sum_m w_m k(q, x_m) of many models at once, and their feature gradient, by matmuls.

A model's training set is stored once in the form the matmuls want (`KernelSums.from_models`): centred and
theta-scaled features xs = (x - c) sqrt(theta), their squared norms, and the raw periodic features. A query
q then costs one batched matmul for the distances and one for the gradient, over all models of a molecule
together, with no [F, M, D] temporaries except on the periodic (phi) features, where FEREBUS's wrap is not a
matmul. Everything is scriptable (TorchScript) and traceable (torch.export).
"""
from __future__ import annotations

import math

import torch

__all__ = ["kernel_sums", "kernel_sums_and_grad", "matmul_layout"]


def matmul_layout(x: torch.Tensor, theta: torch.Tensor, wrap: torch.Tensor,
                  never_wraps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Tensors of B stacked models for kernel_sums: x [B, M, D] (bohr, radians), theta [B, D], wrap [B, D] bool.

    Returns centre [B, D] (the mean training point), sqrt_theta [B, D], xs = (x - centre) sqrt(theta)
    [B, M, D], xs_sq = |xs|^2 [B, M], cyc [C] (the periodic feature indices of any model), x_cyc [B, C, M]
    (their raw values, reduced into [-pi, pi]: the wrapped kernel is 2 pi periodic in each of them) and
    theta_cyc [B, C] (theta where the model wraps that feature, 0 where it does not). Features flagged in
    `never_wraps` [D] (e.g. the ALF angle XCP, in [0, pi] for query and training points alike) are left out of
    cyc when all training values lie in [0, pi]: their differences never exceed pi, so the wrap is exactly void.

    Centring keeps the matmul distance |qs|^2 + |xs|^2 - 2 qs.xs accurate: its rounding is eps times the squared
    norms, which centring makes small.

    Example:
        >>> x, theta = torch.rand(2, 50, 6, dtype=torch.float64), torch.full((2, 6), 0.5, dtype=torch.float64)
        >>> lay = matmul_layout(x, theta, torch.zeros(2, 6, dtype=torch.bool))
        >>> lay["xs"].shape, lay["cyc"].numel()
        (torch.Size([2, 50, 6]), 0)
    """
    if x.dim() != 3 or theta.shape != (x.shape[0], x.shape[2]) or wrap.shape != theta.shape:
        raise ValueError(f"x must be [B, M, D] with theta and wrap [B, D], got {tuple(x.shape)}, "
                         f"{tuple(theta.shape)}, {tuple(wrap.shape)}")
    centre = x.mean(1)
    sqrt_theta = theta.sqrt()
    xs = (x - centre.unsqueeze(1)) * sqrt_theta.unsqueeze(1)
    any_wrap = wrap.any(0)
    if never_wraps is not None:
        in_range = ((x >= 0) & (x <= math.pi)).all(1).all(0)
        any_wrap = any_wrap & ~(never_wraps & in_range)
    cyc = torch.nonzero(any_wrap).flatten()
    x_cyc = (torch.remainder(x[:, :, cyc] + math.pi, 2 * math.pi) - math.pi).transpose(1, 2).contiguous()
    theta_cyc = torch.where(wrap[:, cyc], theta[:, cyc], torch.zeros_like(theta[:, cyc]))
    return {"centre": centre, "sqrt_theta": sqrt_theta, "xs": xs, "xs_sq": xs.pow(2).sum(-1), "cyc": cyc,
            "x_cyc": x_cyc, "theta_cyc": theta_cyc}


def _distances(q: torch.Tensor, centre: torch.Tensor, sqrt_theta: torch.Tensor, xs: torch.Tensor,
               xs_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(qs [B, F, D], sum_d theta_d (q_d - x_md)^2 [B, F, M] unwrapped, by one batched matmul)."""
    qs = (q - centre.unsqueeze(1)) * sqrt_theta.unsqueeze(1)
    sq = qs.pow(2).sum(-1).unsqueeze(-1) + xs_sq.unsqueeze(1)
    return qs, torch.baddbmm(sq, qs, xs.transpose(1, 2), alpha=-2.0)


def _wrap_excess(q: torch.Tensor, cyc: torch.Tensor, x_cyc: torch.Tensor,
                 theta_cyc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma [B, C, F], 4 pi theta_c (sigma (q_fc - x_mc) - pi) [B, C, F, M]) for q, x in [-pi, pi]; clamped at
    0 this is 4 pi theta_c (|q_fc - x_mc| - pi) where the difference wraps, else 0.

    A difference can exceed pi only in the direction of the query's sign sigma (q > 0: q - x > pi; q < 0:
    q - x < -pi; q = 0: never, and sigma = 0 gives -4 pi^2 theta, clamped to 0): one fused multiply-add over
    [B, C, F, M] (M innermost), theta folded in (theta >= 0).
    """
    qc = q.index_select(2, cyc).transpose(1, 2)  # [B, C, F]
    sigma = torch.sign(qc)
    scale = (4.0 * math.pi) * theta_cyc.unsqueeze(-1)  # [B, C, 1]
    start = (scale * (sigma * qc - math.pi)).unsqueeze(-1)
    over = torch.addcmul(start, (scale * sigma).unsqueeze(-1), x_cyc.unsqueeze(2), value=-1.0)
    return sigma, over


def kernel_sums(q: torch.Tensor, centre: torch.Tensor, sqrt_theta: torch.Tensor, xs: torch.Tensor,
                xs_sq: torch.Tensor, weights: torch.Tensor, cyc: torch.Tensor, x_cyc: torch.Tensor,
                theta_cyc: torch.Tensor) -> torch.Tensor:
    """y_b(q_bf) = sum_m w_bm exp(-sum_d theta_bd delta_bfmd^2) [B, F] at queries q [B, F, D] (one per model).

    delta is FEREBUS's wrapped difference on the periodic features cyc: for a query and a training value both
    in [-pi, pi], wrap(delta)^2 = delta^2 - 4 pi (|delta| - pi) where |delta| > pi. Differentiable by autograd
    (no in-place operations); the other arguments are those of matmul_layout, weights [B, M].

    Example:
        >>> x, theta = torch.rand(1, 40, 3, dtype=torch.float64), torch.full((1, 3), 0.7, dtype=torch.float64)
        >>> lay = matmul_layout(x, theta, torch.zeros(1, 3, dtype=torch.bool))
        >>> w, q = torch.ones(1, 40, dtype=torch.float64), x[:, :2]
        >>> y = kernel_sums(q, lay["centre"], lay["sqrt_theta"], lay["xs"], lay["xs_sq"], w, lay["cyc"],
        ...                 lay["x_cyc"], lay["theta_cyc"])
        >>> bool(torch.allclose(y, torch.exp(-(0.7 * (q[0, :, None] - x[0]) ** 2).sum(-1)).sum(-1)))
        True
    """
    _, dist = _distances(q, centre, sqrt_theta, xs, xs_sq)
    if cyc.numel() > 0:
        dist = dist - _wrap_excess(q, cyc, x_cyc, theta_cyc)[1].clamp_min(0.0).sum(1)
    k = torch.exp(-dist.clamp_min(0.0))
    return torch.bmm(k, weights.unsqueeze(-1)).squeeze(-1)


def kernel_sums_and_grad(q: torch.Tensor, centre: torch.Tensor, sqrt_theta: torch.Tensor, xs: torch.Tensor,
                         xs_sq: torch.Tensor, weights: torch.Tensor, cyc: torch.Tensor, x_cyc: torch.Tensor,
                         theta_cyc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [B, F], dy/dq [B, F, D]) of kernel_sums, the gradient analytic (no autograd graph, in-place temporaries).

    dy/dq_d = sum_m w_m k_m (-2 theta_d delta_md) = -2 sqrt(theta_d) (qs_d S - (wk @ xs)_d) with wk_m = w_m k_m,
    S = sum_m wk_m, plus, on a periodic feature, 4 pi theta_d sum_m wk_m sign(delta_md) [|delta_md| > pi]
    (the derivative of the wrap term). Two batched matmuls carry all non-periodic features.

    Example:
        >>> x, theta = torch.rand(1, 40, 3, dtype=torch.float64), torch.full((1, 3), 0.7, dtype=torch.float64)
        >>> lay = matmul_layout(x, theta, torch.zeros(1, 3, dtype=torch.bool))
        >>> w, q = torch.ones(1, 40, dtype=torch.float64), x[:, :2] + 0.1
        >>> y, g = kernel_sums_and_grad(q, lay["centre"], lay["sqrt_theta"], lay["xs"], lay["xs_sq"], w,
        ...                             lay["cyc"], lay["x_cyc"], lay["theta_cyc"])
        >>> g.shape
        torch.Size([1, 2, 3])
    """
    qs, dist = _distances(q, centre, sqrt_theta, xs, xs_sq)
    sigma, over = q.new_zeros(0), q.new_zeros(0)
    if cyc.numel() > 0:
        sigma, over = _wrap_excess(q, cyc, x_cyc, theta_cyc)
        dist.sub_(over.clamp_min_(0.0).sum(1))  # over [B, C, F, M]
    wk = dist.clamp_min_(0.0).neg_().exp_().mul_(weights.unsqueeze(1))  # [B, F, M]
    total = wk.sum(-1)
    grad = torch.bmm(wk, xs).sub_(qs * total.unsqueeze(-1)).mul_(2.0 * sqrt_theta.unsqueeze(1))
    if cyc.numel() > 0:
        jump = over.sign_().mul_(wk.unsqueeze(1)).sum(-1).mul_(sigma)  # sigma sum_m wk_m [|delta_m| > pi] [B, C, F]
        grad.index_add_(2, cyc, jump.mul_((4.0 * math.pi) * theta_cyc.unsqueeze(-1)).transpose(1, 2))
    return total, grad
