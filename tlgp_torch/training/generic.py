"""The generic path: DL and TL of any user ExactGP by autograd through gpytorch's exact marginal log-likelihood.

The objective of a parameter vector u (the model's trainable raw parameters, flattened) is
f(u) = -mll(u) = -(log p(y | X, u) + log p(u)) / N, summed over batch members: gpytorch's
ExactMarginalLogLikelihood with the model's prior and added-loss terms, computed by Cholesky up to
MAX_EXACT points (gpytorch's CG only above), with the Gaussian density's analytic backward
(likelihoods.gaussian: one cholesky_inverse instead of autograd through the Cholesky, half the time of an
evaluation at N=1000) and, where the mean is a plain ConstantMean, its constant at the GLS value (profiled_constant:
the same optimum without the ridge along c). A failed factorisation is f = +inf, which the project's batched
L-BFGS treats as infeasible (its line search backtracks). Positive parameters are optimised in log space and ARD
lengthscales within the fast path's box (ParameterVector), so both paths stop at the same optimum when a feature
is irrelevant and its lengthscale runs up a flat ridge. Starts are random: each ARD lengthscale vector from the
features' spreads (as DL on the fast path), constant means at mean(y), outputscales at var(y) and a Gaussian
noise at nugget x var(y) with the nugget log-uniform in [10 noise_floor, 1e-2], each clamped into the user's
constraint. TL fits the same model on random subsets (deep copies with set_train_data(..., strict=False)),
selects a source by hold-out MAE or likelihood per point, copies the selected parameters (lengthscales by
default) into a data-based start (see random_starts) and relaxes on the full mll. Unless they are transferred, a
second seed that also takes the source's outputscales and noise (which go with its lengthscales: long lengthscales
with a large outputscale, say) is relaxed too when the first relaxation ends below the selected source's ll per
point (an optimum on the full set is expected to fit at least as well per point as on a 30 % subset; ending below
means another basin, typically the all-noise plateau), and the better optimum is kept. The data-based seed goes
first because it reached DL's basin where the two seeds differ in the benchmark, and relaxing one seed instead
of two halves TL's time; its outputscale and noise are first moved to the best amplitude and noise ratio for its
lengthscales in closed form (fit_amplitude), which saves 10-40 % of the relaxation's iterations on most Matern
rows (docs/benchmarks.md, "user models").

Example:
    >>> import gpytorch, torch
    >>> from tlgp_torch.training.generic import holdout_mae, mll_value
    >>> from tlgp_torch.training.user_model import inspect_model
    >>> class GP(gpytorch.models.ExactGP):
    ...     def __init__(self, x, y):
    ...         super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
    ...         self.mean_module = gpytorch.means.ConstantMean()
    ...         self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=2))
    ...     def forward(self, x):
    ...         return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
    >>> x = torch.rand(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> y = torch.sin(3 * x).sum(-1)
    >>> model = GP(x, y).double()
    >>> um = inspect_model(model)
    >>> mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    >>> with torch.no_grad():
    ...     ref = float(mll(model(x), y))                # gpytorch's exact mll per point, at the same parameters
    >>> abs(mll_value(um) - ref) < 1e-12                 # the same computation (Cholesky): equal up to rounding
    True
    >>> 0 < holdout_mae(model, x[:5], y[:5]) < 1         # posterior mean at training points, default noise 0.69
    True
"""
from __future__ import annotations

import copy
import logging
import math
import time

import gpytorch
import torch
from linear_operator.utils.errors import NanError, NotPSDError

from tlgp_torch.data.subsets import complement, random_subsets
from tlgp_torch.kernels.formula import lengthscale_to_theta, theta_to_lengthscale
from tlgp_torch.likelihoods.gaussian import NotPositiveDefinite, gaussian_log_density, residual_solve
from tlgp_torch.models.anisotropic_gp import MAX_EXACT
from tlgp_torch.optim.adam import batched_adam
from tlgp_torch.optim.lbfgs import OptimResult, batched_lbfgs
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.runtime.device import timed
from tlgp_torch.training.prepare import generator
from tlgp_torch.training.result import TrainResult
from tlgp_torch.training.settings import FitSettings
from tlgp_torch.training.starts import feature_spread, random_log_theta
from tlgp_torch.training.user_model import (
    ParameterVector,
    UserModel,
    inspect_model,
    log_uniform,
    name_selector,
    set_value,
)

