"""Users' own gpytorch models trained by TransferTrainer / DirectTrainer: fit(model), fit(mll), fit_gpytorch_mll_tl."""
from __future__ import annotations

import math
import warnings

import gpytorch
import pytest
import torch

from tlgp_torch import AnisotropicGP, DirectTrainer, TransferTrainer, fit_gpytorch_mll_tl
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.training.user_fit import ConstraintWarning

N, D = 100, 4


class UserGP(gpytorch.models.ExactGP):
    """What a user writes: a constant mean, any covariance module, a Gaussian likelihood."""

    def __init__(self, x, y, kernel: str = "rbf", likelihood=None):
        super().__init__(x, y, likelihood or gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        d = x.shape[-1]
        if kernel == "rbf":
            base = gpytorch.kernels.RBFKernel(ard_num_dims=d)
        elif kernel == "matern25":
            base = gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d)
        elif kernel == "product":
            base = gpytorch.kernels.RBFKernel(ard_num_dims=d) * gpytorch.kernels.MaternKernel(nu=1.5, ard_num_dims=d)
        else:
            base = gpytorch.kernels.RBFKernel()  # no ARD
        self.covar_module = gpytorch.kernels.ScaleKernel(base)
        self.kernel = kernel

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def data(n: int = N, d: int = D, noise: float = 0.01, seed: int = 0):
    """Anisotropic test function, sum_d sin(w_d x_d) / w_d with w_d from 4 down to 0.04 (relevance over two
    decades, every feature relevant, as in FFLUX data), plus noise of sd `noise`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    w = 4.0 * torch.logspace(0, -2, d, dtype=torch.float64)
    y = (torch.sin(w * x) / w).sum(-1) + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def final_mll(model) -> float:
    """The model's exact mll (per point) at its current parameters."""
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(10_000):
        value = float(mll(model(*model.train_inputs), model.train_targets))
    model.eval()
    return value


def plain_gpytorch_loop(model) -> float:
    """The usual gpytorch recipe: Adam 200 steps (lr 0.1), then torch.optim.LBFGS; NaN when it breaks down."""
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    x, y = model.train_inputs[0], model.train_targets
    try:
        with gpytorch.settings.max_cholesky_size(10_000):
            adam = torch.optim.Adam(model.parameters(), lr=0.1)
            for _ in range(200):
                adam.zero_grad()
                (-mll(model(x), y)).backward()
                adam.step()
            lbfgs = torch.optim.LBFGS(model.parameters(), max_iter=100, line_search_fn="strong_wolfe")

            def closure():
                lbfgs.zero_grad()
                loss = -mll(model(x), y)
                loss.backward()
                return loss
            lbfgs.step(closure)
    except Exception:  # noqa: BLE001 - the point of the comparison: this loop can fail where ours must not
        return math.nan
    return final_mll(model)


@pytest.fixture(scope="module")
def xy():
    return data()


@pytest.mark.parametrize("kernel", ["rbf", "matern25", pytest.param("product", marks=pytest.mark.slow)])
def test_user_models_trained_in_place_by_tl_and_dl(kernel, xy):
    x, y = xy
    # DL (R=8) through the mll entry point: also the reference optimum
    dl_model = UserGP(x, y, kernel).double()
    dl_mll = gpytorch.mlls.ExactMarginalLogLikelihood(dl_model.likelihood, dl_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstraintWarning)
        dl = DirectTrainer(restarts=8, seed=0, device="cpu").fit(dl_mll)
        plain = plain_gpytorch_loop(UserGP(x, y, kernel).double())
        tl_model = UserGP(x, y, kernel).double()
        params_before = [id(p) for p in tl_model.parameters()]
        tl = TransferTrainer(seed=0, device="cpu").fit(tl_model)
    assert dl.gp is dl_model and type(dl.gp) is UserGP
    assert tl.gp is tl_model and [id(p) for p in tl_model.parameters()] == params_before
    assert not tl_model.training and not tl_model.likelihood.training
    assert tl.info["path"] == ("generic" if kernel != "rbf" else tl.info["path"])
    reference = max(v for v in (final_mll(dl_model), plain) if math.isfinite(v))
    got = final_mll(tl_model)
    # "within 0.1 % of (or above)" the better of DL and the plain loop, as the issue asks
    assert got >= reference - 1e-3 * abs(reference), (got, reference, plain)
    assert math.isclose(tl.ll, got * N, rel_tol=1e-9)
    fresh = UserGP(x, y, kernel).double()
    fresh.load_state_dict(tl_model.state_dict())
    assert math.isclose(final_mll(fresh), got, rel_tol=1e-12)


