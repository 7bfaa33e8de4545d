"""`fit`'s argument forms and the user-model route: dispatch to the fast or the generic path, write-back.

Accepted forms of `TransferTrainer.fit` / `DirectTrainer.fit` are listed in FIT_FORMS; anything else is a
TypeError that lists them. A user model (ExactGP or ExactMarginalLogLikelihood) is trained in place:

- fast path, where the model is ScaleKernel(ARD RBFKernel or CyclicRBFKernel) + ConstantMean +
  GaussianLikelihood with no priors and no batch: the trainer runs on the analytic concentrated objective
  (gpytorch convention: theta and nugget = noise / outputscale optimised, constant mean and outputscale profiled
  out, so its optimum is the optimum of gpytorch's exact mll), and the optimum is written into the user's
  parameters: lengthscale = 1 / sqrt(2 theta), outputscale = sigma^2, noise = nugget sigma^2, constant = GLS mean.
  A value outside the user's constraint is clamped inside it with a warning naming the constraint and the value,
  and the generic path then relaxes from there to the constrained optimum;
- generic path, for every other model: see training.generic.

The path taken is logged (logger "tlgp_torch.training.user_fit", INFO) and recorded in result.info["path"]
("fast", "fast+generic" after a clamped write-back, "generic"), with the reason in result.info["path_reason"].

Example:
    >>> import torch
    >>> from tlgp_torch.training.user_fit import check_fit_arguments
    >>> x = torch.rand(10, 2, dtype=torch.float64)
    >>> check_fit_arguments((x, x.sum(-1)), None)        # one (x, y) tuple: accepted, returns None
    >>> check_fit_arguments(x, x.sum(-1))                # two tensors: refused, with the accepted forms
    Traceback (most recent call last):
    ...
    TypeError: fit(x, y) with two tensors is not accepted: pass one tuple, fit((x, y)). Accepted forms:
      - fit(dataset) or fit(dataset, prop): ...
"""
from __future__ import annotations

import dataclasses
import logging
import time
import warnings

import torch

from tlgp_torch.kernels.formula import theta_to_lengthscale
from tlgp_torch.runtime.allocator import cpu_allocator
from tlgp_torch.runtime.caller import caller_stacklevel
from tlgp_torch.training.generic import (
    direct_fit,
    finish,
    mll_value,
    optimise_mll,
    profiled_constant,
    transfer_fit,
)
from tlgp_torch.training.result import TrainResult
from tlgp_torch.training.settings import FitSettings
from tlgp_torch.training.user_model import UserModel, inspect_model, is_user_model, set_value

log = logging.getLogger(__name__)
FIT_FORMS = (
    "fit(dataset) or fit(dataset, prop): an AtomDataset and the name of the property to train",
    "fit((x, y)) or fit((x, y, cyclic)): ONE tuple of x [N, D], y [N] and an optional periodic-feature mask [D]",
    "fit(model): a gpytorch.models.ExactGP holding its training data (trained in place)",
    "fit(mll): a gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model) (trained in place)",
)


class ConstraintWarning(UserWarning):
    """A constraint of the user's model decides the fit: the fast path's optimum lay outside it and was clamped
    into it, or the likelihood's noise floor is not small against var(y) (see `check_noise_floor`)."""


NOISE_FLOOR_RATIO = 0.01  # warn when the noise constraint's lower bound is at least this fraction of var(y)


def check_noise_floor(um: UserModel) -> str | None:
    """A warning text when the Gaussian likelihood's noise constraint cannot go below NOISE_FLOOR_RATIO var(y).

    gpytorch's GaussianLikelihood defaults to noise >= 1e-4; on targets in Hartree (ETHANOL energies: var(y) ~ 8e-6)
    that floor is larger than the signal, the data are explained as noise and the mll is a flat ridge along which
    every optimiser crawls. None where the floor is small enough (or there is no such constraint)."""
    noise_covar = getattr(um.likelihood, "noise_covar", None)
    con = getattr(noise_covar, "raw_noise_constraint", None)
    if con is None or not bool(torch.isfinite(con.lower_bound).all()):
        return None
    floor = float(con.lower_bound.max())
    var = float(um.y.detach().to(torch.float64).var(dim=-1).min())
    if var <= 0 or floor < NOISE_FLOOR_RATIO * var:
        return None
    return (f"likelihood.noise_covar.noise is constrained to >= {floor:.3g} ({con}), {floor / var:.3g} x var(y) = "
            f"{var:.3g}: the model cannot fit below that noise and its mll is nearly flat. Standardise y (e.g. "
            f"botorch's Standardize outcome transform) or build GaussianLikelihood(noise_constraint="
            f"gpytorch.constraints.GreaterThan(1e-10))")


def accepted_forms() -> str:
    """The accepted forms of fit, one per line (for error messages and docstrings)."""
    return "\n".join(f"  - {f}" for f in FIT_FORMS)


