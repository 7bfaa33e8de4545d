"""The final evaluation of a fit: both FFLUX likelihoods, mean, nugget and sigma^2 per task."""
from __future__ import annotations

import warnings

import torch

from tlgp_torch.likelihoods.exact import Evaluation, FFLUXLikelihood, NumericalWarning
from tlgp_torch.models.posterior import fflux_weights
from tlgp_torch.training.settings import FitSettings


def final_states(s: FitSettings, lik: FFLUXLikelihood, u: torch.Tensor) -> list[dict]:
    """Per task (group b of lik, parameters u[b]): both FFLUX likelihoods, prediction mean, nugget, sigma2.

    A task whose kernel matrix cannot be factorised even with jitter gets {"failed": reason}; others go on.
    """
    b = u.shape[0]
    finite = torch.isfinite(u).all(-1)
    ev = lik(torch.nan_to_num(u), torch.arange(b, device=u.device), grad=False,
             member_group=torch.arange(b, device=u.device))
    out = []
    for k in range(b):
        if not bool(finite[k]) or bool(ev.failed[k]):
            out.append({"failed": f"kernel matrix not positive definite even with jitter up to {lik.max_jitter:.1e} "
                                  "(duplicate training points, or a periodic feature spanning the whole circle)"})
            continue
        nugget = float(ev.nugget[k])
        if bool(ev.jittered[k]):
            ev, nugget = _escalate_for_weights(lik, ev, k, u[k], nugget)
            if nugget is None:
                out.append({"failed": f"kernel matrix not positive definite even with jitter up to "
                                      f"{lik.max_jitter:.1e} when factorised for the weights (duplicate points)"})
                continue
            start = float(u[k, -1].exp()) if lik.learn_nugget else lik.nugget
            warnings.warn(f"kernel matrix needed jitter: nugget raised from {start:.3g} to {nugget:.3g} "
                          "(near-duplicate training points, or a periodic feature spanning the whole circle: the "
                          "wrapped-difference kernel is not positive definite at long lengthscales)",
                          NumericalWarning, stacklevel=3)
        out.append({"theta": u[k, : lik.d].exp(), "nugget": nugget,
                    "mean": float(ev.mean_gls[k]) if s.mean_rule == "gls" else float(lik.y[k].mean()),
                    "sigma2": float(ev.sigma2[k]) if s.likelihood == "concentrated" else 1.0,
                    "ll_concentrated": float(ev.ll_concentrated[k]), "ll_marginal": float(ev.ll_marginal[k])})
    return out


def _escalate_for_weights(lik: FFLUXLikelihood, ev: Evaluation, k: int, u: torch.Tensor,
                          nugget: float) -> tuple[Evaluation, float | None]:
    """A jittered member's nugget is borderline: the weights' own factorisation (one in-place Cholesky, whose last
    bits differ from the batched one) may still fail there. Raise the nugget x10 until it factorises (up to
    max_jitter; None past it) and re-evaluate that member's statistics at the nugget it ends with."""
    x, y, theta = lik.x[k], lik.y[k], u[: lik.d].exp()
    start = nugget
    while True:
        try:
            fflux_weights(x, y, theta, 0.0, nugget, lik.cyc_mask)
            break
        except torch.linalg.LinAlgError:
            nugget *= 10.0
            if nugget > max(lik.max_jitter, start):
                return ev, None
    if nugget != start:
        one = FFLUXLikelihood(x, y, cyclic=lik.cyc, kind=lik.kind, nugget=nugget, max_jitter=nugget)(
            u[: lik.d].reshape(1, -1), grad=False)
        for name in ("ll", "mean", "sigma2", "nugget", "ll_concentrated", "ll_marginal", "mean_gls"):
            getattr(ev, name)[k] = getattr(one, name)[0]
    return ev, nugget