class MaternGP(UserGP):
    """UserGP with a Matern-nu ARD kernel (the generic path)."""

    def __init__(self, x, y, nu: float):
        super().__init__(x, y, "matern25")
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=nu, ard_num_dims=x.shape[-1]))


def smooth_150(nu: float) -> MaternGP:
    """A smooth 150-point, 4-feature problem (y standardised) on which a Matern-1.5 seed with outputscale var(y)
    and noise 1e-2 var(y) relaxes onto the all-noise plateau (ll per point ~ -1.42 = -0.5 (1 + log 2 pi))."""
    x, y = data(150, 4, noise=1e-3, seed=4)
    return MaternGP(x, (y - y.mean()) / y.std(), nu).double()


@pytest.mark.parametrize("nu", [2.5, 1.5])
def test_generic_tl_relaxes_one_seed_from_the_fitted_amplitude(nu):
    """The data-based seed, put at its best amplitude and noise ratio, relaxes alone into the good basin (ll per
    point ~2.97 and ~2.74, far above the sources' ~1.6-2.0); without the amplitude fit the Matern-1.5 seed ran onto
    the all-noise plateau and needed the second seed."""
    model = smooth_150(nu)
    res = TransferTrainer(seed=0, device="cpu").fit(model)
    assert res.info["seeds"] == ["data-based scales"] and len(res.info["relax_ll"]) == 1
    assert res.info["amplitude"] != 1.0
    assert res.ll / 150 > max(res.info["source_ll"]) / res.source_size + 0.3
    assert final_mll(model) > 2.5


def test_generic_tl_relaxes_the_second_seed_when_the_first_falls_below_the_source(monkeypatch):
    """Where the first relaxation ends below the selected source's ll per point (here the all-noise plateau, got by
    switching the amplitude fit off), the seed with the source's outputscale and noise is relaxed too and kept."""
    from tlgp_torch.training import generic
    monkeypatch.setattr(generic, "fit_amplitude", lambda *args, **kwargs: 1.0)
    model = smooth_150(1.5)
    res = TransferTrainer(seed=0, device="cpu").fit(model)
    first, second = (v / 150 for v in res.info["relax_ll"])
    assert res.info["seeds"] == ["data-based scales", "source scales"] and res.info["seed"] == "source scales"
    assert first < -1.3 < 2.0 < second
    assert final_mll(model) == pytest.approx(second, abs=1e-6)


