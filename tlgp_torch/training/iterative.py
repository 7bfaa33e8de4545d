"""Iterative (CG + Lanczos, pivoted-Cholesky preconditioner) relaxation through gpytorch, for targets too big
for the exact Cholesky path, and the memory estimate that picks the path."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import gpytorch
import torch

from ..device import memory_budget
from ..objectives import LEAN_MIN_N

log = logging.getLogger(__name__)

__all__ = ["IterativeSettings", "choose_relax_path", "exact_bytes", "relax_iterative"]

RELAX_PATHS = ("auto", "exact", "iterative")
KEOPS_MODES = ("auto", "on", "off")


@dataclass
class IterativeSettings:
    """gpytorch's iterative path: Adam on the marginal likelihood estimated by CG + stochastic Lanczos."""

    steps: int = 60                  # Adam steps from the transferred seed
    lr: float = 0.03
    cg_tolerance: float = 1e-2       # training solves (gpytorch default 1: too loose for a warm start)
    max_cg_iterations: int = 2000
    preconditioner_rank: int = 200   # pivoted Cholesky rank
    trace_samples: int = 16          # Hutchinson probes of the log-determinant gradient
    noise_floor: float = 1e-6        # on noise / outputscale: CG converges in ~sqrt(1/noise) iterations
    weights_tolerance: float = 1e-8  # CG tolerance of the final FFLUX weights solve
    patience: int = 10               # stop when the loss has not improved by rtol for this many steps
    rtol: float = 1e-5
    seed: int = 0                    # of the random probe vectors (results are reproducible)
    keops: str = "auto"              # KeOps kernel products (O(N) memory): "auto" (when pykeops imports), "on", "off"

    def __post_init__(self):
        if self.keops not in KEOPS_MODES:
            raise ValueError(f"keops must be one of {KEOPS_MODES}, got {self.keops!r}")

    def use_keops(self) -> bool:
        """Whether the relaxation uses CyclicRBFKeOpsKernel (raises for keops='on' without pykeops)."""
        from ..keops_kernel import keops_available
        if self.keops == "off":
            return False
        available = keops_available()
        if self.keops == "on" and not available:
            raise ImportError("IterativeSettings(keops='on') needs pykeops: pip install 'tlgp_torch[keops]'")
        return available


def exact_bytes(n: int, members: int = 1, itemsize: int = 8) -> int:
    """Memory of one exact likelihood+gradient evaluation: K, L, R^-1 and a temporary n x n per member, or from
    LEAN_MIN_N points on the lean path's single n x n buffer (+ a quarter for row-block temporaries)."""
    return int((1.25 if n >= LEAN_MIN_N else 4) * members * n * n * itemsize)


def choose_relax_path(path: str, n: int, device: torch.device, fraction: float) -> str:
    """'exact' or 'iterative' for a target of n points: path itself unless 'auto', then from the memory estimate."""
    if path not in RELAX_PATHS:
        raise ValueError(f"relax_path must be one of {RELAX_PATHS}, got {path!r}")
    if path != "auto":
        return path
    need, budget = exact_bytes(n), memory_budget(device, fraction)
    chosen = "exact" if need <= budget else "iterative"
    if chosen == "iterative":
        from ..keops_kernel import keops_available
        log.warning("relaxation of N=%d on %s: the exact path needs %.1f GB > budget %.1f GB: iterative "
                    "(CG + Lanczos%s); set relax_path='exact' to override, or raise memory_fraction",
                    n, device, need / 1e9, budget / 1e9, ", KeOps kernel products" if keops_available() else
                    "; without pykeops gpytorch stores the dense kernel and its autograd buffers, more than the "
                    "exact path: pip install 'tlgp_torch[keops]'")
    elif n >= LEAN_MIN_N:
        log.info("relaxation of N=%d on %s: exact, lean (one n x n buffer, %.1f GB of a %.1f GB budget)",
                 n, device, need / 1e9, budget / 1e9)
    return chosen


