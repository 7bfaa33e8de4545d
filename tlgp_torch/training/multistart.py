"""Shared machinery of the trainers: objective adapter, chunked multi-start optimisation, final evaluation."""
from __future__ import annotations

import math
import time

import torch

from tlgp_torch.likelihoods.exact import FFLUXLikelihood
from tlgp_torch.likelihoods.memory import MULTISTART_BUFFERS, members_that_fit
from tlgp_torch.optim.adam import batched_adam
from tlgp_torch.optim.lbfgs import OptimResult, batched_lbfgs
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.runtime.device import memory_budget
from tlgp_torch.training import settings as training_settings
from tlgp_torch.training.settings import FitSettings, log


def make_likelihood(settings: FitSettings, x: torch.Tensor, y: torch.Tensor,
                    cyclic: torch.Tensor | None) -> FFLUXLikelihood:
    """FFLUX likelihood object for data x [N, D] or [G, N, D] under settings.

    The likelihood kind is settings.likelihood; the nugget is settings.nugget (fflux convention, fixed) or
    settings.noise_floor (gpytorch convention: the learned nugget's floor, the last optimised parameter).

    Args:
        settings: the trainer's FitSettings.
        x: [N, D] or [G, N, D] features (G groups of training data, e.g. the sources of TL).
        y: [N] or [G, N] targets.
        cyclic: [D] bool mask of the periodic features, or None.

    Returns:
        the FFLUXLikelihood (call it with log parameters [B, P] for ll [B] and grad [B, P]).

    Example:
        >>> import torch
        >>> from tlgp_torch.training.multistart import make_likelihood
        >>> from tlgp_torch.training.settings import FitSettings
        >>> x = torch.rand(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> lik = make_likelihood(FitSettings(), x, torch.sin(3 * x).sum(-1), None)
        >>> lik.n, lik.d, lik.kind, lik.nugget, lik.learn_nugget
        (30, 2, 'concentrated', 1e-10, False)
        >>> make_likelihood(FitSettings(convention="gpytorch"), x, x.sum(-1), None).learn_nugget
        True
    """
    nugget = settings.noise_floor if settings.learn_nugget else settings.nugget
    return FFLUXLikelihood(x, y, cyclic=cyclic, kind=settings.likelihood, nugget=nugget,
                           learn_nugget=settings.learn_nugget)


def optimise(settings: FitSettings, lik: FFLUXLikelihood, starts: torch.Tensor, stop: StoppingRule,
             lower: torch.Tensor, upper: torch.Tensor, member_group: torch.Tensor | None = None,
             history: list | None = None, stage: str = "", optimizer: str | None = None,
             curvature: tuple | None = None, repair: bool = True, known: tuple | None = None) -> OptimResult:
    """Maximise the likelihood from every row of starts [B, P] (log parameters), members batched in memory-sized
    chunks.

    Each member b minimises f_b(u) = -ll(u) / N (u = log theta, plus log nugget when learned) within the box
    [lower, upper], by batched L-BFGS (one history and line search per member) or Adam; infeasible starts are
    first repaired by feasible_starts (unless repair=False).

    Args:
        settings: FitSettings (optimizer, history_size, lr, memory_fraction).
        lik: the FFLUXLikelihood (see make_likelihood).
        starts: [B, P] initial log parameters.
        stop: the StoppingRule of every member.
        lower, upper: [P] or [B, P] box of the log parameters.
        member_group: [B] index of each member's data group in lik (None: one group).
        history: list that receives one dict per iteration and chunk (stage, iter, best_ll, active, ...).
        stage: name used in log lines and history.
        optimizer: "lbfgs" or "adam" (None: settings.optimizer).
        curvature: L-BFGS curvature pairs to start from (one per member), or None.
        repair: first make every start factorisable (feasible_starts, one Cholesky per start); False when the
            caller already knows every start's likelihood is finite.
        known: (f, grad) already evaluated at the starts (L-BFGS only): saves the first evaluation.

    Returns:
        OptimResult: x [B, P] the optima, f [B] = -ll / N there, grad, n_iter, n_evals, converged, reason.

    Example:
        >>> import torch
        >>> from tlgp_torch.training.multistart import make_likelihood, optimise
        >>> from tlgp_torch.training.settings import FitSettings
        >>> from tlgp_torch.training.starts import feature_spread, initial_parameters, parameter_bounds
        >>> x = torch.rand(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> s = FitSettings(device="cpu")
        >>> lik = make_likelihood(s, x, torch.sin(3 * x).sum(-1), None)
        >>> spread = feature_spread(x)
        >>> lower, upper = parameter_bounds(s, spread)
        >>> starts = initial_parameters(s, spread, 3, torch.Generator().manual_seed(0))    # [3, 2] log theta
        >>> res = optimise(s, lik, starts, s.stop, lower, upper)
        >>> res.x.shape, res.converged.tolist()
        (torch.Size([3, 2]), [True, True, True])
        >>> ll_start, ll_end = lik(starts, grad=False).ll, -res.f * lik.n
        >>> bool((ll_end > ll_start).all())               # every member climbed
        True
        >>> # all three reach the same optimum: their ll agree far beyond the stopping rule's rtol
        >>> float(ll_end.max() - ll_end.min()) < 1e-3
        True
    """
    n = lik.n
    opt = optimizer or settings.optimizer
    if repair:
        starts = feasible_starts(lik, starts, upper, member_group)
    budget = memory_budget(starts.device, settings.memory_fraction)
    chunk = members_that_fit(n, MULTISTART_BUFFERS, budget, lik.x.element_size())
    if chunk < starts.shape[0]:
        log.info("%s: %d members in chunks of %d (memory budget)", stage, starts.shape[0], chunk)
    parts = []
    t0 = time.perf_counter()
    last = [t0]
    for start in range(0, starts.shape[0], chunk):
        sel = torch.arange(start, min(start + chunk, starts.shape[0]), device=starts.device)
        groups = None if member_group is None else member_group[sel]

        def fun(p, members, groups=groups):
            ev = lik(p, members, member_group=groups)
            return -ev.ll / n, -ev.grad / n

        def record(iteration, f, active, start=start):
            now = time.perf_counter()
            if now - last[0] >= training_settings.PROGRESS_EVERY_S:
                last[0] = now
                log.info("%s: iteration %d, %d of %d member(s) still optimising, best ll %.2f, %.0f s", stage or "fit",
                         iteration, int(active.sum()), active.numel(), float(-(f.min()) * n), now - t0)
            if history is not None:
                history.append({"stage": stage, "iter": iteration, "best_ll": float(-(f.min()) * n),
                                "active": int(active.sum()) , "chunk_start": start, "t": time.perf_counter() - t0})

        per_member = lambda b: b[sel] if b.dim() == 2 and b.shape[0] == starts.shape[0] else b  # noqa: E731
        kw = dict(stop=stop, lower=per_member(lower), upper=per_member(upper), f_scale=n, callback=record)
        if opt == "lbfgs":
            pairs = None if curvature is None else tuple(t[sel] for t in curvature)
            at_starts = None if known is None else tuple(t[sel] for t in known)
            parts.append(batched_lbfgs(fun, starts[sel], history_size=settings.history_size, curvature=pairs,
                                       start=at_starts, **kw))
        else:
            parts.append(batched_adam(fun, starts[sel], lr=settings.lr, **kw))
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    curvature = None
    if all(p.curvature is not None for p in parts):
        curvature = tuple(torch.cat([p.curvature[i] for p in parts]) for i in range(3))
    return OptimResult(x=cat("x"), f=cat("f"), grad=cat("grad"), n_iter=cat("n_iter"), n_evals=cat("n_evals"),
                       converged=cat("converged"), reason=sum((p.reason for p in parts), []), curvature=curvature)


