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

__all__ = ["kernel_sums", "kernel_sums_and_grad", "matmul_layout", "matmul_rounding"]


def matmul_layout(x: torch.Tensor, theta: torch.Tensor, wrap: torch.Tensor,
                  never_wraps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Tensors of B stacked models for kernel_sums: x [B, M, D] (bohr, radians), theta [B, D], wrap [B, D] bool.

    The periodic features cyc [C] (those any model wraps; a feature flagged in `never_wraps` [D], e.g. the ALF
    angle XCP in [0, pi], is left out when all its training values lie in [0, pi]: its differences never
    exceed pi) are re-cut: per model and feature, the branch cut moves to the middle of the widest gap between
    training values, x' = x - shift reduced into [-pi, pi). The wrapped kernel is unchanged (2 pi periodic in
    the difference), and a query q' (re-cut alike) inside the window [max x' - pi, min x' + pi] differs from
    every training value by at most pi: no wrap, so the feature is a plain one in the matmul. For ALF phi
    sampled by MD, the training values span well under pi and every query near them lies in the window.

    Returns x [B, M, D] (re-cut), centre [B, D] (the mean re-cut training point), sqrt_theta [B, D],
    xs = (x' - centre) sqrt(theta) [B, M, D], xs_sq = |xs|^2 [B, M], cyc [C], x_cyc [B, C, M] (the re-cut
    values), theta_cyc [B, C] (theta where the model wraps, else 0), shift, period (2 pi where the model
    wraps, else 0: those are not re-cut), win_lo and win_hi [B, C] (the window; -inf, inf where the model does
    not wrap). Centring keeps the matmul distance |qs|^2 + |xs|^2 - 2 qs.xs accurate: its rounding is eps
    times the squared norms.

    Example:
        >>> x, theta = torch.rand(2, 50, 6, dtype=torch.float64), torch.full((2, 6), 0.5, dtype=torch.float64)
        >>> lay = matmul_layout(x, theta, torch.zeros(2, 6, dtype=torch.bool))
        >>> lay["xs"].shape, lay["cyc"].numel()
        (torch.Size([2, 50, 6]), 0)
    """
    if x.dim() != 3 or theta.shape != (x.shape[0], x.shape[2]) or wrap.shape != theta.shape:
        raise ValueError(f"x must be [B, M, D] with theta and wrap [B, D], got {tuple(x.shape)}, "
                         f"{tuple(theta.shape)}, {tuple(wrap.shape)}")
    any_wrap = wrap.any(0)
    if never_wraps is not None:
        in_range = ((x >= 0) & (x <= math.pi)).all(1).all(0)
        any_wrap = any_wrap & ~(never_wraps & in_range)
    cyc = torch.nonzero(any_wrap).flatten()
    wm = wrap[:, cyc]  # [B, C]
    period = torch.where(wm, torch.full_like(theta[:, cyc], 2 * math.pi), torch.zeros_like(theta[:, cyc]))
    red = _reduce(x[:, :, cyc], torch.zeros_like(period), period)  # [B, M, C] in [-pi, pi) where wrapped
    v = red.sort(1).values
    gaps = torch.cat([v[:, 1:] - v[:, :-1], v[:, :1] + 2 * math.pi - v[:, -1:]], 1)
    widest = gaps.argmax(1, keepdim=True)
    cut = (v.gather(1, widest) + 0.5 * gaps.gather(1, widest)).squeeze(1)
    shift = torch.where(wm, cut + math.pi, torch.zeros_like(cut))
    recut = _reduce(red, shift, period)
    inf = torch.full_like(shift, math.inf)
    win_lo = torch.where(wm, recut.max(1).values - math.pi, -inf)
    win_hi = torch.where(wm, recut.min(1).values + math.pi, inf)
    x = x.clone()
    x[:, :, cyc] = recut
    centre = x.mean(1)
    sqrt_theta = theta.sqrt()
    xs = (x - centre.unsqueeze(1)) * sqrt_theta.unsqueeze(1)
    theta_cyc = torch.where(wm, theta[:, cyc], torch.zeros_like(theta[:, cyc]))
    return {"x": x, "centre": centre, "sqrt_theta": sqrt_theta, "xs": xs, "xs_sq": xs.pow(2).sum(-1), "cyc": cyc,
            "x_cyc": recut.transpose(1, 2).contiguous(), "theta_cyc": theta_cyc, "shift": shift, "period": period,
            "win_lo": win_lo, "win_hi": win_hi}


def _reduce(v: torch.Tensor, shift: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """v - shift reduced into [-pi, pi) where period = 2 pi, unchanged where period = 0 (v [B, M, C], others
    [B, C])."""
    t = v - shift.unsqueeze(1)
    return t - period.unsqueeze(1) * torch.floor((t + math.pi) / (2 * math.pi))


def _query(q: torch.Tensor, cyc: torch.Tensor, shift: torch.Tensor, period: torch.Tensor, win_lo: torch.Tensor,
           win_hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q re-cut [B, F, D], its periodic features [B, F, C], whether any lies outside its window)."""
    t = _reduce(q.index_select(2, cyc), shift, period)
    outside = ((t < win_lo.unsqueeze(1)) | (t > win_hi.unsqueeze(1))).any()
    return q.index_copy(2, cyc, t), t, outside


