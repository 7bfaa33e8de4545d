"""The final evaluation of a fit: both FFLUX likelihoods, mean, nugget and sigma^2 per task."""
from __future__ import annotations

import warnings

import torch

from tlgp_torch.likelihoods.exact import FFLUXLikelihood, NumericalWarning
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
