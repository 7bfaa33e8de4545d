"""The FFLUX concentrated log-likelihood and its log-theta gradient estimated on gpytorch's iterative path.

The same objective as FFLUXLikelihood(kind="concentrated") at a fixed nugget: ll = -n/2 log sigma2_GLS - 1/2 log|R|,
with no n x n factorisation. Solves are preconditioned CG (a Nystroem preconditioner on landmarks that pivoted
Cholesky picks at the first evaluation, at every N), the log-determinant is stochastic Lanczos quadrature, its
gradient a Hutchinson estimate with the preconditioner as control variate. Landmarks and probe vectors stay the
same at every evaluation, so the estimate is a deterministic, smooth function of theta that L-BFGS can
line-search. The kernel is one dense n x n matrix (plus two n x n buffers in the backward), or recomputed a row
block at every product (blocked), or KeOps symbolic products (pykeops): the last two store nothing n x n.
"""
from __future__ import annotations

import math
import warnings
from contextlib import ExitStack
from dataclasses import dataclass

import gpytorch
import torch
from linear_operator.operators import (
    AddedDiagLinearOperator,
    DenseLinearOperator,
    DiagLinearOperator,
    LowRankRootAddedDiagLinearOperator,
    LowRankRootLinearOperator,
    PsdSumLinearOperator,
    RootLinearOperator,
)
from linear_operator.utils.cholesky import psd_safe_cholesky
from linear_operator.utils.warnings import NumericalWarning

from tlgp_torch.kernels.blocked import BlockedKernelOperator
from tlgp_torch.kernels.formula import cyclic_indices
from tlgp_torch.kernels.lean import lean_kernel_matrix
from tlgp_torch.likelihoods.landmarks import pivoted_landmarks

__all__ = ["KERNEL_STORAGE", "IterativeEstimate", "IterativeLikelihood", "SolverSettings"]

KERNEL_STORAGE = ("dense", "blocked", "keops")  # how the iterative path holds the n x n kernel


@dataclass
class IterativeEstimate:
    """One evaluation of IterativeLikelihood.

    Attributes:
        ll: the estimated concentrated log-likelihood -n/2 log sigma^2 - 1/2 log|R|.
        grad: d ll / d log theta [D] of the estimate (zeros when evaluated with grad=False).
        mean: the GLS mean 1^T R^-1 y / 1^T R^-1 1 (y units).
        sigma2: the process variance (y - mean)^T R^-1 (y - mean) / n (y units squared).
        cg_unconverged: gpytorch's warning text when a CG solve stopped at max_cg_iterations above its
            tolerance, else "".

    Example:
        >>> import torch
        >>> from tlgp_torch.likelihoods import IterativeEstimate
        >>> est = IterativeEstimate(ll=1.0, grad=torch.zeros(2), mean=0.0, sigma2=1.0)
        >>> est.cg_unconverged == ""
        True
    """

    ll: float
    grad: torch.Tensor
    mean: float
    sigma2: float
    cg_unconverged: str = ""  # gpytorch's message when a CG solve stopped at max_cg_iterations above its tolerance


@dataclass(frozen=True)
class SolverSettings:
    """gpytorch settings of every solve of an IterativeLikelihood (see IterativeLikelihood.context).

    Example:
        >>> SolverSettings(cg_tolerance=1e-6).max_cg_iterations
        3000
    """

    cg_tolerance: float = 1e-4
    max_cg_iterations: int = 3000
    preconditioner_rank: int = 500   # landmarks of the Nystroem preconditioner
    trace_samples: int = 64          # probe vectors of the log-determinant and its gradient
    lanczos_iterations: int = 200    # of the stochastic Lanczos quadrature