def matmul_rounding(xs_sq: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Bound [B] on the relative rounding of the matmul form of y = mean + sum_m w_m k_m: its distances round at
    about eps max_m |xs_m|^2 (twice that for the query), which sum_m |w_m| carries into y; `scale` [B] is |y|'s
    size (|mean|). Models beyond a tolerance are evaluated by exact differences instead (`exact`).

    .. math::

        bound_b = 4 eps max_m |xs_bm|^2 sum_m |w_bm| / |scale_b|

    Args:
        xs_sq: [B, M] squared norms |xs_m|^2 of the centred, theta-scaled training points (matmul_layout's "xs_sq").
        weights: [B, M] the models' weights w = R^-1 (y - mean) (y units).
        scale: [B] the size of each model's output (y units); clamped away from 0.

    Returns:
        [B] relative bounds (dimensionless), in the dtype of xs_sq.

    Example:
        >>> xs_sq = torch.tensor([[1.0, 4.0], [100.0, 1.0]], dtype=torch.float64)
        >>> w = torch.tensor([[0.5, -0.5], [1.0, 1.0]], dtype=torch.float64)
        >>> bound = matmul_rounding(xs_sq, w, torch.tensor([2.0, 2.0], dtype=torch.float64))
        >>> (bound / torch.finfo(torch.float64).eps).tolist()    # 4 x max|xs|^2 x sum|w| / scale
        [8.0, 400.0]
    """
    eps = torch.finfo(xs_sq.dtype).eps
    return 4.0 * eps * xs_sq.amax(-1) * weights.abs().sum(-1) / scale.abs().clamp_min(1e-300)


def _exact_distances(q: torch.Tensor, x: torch.Tensor, theta: torch.Tensor, cyc: torch.Tensor,
                     period: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(delta [B, F, M, D] wrapped, sum_d theta_d delta_d^2 [B, F, M]) by differences (no cancellation)."""
    delta = q.unsqueeze(2) - x.unsqueeze(1)
    if cyc.numel() > 0:
        dc = delta.index_select(3, cyc)
        dc = dc - period.unsqueeze(1).unsqueeze(1) * torch.round(dc / (2 * math.pi))
        delta = delta.index_copy(3, cyc, dc)
    return delta, (delta * delta * theta.unsqueeze(1).unsqueeze(1)).sum(-1)


def _distances(q: torch.Tensor, centre: torch.Tensor, sqrt_theta: torch.Tensor, xs: torch.Tensor,
               xs_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(qs [B, F, D], sum_d theta_d (q_d - x_md)^2 [B, F, M] unwrapped, by one batched matmul)."""
    qs = (q - centre.unsqueeze(1)) * sqrt_theta.unsqueeze(1)
    sq = qs.pow(2).sum(-1).unsqueeze(-1) + xs_sq.unsqueeze(1)
    return qs, torch.baddbmm(sq, qs, xs.transpose(1, 2), alpha=-2.0)


def _wrap_excess(t: torch.Tensor, x_cyc: torch.Tensor, theta_cyc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma [B, C, F], 4 pi theta_c (sigma (t_fc - x_mc) - pi) [B, C, F, M]) for t [B, F, C] and x in
    [-pi, pi]; clamped at
    0 this is 4 pi theta_c (|q_fc - x_mc| - pi) where the difference wraps, else 0.

    A difference can exceed pi only in the direction of the query's sign sigma (q > 0: q - x > pi; q < 0:
    q - x < -pi; q = 0: never, and sigma = 0 gives -4 pi^2 theta, clamped to 0): one fused multiply-add over
    [B, C, F, M] (M innermost), theta folded in (theta >= 0).
    """
    qc = t.transpose(1, 2)  # [B, C, F]
    sigma = torch.sign(qc)
    scale = (4.0 * math.pi) * theta_cyc.unsqueeze(-1)  # [B, C, 1]
    start = (scale * (sigma * qc - math.pi)).unsqueeze(-1)
    over = torch.addcmul(start, (scale * sigma).unsqueeze(-1), x_cyc.unsqueeze(2), value=-1.0)
    return sigma, over


def kernel_sums(q: torch.Tensor, centre: torch.Tensor, sqrt_theta: torch.Tensor, xs: torch.Tensor,
                xs_sq: torch.Tensor, weights: torch.Tensor, cyc: torch.Tensor, x_cyc: torch.Tensor,
                theta_cyc: torch.Tensor, shift: torch.Tensor, period: torch.Tensor, win_lo: torch.Tensor,
                win_hi: torch.Tensor, check: bool = True, x: torch.Tensor | None = None) -> torch.Tensor:
    """y_b(q_bf) = sum_m w_bm exp(-sum_d theta_bd delta_bfmd^2) [B, F] at queries q [B, F, D] (one per model).

    delta is FEREBUS's wrapped difference on the periodic features cyc. After the re-cut of matmul_layout,
    wrap(delta)^2 = delta^2 - 4 pi (|delta| - pi) where |delta| > pi, which happens only for a query outside
    its window: the [B, C, F, M] wrap term is computed only then (`check`), or always (check=False: no
    data-dependent branch, for torch.export). Given x (matmul_layout's re-cut x), distances come from exact
    differences instead (for models whose weights would carry the matmul's rounding past a tolerance:
    matmul_rounding). Differentiable by autograd (no in-place operations); the other arguments are those of
    matmul_layout, weights [B, M].

    Example:
        >>> x, theta = torch.rand(1, 40, 3, dtype=torch.float64), torch.full((1, 3), 0.7, dtype=torch.float64)
        >>> lay = matmul_layout(x, theta, torch.zeros(1, 3, dtype=torch.bool))
        >>> w, q = torch.ones(1, 40, dtype=torch.float64), x[:, :2]
        >>> y = kernel_sums(q, weights=w, **lay)
        >>> bool(torch.allclose(y, torch.exp(-(0.7 * (q[0, :, None] - x[0]) ** 2).sum(-1)).sum(-1)))
        True
    """
    q, t, outside = _query(q, cyc, shift, period, win_lo, win_hi)
    if x is not None:
        dist = _exact_distances(q, x, sqrt_theta * sqrt_theta, cyc, period)[1]
    else:
        dist = _distances(q, centre, sqrt_theta, xs, xs_sq)[1]
        if cyc.numel() > 0 and (not check or bool(outside)):
            dist = dist - _wrap_excess(t, x_cyc, theta_cyc)[1].clamp_min(0.0).sum(1)
    k = torch.exp(-dist.clamp_min(0.0))
    return torch.bmm(k, weights.unsqueeze(-1)).squeeze(-1)


def kernel_sums_and_grad(q: torch.Tensor, centre: torch.Tensor, sqrt_theta: torch.Tensor, xs: torch.Tensor,
                         xs_sq: torch.Tensor, weights: torch.Tensor, cyc: torch.Tensor, x_cyc: torch.Tensor,
                         theta_cyc: torch.Tensor, shift: torch.Tensor, period: torch.Tensor, win_lo: torch.Tensor,
                         win_hi: torch.Tensor, check: bool = True,
                         x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [B, F], dy/dq [B, F, D]) of kernel_sums, the gradient analytic (no autograd graph, in-place temporaries).

    dy/dq_d = sum_m w_m k_m (-2 theta_d delta_md) = -2 sqrt(theta_d) (qs_d S - (wk @ xs)_d) with wk_m = w_m k_m,
    S = sum_m wk_m (the re-cut is a shift: d q'/d q = 1), plus, where a query is outside its window, on a
    periodic feature, 4 pi theta_d sum_m wk_m sign(delta_md) [|delta_md| > pi] (the derivative of the wrap term).

    Example:
        >>> x, theta = torch.rand(1, 40, 3, dtype=torch.float64), torch.full((1, 3), 0.7, dtype=torch.float64)
        >>> lay = matmul_layout(x, theta, torch.zeros(1, 3, dtype=torch.bool))
        >>> w, q = torch.ones(1, 40, dtype=torch.float64), x[:, :2] + 0.1
        >>> y, g = kernel_sums_and_grad(q, weights=w, **lay)
        >>> g.shape
        torch.Size([1, 2, 3])
    """
    q, t, outside = _query(q, cyc, shift, period, win_lo, win_hi)
    if x is not None:  # exact differences: dy/dq = -2 theta sum_m wk_m delta_m
        theta = sqrt_theta * sqrt_theta
        delta, dist = _exact_distances(q, x, theta, cyc, period)
        wk = torch.exp(-dist) * weights.unsqueeze(1)
        grad = (wk.unsqueeze(-1) * delta).sum(2) * (-2.0 * theta.unsqueeze(1))
        return wk.sum(-1), grad
    qs, dist = _distances(q, centre, sqrt_theta, xs, xs_sq)
    wrapped = cyc.numel() > 0 and (not check or bool(outside))
    sigma, over = q.new_zeros(0), q.new_zeros(0)
    if wrapped:
        sigma, over = _wrap_excess(t, x_cyc, theta_cyc)
        dist.sub_(over.clamp_min_(0.0).sum(1))  # over [B, C, F, M]
    wk = dist.clamp_min_(0.0).neg_().exp_().mul_(weights.unsqueeze(1))  # [B, F, M]
    total = wk.sum(-1)
    grad = torch.bmm(wk, xs).sub_(qs * total.unsqueeze(-1)).mul_(2.0 * sqrt_theta.unsqueeze(1))
    if wrapped:
        jump = over.sign_().mul_(wk.unsqueeze(1)).sum(-1).mul_(sigma)  # sigma sum_m wk_m [|delta_m| > pi] [B, C, F]
        grad.index_add_(2, cyc, jump.mul_((4.0 * math.pi) * theta_cyc.unsqueeze(-1)).transpose(1, 2))
    return total, grad
