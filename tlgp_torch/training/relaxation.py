"""The relaxation stage of transfer learning: screen candidate seeds on the full set, relax the best few side by
side, keep the best after a few iterations (one round of successive halving), finish that one alone.

A single relaxation follows its seed into whichever basin the seed lies in. Screening costs one Cholesky per
candidate (no gradient) on the full set; relaxing `keep` seeds side by side for `halving_iters` iterations costs
about (keep - 1) * halving_iters extra evaluations; the rest of the relaxation is the single seed's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from tlgp_torch.likelihoods.exact import FFLUXLikelihood
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.training.multistart import optimise
from tlgp_torch.training.settings import FitSettings

DONE = ("converged", "gradient small", "line search failed", "infeasible start")


@dataclass
class Relaxation:
    """Outcome of relaxing candidate seeds for B tasks.

    x [B, P] and f [B] (f = -ll / N) of the kept candidate; n_iter [B] its iterations (side by side + alone);
    n_evals [B] full-set evaluations of the task, screening included; reason [B] why its optimiser stopped;
    screened_ll [B, C] every candidate's full-set ll at its seed (-inf: infeasible); relaxed [B] the candidates
    relaxed side by side; kept [B] the candidate that was finished.
    """

    x: torch.Tensor
    f: torch.Tensor
    n_iter: torch.Tensor
    n_evals: torch.Tensor
    reason: list[str]
    screened_ll: torch.Tensor
    relaxed: list[list[int]]
    kept: list[int]


def screen(lik: FFLUXLikelihood, candidates: torch.Tensor) -> torch.Tensor:
    """Full-set log-likelihood of every candidate seed, no gradient: candidates [B, C, P] -> ll [B, C] (-inf where
    the kernel matrix does not factorise). Task b is data group b of lik."""
    B, C, P = candidates.shape
    group = torch.arange(B, device=candidates.device).repeat_interleave(C)
    ev = lik(candidates.reshape(B * C, P), grad=False, member_group=group)
    return torch.where(ev.failed, torch.full_like(ev.ll, -torch.inf), ev.ll).reshape(B, C)


def pick_distinct(ll: torch.Tensor, candidates: torch.Tensor, keep: int, tol: float = 0.25) -> list[int]:
    """Indices of up to `keep` candidates (ll [C], candidates [C, P]) by decreasing ll, skipping infeasible ones and
    those within `tol` (max |difference| of log parameters) of a candidate already picked; at least one."""
    order = torch.argsort(ll, descending=True, stable=True).tolist()
    picked: list[int] = []
    for j in order:
        if len(picked) == keep:
            break
        if not bool(torch.isfinite(ll[j])) and picked:
            continue
        if all(float((candidates[j] - candidates[i]).abs().max()) > tol for i in picked):
            picked.append(j)
    return picked


def relax_candidates(s: FitSettings, lik: FFLUXLikelihood, candidates: torch.Tensor, lower: torch.Tensor,
                     upper: torch.Tensor, stop: StoppingRule, keep: int = 2, halving_iters: int = 3,
                     curvature: tuple | None = None, history: list | None = None,
                     optimizer: str | None = None) -> Relaxation:
    """Relax the best `keep` distinct of C candidate seeds per task side by side, then finish the best alone.

    candidates: [B, C, P] seeds (log theta, + log nugget when learned) for task b = data group b of lik;
    lower, upper: [B, P] bounds; stop: the rule of the whole relaxation (its max_iter counts both phases);
    curvature: per-candidate L-BFGS pairs (S [B, C, m, P], Y [B, C, m, P], valid [B, C, m]) or None.
    The side-by-side phase runs `halving_iters` iterations; the candidate with the best ll then goes on with its
    own curvature pairs until `stop` says so. With keep=1 this is a plain relaxation from the best-screened seed.

    Example::

        rel = relax_candidates(settings, lik, seeds[:, None], lo, hi, settings.stop, keep=1)
    """
    B, C, P = candidates.shape
    dev = candidates.device
    ll0 = screen(lik, candidates)
    relaxed = [pick_distinct(ll0[b], candidates[b], keep) for b in range(B)]
    owner = torch.tensor([b for b in range(B) for _ in relaxed[b]], device=dev)
    flat = torch.tensor([b * C + j for b in range(B) for j in relaxed[b]], device=dev)
    u0 = candidates.reshape(B * C, P)[flat]
    pairs = None if curvature is None else tuple(t.reshape(B * C, *t.shape[2:])[flat] for t in curvature)
    n_evals = torch.full((B,), C, dtype=torch.long, device=dev)
    single = all(len(r) == 1 for r in relaxed)
    first_stop = stop if single else dataclasses.replace(stop, max_iter=min(halving_iters, stop.max_iter))
    feasible = bool(torch.isfinite(ll0.reshape(-1)[flat]).all())                   # screened: no repair needed
    first = optimise(s, lik, u0, first_stop, lower[owner], upper[owner], member_group=owner, history=history,
                     stage="relaxation", optimizer=optimizer, curvature=pairs, repair=not feasible)
    n_evals.index_add_(0, owner, first.n_evals)
    best = torch.stack([torch.nonzero(owner == b).flatten()[first.f[owner == b].argmin()] for b in range(B)])
    x, f = first.x[best].clone(), first.f[best].clone()
    n_iter = first.n_iter[best].clone()
    reason = [first.reason[int(i)] for i in best]
    go_on = [b for b in range(B) if not single and reason[b] == "max_iter" and stop.max_iter > halving_iters]
    if go_on:
        idx = torch.tensor(go_on, device=dev)
        rest = dataclasses.replace(stop, max_iter=stop.max_iter - halving_iters)
        carry = None if first.curvature is None else tuple(t[best[idx]] for t in first.curvature)
        second = optimise(s, lik, x[idx], rest, lower[idx], upper[idx], member_group=idx, history=history,
                          stage="relaxation", optimizer=optimizer, curvature=carry, repair=False,
                          known=(first.f[best[idx]], first.grad[best[idx]]))
        x[idx], f[idx] = second.x, second.f
        n_iter[idx] += second.n_iter
        n_evals[idx] += second.n_evals
        for k, b in enumerate(go_on):
            reason[b] = second.reason[k]
    kept = [relaxed[b][int(best[b]) - int(torch.nonzero(owner == b).flatten()[0])] for b in range(B)]
    return Relaxation(x=x, f=f, n_iter=n_iter, n_evals=n_evals, reason=reason, screened_ll=ll0, relaxed=relaxed,
                      kept=kept)


__all__ = ["Relaxation", "pick_distinct", "relax_candidates", "screen"]
