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

__all__ = ["kernel_sums", "kernel_sums_and_grad", "matmul_layout", "weight_columns"]


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


def weight_columns(weights: torch.Tensor, xs_sq: torch.Tensor) -> torch.Tensor:
    """[B, M, 3] columns (w, |w| |xs|^2, |w|) of B models' weights w [B, M] and squared norms xs_sq [B, M]: one
    matmul k @ columns gives the prediction sum_m w_m k_m and the two parts of its rounding bound (kernel_sums).

    Example:
        >>> weight_columns(torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 3.0]])).tolist()
        [[[2.0, 1.0, 2.0], [-1.0, 3.0, 1.0]]]
    """
    return torch.stack([weights, weights.abs() * xs_sq, weights.abs()], dim=-1)


def _exact_sums(q: torch.Tensor, x: torch.Tensor, sqrt_theta: torch.Tensor, cyc: torch.Tensor, period: torch.Tensor,
                w: torch.Tensor) -> torch.Tensor:
    """y [B, F] by exact (wrapped) differences: the reference formula, differentiable."""
    dist = _exact_distances(q, x, sqrt_theta * sqrt_theta, cyc, period)[1]
    return torch.bmm(torch.exp(-dist), w.unsqueeze(-1)).squeeze(-1)


def _exact_sums_and_grad(q: torch.Tensor, x: torch.Tensor, sqrt_theta: torch.Tensor, cyc: torch.Tensor,
                         period: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [B, F], dy/dq [B, F, D]) by exact differences: dy/dq = -2 theta sum_m w_m k_m delta_m."""
    theta = sqrt_theta * sqrt_theta
    delta, dist = _exact_distances(q, x, theta, cyc, period)
    wk = torch.exp(-dist) * w.unsqueeze(1)
    return wk.sum(-1), (wk.unsqueeze(-1) * delta).sum(2) * (-2.0 * theta.unsqueeze(1))


def _exceeds(y3: torch.Tensor, qs: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """Whether any query's rounding bound 4 eps sum_m |w_m| k_m (|qs|^2 + |xs_m|^2) exceeds limit [B], from
    y3 = k @ weight_columns [B, F, 3] (eps of float64; TorchScript takes no globals)."""
    bound = (y3[:, :, 1] + qs.pow(2).sum(-1) * y3[:, :, 2]) * 8.881784197001252e-16
    return (bound > limit.unsqueeze(-1)).any()


def kernel_sums(q: torch.Tensor, centre: torch.Tensor, sqrt_theta: torch.Tensor, xs: torch.Tensor,
                xs_sq: torch.Tensor, weights: torch.Tensor, cyc: torch.Tensor, x_cyc: torch.Tensor,
                theta_cyc: torch.Tensor, shift: torch.Tensor, period: torch.Tensor, win_lo: torch.Tensor,
                win_hi: torch.Tensor, x: torch.Tensor | None = None, limit: torch.Tensor | None = None,
                check: bool = True) -> torch.Tensor:
    r"""y_b(q_bf) = sum_m w_bm exp(-sum_d theta_bd delta_bfmd^2) [B, F] at queries q [B, F, D] (one per model).

    delta is FEREBUS's wrapped difference on the periodic features cyc. After the re-cut of matmul_layout,
    wrap(delta)^2 = delta^2 - 4 pi (|delta| - pi) where |delta| > pi, which happens only for a query outside
    its window: the [B, C, F, M] wrap term is computed only then. The matmul distance
    |qs|^2 + |xs|^2 - 2 qs.xs rounds at about eps (|qs|^2 + |xs_m|^2), which the weights carry into y:

    .. math::

        |y_{matmul} - y| \le 4 \epsilon \sum_m |w_m| k_m (|qs|^2 + |xs_m|^2)

    Given x (matmul_layout's re-cut training features) and limit [B] (the largest bound allowed per model, in y
    units), a call whose bound exceeds the limit on any query is recomputed from exact differences (the reference
    formula); x without limit: exact differences always; x None: the matmul form always. check=False (torch.export)
    computes the wrap term always and has no exact fallback here (autograd through torch.cond retraces its
    backward on every call: 0.3 s per ETHANOL call); kernel_sums_and_grad takes it as torch.cond. Differentiable
    by autograd; the other arguments are those of matmul_layout; weights [B, M, 3] from weight_columns.

    Example:
        >>> x, theta = torch.rand(1, 40, 3, dtype=torch.float64), torch.full((1, 3), 0.7, dtype=torch.float64)
        >>> lay = matmul_layout(x, theta, torch.zeros(1, 3, dtype=torch.bool))
        >>> w, q = weight_columns(torch.ones(1, 40, dtype=torch.float64), lay["xs_sq"]), x[:, :2]
        >>> y = kernel_sums(q, weights=w, **lay)
        >>> bool(torch.allclose(y, torch.exp(-(0.7 * (q[0, :, None] - x[0]) ** 2).sum(-1)).sum(-1)))
        True
    """
    q, t, outside = _query(q, cyc, shift, period, win_lo, win_hi)
    w = weights[:, :, 0]
    if x is not None and limit is None:
        return _exact_sums(q, x, sqrt_theta, cyc, period, w)
    qs, dist = _distances(q, centre, sqrt_theta, xs, xs_sq)
    if cyc.numel() > 0 and (not check or bool(outside)):
        dist = dist - _wrap_excess(t, x_cyc, theta_cyc)[1].clamp_min(0.0).sum(1)
    y3 = torch.bmm(torch.exp(-dist.clamp_min(0.0)), weights)
    if check and x is not None and limit is not None and bool(_exceeds(y3, qs, limit)):
        return _exact_sums(q, x, sqrt_theta, cyc, period, w)
    return y3[:, :, 0]


def kernel_sums_and_grad(q: torch.Tensor, centre: torch.Tensor, sqrt_theta: torch.Tensor, xs: torch.Tensor,
                         xs_sq: torch.Tensor, weights: torch.Tensor, cyc: torch.Tensor, x_cyc: torch.Tensor,
                         theta_cyc: torch.Tensor, shift: torch.Tensor, period: torch.Tensor, win_lo: torch.Tensor,
                         win_hi: torch.Tensor, x: torch.Tensor | None = None, limit: torch.Tensor | None = None,
                         check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [B, F], dy/dq [B, F, D]) of kernel_sums, the gradient analytic (no autograd graph, in-place temporaries).

    dy/dq_d = sum_m w_m k_m (-2 theta_d delta_md) = -2 sqrt(theta_d) (qs_d S - (wk @ xs)_d) with wk_m = w_m k_m,
    S = sum_m wk_m (the re-cut is a shift: d q'/d q = 1), plus, where a query is outside its window, on a
    periodic feature, 4 pi theta_d sum_m wk_m sign(delta_md) [|delta_md| > pi] (the derivative of the wrap term).
    x, limit and check as in kernel_sums (the same rounding bound decides the fallback to exact differences).

    Example:
        >>> x, theta = torch.rand(1, 40, 3, dtype=torch.float64), torch.full((1, 3), 0.7, dtype=torch.float64)
        >>> lay = matmul_layout(x, theta, torch.zeros(1, 3, dtype=torch.bool))
        >>> w, q = weight_columns(torch.ones(1, 40, dtype=torch.float64), lay["xs_sq"]), x[:, :2] + 0.1
        >>> y, g = kernel_sums_and_grad(q, weights=w, **lay)
        >>> g.shape
        torch.Size([1, 2, 3])
    """
    q, t, outside = _query(q, cyc, shift, period, win_lo, win_hi)
    w = weights[:, :, 0]
    if x is not None and limit is None:
        return _exact_sums_and_grad(q, x, sqrt_theta, cyc, period, w)
    qs, dist = _distances(q, centre, sqrt_theta, xs, xs_sq)
    if not check and x is not None and not torch.jit.is_scripting():
        return _exported_sums_and_grad(q, outside, qs, dist, sqrt_theta, xs, weights, cyc, period, x, limit)
    wrapped = cyc.numel() > 0 and (not check or bool(outside))
    sigma, over = q.new_zeros(0), q.new_zeros(0)
    if wrapped:
        sigma, over = _wrap_excess(t, x_cyc, theta_cyc)
        dist.sub_(over.clamp_min_(0.0).sum(1))  # over [B, C, F, M]
    k = dist.clamp_min_(0.0).neg_().exp_()  # [B, F, M]
    y3 = torch.bmm(k, weights)
    if x is not None and limit is not None and bool(_exceeds(y3, qs, limit)):
        return _exact_sums_and_grad(q, x, sqrt_theta, cyc, period, w)
    total = y3[:, :, 0]
    wk = k.mul_(w.unsqueeze(1))
    grad = torch.bmm(wk, xs).sub_(qs * total.unsqueeze(-1)).mul_(2.0 * sqrt_theta.unsqueeze(1))
    if wrapped:
        jump = over.sign_().mul_(wk.unsqueeze(1)).sum(-1).mul_(sigma)  # sigma sum_m wk_m [|delta_m| > pi] [B, C, F]
        grad.index_add_(2, cyc, jump.mul_((4.0 * math.pi) * theta_cyc.unsqueeze(-1)).transpose(1, 2))
    return total, grad