def test_fit_amplitude_maximises_along_the_scale_ray_and_leaves_nonlinear_models_alone():
    """After fit_amplitude the mll is at a maximum along outputscale and noise scaled together (5 % either way is
    lower) and not below the seed's; a product of two ScaleKernels (K not linear in the scales) is left as it is."""
    from tlgp_torch.training import generic
    from tlgp_torch.training.user_model import inspect_model, set_value

    def mll_at(um, pv, u, f=1.0):
        pv.set(u)
        for mod, name in generic.scale_modules(um):
            set_value(mod, name, f * getattr(mod, name).detach())
        return generic.mll_value(um)
    x, y = data(150, 4, noise=1e-3, seed=4)
    lik = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=gpytorch.constraints.GreaterThan(1e-10))
    model = UserGP(x, (y - y.mean()) / y.std(), "matern25", likelihood=lik).double()
    um = inspect_model(gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model))
    pv = um.parameter_vector()
    u0 = pv.get()
    u = u0.clone()
    lam = generic.fit_amplitude(um, pv, u)
    assert lam != 1.0 and torch.equal(pv.get(), u0)       # the model itself is left as it was
    best = mll_at(um, pv, u)
    assert mll_at(um, pv, u, 0.95) < best and mll_at(um, pv, u, 1.05) < best
    assert best > mll_at(um, pv, u0)
    x, y = data(60, 3)
    prod = UserGP(x, y, "rbf").double()
    prod.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=3)) \
        * gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=3))
    um = inspect_model(gpytorch.mlls.ExactMarginalLogLikelihood(prod.likelihood, prod))
    pv = um.parameter_vector()
    u = pv.get()
    assert generic.fit_amplitude(um, pv, u) == 1.0 and torch.equal(u, pv.get())



def test_scale_probe_finds_the_rise_along_the_common_lengthscale_scale():
    """From the optimum (a tight DL fit) the probe finds nothing; from the optimum with every lengthscale / 1.44 and
    the amplitude refitted (a point on the common-scale ray, below the optimum) it steps up the ray (c > 1) to a
    better point, and leaves the model where it was."""
    from tlgp_torch.training import generic
    from tlgp_torch.training.user_model import inspect_model

    x, y = data(150, 4, noise=1e-3, seed=4)
    lik = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=gpytorch.constraints.GreaterThan(1e-10))
    model = UserGP(x, (y - y.mean()) / y.std(), "matern25", likelihood=lik).double()
    DirectTrainer(restarts=2, seed=0, device="cpu", stop=StoppingRule(rtol=1e-12, max_iter=500)).fit(model)
    um = inspect_model(gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model))
    pv = um.parameter_vector()
    u_opt = pv.get()
    fun = generic.objective(um, pv)
    f_opt = float(fun(u_opt[None], None)[0][0])
    assert generic.probe_common_scale(um, pv, u_opt, f_opt, 1.2) == (None, 2)   # one probe up, one down
    u_off = u_opt.clone()
    u_off[pv.mask(lambda name: "lengthscale" in name)] -= 2 * math.log(1.2)
    generic.fit_amplitude(um, pv, u_off)
    f_off = float(fun(u_off[None], None)[0][0])
    assert f_off > f_opt                                          # below the optimum (f = -mll per point)
    found, n_probes = generic.probe_common_scale(um, pv, u_off, f_off, 1.2)
    assert found is not None and found[0] > 1.0 and n_probes >= 2
    assert torch.allclose(pv.get(), u_off, rtol=0, atol=1e-9)  # the model is left at u
    assert float(fun(found[1][None], None)[0][0]) < f_off
    with pytest.raises(ValueError, match="scale_probe must be > 1"):
        TransferTrainer(scale_probe=1.0)

def test_fast_and_generic_paths_reach_the_same_optimum():
    x, y = data(noise=0.05)  # noise variance 2.5e-3: an interior optimum, away from the default noise constraint
    tight = StoppingRule(rtol=1e-10, max_iter=500)
    fast_model, generic_model = UserGP(x, y).double(), UserGP(x, y).double()
    fast = TransferTrainer(seed=0, device="cpu", stop=tight).fit(fast_model)
    generic = TransferTrainer(seed=0, device="cpu", stop=tight, user_path="generic").fit(generic_model)
    assert fast.info["path"] == "fast" and generic.info["path"] == "generic"
    a, b = final_mll(fast_model), final_mll(generic_model)
    # both optimise the same function (exact mll; the fast path's profiled mean and scale are its maximisers) to
    # rtol 1e-10 of the ll; 1e-6 leaves room for the flat directions of irrelevant features at the box edge
    assert abs(a - b) <= 1e-6 * abs(a), (a, b)
    # and the fast path's analytic value agrees with gpytorch's mll: ll_exact = ll_conc - N/2 (log 2 pi + 1)
    assert math.isclose(fast.info["ll_fflux"] - N / 2 * (math.log(2 * math.pi) + 1), a * N, rel_tol=1e-8)