def feasible_starts(lik: FFLUXLikelihood, starts: torch.Tensor, upper: torch.Tensor,
                    member_group: torch.Tensor | None = None, tries: int = 6) -> torch.Tensor:
    """Repair starts whose kernel matrix cannot be factorised (the wrapped-phi kernel is not positive definite
    for long lengthscales): raise all their thetas x10 (towards K = I) until it factorises, at most `tries` times.

    Args:
        lik: the FFLUXLikelihood.
        starts: [B, P] log parameters (the first D are log theta; a learned log nugget is left alone).
        upper: [P] or [B, P] upper bounds: a raised log theta stops there.
        member_group: [B] data group of each member, or None.
        tries: at most this many x10 raises.

    Returns:
        [B, P] a copy of starts, with the infeasible members' log theta raised by a multiple of log(10).

    Example:
        >>> import math, torch
        >>> from tlgp_torch.training.multistart import feasible_starts, make_likelihood
        >>> from tlgp_torch.training.settings import FitSettings
        >>> phi = torch.linspace(-math.pi, math.pi, 40, dtype=torch.float64)[:-1]       # the whole circle
        >>> x = torch.stack([phi, torch.rand(39, dtype=torch.float64, generator=torch.Generator().manual_seed(1))], -1)
        >>> lik = make_likelihood(FitSettings(), x, torch.sin(phi), torch.tensor([True, False]))
        >>> starts = torch.tensor([[-6.0, 0.0], [1.0, 0.0]], dtype=torch.float64)        # log theta
        >>> lik(starts, grad=False).failed.tolist()   # wrapped kernel at theta = e^-6: eigenvalue -0.04 << -1e-6
        [True, False]
        >>> fixed = feasible_starts(lik, starts, torch.full((2,), 10.0, dtype=torch.float64))
        >>> ((fixed - starts) / math.log(10)).round().tolist()       # raised x10 three times; the other untouched
        [[3.0, 3.0], [0.0, 0.0]]
        >>> lik(fixed, grad=False).failed.tolist()
        [False, False]
    """
    log_params = starts.clone()
    d = lik.d
    upper = upper.expand_as(log_params)
    todo = torch.arange(log_params.shape[0], device=log_params.device)
    for _ in range(tries):
        ev = lik(log_params[todo], todo, grad=False, member_group=member_group)
        todo = todo[ev.failed]
        if not todo.numel():
            break
        log.info("%d start(s) not positive definite: shortening their lengthscales", todo.numel())
        log_params[todo, :d] = torch.minimum(log_params[todo, :d] + math.log(10.0), upper[todo, :d])
    return log_params


__all__ = ["feasible_starts", "make_likelihood", "optimise"]