@torch.jit.unused
def _exported_sums_and_grad(q: torch.Tensor, outside: torch.Tensor, qs: torch.Tensor, dist: torch.Tensor,
                            sqrt_theta: torch.Tensor, xs: torch.Tensor, weights: torch.Tensor, cyc: torch.Tensor,
                            period: torch.Tensor, x: torch.Tensor,
                            limit: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """kernel_sums_and_grad under torch.export: exact differences (torch.cond) where a query is outside its window
    or past the rounding limit."""
    w = weights[:, :, 0]
    k = torch.exp(-dist.clamp_min(0.0))
    y3 = torch.bmm(k, weights)
    total = y3[:, :, 0]
    grad = (torch.bmm(k * w.unsqueeze(1), xs) - qs * total.unsqueeze(-1)) * (2.0 * sqrt_theta.unsqueeze(1))
    bad = outside
    if limit is not None:
        bad = bad | _exceeds(y3, qs, limit)
    y, g = torch.cond(bad, lambda q, x, s, c, p, w, y, g: _exact_sums_and_grad(q, x, s, c, p, w),
                      lambda q, x, s, c, p, w, y, g: (y.clone(), g.clone()),
                      (_pad(q), x, sqrt_theta, cyc, period, w, _pad(total), _pad(grad)))
    return y[:, :-1], g[:, :-1]


@torch.jit.unused
def _pad(t: torch.Tensor) -> torch.Tensor:
    """t [B, F, ...] with its first frame appended: torch.export asserts F >= 2 on torch.cond's outputs even where
    F = 1 is allowed (pytorch/pytorch#165912), so the branches run on F + 1 frames and the extra one is dropped."""
    return torch.cat([t, t[:, :1]], 1)
