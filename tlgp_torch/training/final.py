"""The final evaluation of a fit: both FFLUX likelihoods, mean, nugget and sigma^2 per task.

For each task b, at theta_b = exp(log_params[b, :D]), `final_states` evaluates the concentrated and the marginal
FFLUX log-likelihoods (see likelihoods.exact), the prediction mean (GLS mean 1^T R^-1 y / 1^T R^-1 1, or mean(y),
by FitSettings.mean_rule) and sigma^2 = (y - mu)^T R^-1 (y - mu) / N (1 for the marginal likelihood).

Example:
    >>> import torch
    >>> from tlgp_torch.likelihoods import FFLUXLikelihood
    >>> from tlgp_torch.training.final import final_states
    >>> from tlgp_torch.training.settings import FitSettings
    >>> x = torch.rand(15, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> lik = FFLUXLikelihood(x, torch.sin(3 * x).sum(-1), nugget=1e-8)
    >>> (state,) = final_states(FitSettings(), lik, torch.zeros(1, 2, dtype=torch.float64))   # theta = 1
    >>> state.theta.tolist(), state.nugget, state.failed
    ([1.0, 1.0], 1e-08, False)
    >>> state.ll_concentrated == float(lik(torch.zeros(1, 2, dtype=torch.float64)).ll[0])
    True
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from linear_operator.utils.warnings import NumericalWarning

from tlgp_torch.likelihoods.exact import Evaluation, FFLUXLikelihood
from tlgp_torch.models.posterior import fflux_weights
from tlgp_torch.runtime.caller import caller_stacklevel
from tlgp_torch.training.settings import FitSettings


@dataclass
class FinalState:
    """One task's model at the end of a fit, or why it failed (failure set, theta NaN, likelihoods -inf)."""

    theta: torch.Tensor      # [D] FFLUX theta
    nugget: float            # the nugget used (fixed, learned, or raised by jitter)
    mean: float              # constant mean for predictions (y units)
    sigma2: float            # process variance (1 for the marginal likelihood)
    ll_concentrated: float   # FFLUX concentrated log-likelihood at theta and nugget
    ll_marginal: float       # FFLUX marginal log-likelihood (NaN where not computed)
    failure: str | None = None

    @property
    def failed(self) -> bool:
        """True when the task has no usable model (see failure)."""
        return self.failure is not None

    @classmethod
    def failed_with(cls, failure: str, d: int, like: torch.Tensor) -> FinalState:
        """The state of a failed task of d features: NaN hyperparameters, -inf likelihoods (theta as `like`)."""
        nan = math.nan
        return cls(theta=like.new_full((d,), nan), nugget=nan, mean=nan, sigma2=nan, ll_concentrated=-math.inf,
                   ll_marginal=-math.inf, failure=failure)


def final_states(settings: FitSettings, lik: FFLUXLikelihood, log_params: torch.Tensor) -> list[FinalState]:
    """Per task (group b of lik, parameters log_params[b]): both FFLUX likelihoods, prediction mean, nugget, sigma2.

    A task whose kernel matrix cannot be factorised even with jitter gets a failed FinalState; others go on.
    """
    b = log_params.shape[0]
    finite = torch.isfinite(log_params).all(-1)
    ev = lik(torch.nan_to_num(log_params), torch.arange(b, device=log_params.device), grad=False,
             member_group=torch.arange(b, device=log_params.device))
    out = []
    for k in range(b):
        if not bool(finite[k]) or bool(ev.failed[k]):
            out.append(FinalState.failed_with(
                f"kernel matrix not positive definite even with jitter up to {lik.max_jitter:.1e} (duplicate training "
                "points, or a periodic feature spanning the whole circle)", lik.d, log_params))
            continue
        nugget = float(ev.nugget[k])
        if bool(ev.jittered[k]):
            ev, nugget = _escalate_for_weights(lik, ev, k, log_params[k], nugget)
            if nugget is None:
                out.append(FinalState.failed_with(
                    f"kernel matrix not positive definite even with jitter up to {lik.max_jitter:.1e} when factorised "
                    "for the weights (duplicate points)", lik.d, log_params))
                continue
            start = float(log_params[k, -1].exp()) if lik.learn_nugget else lik.nugget
            warnings.warn(f"kernel matrix needed jitter: nugget raised from {start:.3g} to {nugget:.3g} "
                          "(near-duplicate training points, or a periodic feature spanning the whole circle: the "
                          "wrapped-difference kernel is not positive definite at long lengthscales)",
                          NumericalWarning, stacklevel=caller_stacklevel())
        out.append(FinalState(
            theta=log_params[k, : lik.d].exp(), nugget=nugget,
            mean=float(ev.mean_gls[k]) if settings.mean_rule == "gls" else float(lik.y[k].mean()),
            sigma2=float(ev.sigma2[k]) if settings.likelihood == "concentrated" else 1.0,
            ll_concentrated=float(ev.ll_concentrated[k]), ll_marginal=float(ev.ll_marginal[k])))
    return out


def _escalate_for_weights(lik: FFLUXLikelihood, ev: Evaluation, k: int, log_params: torch.Tensor,
                          nugget: float) -> tuple[Evaluation, float | None]:
    """A jittered member's nugget is borderline: the weights' own factorisation (one in-place Cholesky, whose last
    bits differ from the batched one) may still fail there. Raise the nugget x10 until it factorises (up to
    max_jitter; None past it) and re-evaluate that member's statistics at the nugget it ends with."""
    x, y, theta = lik.x[k], lik.y[k], log_params[: lik.d].exp()
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
            log_params[: lik.d].reshape(1, -1), grad=False)
        for name in ("ll", "mean", "sigma2", "nugget", "ll_concentrated", "ll_marginal", "mean_gls"):
            getattr(ev, name)[k] = getattr(one, name)[0]
    return ev, nugget
