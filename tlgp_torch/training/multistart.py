"""Shared machinery of the trainers: objective adapter, chunked multi-start optimisation, final evaluation."""
from __future__ import annotations

import math
import time

import torch

from tlgp_torch.likelihoods.exact import FFLUXLikelihood
from tlgp_torch.optim.adam import batched_adam
from tlgp_torch.optim.lbfgs import OptimResult, batched_lbfgs
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.runtime.device import members_per_chunk, memory_budget
from tlgp_torch.training import settings
from tlgp_torch.training.settings import FitSettings, log


def make_likelihood(s: FitSettings, x: torch.Tensor, y: torch.Tensor, cyclic: torch.Tensor | None) -> FFLUXLikelihood:
    """FFLUX likelihood object for data x [N, D] or [G, N, D] under settings s."""
    return FFLUXLikelihood(x, y, cyclic=cyclic, kind=s.likelihood, nugget=s.nugget if not s.learn_nugget else s.noise_floor,
                           learn_nugget=s.learn_nugget)






def optimise(s: FitSettings, lik: FFLUXLikelihood, u0: torch.Tensor, stop: StoppingRule,
             lower: torch.Tensor, upper: torch.Tensor, member_group: torch.Tensor | None = None,
             history: list | None = None, stage: str = "", optimizer: str | None = None,
             curvature: tuple | None = None, repair: bool = True, known: tuple | None = None) -> OptimResult:
    """Maximise the likelihood from every row of u0, members batched in memory-sized chunks.

    repair: first make every start factorisable (feasible_starts, one Cholesky per start); False when the
    caller already knows every start's likelihood is finite. known: (f, grad) already evaluated at u0 (L-BFGS only)."""
    n = lik.n
    opt = optimizer or s.optimizer
    if repair:
        u0 = feasible_starts(lik, u0, upper, member_group)
    chunk = members_per_chunk(n, memory_budget(u0.device, s.memory_fraction))
    if chunk < u0.shape[0]:
        log.info("%s: %d members in chunks of %d (memory budget)", stage, u0.shape[0], chunk)
    parts = []
    t0 = time.perf_counter()
    last = [t0]
    for start in range(0, u0.shape[0], chunk):
        sel = torch.arange(start, min(start + chunk, u0.shape[0]), device=u0.device)
        groups = None if member_group is None else member_group[sel]

        def fun(p, members, groups=groups):
            ev = lik(p, members, member_group=groups)
            return -ev.ll / n, -ev.grad / n

        def record(it, f, active, start=start):
            now = time.perf_counter()
            if now - last[0] >= settings.PROGRESS_EVERY_S:
                last[0] = now
                log.info("%s: iteration %d, %d of %d member(s) still optimising, best ll %.2f, %.0f s", stage or "fit",
                         it, int(active.sum()), active.numel(), float(-(f.min()) * n), now - t0)
            if history is not None:
                history.append({"stage": stage, "iter": it, "best_ll": float(-(f.min()) * n),
                                "active": int(active.sum()) , "chunk_start": start, "t": time.perf_counter() - t0})

        per_member = lambda b: b[sel] if b.dim() == 2 and b.shape[0] == u0.shape[0] else b  # noqa: E731
        kw = dict(stop=stop, lower=per_member(lower), upper=per_member(upper), f_scale=n, callback=record)
        if opt == "lbfgs":
            pairs = None if curvature is None else tuple(t[sel] for t in curvature)
            at_u0 = None if known is None else tuple(t[sel] for t in known)
            parts.append(batched_lbfgs(fun, u0[sel], history_size=s.history_size, curvature=pairs, start=at_u0, **kw))
        else:
            parts.append(batched_adam(fun, u0[sel], lr=s.lr, **kw))
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    curvature = None
    if all(p.curvature is not None for p in parts):
        curvature = tuple(torch.cat([p.curvature[i] for p in parts]) for i in range(3))
    return OptimResult(x=cat("x"), f=cat("f"), grad=cat("grad"), n_iter=cat("n_iter"), n_evals=cat("n_evals"),
                       converged=cat("converged"), reason=sum((p.reason for p in parts), []), curvature=curvature)


def feasible_starts(lik: FFLUXLikelihood, u0: torch.Tensor, upper: torch.Tensor,
                    member_group: torch.Tensor | None = None, tries: int = 6) -> torch.Tensor:
    """Repair starts whose kernel matrix cannot be factorised (the wrapped-phi kernel is not positive definite
    for long lengthscales): raise all their thetas x10 (towards K = I) until it factorises, at most `tries` times."""
    u = u0.clone()
    d = lik.d
    upper = upper.expand_as(u)
    todo = torch.arange(u.shape[0], device=u.device)
    for _ in range(tries):
        ev = lik(u[todo], todo, grad=False, member_group=member_group)
        todo = todo[ev.failed]
        if not todo.numel():
            break
        log.info("%d start(s) not positive definite: shortening their lengthscales", todo.numel())
        u[todo, :d] = torch.minimum(u[todo, :d] + math.log(10.0), upper[todo, :d])
    return u












__all__ = ["feasible_starts", "make_likelihood", "optimise"]