def test_fast_path_optimum_outside_a_constraint_is_named_and_clamped():
    x, y = data(noise=1e-3)  # noise variance 1e-6, below GaussianLikelihood's default GreaterThan(1e-4)
    model = UserGP(x, y).double()
    with pytest.warns(ConstraintWarning, match=r"noise: optimum .* lies outside the constraint GreaterThan") as rec:
        result = TransferTrainer(seed=0, device="cpu").fit(model)
    assert result.info["path"] == "fast+generic"
    assert {w.filename for w in rec if issubclass(w.category, ConstraintWarning)} == {__file__}   # the user's line
    assert float(model.likelihood.noise) >= 1e-4


def test_noise_floor_above_the_signal_is_named():
    """y in Hartree-like units (var(y) ~ 1e-6): GaussianLikelihood's default noise >= 1e-4 exceeds the signal, the
    mll is flat and every optimiser crawls; the trainer says so before it starts and records it. On the same data
    standardised there is no such warning."""
    x, y = data(n=60, d=3, noise=1e-3)
    small = 1e-3 * (y - y.mean())
    model = UserGP(x, small, "matern25").double()
    with pytest.warns(ConstraintWarning, match=r"noise is constrained to >= 0.0001 .* x var\(y\) = .*Standardise") \
            as rec:
        result = DirectTrainer(restarts=1, seed=0, device="cpu").fit(model)
    assert {w.filename for w in rec if issubclass(w.category, ConstraintWarning)} == {__file__}
    assert "noise_floor" in result.info
    model = UserGP(x, (y - y.mean()) / y.std(), "matern25").double()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConstraintWarning)
        result = DirectTrainer(restarts=1, seed=0, device="cpu").fit(model)
    assert "noise_floor" not in result.info


def test_transfer_widened_by_names_or_a_predicate(xy):
    x, y = xy
    small = dict(seed=0, device="cpu", n_sources=2, source_restarts=1, user_path="generic",
                 stop=StoppingRule(rtol=1e-4), source_stop=StoppingRule(rtol=1e-3))
    default = TransferTrainer(**small).fit(UserGP(x, y, "matern25").double())
    named = TransferTrainer(**small, transfer_parameters=("lengthscale", "outputscale")).fit(
        UserGP(x, y, "matern25").double())
    everything = TransferTrainer(**small, transfer_parameters=lambda name: True).fit(UserGP(x, y, "matern25").double())
    assert default.info["transferred"] == ["model.covar_module.base_kernel.raw_lengthscale"]
    assert set(named.info["transferred"]) == {"model.covar_module.raw_outputscale",
                                              "model.covar_module.base_kernel.raw_lengthscale"}
    assert len(everything.info["transferred"]) == 4
    with pytest.raises(TypeError, match="transfer_parameters"):
        TransferTrainer(**small, transfer_parameters=[1, 2]).fit(UserGP(x, y, "matern25").double())


def test_fit_gpytorch_mll_tl_on_a_fixed_noise_model(xy):
    x, y = xy
    lik = gpytorch.likelihoods.FixedNoiseGaussianLikelihood(noise=torch.full((N,), 2.5e-3, dtype=torch.float64))
    model = UserGP(x, y, "matern25", likelihood=lik).double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gpytorch.utils.warnings.GPInputWarning)  # sources must subset the noise
        result = fit_gpytorch_mll_tl(mll, seed=0, device="cpu", stop=StoppingRule(rtol=1e-5))
    assert result.info["path"] == "generic" and not model.training
    assert "FixedNoiseGaussianLikelihood" not in result.info["path_reason"]  # the kernel sent it there first
    mean, var = result.predict(x[:5], return_var=True)
    assert torch.all(var > 0) and torch.allclose(mean, y[:5], atol=0.2)


