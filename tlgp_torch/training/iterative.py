"""Iterative (CG + Lanczos, pivoted-Cholesky preconditioner) relaxation through gpytorch, for targets too big
for the exact Cholesky path, and the memory estimate that picks the path."""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass

import gpytorch
import torch

from tlgp_torch.likelihoods.memory import (
    GLS_WEIGHTS_BUFFERS,
    GLS_WEIGHTS_FRACTION,
    ITERATIVE_DENSE_BUFFERS,
    LEAN_MIN_N,
    exact_buffers,
    nn_bytes,
)
from tlgp_torch.optim.lbfgs import batched_lbfgs
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.runtime.device import memory_budget
from tlgp_torch.training import settings

log = logging.getLogger(__name__)

__all__ = ["IterativeRelaxation", "IterativeSettings", "choose_relax_path", "relax_iterative"]

RELAX_PATHS = ("auto", "exact", "iterative")
KERNEL_MODES = ("auto", "dense", "blocked", "keops")


@dataclass
class IterativeSettings:
    """gpytorch's iterative path: L-BFGS on the concentrated likelihood estimated by CG + stochastic Lanczos.

    The estimate is ll = -N/2 log(sigma^2) - 1/2 log|R| with R^-1 (y - mu 1) and R^-1 1 by preconditioned CG
    (to cg_tolerance) and log|R| by stochastic Lanczos quadrature with trace_samples probes; the preconditioner
    is a Nystroem approximation on `preconditioner_rank` landmarks (doubled while CG or L-BFGS stalls).

    Raises:
        ValueError: kernel is not one of "auto", "dense", "blocked", "keops".

    Example:
        >>> from tlgp_torch.training.iterative import IterativeSettings
        >>> IterativeSettings().initial_rank(20000), IterativeSettings().initial_rank(300)   # max(500, N/20), <= N
        (1000, 300)
        >>> IterativeSettings(preconditioner_rank=20).initial_rank(80)
        20
        >>> IterativeSettings(kernel="sparse")
        Traceback (most recent call last):
        ...
        ValueError: kernel must be one of ('auto', 'dense', 'blocked', 'keops'), got 'sparse'
    """

    nugget_floor: float = 1e-6       # the nugget is raised to this: CG cannot converge at the exact path's 1e-10
    cg_tolerance: float = 1e-4       # relative residual of the training solves (1e-6 gave the same estimates)
    max_cg_iterations: int = 3000    # a solve that needs more doubles the landmarks and restarts the stage
    # landmarks of the Nystroem preconditioner (also the probes' control variate); None: initial_rank(N)
    preconditioner_rank: int | None = None
    max_preconditioner_rank: int = 4000  # the rank doubles up to this while CG runs out of iterations or L-BFGS stalls
    stall_gtol: float = 0.01         # stalled: L-BFGS stopped with max |d ll / d log theta| / N above this
    trace_samples: int = 64          # probe vectors of the log-determinant and its gradient
    lanczos_iterations: int = 200    # of the stochastic Lanczos quadrature
    weights_tolerance: float = 1e-8  # CG tolerance of the final GLS mean and weights (when no Cholesky fits)
    max_iter: int = 60               # L-BFGS iterations from the transferred seed
    rtol: float = 1e-5               # stop when ll changes by less than rtol |ll| twice in a row
    seed: int = 0                    # of the probe vectors: the same at every evaluation (deterministic estimate)
    # how the kernel is held: "dense" (one n x n matrix and its gradient; fastest), "blocked" (recomputed a row
    # block at every product: O(N) memory, no extra package), "keops" (pykeops symbolic products, O(N) memory);
    # "auto": dense where it fits the memory budget, else KeOps on a GPU where pykeops imports, else blocked
    kernel: str = "auto"

    def __post_init__(self):
        if self.kernel not in KERNEL_MODES:
            raise ValueError(f"kernel must be one of {KERNEL_MODES}, got {self.kernel!r}")

    def initial_rank(self, n: int) -> int:
        """Landmarks of the first stage for n points: preconditioner_rank, or max(500, n / 20) when None (on ethanol
        500 sufficed up to N=8000, and at N=20,000 CG needed 1000: 500 ran it to 3000 iterations, measured)."""
        rank = self.preconditioner_rank if self.preconditioner_rank is not None else max(500, n // 20)
        return min(rank, self.max_preconditioner_rank, n)

    def kernel_storage(self, n: int, device: torch.device, fraction: float = 0.5) -> str:
        """'dense', 'blocked' or 'keops' for n points on device (raises for kernel='keops' without pykeops)."""
        from tlgp_torch.kernels.keops import keops_available
        if self.kernel == "keops" and not keops_available():
            raise ImportError("IterativeSettings(kernel='keops') needs pykeops: pip install 'tlgp_torch[keops]'")
        if self.kernel != "auto":
            return self.kernel
        if nn_bytes(n, ITERATIVE_DENSE_BUFFERS) <= memory_budget(device, fraction):
            return "dense"
        # on the CPU KeOps was no faster than blocked (N=2000: 166-172 s against 148-169 s per estimate, measured)
        # and needs a compiler at first use
        return "keops" if device.type == "cuda" and keops_available() else "blocked"


@dataclass
class IterativeRelaxation:
    """What relax_iterative returns for one target of N points and D features.

    Example:
        >>> import torch
        >>> from tlgp_torch.training.iterative import IterativeSettings, relax_iterative
        >>> x = torch.rand(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> it = IterativeSettings(preconditioner_rank=40, trace_samples=4, lanczos_iterations=10, max_iter=5)
        >>> r = relax_iterative(x, torch.sin(3 * x).sum(-1), None, torch.ones(2, dtype=torch.float64), 1e-6, it)
        >>> r.theta.shape, r.weights.shape, r.nugget, r.ranks, r.kernel
        (torch.Size([2]), torch.Size([40]), 1e-06, [40], 'dense')
    """

    theta: torch.Tensor              # [D] FFLUX theta at the accepted point
    nugget: float                    # the nugget used (raised to IterativeSettings.nugget_floor)
    mean: float                      # GLS mean (y units)
    sigma2: float                    # process variance estimate at theta
    weights: torch.Tensor            # [N] FFLUX weights R^-1 (y - mean)
    ll_concentrated_estimate: float  # CG/Lanczos estimate of the concentrated log-likelihood at theta
    steps: int                       # L-BFGS iterations over all preconditioner stages
    evals: int                       # likelihood estimates, the final one included
    ranks: list[int]                 # preconditioner landmarks of each stage
    reason: str                      # why L-BFGS stopped in the last stage
    seconds: float                   # wall time (not device-synchronised)
    kernel: str                      # how the kernel was held: "dense", "blocked" or "keops"


def choose_relax_path(path: str, n: int, device: torch.device, fraction: float) -> str:
    """'exact' or 'iterative' for a target of n points: path itself unless 'auto', then from the memory estimate.

    "auto" picks "exact" when the exact path's n x n buffers (likelihoods.memory.exact_buffers) fit
    `fraction` of the free memory of `device`, else "iterative" (logged as a warning).

    Args:
        path: "auto", "exact" or "iterative" (TransferTrainer's relax_path).
        n: number of training points of the target.
        device: where the relaxation runs.
        fraction: of the free RAM / GPU memory the relaxation may use.

    Returns:
        "exact" or "iterative".

    Raises:
        ValueError: path is none of RELAX_PATHS.

    Example:
        >>> import torch
        >>> from tlgp_torch.training.iterative import choose_relax_path
        >>> choose_relax_path("auto", 100, torch.device("cpu"), 0.5)    # a few 100 x 100 buffers: well under 1 MB
        'exact'
        >>> choose_relax_path("iterative", 100, torch.device("cpu"), 0.5)
        'iterative'
        >>> choose_relax_path("cg", 100, torch.device("cpu"), 0.5)
        Traceback (most recent call last):
        ...
        ValueError: relax_path must be one of ('auto', 'exact', 'iterative'), got 'cg'
    """
    if path not in RELAX_PATHS:
        raise ValueError(f"relax_path must be one of {RELAX_PATHS}, got {path!r}")
    if path != "auto":
        return path
    need, budget = nn_bytes(n, exact_buffers(n)), memory_budget(device, fraction)
    chosen = "exact" if need <= budget else "iterative"
    if chosen == "iterative":
        log.warning("relaxation of N=%d on %s: the exact path needs %.1f GB > budget %.1f GB: iterative "
                    "(CG + Lanczos); set relax_path='exact' to override, or raise memory_fraction",
                    n, device, need / 1e9, budget / 1e9)
    elif n >= LEAN_MIN_N:
        log.info("relaxation of N=%d on %s: exact, lean (one n x n buffer, %.1f GB of a %.1f GB budget)",
                 n, device, need / 1e9, budget / 1e9)
    return chosen


def relax_iterative(x: torch.Tensor, y: torch.Tensor, cyclic: torch.Tensor | None, theta0: torch.Tensor,
                    nugget: float, iterative: IterativeSettings | None = None, lower: torch.Tensor | None = None,
                    upper: torch.Tensor | None = None, curvature: tuple | None = None, history: list | None = None,
                    memory_fraction: float = 0.5) -> IterativeRelaxation:
    """Relax one target (x [N, D], y [N]) from theta0 by L-BFGS on the CG/Lanczos estimate of the concentrated ll.

    The objective is the exact path's (FFLUX concentrated likelihood in log theta, GLS mean, fixed nugget), with
    the nugget raised to iterative.nugget_floor; lower/upper bound log theta, curvature seeds L-BFGS's curvature pairs;
    memory_fraction of the free memory decides how the kernel is held (iterative.kernel="auto").
    Each iteration is appended to `history`; a progress line is logged (INFO) every PROGRESS_EVERY_S. Returns an
    IterativeRelaxation. iterative: None means IterativeSettings().

    Args:
        x: [N, D] features; y: [N] targets; cyclic: [D] bool mask of periodic features, or None.
        theta0: [D] the seed's FFLUX theta (from the selected TL source).
        nugget: the fixed nugget (raised to iterative.nugget_floor).
        iterative: the IterativeSettings.
        lower, upper: [D] box of log theta, or None.
        memory: L-BFGS curvature pairs to start from, or None.
        history: list receiving one dict per iteration (stage, iter, best_ll, active, landmarks, t), or None.
        memory_fraction: of free memory a dense kernel may use.

    Returns:
        IterativeRelaxation: theta [D], nugget, GLS mean, sigma2, weights [N], the ll estimate and the counts.

    Example:
        >>> import torch
        >>> from tlgp_torch.likelihoods import FFLUXLikelihood
        >>> from tlgp_torch.training.iterative import IterativeSettings, relax_iterative
        >>> x = torch.rand(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> y = torch.sin(3 * x).sum(-1)
        >>> it = IterativeSettings(preconditioner_rank=40, trace_samples=4, lanczos_iterations=10, max_iter=5)
        >>> r = relax_iterative(x, y, None, torch.ones(2, dtype=torch.float64), 1e-6, it)
        >>> exact = FFLUXLikelihood(x, y, nugget=r.nugget)
        >>> ll_seed = float(exact(torch.zeros(1, 2, dtype=torch.float64), grad=False).ll[0])
        >>> ll_end = float(exact(r.theta.log().reshape(1, -1), grad=False).ll[0])
        >>> ll_end > ll_seed                                  # the relaxation climbed the exact likelihood
        True
        >>> # with as many landmarks as points the preconditioner is exact, the probes' variance vanishes and the
        >>> # estimate meets the exact ll (measured: 1.4e-11 relative; the exact preconditioner lets CG converge at
        >>> # once, so the bound 1e-6 leaves a wide margin for other BLAS)
        >>> abs(r.ll_concentrated_estimate - ll_end) < 1e-6 * abs(ll_end)
        True
    """
    from tlgp_torch.likelihoods.iterative import IterativeLikelihood
    t0 = time.perf_counter()
    iterative = IterativeSettings() if iterative is None else iterative
    n = x.shape[0]
    storage = iterative.kernel_storage(n, x.device, memory_fraction)
    nug = max(float(nugget), iterative.nugget_floor)
    if nug > float(nugget):
        log.info("iterative relaxation of N=%d: nugget %.1e raised to the iterative path's floor %.1e", n,
                 float(nugget), nug)
    log.info("iterative relaxation of N=%d: kernel %s (%s)", n, storage, {
        "dense": f"one n x n matrix and its gradient, {nn_bytes(n, ITERATIVE_DENSE_BUFFERS) / 1e9:.1f} GB",
        "blocked": "recomputed a row block at every product, O(N) memory; slower than dense",
        "keops": "KeOps symbolic products, O(N) memory"}[storage])
    log_theta = theta0.to(x).log().reshape(1, -1)
    rank, ranks, evals, iters = iterative.initial_rank(n), [], 0, 0
    cap = min(iterative.max_preconditioner_rank, n)
    last_log, cg_warned = [t0], [False]
    while True:
        lik = IterativeLikelihood(x, y, cyclic, nug, kernel=storage, cg_tolerance=iterative.cg_tolerance,
                                  max_cg_iterations=iterative.max_cg_iterations, preconditioner_rank=rank,
                                  trace_samples=iterative.trace_samples,
                                  lanczos_iterations=iterative.lanczos_iterations, seed=iterative.seed)

        def fun(p, members, lik=lik, rank=rank):
            est = lik(p[0])
            if est.cg_unconverged:
                if rank < cap:
                    raise _CGUnconverged(_cg_summary(est.cg_unconverged))
                if not cg_warned[0]:
                    cg_warned[0] = True
                    log.warning("iterative relaxation of N=%d: CG does not converge even with max_preconditioner_rank"
                                " = %d landmarks (%s): the estimates are unreliable; raise max_cg_iterations or "
                                "max_preconditioner_rank", n, rank, _cg_summary(est.cg_unconverged))
            f = torch.tensor([-est.ll / n], dtype=p.dtype, device=p.device)
            return (f if math.isfinite(est.ll) else torch.full_like(f, math.inf)), (-est.grad / n).reshape(1, -1)

        def progress(k, f, active, rank=rank, done=iters):
            now = time.perf_counter()
            ll = float(-f[0] * n)
            if history is not None:
                history.append({"stage": "relaxation", "iter": done + k, "best_ll": ll, "active": int(active.sum()),
                                "landmarks": rank, "t": now - t0})
            if now - last_log[0] >= settings.PROGRESS_EVERY_S:
                last_log[0] = now
                log.info("iterative relaxation of N=%d: iteration %d, ll estimate %.2f, %d landmarks, %d "
                         "evaluations, %.0f s", n, done + k, ll, rank, evals + lik.n_evals, now - t0)

        try:
            # window=0: the iterative path keeps its own rule (rtol 1e-5; 100 rtol over 10 iterations would be
            # 0.1 % of the ll, not measured there)
            res = batched_lbfgs(fun, log_theta, stop=StoppingRule(rtol=iterative.rtol, max_iter=iterative.max_iter,
                                                                  window=0),
                                lower=lower,
                                upper=upper, f_scale=n, curvature=curvature, callback=progress)
        except _CGUnconverged as err:
            # CG ran out of iterations: the preconditioner is too weak for this kernel, and every evaluation would
            # cost max_cg_iterations products for a biased estimate: double the landmarks, redo this stage
            ranks.append(rank)
            evals += lik.n_evals
            log.warning("iterative relaxation of N=%d: %s with %d landmarks; restarting with %d", n, err, rank,
                        min(2 * rank, cap))
            rank = min(2 * rank, cap)
            continue
        ranks.append(rank)
        evals, iters, log_theta, curvature = evals + lik.n_evals, iters + int(res.n_iter[0]), res.x, None
        # a line search that cannot go on while the estimated gradient is large: the estimate's gradient does not
        # describe the estimate (too few landmarks for this kernel's spectrum): double the rank, continue from here
        gmax = _projected_gmax(res.x[0], res.grad[0], lower, upper)
        if res.reason[0] == "max_iter" or gmax <= iterative.stall_gtol or rank >= cap:
            if gmax > iterative.stall_gtol and res.reason[0] != "max_iter":
                log.warning("iterative relaxation of N=%d stalled at preconditioner rank %d (max_preconditioner_rank)"
                            " with |d ll / d log theta| / N = %.3g: the estimated optimum is unreliable", n, rank,
                            gmax)
            break
        log.warning("iterative relaxation of N=%d: L-BFGS stalled at |d ll / d log theta| / N = %.3g with %d "
                    "landmarks; continuing with %d", n, gmax, rank, min(2 * rank, cap))
        rank = min(2 * rank, cap)
    theta = res.x[0].exp()
    # sigma2 and ll at the accepted point (the last call may be a rejected trial); the GLS mean comes again with the
    # weights, to their tolerance (the training solves' 1e-4 leaves ~1e-7 relative error in it)
    final = lik(res.x[0], grad=False)
    mean, weights = final_mean_and_weights(x, y, cyclic, theta, nug, final.mean, lik, iterative)
    return IterativeRelaxation(theta=theta, nugget=nug, mean=mean, sigma2=final.sigma2, weights=weights,
                               ll_concentrated_estimate=final.ll, steps=iters, evals=evals + 1, ranks=ranks,
                               reason=res.reason[0], seconds=time.perf_counter() - t0, kernel=storage)


def _cg_summary(message: str) -> str:
    """linear_operator's 'CG terminated ...' warning in one short clause."""
    m = re.search(r"CG terminated in (\d+) iterations with average residual norm (\S+) which is larger than the "
                  r"tolerance of (\S+)", message)
    return (f"CG stopped at {m.group(1)} iterations, residual {float(m.group(2)):.2g} > tolerance "
            f"{float(m.group(3)):.0e}") if m else message


class _CGUnconverged(Exception):
    """A CG solve of the relaxation stopped at max_cg_iterations above its tolerance."""


def _projected_gmax(point: torch.Tensor, g: torch.Tensor, lower, upper) -> float:
    """Largest gradient component of a minimisation at point that a bound does not block."""
    free = torch.ones_like(g, dtype=torch.bool)
    if lower is not None:
        free &= ~((point <= lower.to(point)) & (g > 0))
    if upper is not None:
        free &= ~((point >= upper.to(point)) & (g < 0))
    return float((g * free).abs().max())


def final_mean_and_weights(x, y, cyclic, theta: torch.Tensor, nugget: float, centre: float, lik,
                           iterative: IterativeSettings) -> tuple[float, torch.Tensor]:
    """GLS mean and FFLUX weights R^-1 (y - mean) at theta: from one in-place Cholesky factor when a single n x n
    buffer fits the memory budget, else from one preconditioned CG run to iterative.weights_tolerance (warned);
    centre is the estimate's GLS mean, subtracted from y first."""
    from tlgp_torch.likelihoods.gls import gls_from_solves
    from tlgp_torch.models.posterior import fflux_gls_weights
    n = x.shape[0]
    if nn_bytes(n, GLS_WEIGHTS_BUFFERS, 1, x.element_size()) <= memory_budget(x.device, GLS_WEIGHTS_FRACTION):
        return fflux_gls_weights(x, y, theta.reshape(-1), nugget, cyclic, centre=centre)
    log.warning("N=%d: GLS mean and FFLUX weights by preconditioned CG to a relative residual of %.0e (no room for "
                "one Cholesky factor)", n, iterative.weights_tolerance)
    tol = iterative.weights_tolerance
    with torch.no_grad(), lik.context(), gpytorch.settings.cg_tolerance(tol), gpytorch.settings.eval_cg_tolerance(tol):
        sol = lik.preconditioned(theta.log(), grad=False).solve(torch.stack([y - centre, torch.ones_like(y)], -1))
    mean, weights = gls_from_solves(centre, sol)
    return float(mean), weights