log = logging.getLogger(__name__)


def mll_settings():
    """gpytorch settings of every generic evaluation: Cholesky (no CG) up to MAX_EXACT points."""
    return gpytorch.settings.max_cholesky_size(MAX_EXACT)


def mll_value(um: UserModel) -> float:
    """The user's mll (per point, prior terms included, summed over batch members) at the current parameters."""
    um.mll.train()
    with torch.no_grad(), mll_settings():
        return float(um.mll(um.model(um.x), um.y).sum())


def profiled_constant(s: FitSettings, um: UserModel) -> gpytorch.means.ConstantMean | None:
    """The ConstantMean whose constant the generic objective maximises in closed form, or None.

    With s.profile_mean, a model whose mean is c 1 from one trainable ConstantMean without a prior or a
    constraint on c has its mll maximised over c at every evaluation (the GLS constant, as on the fast path):
    the optimum is the same, and the ridge along c (where a large outputscale makes c nearly unidentifiable and
    L-BFGS creeps along it for tens of iterations) is gone. Checked by a probe: shifting c by 1 must shift the
    model's prior mean at every training point by 1."""
    if not s.profile_mean:
        return None
    means = [(n, m) for n, m in um.model.named_modules() if isinstance(m, gpytorch.means.ConstantMean)
             and m.raw_constant.requires_grad]
    if len(means) != 1:
        return None
    name, mod = means[0]
    if getattr(mod, "raw_constant_constraint", None) is not None \
            or any(n == name or n.startswith(name + ".") for n, *_ in um.model.named_priors()):
        return None
    um.model.train()
    with torch.no_grad(), mll_settings():
        m0 = um.model(um.x).mean.clone()
        mod.raw_constant.add_(1.0)
        try:
            step = um.model(um.x).mean - m0
        finally:
            mod.raw_constant.sub_(1.0)
    return mod if bool(torch.allclose(step, torch.ones_like(step), rtol=0, atol=1e-9)) else None


