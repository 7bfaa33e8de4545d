"""Batched L-BFGS: one curvature history and one line search per batch member, converged members masked out.

torch.optim.LBFGS optimises one problem; summing independent losses would couple the members' step
sizes. Here every member has its own two-loop recursion, its own Armijo backtracking line search and
its own stopping test, and only the members still running are evaluated.

The objective has the signature `fun(params [b, P], members LongTensor [b]) -> (f [b], grad [b, P])`: it is
called with the rows of the members still running and their indices into the batch, f is minimised, and
f = +inf marks an infeasible point (the line search backs off from it).

Example:
    >>> import torch
    >>> from tlgp_torch.optim import StoppingRule, batched_lbfgs
    >>> target = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-1.0, 1.0]], dtype=torch.float64)
    >>> scale = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)     # three independent quadratics
    >>> def fun(params, members):
    ...     delta = params - target[members]
    ...     return scale[members] * delta.square().sum(-1), 2 * scale[members, None] * delta
    >>> result = batched_lbfgs(fun, torch.zeros(3, 2, dtype=torch.float64), stop=StoppingRule(gtol=1e-8))
    >>> bool(torch.allclose(result.x, target)), result.converged.tolist()
    (True, [True, True, True])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tlgp_torch.optim.stopping import StoppingRule

# fun(params [b, P], members LongTensor [b]) -> (f [b], grad [b, P]); f is minimised, +inf = infeasible
Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class OptimResult:
    """Final parameters, values and per-member counts of a batched optimisation (B members, P parameters).

    Attributes:
        x: final parameters [B, P] (the best iterate for Adam).
        f: objective at x [B].
        grad: gradient at x [B, P].
        n_iter: iterations per member [B].
        n_evals: objective evaluations per member [B] (line-search trials included).
        converged: bool [B]: stopped by the stopping rule, not by max_iter.
        reason: why each member stopped: "converged", "slow progress", "gradient small", "max_iter", "line search
            failed" or
            "infeasible start".
        curvature: L-BFGS curvature pairs (S [B, m, P], Y [B, m, P], valid [B, m]) to warm-start a related problem
            (batched_lbfgs's `curvature`), or None.

    Example:
        >>> import torch
        >>> from tlgp_torch.optim import batched_lbfgs
        >>> fun = lambda params, members: ((params - 1).square().sum(-1), 2 * (params - 1))
        >>> result = batched_lbfgs(fun, torch.zeros(2, 3, dtype=torch.float64))
        >>> result.x.shape, result.f.shape, len(result.reason)
        (torch.Size([2, 3]), torch.Size([2]), 2)
    """

    x: torch.Tensor
    f: torch.Tensor
    grad: torch.Tensor
    n_iter: torch.Tensor
    n_evals: torch.Tensor
    converged: torch.Tensor
    reason: list[str]
    curvature: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (S, Y, valid) curvature pairs


def _two_loop(g, S, Y, rho, valid):
    """Batched L-BFGS two-loop recursion: returns H g for each member (history newest last)."""
    q = g.clone()
    m = S.shape[1]
    alpha = g.new_zeros(g.shape[0], m)
    for i in range(m - 1, -1, -1):
        a = rho[:, i] * (S[:, i] * q).sum(-1) * valid[:, i]
        alpha[:, i] = a
        q -= a.unsqueeze(-1) * Y[:, i]
    # initial Hessian scaling from the newest valid pair
    sy = (S[:, -1] * Y[:, -1]).sum(-1)
    yy = (Y[:, -1] * Y[:, -1]).sum(-1)
    gamma = torch.where(valid[:, -1], sy / yy.clamp_min(1e-300), torch.ones_like(sy))
    r = gamma.unsqueeze(-1) * q
    for i in range(m):
        beta = rho[:, i] * (Y[:, i] * r).sum(-1) * valid[:, i]
        r += S[:, i] * (alpha[:, i] - beta).unsqueeze(-1)
    return r


def _free(g, x, lo, hi):
    """Mask of the parameters free to move: not sitting on a bound that their gradient pushes them through."""
    return ~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))


def batched_lbfgs(
    fun: Objective,
    x0: torch.Tensor,
    stop: StoppingRule | None = None,
    history_size: int = 10,
    max_ls: int = 25,
    c1: float = 1e-4,
    lower: float | torch.Tensor | None = None,
    upper: float | torch.Tensor | None = None,
    f_scale: float = 1.0,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    curvature: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> OptimResult:
    """Minimise fun independently for each row of x0 [B, P]; bounds ([P] or [B, P]) are enforced by projection.

    Each member runs L-BFGS with its own curvature history (two-loop recursion) and an Armijo backtracking line
    search (sufficient decrease f(x + t d) <= f(x) + c1 t g.d, quadratic-interpolation backtracking); a member
    stops when the StoppingRule says so, at gtol, at max_iter, or when its line search fails from steepest
    descent. A parameter on a bound whose gradient points out through it is held there: the direction d moves
    only the free parameters (d = -H g restricted to them), so that the projection onto the bounds does not cut
    the step after the line search has scaled it; gtol is tested on the gradient of the free parameters.

    Args:
        fun: objective fun(params [b, P], members [b]) -> (f [b], grad [b, P]) (see the module docstring).
        x0: starting points [B, P] (projected into the bounds first).
        stop: stopping rule (default StoppingRule()).
        history_size: curvature pairs m kept per member.
        max_ls: line-search trials per iteration.
        c1: Armijo constant.
        lower: lower bound: a float, [P] or [B, P] (None: unbounded).
        upper: upper bound, likewise.
        f_scale: converts f to log-likelihood units for the stopping rule (e.g. n when f = -ll / n).
        callback: called as callback(iteration, f [B], active [B]) after every iteration.
        curvature: initial curvature pairs (S [B, m, P], Y [B, m, P], valid [B, m]), e.g. from a related problem.
        start: (f [B], grad [B, P]) already known at x0 (inside the bounds), e.g. to continue an earlier run:
            saves the first evaluation.

    Returns:
        An OptimResult.

    Example:
        >>> import torch
        >>> from tlgp_torch.optim import batched_lbfgs
        >>> target = torch.tensor([[1.0, -2.0], [3.0, 0.5]], dtype=torch.float64)
        >>> def fun(params, members):
        ...     delta = params - target[members]
        ...     return delta.square().sum(-1), 2 * delta
        >>> result = batched_lbfgs(fun, torch.zeros(2, 2, dtype=torch.float64), lower=0.0)   # x >= 0
        >>> [[round(v, 6) for v in row] for row in result.x.tolist()]
        [[1.0, 0.0], [3.0, 0.5]]
    """
    stop = stop or StoppingRule()
    B, P = x0.shape
    dev, dt = x0.device, x0.dtype
    # bounds: scalars, [P] or per member [B, P]
    lo = torch.as_tensor(-torch.inf if lower is None else lower, dtype=dt, device=dev).expand(B, P)
    hi = torch.as_tensor(torch.inf if upper is None else upper, dtype=dt, device=dev).expand(B, P)
    x = torch.maximum(torch.minimum(x0.clone(), hi), lo)
    all_idx = torch.arange(B, device=dev)
    if start is None:
        f, g = fun(x, all_idx)
    else:
        f, g = start[0].clone(), start[1].clone()
    n_evals = torch.full((B,), int(start is None), dtype=torch.long, device=dev)
    n_iter = torch.zeros(B, dtype=torch.long, device=dev)
    S = x.new_zeros(B, history_size, P)
    Y = x.new_zeros(B, history_size, P)
    rho = x.new_zeros(B, history_size)
    valid = torch.zeros(B, history_size, dtype=torch.bool, device=dev)
    if curvature is not None:
        k = min(history_size, curvature[0].shape[1])
        S[:, -k:], Y[:, -k:], valid[:, -k:] = curvature[0][:, -k:], curvature[1][:, -k:], curvature[2][:, -k:]
        sy0 = (S * Y).sum(-1)
        valid &= sy0 > 0
        rho = torch.where(valid, 1.0 / sy0.clamp_min(1e-300), torch.zeros_like(sy0))
    calm = torch.zeros(B, dtype=torch.long, device=dev)
    past = f.new_full((B, max(stop.window, 1)), torch.inf)   # f at the ends of the last `window` iterations
    active = torch.isfinite(f)
    reason = ["running" if bool(a) else "infeasible start" for a in active]
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    it = 0
    while bool(active.any()):
        it += 1
        idx = torch.nonzero(active).flatten()
        gi, fi, xi = g[idx], f[idx], x[idx]
        # parameters held at a bound by their gradient stay there: the direction moves only the free ones (a step
        # along a direction that the projection then cuts fails Armijo's test and stalls the member)
        free = _free(gi, xi, lo[idx], hi[idx])
        gf = gi * free
        d = -_two_loop(gf, S[idx], Y[idx], rho[idx], valid[idx]) * free
        slope = (d * gi).sum(-1)
        bad = ~(slope < 0) | ~torch.isfinite(slope)
        if bool(bad.any()):  # not a descent direction: reset that member's memory
            d[bad] = -gf[bad]
            slope = torch.where(bad, -(gf * gf).sum(-1), slope)
            valid[idx[bad]] = False
        fresh = ~valid[idx].any(-1)
        t = torch.where(fresh, (1.0 / gf.abs().sum(-1).clamp_min(1e-300)).clamp(max=1.0), torch.ones_like(fi))
        # Armijo backtracking, each member on its own
        searching = torch.ones(idx.numel(), dtype=torch.bool, device=dev)
        x_new, f_new, g_new = xi.clone(), fi.clone(), gi.clone()
        for _ in range(max_ls):
            s_idx = torch.nonzero(searching).flatten()
            m_idx = idx[s_idx]
            trial = torch.maximum(torch.minimum(xi[s_idx] + t[s_idx].unsqueeze(-1) * d[s_idx], hi[m_idx]), lo[m_idx])
            ft, gt = fun(trial, idx[s_idx])
            n_evals[idx[s_idx]] += 1
            ok = torch.isfinite(ft) & (ft <= fi[s_idx] + c1 * t[s_idx] * slope[s_idx])
            acc = s_idx[ok]
            x_new[acc], f_new[acc], g_new[acc] = trial[ok], ft[ok], gt[ok]
            searching[acc] = False
            rej = s_idx[~ok]
            # backtrack: quadratic interpolation, safeguarded to [0.1, 0.5] of the step
            fr, tr, sr = ft[~ok], t[rej], slope[rej]
            tq = -sr * tr * tr / (2.0 * (fr - fi[rej] - sr * tr))
            tq = torch.where(torch.isfinite(tq), tq, 0.5 * tr)
            t[rej] = torch.minimum(torch.maximum(tq, 0.1 * tr), 0.5 * tr)
            if not bool(searching.any()):
                break
        n_iter[idx] += 1
        failed_ls = searching
        s_vec = x_new - xi
        y_vec = g_new - gi
        sy = (s_vec * y_vec).sum(-1)
        upd = (~failed_ls) & (sy > 1e-10 * (y_vec * y_vec).sum(-1).sqrt() * s_vec.norm(dim=-1))
        u_idx = idx[upd]
        if u_idx.numel():
            S[u_idx] = torch.roll(S[u_idx], -1, dims=1)
            Y[u_idx] = torch.roll(Y[u_idx], -1, dims=1)
            rho[u_idx] = torch.roll(rho[u_idx], -1, dims=1)
            valid[u_idx] = torch.roll(valid[u_idx], -1, dims=1)
            S[u_idx, -1], Y[u_idx, -1] = s_vec[upd], y_vec[upd]
            rho[u_idx, -1] = 1.0 / sy[upd]
            valid[u_idx, -1] = True
        small = stop.small_change(fi, f_new, f_scale) & ~failed_ls
        calm[idx] = torch.where(small, calm[idx] + 1, torch.zeros_like(calm[idx]))
        slow = stop.slow_progress(past[idx, 0], f_new, f_scale) & ~failed_ls
        past[idx] = torch.cat([past[idx, 1:], f_new.unsqueeze(-1)], -1)
        x[idx], f[idx], g[idx] = x_new, f_new, g_new
        for j, k in enumerate(idx.tolist()):
            why = None
            if bool(failed_ls[j]):
                # a failed search with memory: retry once from steepest descent; without memory: stop
                if bool(valid[k].any()):
                    valid[k] = False
                    continue
                why = "line search failed"
            elif int(calm[k]) >= stop.patience:
                why = "converged"
            elif bool(slow[j]):
                why = "slow progress"
            elif stop.gtol > 0 and float((g[k] * _free(g[k], x[k], lo[k], hi[k])).abs().max()) <= stop.gtol:
                why = "gradient small"
            elif int(n_iter[k]) >= stop.max_iter:
                why = "max_iter"
            if why is not None:
                active[k] = False
                reason[k] = why
                converged[k] = why != "max_iter"
        if callback is not None:
            callback(it, f, active)
    return OptimResult(x=x, f=f, grad=g, n_iter=n_iter, n_evals=n_evals, converged=converged, reason=reason,
                       curvature=(S, Y, valid))
