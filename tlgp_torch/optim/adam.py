"""Batched Adam with the same per-member stopping rule and masking as the batched L-BFGS."""
from __future__ import annotations

from typing import Callable

import torch

from tlgp_torch.optim.lbfgs import Objective, OptimResult
from tlgp_torch.optim.stopping import StoppingRule


def batched_adam(
    fun: Objective,
    x0: torch.Tensor,
    stop: StoppingRule | None = None,
    lr: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    lower: float | torch.Tensor | None = None,
    upper: float | torch.Tensor | None = None,
    f_scale: float = 1.0,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> OptimResult:
    """Minimise fun for each row of x0 [B, P] with Adam; members stop on their own, best iterate kept.

    The update per member is torch.optim.Adam's: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
    x -= lr m_hat / (sqrt(v_hat) + eps) with bias-corrected m_hat, v_hat, then projection into the bounds.
    Non-finite gradients count as 0. A member stops when the StoppingRule says so or at max_iter.

    Args:
        fun: objective fun(params [b, P], members [b]) -> (f [b], grad [b, P]), as for batched_lbfgs.
        x0: starting points [B, P].
        stop: stopping rule (default StoppingRule()).
        lr: step size (in the units of x, e.g. log theta).
        betas: (b1, b2) moment decay rates.
        eps: denominator guard.
        lower: lower bound: a float, [P] or [B, P] (None: unbounded).
        upper: upper bound, likewise.
        f_scale: converts f to log-likelihood units for the stopping rule.
        callback: called as callback(iteration, best f [B], active [B]) after every iteration.

    Returns:
        An OptimResult with the best iterate of every member (memory None).

    Example:
        >>> import torch
        >>> from tlgp_torch.optim import StoppingRule, batched_adam
        >>> target = torch.tensor([[1.0, -2.0], [3.0, 0.5]], dtype=torch.float64)
        >>> def fun(params, members):
        ...     delta = params - target[members]
        ...     return delta.square().sum(-1), 2 * delta
        >>> result = batched_adam(fun, torch.zeros(2, 2, dtype=torch.float64), lr=0.1,
        ...                       stop=StoppingRule(rtol=0.0, atol=1e-12, max_iter=1000))
        >>> bool(torch.allclose(result.x, target, atol=1e-3)), result.reason
        (True, ['converged', 'converged'])
    """
    stop = stop or StoppingRule()
    B, _ = x0.shape
    dev = x0.device
    lo = torch.as_tensor(-torch.inf if lower is None else lower, dtype=x0.dtype, device=dev).expand_as(x0)
    hi = torch.as_tensor(torch.inf if upper is None else upper, dtype=x0.dtype, device=dev).expand_as(x0)
    x = torch.maximum(torch.minimum(x0.clone(), hi), lo)
    all_idx = torch.arange(B, device=dev)
    f, g = fun(x, all_idx)
    best_x, best_f, best_g = x.clone(), f.clone(), g.clone()
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    n_iter = torch.zeros(B, dtype=torch.long, device=dev)
    n_evals = torch.ones(B, dtype=torch.long, device=dev)
    calm = torch.zeros(B, dtype=torch.long, device=dev)
    past = f.new_full((B, max(stop.window, 1)), torch.inf)   # best f at the ends of the last `window` iterations
    active = torch.isfinite(f)
    reason = ["running" if bool(a) else "infeasible start" for a in active]
    iteration = 0
    while bool(active.any()):
        iteration += 1
        idx = torch.nonzero(active).flatten()
        gi = torch.nan_to_num(g[idx])
        m[idx] = betas[0] * m[idx] + (1 - betas[0]) * gi
        v[idx] = betas[1] * v[idx] + (1 - betas[1]) * gi * gi
        mh = m[idx] / (1 - betas[0] ** iteration)
        vh = v[idx] / (1 - betas[1] ** iteration)
        x[idx] = torch.maximum(torch.minimum(x[idx] - lr * mh / (vh.sqrt() + eps), hi[idx]), lo[idx])
        f_old = f[idx].clone()
        f[idx], g[idx] = fun(x[idx], idx)
        n_evals[idx] += 1
        n_iter[idx] += 1
        better = f[idx] < best_f[idx]
        b_idx = idx[better]
        best_x[b_idx], best_f[b_idx], best_g[b_idx] = x[b_idx], f[b_idx], g[b_idx]
        small = stop.small_change(f_old, f[idx], f_scale)
        calm[idx] = torch.where(small, calm[idx] + 1, torch.zeros_like(calm[idx]))
        slow = stop.slow_progress(past[idx, 0], best_f[idx], f_scale)
        past[idx] = torch.cat([past[idx, 1:], best_f[idx].unsqueeze(-1)], -1)
        for j, k in enumerate(idx.tolist()):
            why = ("converged" if int(calm[k]) >= stop.patience else "slow progress" if bool(slow[j])
                   else "max_iter" if int(n_iter[k]) >= stop.max_iter else None)
            if why:
                active[k] = False
                reason[k] = why
        if callback is not None:
            callback(iteration, best_f, active)
    converged = torch.tensor([r in ("converged", "slow progress") for r in reason], device=dev)
    return OptimResult(x=best_x, f=best_f, grad=best_g, n_iter=n_iter, n_evals=n_evals, converged=converged,
                       reason=reason)
