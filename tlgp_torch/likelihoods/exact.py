r"""FFLUX marginal and concentrated log-likelihoods, batched, with the analytic ARD gradient.

For n training points with targets y and R = K + nugget I (K_ij = exp(-sum_d theta_d Delta_ij,d^2)):

.. math::

    marginal:      mu = mean(y),   ll = -1/2 (y - mu 1)^T R^-1 (y - mu 1) - 1/2 log|R| - n/2 log(2 pi)
    concentrated:  mu = 1^T R^-1 y / 1^T R^-1 1   (the GLS mean),
                   sigma^2 = (y - mu 1)^T R^-1 (y - mu 1) / n,
                   ll = -n/2 log(sigma^2) - 1/2 log|R|

The concentrated form profiles out the mean and the process variance, so it is scale-free; it is what FEREBUS
maximises. Parameters are u = log(theta) per feature (theta = 1 / (2 l^2)), plus log(nugget) when the nugget
is learned. The gradient is 1/2 tr((a a^T / s - R^-1) dR/du) with a = R^-1 (y - mu 1) and s = sigma^2 (1 for
the marginal form): R^-1 comes from one cholesky_inverse and the contraction with
dR/du_d = -theta_d K o Delta_d^2 is done with matmuls, which is several times cheaper than autograd through
the Cholesky.

Example:
    >>> import torch
    >>> from tlgp_torch.likelihoods import fflux_log_likelihood
    >>> x = torch.rand(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> y = torch.sin(3 * x).sum(-1)
    >>> ll = fflux_log_likelihood(x, y, theta=torch.ones(2, dtype=torch.float64), nugget=1e-6)
    >>> ll > 0      # a smooth function: R^-1 (y - mu) is small, so sigma^2 << 1
    True
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields

import torch
from linear_operator.utils.warnings import NumericalWarning

from tlgp_torch.kernels.formula import (
    SqDistContraction,
    block_rows_for,
    fill_rbf_matrix,
    rbf_matrix,
    scaled_sq_dist,
    wrap_correction,
)
from tlgp_torch.likelihoods.gls import cholesky_in_place, factor_solve, gls_from_solves
from tlgp_torch.likelihoods.memory import CPU_CALL_BUFFERS, CPU_CALL_BYTES, LEAN_MIN_N, members_that_fit

KINDS = ("concentrated", "marginal")
LOG_2PI = math.log(2.0 * math.pi)

__all__ = ["KINDS", "LEAN_MIN_N", "Evaluation", "FFLUXLikelihood", "NumericalWarning", "fflux_log_likelihood"]


@dataclass
class Evaluation:
    """One batched evaluation of FFLUXLikelihood for b members (parameter rows).

    Attributes:
        ll: log-likelihood [b] of the likelihood's kind (-inf where the member failed).
        grad: d ll / d params [b, P] (P = D log-thetas, + 1 log-nugget if learned), or None when grad=False;
            zero rows for failed members. ll is maximised: optimisers minimise -ll.
        mean: the constant mean [b] in y units: the GLS mean (concentrated) or mean(y) (marginal).
        sigma2: process variance [b] in y units squared: (y - mu 1)^T R^-1 (y - mu 1) / n.
        nugget: nugget [b] each member ended with (larger than asked where jitter was needed).
        jittered: bool [b], True where the nugget was raised to factorise R.
        failed: bool [b], True where no factor was found up to max_jitter.
        ll_concentrated: concentrated ll [b], whatever the kind.
        ll_marginal: marginal ll [b], whatever the kind.
        mean_gls: the GLS mean [b], whatever the kind.

    Example:
        >>> import torch
        >>> from tlgp_torch.likelihoods import FFLUXLikelihood
        >>> x = torch.rand(12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> ev = FFLUXLikelihood(x, x.sum(-1), nugget=1e-6)(torch.zeros(3, 2, dtype=torch.float64))
        >>> ev.ll.shape, ev.grad.shape, ev.failed.tolist()
        (torch.Size([3]), torch.Size([3, 2]), [False, False, False])
    """

    ll: torch.Tensor
    grad: torch.Tensor | None
    mean: torch.Tensor
    sigma2: torch.Tensor
    nugget: torch.Tensor
    jittered: torch.Tensor
    failed: torch.Tensor
    ll_concentrated: torch.Tensor
    ll_marginal: torch.Tensor
    mean_gls: torch.Tensor


@dataclass
class Statistics:
    """Both objectives of members from their Cholesky factors (each [b]; a [b, N]): the optimised ll, its mean,
    process variance sigma2, weights a = R^-1 (y - mean) and gradient scale (1 / sigma2 or 1), and both FFLUX
    likelihoods with the GLS mean."""

    ll: torch.Tensor
    mean: torch.Tensor
    a: torch.Tensor
    sigma2: torch.Tensor
    scale: torch.Tensor
    ll_concentrated: torch.Tensor
    ll_marginal: torch.Tensor
    mean_gls: torch.Tensor


class FFLUXLikelihood:
    """Batched FFLUX log-likelihood of one or more data sets (groups) with an analytic gradient.

    Calling it with parameters [b, P] (rows of log theta, + log nugget when learned) evaluates b independent
    models at once and returns an `Evaluation`: the concentrated or marginal ll (see the module docstring) and
    d ll / d params. A member whose R = K + nugget I does not factorise gets its nugget raised tenfold until it
    does (jittered) or passes max_jitter (failed: ll = -inf).

    Args:
        x: features [N, D] or, for G data sets of the same size, [G, N, D] (bohr / radians).
        y: targets [N] or [G, N] (any units; the concentrated ll does not depend on their scale).
        cyclic: bool mask [D] of the periodic features (wrapped differences), or None.
        kind: "concentrated" (FEREBUS's objective) or "marginal".
        nugget: fixed nugget added to the diagonal of K (the initial one when learn_nugget).
        learn_nugget: optimise log(nugget) as parameter P = D + 1.
        max_jitter: largest nugget tried before a member counts as failed.
        cache_bytes: cache the theta-independent wrap corrections of the periodic features when they take at
            most this many bytes.
        lean: evaluate each member in a single n x n buffer (kernel, Cholesky factor and inverse in place, the
            gradient contracted row block by row block with the kernel recomputed), about a quarter of the
            default path's memory; None (default) turns it on from LEAN_MIN_N points.

    Raises:
        ValueError: for an unknown kind, mismatched shapes of x, y or cyclic, non-finite data or a nugget <= 0.

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import rbf_matrix
        >>> from tlgp_torch.likelihoods import FFLUXLikelihood
        >>> x = torch.rand(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> y = torch.sin(3 * x).sum(-1)
        >>> lik = FFLUXLikelihood(x, y, kind="concentrated", nugget=1e-6)
        >>> params = torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)   # log theta, 2 members
        >>> ev = lik(params)
        >>> ev.ll.shape, ev.grad.shape
        (torch.Size([2]), torch.Size([2, 2]))
        >>> # the concentrated formula written out for member 0 (theta = 1)
        >>> R = rbf_matrix(x, x, torch.ones(2, dtype=torch.float64)) + 1e-6 * torch.eye(20, dtype=torch.float64)
        >>> one = torch.ones(20, dtype=torch.float64)
        >>> mu = (one @ torch.linalg.solve(R, y)) / (one @ torch.linalg.solve(R, one))
        >>> sigma2 = (y - mu) @ torch.linalg.solve(R, y - mu) / 20
        >>> ll = -10 * sigma2.log() - 0.5 * torch.logdet(R)
        >>> bool(torch.isclose(ev.ll[0], ll)), bool(torch.isclose(ev.mean[0], mu))
        (True, True)
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        cyclic: torch.Tensor | None = None,
        kind: str = "concentrated",
        nugget: float = 1e-10,
        learn_nugget: bool = False,
        max_jitter: float = 1e-6,
        cache_bytes: float = 2e9,
        lean: bool | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"likelihood kind must be one of {KINDS}, got {kind!r}")
        if x.dim() == 2:
            x, y = x.unsqueeze(0), y.reshape(1, -1)
        if x.dim() != 3 or y.dim() != 2 or y.shape != x.shape[:2]:
            raise ValueError(f"x must be [G, N, D] and y [G, N]; got {tuple(x.shape)} and {tuple(y.shape)}")
        if not torch.isfinite(x).all() or not torch.isfinite(y).all():
            raise ValueError("x and y must be finite (found NaN or inf)")
        if nugget <= 0:
            raise ValueError(f"nugget must be positive, got {nugget}")
        self.x, self.y = x, y
        self.n_groups, self.n, self.d = x.shape
        self.lean = self.n >= LEAN_MIN_N if lean is None else bool(lean)
        self.block_rows = block_rows_for(x)
        self.kind, self.nugget, self.learn_nugget, self.max_jitter = kind, float(nugget), learn_nugget, max_jitter
        cyc = torch.zeros(self.d, dtype=torch.bool) if cyclic is None else torch.as_tensor(cyclic, dtype=torch.bool)
        if cyc.numel() != self.d:
            raise ValueError(f"cyclic mask has {cyc.numel()} entries for {self.d} features")
        # Every feature goes through the matmul; a periodic one that can wrap adds theta_d * wrap_correction, which
        # is exactly 0 for pairs that do not wrap. One whose values span <= pi never wraps: it needs no correction
        # (skipping it changes no bit, so results do not depend on which data sets share a batch).
        if bool(cyc.any()):
            span = (x.amax(dim=(0, 1)) - x.amin(dim=(0, 1))).cpu()
            cyc = cyc & (span > math.pi)
        self.cyc = cyc.to(x.device)
        self.cyc_mask = self.cyc if bool(cyc.any()) else None  # what the kernel functions take (None: no wrapping)
        self.cyc_idx = torch.nonzero(self.cyc).flatten()
        # The corrections do not depend on theta: cache them when they fit.
        n_cyc = int(self.cyc_idx.numel())
        need = self.n_groups * n_cyc * self.n * self.n * x.element_size()
        self.cyc_cache = None
        if n_cyc and need <= cache_bytes and not self.lean:
            xc = x[..., self.cyc_idx].transpose(-1, -2)  # [G, Dc, N]
            self.cyc_cache = wrap_correction(xc.unsqueeze(-1) - xc.unsqueeze(-2))  # [G, Dc, N, N]
        # On the CPU a batch is evaluated a few members at a time, their n x n buffers kept in cache (memory.py).
        on_cpu = x.device.type == "cpu"
        per_call = members_that_fit(self.n, CPU_CALL_BUFFERS, CPU_CALL_BYTES, x.element_size())
        self.members_per_call = per_call if on_cpu else 1 << 30

    @property
    def n_params(self) -> int:
        """Number of optimised parameters P: D log-thetas (+ 1 log-nugget if learned)."""
        return self.d + int(self.learn_nugget)

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split [b, P] parameters (log scale) into theta [b, D] and nugget [b]."""
        theta = params[:, : self.d].exp()
        if self.learn_nugget:
            nug = params[:, self.d].exp()
        else:
            nug = params.new_full((params.shape[0],), self.nugget)
        return theta, nug

    def sq_dist(self, theta: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """sum_d theta_d Delta_d^2 for each member: [b, N, N] (the same bits as kernels.scaled_sq_dist)."""
        xg = self.x[groups]
        if self.cyc_cache is None:
            return scaled_sq_dist(xg, xg, theta, self.cyc_mask)
        dist = scaled_sq_dist(xg, xg, theta)
        for k, d in enumerate(self.cyc_idx.tolist()):  # the order and arithmetic of scaled_sq_dist's corrections
            for i, g in enumerate(groups.tolist()):
                dist[i] += theta[i, d] * self.cyc_cache[g, k]
        return dist.clamp_min_(0.0)

    def __call__(self, params: torch.Tensor, members: torch.Tensor | None = None, grad: bool = True,
                 member_group: torch.Tensor | None = None) -> Evaluation:
        """Evaluate ll and its gradient at params [b, P] (log theta, + log nugget when learned).

        Args:
            params: parameter rows [b, P].
            members: indices [b] of the members being evaluated (an optimiser passes its active members).
            grad: compute d ll / d params.
            member_group: data-set index [B] of every member of the whole batch; member i uses
                x[member_group[members[i]]] (default: all use group 0).

        Returns:
            An Evaluation with [b] entries.
        """
        params = params.to(self.x)
        b = params.shape[0]
        if member_group is None:
            groups = torch.zeros(b, dtype=torch.long, device=params.device)
        else:
            groups = member_group if members is None else member_group[members]
        if b > self.members_per_call or (self.lean and b > 1):
            step = 1 if self.lean else self.members_per_call
            parts = [self._evaluate(params[i:i + step], groups[i:i + step], grad) for i in range(0, b, step)]
            return Evaluation(**{f.name: None if getattr(parts[0], f.name) is None
                                 else torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Evaluation)})
        return self._evaluate(params, groups, grad)

    def _evaluate(self, params: torch.Tensor, groups: torch.Tensor, grad: bool) -> Evaluation:
        """One batched evaluation of members with data groups `groups` (the lean path: one member)."""
        if self.lean:
            return self._evaluate_lean(params, groups, grad)
        return self._evaluate_batched(params, groups, grad)

    def _evaluate_batched(self, params: torch.Tensor, groups: torch.Tensor, grad: bool) -> Evaluation:
        """One batched evaluation: K, its Cholesky factor and R^-1 for every member at once."""
        b = params.shape[0]
        theta, nug = self.split(params)
        K = self.sq_dist(theta, groups).neg_().exp_()
        L, nug_eff, jittered, failed = self._cholesky(K, nug)
        stats = self._statistics(L, self.y[groups])
        a, scale = stats.a, stats.scale
        g = None
        if grad:
            # M = (a a^T / s - R^-1) o K; dll/du_d = -1/2 theta_d sum_ij M_ij Delta_ij,d^2
            W = torch.cholesky_inverse(L).neg_()
            W.baddbmm_(a.unsqueeze(-1), (scale.unsqueeze(-1) * a).unsqueeze(-2))
            trace_w = W.diagonal(dim1=-2, dim2=-1).sum(-1)
            M = W.mul_(K)
            g = params.new_zeros(b, self.n_params)
            xg = self.x[groups]
            contr = 2.0 * (M.sum(-1).unsqueeze(-1) * xg.pow(2)).sum(-2) - 2.0 * (xg * (M @ xg)).sum(-2)
            if self.cyc_idx.numel():
                contr[:, self.cyc_idx] += self._cyc_contract(M, groups)
            g[:, : self.d] = -0.5 * theta * contr
            if self.learn_nugget:
                g[:, self.d] = 0.5 * nug_eff * trace_w
        return self._finish(stats, g, nug_eff, jittered, failed)

    def _statistics(self, L: torch.Tensor, y: torch.Tensor) -> Statistics:
        """Both objectives from the lower Cholesky factor L [b, N, N] (lower triangle read only) of members with
        targets y [b, N]."""
        n = self.n
        # one solve gives both objectives: GLS mean (concentrated) and training mean (marginal)
        sol = factor_solve(L, torch.stack([y, torch.ones_like(y)], -1))
        logdet = 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        mu_gls, a_gls = gls_from_solves(0.0, sol)
        sigma2_gls = ((y - mu_gls.unsqueeze(-1)) * a_gls).sum(-1) / n
        ll_conc = -0.5 * n * sigma2_gls.log() - 0.5 * logdet
        mu_bar = y.mean(-1)
        a_bar = sol[..., 0] - mu_bar.unsqueeze(-1) * sol[..., 1]
        quad_bar = ((y - mu_bar.unsqueeze(-1)) * a_bar).sum(-1)
        ll_marg = -0.5 * quad_bar - 0.5 * logdet - 0.5 * n * LOG_2PI
        if self.kind == "concentrated":
            return Statistics(ll=ll_conc, mean=mu_gls, a=a_gls, sigma2=sigma2_gls, scale=1.0 / sigma2_gls,
                              ll_concentrated=ll_conc, ll_marginal=ll_marg, mean_gls=mu_gls)
        return Statistics(ll=ll_marg, mean=mu_bar, a=a_bar, sigma2=quad_bar / n, scale=torch.ones_like(quad_bar),
                          ll_concentrated=ll_conc, ll_marginal=ll_marg, mean_gls=mu_gls)

    @staticmethod
    def _finish(stats: Statistics, g, nug_eff, jittered, failed) -> Evaluation:
        """The Evaluation of statistics stats, with ll = -inf and a zero gradient for failed members."""
        ll, ll_conc, ll_marg = stats.ll, stats.ll_concentrated, stats.ll_marginal
        if bool(failed.any()):
            ninf = torch.full_like(ll, -math.inf)
            ll, ll_conc, ll_marg = (torch.where(failed, ninf, v) for v in (ll, ll_conc, ll_marg))
            if g is not None:
                g[failed] = 0.0
        return Evaluation(ll=ll, grad=g, mean=stats.mean, sigma2=stats.sigma2, nugget=nug_eff, jittered=jittered,
                          failed=failed, ll_concentrated=ll_conc, ll_marginal=ll_marg, mean_gls=stats.mean_gls)

    def _evaluate_lean(self, params: torch.Tensor, groups: torch.Tensor, grad: bool) -> Evaluation:
        """One member in one n x n buffer A: K, then its Cholesky factor, then R^-1, all in place (LAPACK works on
        the column-major view A.mT without a copy); the gradient is contracted row block by row block with the
        kernel rows recomputed, so the only other memory is a few block_rows x n temporaries."""
        theta, nug = self.split(params)
        grp, n, bs = int(groups[0]), self.n, self.block_rows
        xg, y = self.x[grp], self.y[groups]
        A = torch.empty(n, n, dtype=xg.dtype, device=xg.device)
        nug_eff, start = nug.clone(), float(nug[0])
        jittered = torch.zeros(1, dtype=torch.bool, device=xg.device)
        failed = torch.zeros_like(jittered)
        while True:
            fill_rbf_matrix(A, xg, theta[0], self.cyc_mask, bs)
            A.diagonal().add_(nug_eff[0])
            if cholesky_in_place(A) == 0:
                break
            jittered[0] = True
            nug_eff = nug_eff * 10.0
            if float(nug_eff[0]) > max(self.max_jitter, start):
                failed[0] = True
                A.zero_().diagonal().fill_(1.0)  # L = I: finite statistics, ll reported as -inf
                break
        stats = self._statistics(A.mT.unsqueeze(0), y)
        g = None
        if grad:
            g = params.new_zeros(1, self.n_params)
            if not bool(failed[0]):
                g[0] = self._lean_gradient(A, xg, theta[0], stats.a[0], stats.scale[0], float(nug_eff[0]))
        return self._finish(stats, g, nug_eff, jittered, failed)

    def _lean_gradient(self, A: torch.Tensor, xg: torch.Tensor, theta: torch.Tensor, a: torch.Tensor,
                       scale: torch.Tensor, nug: float) -> torch.Tensor:
        """dll/du from the Cholesky factor in A.mT: A becomes R^-1 in place, then each row block of
        M = (a a^T scale - R^-1) o K is formed in place and contracted with the squared differences."""
        n, d, bs = self.n, self.d, self.block_rows
        At = A.mT
        torch.cholesky_inverse(At, out=At)  # symmetric: the rows of A are the rows of R^-1
        acc = SqDistContraction(xg, tuple(self.cyc_idx.tolist()), symmetric=True)
        trace_w = xg.new_zeros(())
        for i in range(0, n, bs):
            j = min(i + bs, n)
            Mb = A[i:j].neg_().addr_(a[i:j], a * scale)  # W rows: a a^T scale - R^-1
            trace_w += Mb.diagonal(offset=i).sum()
            acc.add(i, Mb.mul_(rbf_matrix(xg[i:j], xg, theta, self.cyc_mask)))
        g = xg.new_zeros(self.n_params)
        g[:d] = -0.5 * theta * acc.total()
        if self.learn_nugget:
            g[d] = 0.5 * nug * trace_w
        return g

    def _cyc_contract(self, M: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """sum_ij M_ij wrap_correction(Delta_ij,d) for each periodic feature d that can wrap: [b, Dc]."""
        out = M.new_empty(M.shape[0], self.cyc_idx.numel())
        for i, grp in enumerate(groups.tolist()):
            for k, d in enumerate(self.cyc_idx.tolist()):
                if self.cyc_cache is not None:
                    corr = self.cyc_cache[grp, k]
                else:
                    xd = self.x[grp, :, d]
                    corr = wrap_correction(xd.unsqueeze(-1) - xd.unsqueeze(-2))
                out[i, k] = (M[i] * corr).sum()
        return out

    def _cholesky(self, K: torch.Tensor, nug: torch.Tensor):
        """Cholesky of K + nugget I per member; a member that fails gets jitter escalation (x10) alone.

        Returns L, the nugget each member ended with, a jittered mask and a failed mask (no factor up
        to max_jitter: its L is the identity and the caller reports ll = -inf). K is left unchanged.
        """
        diag = K.diagonal(dim1=-2, dim2=-1)
        diag.add_(nug.unsqueeze(-1))  # factorise R = K + nugget I in place of a copy, then restore K
        L, info = torch.linalg.cholesky_ex(K)
        diag.sub_(nug.unsqueeze(-1))
        nug_eff = nug.clone()
        failed = torch.zeros_like(nug, dtype=torch.bool)
        bad = info > 0
        jittered = bad.clone()
        eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
        while bool(bad.any()):
            nug_eff = torch.where(bad, nug_eff * 10.0, nug_eff)
            over = bad & (nug_eff > max(self.max_jitter, float(nug.max())))
            failed |= over
            bad &= ~over
            idx = torch.nonzero(bad).flatten()
            if idx.numel():
                Li, infoi = torch.linalg.cholesky_ex(K[idx] + nug_eff[idx].view(-1, 1, 1) * eye)
                L[idx] = Li
                bad[idx] = infoi > 0
        if bool(failed.any()):
            L[failed] = eye
        return L, nug_eff, jittered, failed

def fflux_log_likelihood(
    x: torch.Tensor,
    y: torch.Tensor,
    theta: torch.Tensor,
    kind: str = "concentrated",
    nugget: float = 1e-10,
    cyclic: torch.Tensor | None = None,
) -> float:
    """FFLUX log-likelihood of one model with the given theta (for checks against FEREBUS files).

    Args:
        x: features [N, D] (bohr / radians).
        y: targets [N].
        theta: inverse squared length scales [D] (theta = 1 / (2 l^2)), as in a .model file.
        kind: "concentrated" or "marginal" (formulas in the module docstring).
        nugget: nugget on the diagonal; no jitter is added beyond it.
        cyclic: bool mask [D] of the periodic features, or None.

    Returns:
        The log-likelihood (a float; -inf when R is not positive definite at this nugget).

    Warns:
        NumericalWarning: when R does not factorise at the given nugget.

    Example:
        >>> import math, torch
        >>> from tlgp_torch.kernels import rbf_matrix
        >>> from tlgp_torch.likelihoods import fflux_log_likelihood
        >>> x = torch.rand(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> y = torch.sin(3 * x).sum(-1)
        >>> theta = torch.ones(2, dtype=torch.float64)
        >>> ll = fflux_log_likelihood(x, y, theta, kind="marginal", nugget=1e-6)
        >>> R = rbf_matrix(x, x, theta) + 1e-6 * torch.eye(20, dtype=torch.float64)
        >>> r = y - y.mean()
        >>> ref = float(-0.5 * r @ torch.linalg.solve(R, r) - 0.5 * torch.logdet(R)) - 10 * math.log(2 * math.pi)
        >>> math.isclose(ll, ref, rel_tol=1e-7)   # R's condition number is ~1e7: float64 promises ~1e-9
        True
    """
    lik = FFLUXLikelihood(x, y, cyclic=cyclic, kind=kind, nugget=nugget, max_jitter=nugget)
    ev = lik(theta.log().reshape(1, -1), grad=False)
    if bool(ev.jittered.any()):
        warnings.warn("kernel matrix not positive definite at the given nugget", NumericalWarning, stacklevel=2)
    return float(ev.ll[0])