def relax_iterative(x: torch.Tensor, y: torch.Tensor, cyclic: torch.Tensor | None, theta0: torch.Tensor,
                    nugget0: float, it: IterativeSettings = IterativeSettings()) -> dict:
    """Relax one target (x [N, D], y [N]) from theta0 on gpytorch's iterative path.

    Returns theta, nugget (noise / outputscale), mean, sigma2, FFLUX weights (final_weights), the marginal
    log-likelihood estimate (FFLUX units, per the whole set), steps and seconds.
    """
    from ..models import AnisotropicGP
    t0 = time.perf_counter()
    std = float(y.std())
    nugget0 = max(float(nugget0), it.noise_floor * 2)
    keops = it.use_keops()
    if not keops:
        log.info("iterative relaxation of N=%d without KeOps: gpytorch evaluates the dense kernel (several n x n "
                 "buffers); pip install 'tlgp_torch[keops]' for O(N) memory", x.shape[0])
    model = AnisotropicGP.from_fflux(x, y, theta0, float(y.mean()), nugget0, cyclic=cyclic, convention="gpytorch",
                                     sigma2=std * std, noise_floor=it.noise_floor, keops=keops)
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    opt = torch.optim.Adam(model.parameters(), lr=it.lr)
    n = x.shape[0]
    best, stall, steps = math.inf, 0, 0
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _iterative_settings(it):
        torch.manual_seed(it.seed)
        for steps in range(1, it.steps + 1):
            opt.zero_grad()
            loss = -mll(model(x), model.train_targets)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            if not math.isfinite(best) or value < best - it.rtol * abs(best):
                best, stall = value, 0
            else:
                stall += 1
                if stall >= it.patience:
                    break
    params = model.fflux_parameters()
    weights = final_weights(x, y, cyclic, params, model, it)
    # -loss * n is log N(y_s | .) in standardised units; back to y units, then profile sigma2 as FFLUX does
    ll_marginal_sigma = -best * n - n * math.log(float(model.y_std))
    return {"theta": params["theta"].reshape(-1), "nugget": params["nugget"], "mean": params["mean"],
            "sigma2": params["sigma2"], "weights": weights.detach(),
            "ll_concentrated_estimate": ll_marginal_sigma + 0.5 * n * (1.0 + math.log(2 * math.pi)),
            "steps": steps, "seconds": time.perf_counter() - t0, "keops": keops}


def final_weights(x, y, cyclic, params: dict, model, it: IterativeSettings) -> torch.Tensor:
    """FFLUX weights R^-1 (y - mean): one in-place Cholesky when a single n x n buffer fits the memory budget
    (gpytorch's CG stalls near a relative residual of 1e-5 on these ill-conditioned matrices), else a CG solve
    (warned)."""
    from ..predict import fflux_weights
    n = x.shape[0]
    if n * n * x.element_size() * 1.1 <= memory_budget(x.device, 0.8):
        return fflux_weights(x, y, params["theta"].reshape(-1), params["mean"], params["nugget"], cyclic)
    log.warning("N=%d: FFLUX weights by CG (no room for one Cholesky factor); expect ~1e-3 relative error", n)
    with torch.no_grad(), _iterative_settings(it), gpytorch.settings.cg_tolerance(it.weights_tolerance), \
            gpytorch.settings.eval_cg_tolerance(it.weights_tolerance):
        cov = model.likelihood(model(x)).lazy_covariance_matrix  # outputscale * R (standardised units)
        resid = (y - params["mean"]) / float(model.y_std)
        w_std = cov.solve(resid.unsqueeze(-1)).squeeze(-1)
    return w_std * float(model.covar_module.outputscale.detach()) * float(model.y_std)


def _iterative_settings(it: IterativeSettings):
    """gpytorch settings that force CG + Lanczos with a pivoted-Cholesky preconditioner."""
    from contextlib import ExitStack
    stack = ExitStack()
    for ctx in (gpytorch.settings.max_cholesky_size(0), gpytorch.settings.cg_tolerance(it.cg_tolerance),
                gpytorch.settings.max_cg_iterations(it.max_cg_iterations),
                gpytorch.settings.max_preconditioner_size(it.preconditioner_rank),
                gpytorch.settings.num_trace_samples(it.trace_samples),
                gpytorch.settings.fast_computations(covar_root_decomposition=True, log_prob=True, solves=True)):
        stack.enter_context(ctx)
    return stack