def closed_form(x_train, y_train, x_new, theta, mean, nugget, sigma2):
    """sigma2 (1 - k' R^-1 k + nugget) with R = K + nugget I, by a dense solve (the textbook formula)."""
    K = torch.exp(-((x_train[:, None] - x_train[None]) ** 2 * theta).sum(-1))
    k = torch.exp(-((x_new[:, None] - x_train[None]) ** 2 * theta).sum(-1))
    R = K + nugget * torch.eye(len(x_train), dtype=K.dtype)
    mu = mean + k @ torch.linalg.solve(R, y_train - mean)
    return mu, sigma2 * (1 - (k * torch.linalg.solve(R, k.T).T).sum(-1) + nugget)


@pytest.mark.parametrize("convention,likelihood", [("fflux", "concentrated"), ("fflux", "marginal"),
                                                   ("gpytorch", "concentrated")])
def test_predictive_variance_matches_the_closed_form(convention, likelihood):
    x, y = data(n=40, d=3, noise=0.02, seed=1)
    y = 3.0 * y - 7.0  # not standardised: the variance must come out in y units
    result = DirectTrainer(restarts=2, seed=0, device="cpu", convention=convention, likelihood=likelihood,
                           nugget=1e-6).fit((x, y))
    x_new = data(n=25, d=3, seed=2)[0]
    if convention == "gpytorch" or likelihood == "concentrated":
        sigma2 = result.sigma2
    else:  # the concentrated likelihood's sigma^2 at the prediction mean (the training mean here)
        R = torch.exp(-((x[:, None] - x[None]) ** 2 * result.theta).sum(-1)) + result.nugget * torch.eye(40)
        sigma2 = float((y - result.mean) @ torch.linalg.solve(R, y - result.mean)) / 40
    mu_ref, var_ref = closed_form(x, y, x_new, result.theta, result.mean, result.nugget, sigma2)
    mean, var = result.predict(x_new, return_var=True)
    model_mean, model_var = result.model().predict(x_new, return_var=True)
    # R's condition number is below ~1e6 at nugget 1e-6 and N=40, so two Cholesky/LU routes agree to ~1e-12
    # of sigma2; 1e-10 is the tolerance
    assert torch.allclose(var, var_ref, rtol=0, atol=1e-10 * sigma2)
    assert torch.allclose(mean, mu_ref, rtol=0, atol=1e-8)
    assert torch.allclose(model_var, var_ref, rtol=0, atol=1e-10 * sigma2)
    assert torch.allclose(model_mean, mu_ref, rtol=0, atol=1e-8)


def test_user_model_variance_matches_the_closed_form(xy):
    x, y = xy
    model = UserGP(x, y).double()
    result = TransferTrainer(seed=0, device="cpu").fit(model)
    x_new = data(n=20, seed=3)[0]
    theta = 0.5 / model.covar_module.base_kernel.lengthscale.detach().reshape(-1) ** 2
    s, noise = float(model.covar_module.outputscale.detach()), float(model.likelihood.noise.detach())
    mu_ref, var_ref = closed_form(x, y, x_new, theta, float(model.mean_module.constant.detach()), noise / s, s)
    mean, var = result.predict(x_new, return_var=True)
    # gpytorch adds no jitter at this noise (1e-3 relative); its Cholesky and a dense LU agree to ~1e-12
    assert torch.allclose(var, var_ref, rtol=0, atol=1e-10 * s)
    assert torch.allclose(mean, mu_ref, rtol=0, atol=1e-8)