def check_fit_arguments(data, prop) -> None:
    """Raise a TypeError listing the accepted forms when (data, prop) is none of them."""
    if isinstance(data, torch.Tensor) and isinstance(prop, torch.Tensor):
        raise TypeError("fit(x, y) with two tensors is not accepted: pass one tuple, fit((x, y)). Accepted forms:\n"
                        + accepted_forms())
    if prop is not None and not isinstance(prop, str):
        raise TypeError(f"fit's second argument `prop` must be a property name (str) or None, got "
                        f"{type(prop).__name__}. Accepted forms:\n" + accepted_forms())
    if isinstance(data, tuple):
        if len(data) not in (2, 3):
            raise TypeError(f"fit((x, y[, cyclic])) needs a tuple of 2 or 3 items, got {len(data)}. Accepted forms:\n"
                            + accepted_forms())
        return
    if hasattr(data, "property_names"):
        return
    raise TypeError(f"fit does not accept {type(data).__name__} as its first argument `data`. Accepted forms:\n"
                    + accepted_forms())


def fit_user_model(trainer: FitSettings, obj, method: str) -> TrainResult:
    """Train a user's ExactGP / ExactMarginalLogLikelihood in place by `method` ("TL" or "DL") of `trainer`."""
    if not is_user_model(obj):
        raise TypeError(f"expected a gpytorch model or mll, got {type(obj).__name__}")
    um = inspect_model(obj)
    with cpu_allocator(trainer.cpu_allocator, um.x.device):
        return _fit_user_model(trainer, um, method)


def _fit_user_model(trainer: FitSettings, um: UserModel, method: str) -> TrainResult:
    """fit_user_model after the checks: warn about the noise floor, choose the path, train, record the reason."""
    floor_note = check_noise_floor(um)
    if floor_note is not None:
        warnings.warn(floor_note, ConstraintWarning, stacklevel=caller_stacklevel())
    mode = getattr(trainer, "user_path", "auto")
    if mode == "fast" and um.fast_path_reason is not None:
        raise ValueError(f"user_path='fast' but this model cannot take the fast path: {um.fast_path_reason}")
    fast = um.fast_path_reason is None and mode != "generic"
    reason = "ARD RBF + ConstantMean + GaussianLikelihood" if fast else (um.fast_path_reason or "user_path='generic'")
    log.info("%s of %s: %s path (%s)", method, type(um.model).__name__, "fast" if fast else "generic", reason)
    if fast:
        result = _fast_fit(trainer, um, method)
    elif method == "TL":
        result = transfer_fit(trainer, um)
    else:
        result = direct_fit(trainer, um, trainer.restarts)
    result.info["path_reason"] = reason
    if floor_note is not None:
        result.info["noise_floor"] = floor_note
    return result


def _fast_fit(trainer: FitSettings, um: UserModel, method: str) -> TrainResult:
    """Fit on the analytic objective, write the optimum into the user's parameters (clamped into constraints)."""
    x, y = um.x.detach(), um.y.detach()
    fast = dataclasses.replace(trainer, convention="gpytorch", likelihood="concentrated")
    result = fast.fit((x, y) if um.cyclic is None else (x, y, um.cyclic))
    t0 = time.perf_counter()
    problems = write_optimum(um, result)
    path = "fast"
    if problems:
        for p in problems:
            warnings.warn(f"{p}: clamped into it, then relaxed on the generic path", ConstraintWarning,
                          stacklevel=caller_stacklevel())
        pv = um.parameter_vector()
        rel = optimise_mll(trainer, um, pv, pv.get().unsqueeze(0), trainer.stop, history=result.history,
                           stage="constrained relaxation", profile=profiled_constant(trainer, um))
        result.n_full_evals += int(rel.n_evals.sum())
        path = "fast+generic"
    result.info.update(path=path, ll_fflux=result.ll, constraint_problems=problems)
    result.ll = result.ll_marginal = mll_value(um) * um.n
    result.likelihood = "exact_mll"
    finish(um)
    result.gp = um.model
    result.stage_times["write_back"] = time.perf_counter() - t0
    return result


def write_optimum(um: UserModel, result: TrainResult) -> list[str]:
    """Write a fast-path optimum into the user's ScaleKernel(RBF) + ConstantMean + GaussianLikelihood model.

    lengthscale = 1 / sqrt(2 theta) [D], outputscale = sigma2, noise = nugget sigma2, constant = mean (y units).
    Returns messages for values outside the user's constraints (those values are clamped inside them)."""
    model = um.model
    scale = model.covar_module
    values = [(scale.base_kernel, "lengthscale", theta_to_lengthscale(result.theta).reshape(1, -1),
               "covar_module.base_kernel"),
              (scale, "outputscale", torch.tensor(result.sigma2), "covar_module"),
              (model.mean_module, "constant", torch.tensor(result.mean), "mean_module"),
              (um.likelihood.noise_covar, "noise", torch.tensor([result.nugget * result.sigma2]),
               "likelihood.noise_covar")]
    problems = [set_value(mod, name, value, where) for mod, name, value, where in values]
    return [p for p in problems if p]