class IterativeLikelihood:
    """Concentrated ll(log theta) of one task (x [N, D], y [N]) at a fixed nugget, estimated by CG + Lanczos.

    The estimate of ll = -n/2 log sigma^2_GLS - 1/2 log|R| (R = K + nugget I; see the module docstring) and of its
    gradient needs only products with R, so large N fits where a Cholesky factor would not. Landmarks and probe
    vectors are fixed at the first call, so repeated calls are a deterministic, smooth function of log theta.

    Args:
        x: features [N, D] (bohr / radians).
        y: targets [N].
        cyclic: bool mask [D] of the periodic features, or None.
        nugget: fixed nugget on the diagonal of K.
        kernel: how the n x n kernel is held, one of KERNEL_STORAGE: "dense" (one n x n matrix), "blocked"
            (recomputed a row block per product, no n x n storage) or "keops" (needs pykeops).
        cg_tolerance: relative residual at which CG stops.
        max_cg_iterations: CG iteration cap (a solve that hits it is reported in `cg_unconverged`).
        preconditioner_rank: number of landmarks of the Nystroem preconditioner.
        trace_samples: probe vectors of the stochastic log-determinant and trace estimates.
        lanczos_iterations: Lanczos quadrature iterations of the log-determinant.
        seed: seed of the probe vectors (the same at every call).

    Raises:
        ValueError: unless x is [N, D] and y [N], or for an unknown kernel storage.

    Example:
        >>> import torch
        >>> from tlgp_torch.likelihoods import IterativeLikelihood, fflux_log_likelihood
        >>> x = torch.rand(80, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> y = torch.sin(3 * x).sum(-1)
        >>> lik = IterativeLikelihood(x, y, None, nugget=1e-4, kernel="blocked", preconditioner_rank=20,
        ...                           trace_samples=8, lanczos_iterations=30)
        >>> est = lik(torch.zeros(2, dtype=torch.float64))          # log theta = 0
        >>> exact = fflux_log_likelihood(x, y, torch.ones(2, dtype=torch.float64), nugget=1e-4)
        >>> abs(est.ll - exact) / abs(exact) < 1e-3                 # an estimate, close to the exact value
        True
        >>> est.grad.shape
        torch.Size([2])
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cyclic: torch.Tensor | None, nugget: float, *,
                 kernel: str = "dense", cg_tolerance: float = 1e-4, max_cg_iterations: int = 3000,
                 preconditioner_rank: int = 500, trace_samples: int = 64, lanczos_iterations: int = 200,
                 seed: int = 0):
        if x.dim() != 2 or y.shape != x.shape[:1]:
            raise ValueError(f"IterativeLikelihood takes one task: x [N, D] and y [N], got {tuple(x.shape)}, "
                             f"{tuple(y.shape)}")
        if kernel not in KERNEL_STORAGE:
            raise ValueError(f"kernel must be one of {KERNEL_STORAGE}, got {kernel!r}")
        from tlgp_torch.kernels.cyclic_rbf import CyclicRBFKernel
        cls = CyclicRBFKernel
        if kernel == "keops":
            from tlgp_torch.kernels.keops import CyclicRBFKeOpsKernel
            cls = CyclicRBFKeOpsKernel
        positive = gpytorch.constraints.Positive(transform=torch.exp, inv_transform=torch.log)
        self.kernel = cls(cyclic=cyclic, ard_num_dims=x.shape[1], lengthscale_constraint=positive).to(x)
        self.x, self.y, self.n, self.storage = x, y, x.shape[0], kernel
        self.cyc_idx = cyclic_indices(cyclic)
        self.nugget = float(nugget)
        self.seed = seed
        self.settings = SolverSettings(cg_tolerance=cg_tolerance, max_cg_iterations=max_cg_iterations,
                                       preconditioner_rank=preconditioner_rank, trace_samples=trace_samples,
                                       lanczos_iterations=lanczos_iterations)
        self.n_evals = 0
        self.pivots: torch.Tensor | None = None  # preconditioner landmarks, fixed at the first evaluation
        # centre m0 of y and scale s of the constant column, fixed at the first evaluation (see __call__)
        self.centre: float | None = None
        self.scale: float | None = None

    def context(self) -> ExitStack:
        """gpytorch settings of every solve: CG + Lanczos at any N, preconditioned from the first point on."""
        solver = self.settings
        stack = ExitStack()
        for ctx in (gpytorch.settings.max_cholesky_size(0), gpytorch.settings.min_preconditioning_size(0),
                    gpytorch.settings.cg_tolerance(solver.cg_tolerance),
                    gpytorch.settings.eval_cg_tolerance(solver.cg_tolerance),
                    gpytorch.settings.max_cg_iterations(solver.max_cg_iterations),
                    gpytorch.settings.max_preconditioner_size(solver.preconditioner_rank),
                    gpytorch.settings.num_trace_samples(solver.trace_samples),
                    gpytorch.settings.max_lanczos_quadrature_iterations(solver.lanczos_iterations),
                    gpytorch.settings.fast_computations(covar_root_decomposition=True, log_prob=True, solves=True)):
            stack.enter_context(ctx)
        return stack

    def operator(self, log_theta: torch.Tensor):
        """R = k(x, x) + nugget I as a linear operator, for lengthscales l = (2 theta)^-1/2.

        kernel "dense": one n x n matrix whose autograd graph holds nothing else (lean_kernel_matrix); "blocked":
        no n x n matrix (BlockedKernelOperator); "keops": KeOps symbolic products. Gradients reach the kernel's raw
        lengthscales in every case."""
        with torch.no_grad():
            self.kernel.raw_lengthscale.copy_((-0.5 * (log_theta.to(self.x) + math.log(2.0))).reshape(1, -1))
        nugget = torch.tensor(self.nugget, dtype=self.x.dtype, device=self.x.device)
        if self.storage == "keops":
            return self.kernel(self.x).add_diagonal(nugget)
        # theta = 1 / (2 l^2) with l = exp(raw): log theta = log(1/2) - 2 raw
        # the same values as log_theta, but a function of raw_lengthscale, so that gradients reach it
        log_theta_of_raw = math.log(0.5) - 2.0 * self.kernel.raw_lengthscale.reshape(-1)
        if self.storage == "blocked":
            return BlockedKernelOperator(self.x, log_theta_of_raw, self.cyc_idx).add_diagonal(nugget)
        cyclic = self.kernel.cyclic if self.kernel.cyclic.numel() else None
        return DenseLinearOperator(lean_kernel_matrix(log_theta_of_raw, self.x, cyclic)).add_diagonal(nugget)

    def preconditioned(self, log_theta: torch.Tensor, grad: bool = True):
        """operator(log_theta) with a Nystroem preconditioner P = L L^T + nugget I on fixed landmarks.

        The landmarks are the pivots of a pivoted Cholesky (pivoted_landmarks: ties broken by index) at the first
        evaluation, kept for every later theta: re-pivoting at each theta changes P, hence the probe vectors
        z ~ N(0, P) and the estimate, in jumps of several log-likelihood units that stall L-BFGS's line search.
        L = K[:, piv] chol(K[piv, piv])^-T is differentiable, so gpytorch uses P as the control variate of the trace
        estimate (the exact d log|P| plus probes of the difference); one P serves every solve of the evaluation.
        """
        from tlgp_torch.kernels.cyclic_rbf import CyclicRBFKernel
        R = self.operator(log_theta)
        if self.pivots is None:
            rank = min(self.settings.preconditioner_rank, self.n)
            # the rows come from one formula whatever the storage, and ties break by index: the same landmarks for
            # dense, blocked and KeOps kernels and on every CPU

            def row(i: int) -> torch.Tensor:
                return CyclicRBFKernel.forward(self.kernel, self.x[i:i + 1], self.x)[0]
            ones = torch.ones(self.n, dtype=self.x.dtype, device=self.x.device)  # diag K = exp(0)
            self.pivots = pivoted_landmarks(R._linear_op, rank, row=row, diagonal=ones)
        with torch.set_grad_enabled(grad):
            k_xp = CyclicRBFKernel.forward(self.kernel, self.x, self.x[self.pivots])      # dense [N, k]
            chol = psd_safe_cholesky(k_xp[self.pivots])
            root = torch.linalg.solve_triangular(chol, k_xp.mT, upper=False).mT            # [N, k]
            noise = torch.full((self.n,), self.nugget, dtype=self.x.dtype, device=self.x.device)
            woodbury = LowRankRootAddedDiagLinearOperator(LowRankRootLinearOperator(root), DiagLinearOperator(noise))
            # the probes z ~ N(0, P) come from the operator's samples: a PsdSum samples root @ e1 + sqrt(noise) e2
            # exactly (as gpytorch's own preconditioner); the Woodbury operator would sample by Lanczos
            precond = PsdSumLinearOperator(RootLinearOperator(root), DiagLinearOperator(noise))
            cached = (woodbury._solve, precond, woodbury._logdet())
            if self.centre is None:
                self._fix_centre(woodbury)
        return AddedDiagLinearOperator(R._linear_op, R._diag_tensor, preconditioner_override=lambda _: cached)

    def _fix_centre(self, P) -> None:
        """Centre m0 (the GLS mean under the preconditioner P) and column scale s = (y0' P^-1 y0 / 1' P^-1 1)^1/2 of
        y0 = y - m0: near the GLS mean and balanced columns keep the polarised cross term of __call__ accurate."""
        with torch.no_grad():
            yc = self.y - self.y.mean()
            sol = P.solve(torch.stack([yc, torch.ones_like(self.y)], -1))
            b, c = float(sol[:, 1].sum()), float(sol[:, 0].sum())
            self.centre = float(self.y.mean()) + c / b
            a = float(yc @ sol[:, 0]) - c * c / b  # y0' P^-1 y0 for y0 = yc - (c / b) 1, from the same solves
            self.scale = math.sqrt(a / b) if a > 0 and b > 0 else 1.0

    def __call__(self, log_theta: torch.Tensor, grad: bool = True) -> IterativeEstimate:
        """Estimate at log theta [D]; the gradient is that of the estimated ll (zeros when grad=False).

        Args:
            log_theta: log theta [D] (theta = 1 / (2 l^2)).
            grad: compute d ll / d log theta by backpropagation through the estimate.

        Returns:
            An IterativeEstimate.
        """
        self.n_evals += 1
        self.kernel.zero_grad(set_to_none=True)
        devices = [self.x.device] if self.x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.context(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NumericalWarning)
            torch.manual_seed(self.seed)  # the same probes at every theta: a deterministic estimate
            R = self.preconditioned(log_theta, grad)
            # one CG run for the probes and the GLS terms: with y0 = y - m0 and s fixed, the columns y0, s 1 and
            # y0 + s 1 give a = y0'R^-1 y0, B = s^2 1'R^-1 1 and, by polarisation, sc = s 1'R^-1 y0; the GLS mean is
            # m0 + s sc / B and the quadratic form at it a - sc^2 / B (its gradient is the fixed-mean one there)
            y0 = self.y - self.centre
            s1 = torch.full_like(self.y, self.scale)
            with torch.set_grad_enabled(grad):
                inv_quads, logdet = R.inv_quad_logdet(torch.stack([y0, s1, y0 + s1], -1), logdet=True,
                                                      reduce_inv_quad=False)
                a, big_b, q = inv_quads.unbind(-1)
                sc = 0.5 * (q - a - big_b)
                quad = a - sc * sc / big_b
                mean = self.centre + self.scale * float(sc.detach() / big_b.detach())
                sigma2 = quad / self.n
                ll = -0.5 * self.n * sigma2.log() - 0.5 * logdet
                if grad:
                    ll.backward()
        cg = []  # CG's give-up warnings are reported in the estimate; everything else is passed on
        for w in caught:
            if issubclass(w.category, NumericalWarning) and "CG terminated" in str(w.message):
                cg.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        raw = self.kernel.raw_lengthscale.grad
        # raw = log l = -(log theta + log 2) / 2, so d/d log theta = -1/2 d/d raw
        g = torch.zeros_like(log_theta) if raw is None else -0.5 * raw.detach().reshape(-1).to(log_theta)
        return IterativeEstimate(ll=float(ll.detach()), grad=g, mean=mean, sigma2=float(sigma2.detach()),
                                 cg_unconverged=cg[0] if cg else "")