@pytest.mark.slow
def test_standardised_residuals_on_methanol_validation(fflux_dir):
    from tlgp_torch.io.ichor_csv import read_ichor_csv, read_validation_set

    train = read_ichor_csv(fflux_dir / "METHANOL_C1_TRAINING_SET.csv", properties=["iqa"])
    val = read_validation_set(fflux_dir / "METHANOL_C1_VALIDATION_SET.csv", like=train, properties=["iqa"])
    result = TransferTrainer(seed=0, device="cpu").fit(train, "iqa")
    mean, var = result.predict(val.x, return_var=True)
    z = (val.property("iqa").to(mean) - mean) / var.sqrt()
    assert 1 / 3 <= float(z.std()) <= 3, float(z.std())


def test_bad_calls_get_clear_messages(xy):
    x, y = xy
    trainer = TransferTrainer(seed=0, device="cpu")
    with pytest.raises(TypeError, match=r"(?s)fit\(x, y\) with two tensors.*fit\(\(x, y\)\).*Accepted forms"):
        trainer.fit(x, y)
    with pytest.raises(TypeError, match=r"(?s)does not accept str.*fit\(model\)"):
        DirectTrainer().fit("GLYCINE_C1_TRAINING_SET.csv")
    model = UserGP(x, y).double()
    with pytest.raises(TypeError, match="needs gpytorch.mlls.ExactMarginalLogLikelihood, got "
                                        "LeaveOneOutPseudoLikelihood"):
        trainer.fit(gpytorch.mlls.LeaveOneOutPseudoLikelihood(model.likelihood, model))
    with pytest.raises(ValueError, match=r"no ARD lengthscales.*ard_num_dims=4"):
        trainer.fit(UserGP(x, y, "isotropic").double())
    with pytest.raises(ValueError, match="multi-output models are not supported"):
        trainer.fit(UserGP(x, torch.stack([y, y], -1), likelihood=gpytorch.likelihoods.MultitaskGaussianLikelihood(
            num_tasks=2)).double())
    with pytest.raises(ValueError, match=r"training data require grad.*detach"):
        trainer.fit(UserGP(x.clone().requires_grad_(True), y).double())
    with pytest.raises(ValueError, match="cannot take the fast path: kernel MaternKernel"):
        TransferTrainer(user_path="fast").fit(UserGP(x, y, "matern25").double())


def test_anisotropic_gp_is_a_user_model_too(xy):
    x, y = xy
    model = AnisotropicGP(x, y, convention="gpytorch")
    result = DirectTrainer(restarts=2, seed=0, device="cpu").fit(model)
    assert result.info["path"] == "fast" and result.gp is model
    mean, var = result.predict(x[:3], return_var=True)
    assert torch.allclose(mean, y[:3], atol=0.2) and torch.all(var > 0)


class BatchGP(gpytorch.models.ExactGP):
    """Two independent models in one (batch_shape [2]), as gpytorch writes them."""

    def __init__(self, x, y):
        batch = torch.Size([2])
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood(batch_shape=batch))
        self.mean_module = gpytorch.means.ConstantMean(batch_shape=batch)
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=x.shape[-1], batch_shape=batch), batch_shape=batch)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def test_batched_user_model_by_tl():
    (x1, y1), (x2, y2) = data(n=60, d=3, seed=4), data(n=60, d=3, seed=5)
    model = BatchGP(torch.stack([x1, x2]), torch.stack([y1, y2])).double()
    result = TransferTrainer(seed=0, device="cpu").fit(model)
    assert result.info["path"] == "generic" and "batched" in result.info["path_reason"]
    singles = []
    for x, y in ((x1, y1), (x2, y2)):
        single = UserGP(x, y, "matern25").double()
        DirectTrainer(restarts=4, seed=0, device="cpu").fit(single)
        singles.append(final_mll(single))
    # the batch's mll is the sum of its members' (per point); each member reaches its own DL optimum
    assert result.ll / 60 >= sum(singles) - 1e-3 * sum(abs(v) for v in singles), (result.ll / 60, singles)
    mean, var = result.predict(torch.stack([x1[:5], x2[:5]]), return_var=True)
    assert mean.shape == var.shape == (2, 5)