def exact_mll(um: UserModel, profile: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """gpytorch's exact mll per point [*batch] (prior and added-loss terms included) through the analytic-backward
    Gaussian density (likelihoods.gaussian), and the GLS shift of the constant mean (None unless profile). Where
    the covariance has no Cholesky factor, gpytorch's own evaluation (which adds jitter) is used instead."""
    function_dist = um.model(um.x)
    output = um.likelihood(function_dist)
    try:
        value, shift = gaussian_log_density(output.covariance_matrix, um.y - output.mean, profile)
    except NotPositiveDefinite:
        return um.mll(function_dist, um.y), None
    return um.mll._add_other_terms(value, ()) / um.n, (shift if profile else None)


def apply_profile(um: UserModel, mean: gpytorch.means.ConstantMean | None) -> None:
    """Write the GLS constant at the current parameters into the profiled ConstantMean (no-op for None)."""
    if mean is None:
        return
    um.mll.train()
    with torch.no_grad(), mll_settings():
        _, shift = exact_mll(um, True)
        if shift is not None:
            mean.raw_constant.add_(shift.reshape(mean.raw_constant.shape).to(mean.raw_constant))


def loss_at(um: UserModel, pv: ParameterVector, u: torch.Tensor, profile: bool) -> torch.Tensor | None:
    """-mll per point (summed over batch members) with the parameters set to u [P]; None where the covariance does
    not factorise or the value is not finite. Differentiable unless called under torch.no_grad()."""
    pv.set(u)
    try:
        with mll_settings():
            loss = -exact_mll(um, profile)[0].sum()
    except (NotPSDError, NanError, torch.linalg.LinAlgError):
        return None
    return loss if bool(torch.isfinite(loss)) else None


def objective(um: UserModel, pv: ParameterVector, profile: gpytorch.means.ConstantMean | None = None):
    """fun(u [b, P], members [b]) -> (f [b], grad [b, P]) with f = -mll (per point) for the batched optimisers;
    with `profile` (see profiled_constant) f is minimised over that constant mean in closed form (its gradient is
    0)."""
    def one(u: torch.Tensor) -> tuple[float, torch.Tensor]:
        loss = loss_at(um, pv, u, profile is not None)
        if loss is None:
            return math.inf, torch.zeros_like(u)
        try:
            with mll_settings():
                g = pv.gradient(loss)
        except (NotPSDError, NanError, torch.linalg.LinAlgError):
            return math.inf, torch.zeros_like(u)
        if not bool(torch.isfinite(g).all()):
            return math.inf, torch.zeros_like(u)
        return float(loss.detach()), g

    def fun(u: torch.Tensor, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = [one(row) for row in u]
        return u.new_tensor([f for f, _ in out]), torch.stack([g for _, g in out])
    return fun


def box_spread(um: UserModel) -> torch.Tensor:
    """Feature spreads s_d [D] of the training inputs (all batch members), drawn with the fixed generator(0), that
    size the lengthscale box of every optimisation and the revive test, so both see the same s_d."""
    return feature_spread(um.x.detach().reshape(-1, um.d).to(torch.float64), generator=generator(0))


def optimise_mll(s: FitSettings, um: UserModel, pv: ParameterVector, u0: torch.Tensor, stop: StoppingRule,
                 optimizer: str | None = None, history: list | None = None, stage: str = "",
                 profile: gpytorch.means.ConstantMean | None = None) -> OptimResult:
    """Minimise -mll from every row of u0 [R, P] (one L-BFGS history / Adam state per row); the model is left
    at the best row's parameters (a profiled constant mean at its GLS value; see profiled_constant)."""
    um.mll.train()
    t0 = time.perf_counter()

    def record(it, f, active):
        if history is not None:
            history.append({"stage": stage, "iter": it, "best_ll": float(-(f.min()) * um.n),
                            "ll": (-f * um.n).tolist(), "active": int(active.sum()), "t": time.perf_counter() - t0})
    spread = box_spread(um)
    lower, upper = pv.log_lengthscale_box([k for _, k in um.ard_kernels], spread)
    kw = dict(stop=stop, f_scale=um.n, callback=record, lower=lower.to(u0), upper=upper.to(u0))
    if (optimizer or s.optimizer) == "lbfgs":
        res = batched_lbfgs(objective(um, pv, profile), u0, history_size=s.history_size, **kw)
    else:
        res = batched_adam(objective(um, pv, profile), u0, lr=s.lr, **kw)
    pv.set(res.x[int(res.f.argmin())])
    apply_profile(um, profile)
    return res


def random_starts(s: FitSettings, um: UserModel, pv: ParameterVector, count: int, gen: torch.Generator | None
                  ) -> torch.Tensor:
    """count random starts u [count, P] (see the module docstring); the model's parameters are left unchanged.

    gen=None gives the deterministic start of a TL target (its lengthscales come from the source): the
    lengthscales as they are, means at mean(y), outputscales at var(y), a Gaussian noise at 1e-2 var(y) (the top
    of the DL range: from a small noise, short lengthscales that interpolate the data are a basin of their own)."""
    saved = pv.get()
    x2 = um.x.detach().reshape(-1, um.d).to(torch.float64)
    spread = feature_spread(x2, generator=gen or generator(0))
    y = um.y.detach().to(torch.float64)
    y_mean = y.mean(-1)
    y_var = y.var(-1) if um.n > 1 else torch.ones_like(y_mean)
    y_var = torch.where(y_var > 0, y_var, torch.ones_like(y_var))
    n_ard = len(um.ard_kernels)
    scales = [m for m in um.model.modules() if isinstance(m, gpytorch.kernels.ScaleKernel)
              and m.raw_outputscale.requires_grad]
    starts = []
    for _ in range(count):
        for name, k in um.ard_kernels:
            if not k.raw_lengthscale.requires_grad or gen is None:
                continue
            dims = k.active_dims if k.active_dims is not None else torch.arange(um.d)
            log_theta = random_log_theta(spread[dims.cpu()], 1, gen, s.init_range)[0] - math.log(n_ard)
            set_value(k, "lengthscale", theta_to_lengthscale(log_theta.exp()), name)
        for mod in um.model.modules():
            if isinstance(mod, gpytorch.means.ConstantMean) and mod.raw_constant.requires_grad:
                set_value(mod, "constant", y_mean)
        for mod in scales:
            set_value(mod, "outputscale", y_var / len(scales))
        lik = um.likelihood
        if isinstance(lik, gpytorch.likelihoods.GaussianLikelihood) and lik.noise_covar.raw_noise.requires_grad:
            nug = log_uniform(10 * s.noise_floor, 1e-2, 1, gen) if gen is not None else torch.full((1,), 1e-2)
            set_value(lik.noise_covar, "noise", (nug[0] * y_var).unsqueeze(-1))
        starts.append(pv.get())
    pv.set(saved)
    return torch.stack(starts)


def finish(um: UserModel) -> None:
    """Leave the user's model in eval mode with fresh prediction caches."""
    um.mll.train()
    um.mll.eval()


def user_result(s: FitSettings, method: str, um: UserModel, path: str, times: dict[str, float], n_full_evals: int,
                history: list, info: dict, **extra) -> TrainResult:
    """The TrainResult of a user-model fit: ll = N x the user's mll (prior terms included, summed over batch);
    theta is the FFLUX theta of the first ARD kernel (first batch member); mean, sigma2 (outputscale) and nugget
    (noise / outputscale) where the model has a ConstantMean, a top-level ScaleKernel and a GaussianLikelihood."""
    ll = mll_value(um) * um.n
    finish(um)
    kernel = um.ard_kernels[0][1]
    ls = kernel.lengthscale.detach()
    theta = lengthscale_to_theta(ls.reshape(-1, ls.shape[-1])[0]).to(torch.float64)
    nan = math.nan
    first = lambda t: float(t.detach().reshape(-1)[0])  # noqa: E731
    mean_mod = getattr(um.model, "mean_module", None)
    mean = first(mean_mod.constant) if isinstance(mean_mod, gpytorch.means.ConstantMean) else nan
    covar = getattr(um.model, "covar_module", None)
    sigma2 = first(covar.outputscale) if isinstance(covar, gpytorch.kernels.ScaleKernel) else nan
    noise = first(um.likelihood.noise) if isinstance(um.likelihood, gpytorch.likelihoods.GaussianLikelihood) else nan
    return TrainResult(method=method, convention="gpytorch", likelihood="exact_mll", theta=theta,
                       nugget=noise / sigma2 if sigma2 == sigma2 else nan, mean=mean, sigma2=sigma2, ll=ll,
                       ll_marginal=ll, ll_concentrated=nan, stage_times=dict(times), n_full_evals=n_full_evals,
                       history=history, info={"path": path, **info}, x_train=um.x.detach(), y_train=um.y.detach(),
                       gp=um.model, **extra)


def direct_fit(s: FitSettings, um: UserModel, restarts: int) -> TrainResult:
    """DL on the user's mll: `restarts` random starts relaxed together (one L-BFGS history each), best kept."""
    pv = um.parameter_vector()
    times: dict[str, float] = {}
    history: list = []
    with timed(times, "optimisation", um.x.device):
        prof = profiled_constant(s, um)
        u0 = random_starts(s, um, pv, restarts, generator(s.seed))
        res = optimise_mll(s, um, pv, u0, s.stop, history=history, stage="DL", profile=prof)
    info = {"restart_ll": (-res.f * um.n).tolist(), "restart_iters": res.n_iter.tolist(),
            "restart_reason": res.reason, "best_restart": int(res.f.argmin()), "profiled_mean": prof is not None}
    return user_result(s, "DL", um, "generic", times, int(res.n_evals.sum()), history, info)


def holdout_mae(model: gpytorch.models.ExactGP, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean absolute error of the model's posterior mean at x [*batch, M, D] against y [*batch, M]."""
    model.eval()
    try:
        with torch.no_grad(), mll_settings(), gpytorch.settings.skip_posterior_variances(True):
            err = float((model(x).mean - y).abs().mean())
    except (NotPSDError, NanError, torch.linalg.LinAlgError):
        err = math.inf
    model.train()
    return err if math.isfinite(err) else math.inf


def revive_switched_off(um: UserModel, pv: ParameterVector, u: torch.Tensor, floor: float,
                        amplitude_from: torch.Tensor | None = None, trend: float = 1e-3) -> int:
    """Bring back, in place in u [P], the ARD lengthscales a source switched off; returns how many.

    A lengthscale with 2 theta_d s_d^2 = (s_d / l_d)^2 < floor^2 (l_d > s_d / floor: the kernel varies by less
    than floor^2 across the feature's spread s_d) sits on a flat ridge where its gradient vanishes, so the
    relaxation cannot switch the feature back on. It is set to the (geometric) median l / s of that kernel's
    other lengthscales times its own s_d. (Matern optima put relevant features at l/s of 20 to 200, so the fast
    path's floor on 2 theta s^2 itself would disturb them.)

    Not where the feature carries a trend: sigma^2 (s_d / l_d)^2 >= trend var(y), with sigma^2 the product of the
    outputscales of the ScaleKernels around the kernel (taken at `amplitude_from`, the source's optimum, default
    u). Far out on the flat-limit ridge, l_d -> inf with sigma^2 -> inf, the kernel's variation along the feature
    is about sigma^2 (s_d / l_d)^2 however long l_d is; a source there has the feature on (a near-linear trend),
    and reviving it to the median moves the seed off that ridge. Synthetic D=64 Matern-2.5 (N=1000, sources of
    300 points): 44 features at l/s 1.1e3-2.2e3 with sigma^2 = 2.7e4, sigma^2 (s/l)^2 = 6e-3 to 2e-2 of var(y);
    the full set keeps them at l/s 6e3-8e3 (outputscale 3e5). Revived, the relaxation stopped on a ridge 0.68 %
    below DL's mll and needed the scale probe and a second relaxation; as transferred it reaches DL's optimum in
    one. GLYCINE C1 Matern-2.5's switched-off features carry at most 6e-5 of var(y) and are revived as before
    (kept as transferred instead, seeds 1 and 2 ended 5.6 % and 0.4 % below DL's mll).

    Args:
        um, pv: the user's model and its parameter vector; u: the seed [P], changed in place.
        floor: the revive floor (TransferTrainer.revive_floor).
        amplitude_from: the parameters [P] whose outputscales judge the trend (default: u's).
        trend: the share of var(y) a feature's kernel variation must reach to count as a trend.

    Example::

        revived = revive_switched_off(um, pv, u_seed, 1e-3, amplitude_from=source_optimum)
    """
    spread = box_spread(um)
    saved = pv.get()
    try:
        pv.set(u if amplitude_from is None else amplitude_from)
        with torch.no_grad():
            scales = [(set(m.base_kernel.modules()), m.outputscale.detach().clone()) for m in um.model.modules()
                      if isinstance(m, gpytorch.kernels.ScaleKernel)]
    finally:
        pv.set(saved)
    var_y = um.y.detach().var(-1)                                                      # [*batch]
    count, start = 0, 0
    for p, size, con in zip(pv.params, pv.sizes, pv.log_constraints):
        kernel = next((k for _, k in um.ard_kernels if p is k.raw_lengthscale), None)
        if kernel is not None and con is not None:  # u = log(l - b) with b the constraint's lower bound
            dims = kernel.active_dims.cpu() if kernel.active_dims is not None else torch.arange(um.d)
            s_d = spread[dims].expand(*p.shape[:-1], -1).reshape(-1).to(u)
            b = float(con.lower_bound.reshape(-1)[0])
            ratio = (u[start:start + size].exp() + b) / s_d
            sigma2 = torch.ones((), dtype=u.dtype, device=u.device)
            for inside, outputscale in scales:
                if kernel in inside:
                    sigma2 = sigma2 * outputscale.to(u)
            shape = p.shape[:-2] + p.shape[-1:]                                        # [*batch, D]
            try:
                share = (sigma2[..., None] / var_y.to(u)[..., None]).expand(shape).reshape(-1) / ratio.square()
            except RuntimeError:  # batch shapes that do not line up: judge by the ratio alone
                share = torch.zeros_like(ratio)
            flat = ratio > 1.0 / floor
            off = flat & (share < trend)
            if bool(off.any()) and not bool(flat.all()):
                typical = torch.quantile(ratio[~flat].log(), 0.5).exp()  # geometric median
                u[start:start + size] = torch.where(off, (typical * s_d - b).clamp_min(1e-300).log(),
                                                    u[start:start + size])
                count += int(off.sum())
        start += size
    return count


NOISE_RATIOS = (10.0, 1.0, 0.1, 0.01, 1e-3, 1e-4)


def scale_modules(um: UserModel) -> list[tuple[torch.nn.Module, str]]:
    """The (module, name) of every trainable outputscale and homoscedastic Gaussian noise of the model."""
    out = [(m, "outputscale") for m in um.model.modules() if isinstance(m, gpytorch.kernels.ScaleKernel)
           and m.raw_outputscale.requires_grad]
    lik = um.likelihood
    if isinstance(lik, gpytorch.likelihoods.GaussianLikelihood) \
            and not isinstance(lik, gpytorch.likelihoods.FixedNoiseGaussianLikelihood) \
            and lik.noise_covar.raw_noise.requires_grad:
        out.append((lik.noise_covar, "noise"))
    return out


def fit_amplitude(um: UserModel, pv: ParameterVector, u: torch.Tensor,
                  profile: gpytorch.means.ConstantMean | None = None) -> float:
    """Put the seed u [P] (in place) at the best amplitude and noise ratio for its lengthscales; returns the factor
    lambda applied to the outputscales (1.0 where the model does not allow it).

    Where the training covariance is linear in the trainable outputscales and Gaussian noise jointly
    (K(lambda) = lambda K; checked by a probe with lambda = 2, so a product of two ScaleKernels or a
    FixedNoiseGaussianLikelihood is left alone), K = lambda (K_f + rho S) with K_f the prior covariance and S the
    likelihood's noise part. For each rho in NOISE_RATIOS (one Cholesky each) the log-density maximised over lambda
    (and over a profiled constant mean) is -N/2 log(r' A^-1 r / N) - 1/2 log|A| + const with A = K_f + rho S, at
    lambda = r' A^-1 r / N; the best (rho, lambda) is written. Why: a seed whose lengthscales come from a source but
    whose outputscale is var(y) and noise 1e-2 var(y) can be orders of magnitude off what the full set wants (Matern
    optima with outputscales of 1e2-1e5 on standardised y), and the relaxation spent tens of iterations getting
    there, or ran onto the all-noise plateau. The noise stays inside its constraint (set_value clamps)."""
    saved = pv.get()
    mods = scale_modules(um)
    if not mods:
        return 1.0
    try:
        pv.set(u)
        um.model.train()
        with torch.no_grad(), mll_settings():
            prior = um.model(um.x)
            out = um.likelihood(prior)
            K = out.covariance_matrix
            values = [getattr(m, name).detach().clone() for m, name in mods]
            for (m, name), v in zip(mods, values):  # the probe; every value is rewritten below (or restored)
                set_value(m, name, 2 * v)
            if not bool(torch.allclose(um.likelihood(um.model(um.x)).covariance_matrix, 2 * K, rtol=1e-9, atol=0)):
                return 1.0
            K_f = prior.covariance_matrix.expand_as(K)
            noise_part, r = K - K_f, um.y - out.mean
            best = None
            for rho in (NOISE_RATIOS if any(name == "noise" for _, name in mods) else (1.0,)):
                L, info = torch.linalg.cholesky_ex(K_f + rho * noise_part)
                if bool((info != 0).any()):
                    continue
                _, alpha, resid = residual_solve(L, r, profile is not None)
                quad = (resid * alpha).sum(-1)
                conc = float((-0.5 * um.n * (quad / um.n).log() - L.diagonal(dim1=-2, dim2=-1).log().sum(-1)).sum())
                if math.isfinite(conc) and (best is None or conc > best[0]):
                    best = (conc, rho, float((quad / um.n).reshape(-1).mean()))
            if best is None or not (math.isfinite(best[2]) and best[2] > 0):
                return 1.0
            _, rho, lam = best
            for (m, name), v in zip(mods, values):
                set_value(m, name, lam * v * (rho if name == "noise" else 1.0))
            u.copy_(pv.get())
        return lam
    except (NotPositiveDefinite, NotPSDError, NanError, torch.linalg.LinAlgError):
        return 1.0
    finally:
        pv.set(saved)


def probe_common_scale(um: UserModel, pv: ParameterVector, u: torch.Tensor, f: float, step: float,
                       profile: gpytorch.means.ConstantMean | None = None, max_steps: int = 8
                       ) -> tuple[tuple[float, torch.Tensor] | None, int]:
    """Look for a better point along the common scale of all ARD lengthscales from a relaxed optimum u [P].

    Every lengthscale is multiplied by c = step^k for k = 1, 2, ... (then k = -1, -2, ... if k = 1 does not
    improve), clamped to the optimiser's box, with the outputscale and noise moved to their best common factor and
    ratio for those lengthscales (fit_amplitude); one -mll evaluation (no gradient) each. Stepping stops at the
    first c that is no better than the previous one. Why: a relaxation can stop on a ridge where the mll still
    rises when every lengthscale and the amplitude grow together (synthetic D=64 Matern-2.5, N=1000: L-BFGS
    stops by slow progress at mll 1.7229 per point, lengthscales x 1.2 with the amplitude refitted give 1.7306,
    and a relaxation from there reaches DL's 1.7347); the single coordinates' gradients are too small there to
    say so.

    Args:
        um, pv: the user's model and its parameter vector; u: the relaxed parameters; f: -mll per point at u.
        step: the factor between probes (> 1); max_steps: the most probes in one direction.

    Returns:
        ((c, u_c) of the best probe when it beats f, else None; the number of probes). The model is left at u.

    Example::

        found, n_probes = probe_common_scale(um, pv, result.x[0], float(result.f[0]), 1.2)
    """
    mask = pv.mask(lambda name: "lengthscale" in name)
    if not bool(mask.any()):
        return None, 0
    lower, upper = pv.log_lengthscale_box([k for _, k in um.ard_kernels], box_spread(um))

    def value(v: torch.Tensor) -> float:  # -mll per point at v (inf where it does not factorise)
        with torch.no_grad():
            loss = loss_at(um, pv, v, profile is not None)
        return math.inf if loss is None else float(loss)
    found, count = None, 0
    try:
        for sign in (1.0, -1.0):
            for k in range(1, max_steps + 1):
                u_c = u.clone()
                u_c[mask] += sign * k * math.log(step)
                u_c = torch.minimum(torch.maximum(u_c, lower.to(u_c)), upper.to(u_c))
                fit_amplitude(um, pv, u_c, profile)
                f_c, count = value(u_c), count + 1
                if not f_c < (f if found is None else found[2]):
                    break
                found = (step ** (sign * k), u_c, f_c)
            if found is not None:
                break
    finally:
        pv.set(u)
    return (None if found is None else (found[0], found[1])), count


def transfer_fit(s, um: UserModel) -> TrainResult:
    """TL on the user's mll (s: TransferTrainer settings): seed sources on subsets, select, transfer, relax."""
    n = um.n
    m = s.subset_size(n)
    if s.selection == "holdout_mae" and m >= n:
        raise ValueError("holdout_mae selection needs points outside the sources: use source_size < 1 "
                         "or selection='likelihood'")
    select = name_selector(s.transfer_parameters)
    pv = um.parameter_vector()
    times: dict[str, float] = {}
    history: list = []
    gen = generator(s.seed)
    scores, src_ll, src_u, src_evals = [], [], [], 0
    with timed(times, "seeding", um.x.device):
        subsets = random_subsets(n, m, s.n_sources, gen)
        for k in range(s.n_sources):
            idx = subsets[k].to(um.x.device)
            src_mll = copy.deepcopy(um.mll)
            src_mll.model.set_train_data(um.x[..., idx, :].detach(), um.y[..., idx].detach(), strict=False)
            if isinstance(src_mll.likelihood, gpytorch.likelihoods.FixedNoiseGaussianLikelihood):
                src_mll.likelihood.noise = um.likelihood.noise[..., idx].detach()  # one noise per training point
            src = inspect_model(src_mll)
            spv = src.parameter_vector()
            res = optimise_mll(s, src, spv, random_starts(s, src, spv, s.source_restarts, gen), s.source_stop,
                               history=history, stage=f"source {k}", profile=profiled_constant(s, src))
            src_evals += int(res.n_evals.sum())
            best_f = float(res.f.min())
            src_ll.append(-best_f * m)
            src_u.append(spv.get())
            if not math.isfinite(best_f):
                scores.append(math.inf)
            elif s.selection == "likelihood":
                scores.append(best_f)
            else:
                out = complement(n, subsets[k]).to(um.x.device)
                scores.append(holdout_mae(src.model, um.x[..., out, :].detach(), um.y[..., out].detach()))
    with timed(times, "selection", um.x.device):
        k_best = min(range(s.n_sources), key=lambda k: scores[k])
    with timed(times, "transfer", um.x.device):
        prof = profiled_constant(s, um)
        u_seed = random_starts(s, um, pv, 1, None)[0]
        mask = pv.mask(select)
        seeds, labels, revived, amplitude = [u_seed], ["data-based scales"], 0, 1.0
        if math.isfinite(scores[k_best]):
            u_seed[mask] = src_u[k_best][mask]
            if s.revive_floor is not None:
                revived = revive_switched_off(um, pv, u_seed, s.revive_floor, amplitude_from=src_u[k_best])
            base = u_seed.clone()
            amplitude = fit_amplitude(um, pv, u_seed, prof)
            scale = pv.mask(lambda name: "noise" in name or "outputscale" in name) & ~mask
            if bool(scale.any()):  # a second seed: the source's outputscales and noise too (they go with its
                seeds.append(base)  # lengthscales; the data-based ones may start another basin)
                seeds[-1][scale] = src_u[k_best][scale]
                labels.append("source scales")
    with timed(times, "relaxation", um.x.device):
        runs = [optimise_mll(s, um, pv, seeds[0].unsqueeze(0), s.stop, optimizer=s.relax_optimizer,
                             history=history, stage="relaxation", profile=prof)]
        run_labels = labels[:1]
        if len(seeds) > 1 and not float(-runs[0].f[0]) >= src_ll[k_best] / m:  # below the source per point
            runs.append(optimise_mll(s, um, pv, seeds[1].unsqueeze(0), s.stop, optimizer=s.relax_optimizer,
                                     history=history, stage="relaxation, source scales", profile=prof))
            run_labels.append(labels[1])
        f = torch.cat([r.f for r in runs])
        best = int(f.argmin())
        probe, n_probes = None, 0
        if s.scale_probe is not None:
            probe, n_probes = probe_common_scale(um, pv, runs[best].x[0], float(f[best]), s.scale_probe, prof)
            if probe is not None:
                runs.append(optimise_mll(s, um, pv, probe[1].unsqueeze(0), s.stop, optimizer=s.relax_optimizer,
                                         history=history, stage="relaxation, scale probe", profile=prof))
                run_labels.append(f"scale probe x{probe[0]:.3g}")
                f = torch.cat([r.f for r in runs])
                best = int(f.argmin())
        pv.set(runs[best].x[0])
        apply_profile(um, prof)
    info = {"source_size": m, "n_sources": s.n_sources, "source_restarts": s.source_restarts,
            "selected_source": k_best, "source_scores": scores, "source_ll": src_ll,
            "transferred": [nm for nm in pv.names if select(nm)],
            "relax_iters": [int(r.n_iter[0]) for r in runs], "relax_reason": [r.reason[0] for r in runs],
            "relax_ll": (-f * n).tolist(), "seeds": run_labels, "seed": run_labels[best],
            "no_source": not math.isfinite(scores[k_best]), "profiled_mean": prof is not None, "revived": revived,
            "amplitude": amplitude, "scale_probe": None if probe is None else probe[0]}
    return user_result(s, "TL", um, "generic", times, sum(int(r.n_evals.sum()) for r in runs) + n_probes, history,
                       info, n_source_evals=src_evals, source_size=m)
