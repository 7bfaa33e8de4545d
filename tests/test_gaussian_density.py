"""The analytic-backward Gaussian density of the generic path, and the generic objective built on it."""
from __future__ import annotations

import gpytorch
import pytest
import torch

from tlgp_torch.likelihoods.gaussian import NotPositiveDefinite, gaussian_log_density
from tlgp_torch.training.generic import mll_settings, objective, profiled_constant
from tlgp_torch.training.settings import FitSettings
from tlgp_torch.training.user_model import inspect_model


def spd(batch: tuple, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, n, n, dtype=torch.float64, generator=g)
    return a @ a.transpose(-1, -2) / n + 0.1 * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("batch", [(), (3,)])
def test_density_and_gradient_match_autograd_through_torch(batch):
    K = spd(batch, 12).requires_grad_()
    r = torch.randn(*batch, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    w = torch.linspace(1.0, 2.0, max(1, sum(batch)), dtype=torch.float64).reshape(batch)  # distinct weights
    lp, c = gaussian_log_density(K, r)
    gK, gr = torch.autograd.grad((w * lp).sum(), (K, r))
    mvn = torch.distributions.MultivariateNormal(torch.zeros_like(r), K)
    ref = mvn.log_prob(r)
    rK, rr = torch.autograd.grad((w * ref).sum(), (K, r))
    assert torch.allclose(lp, ref, rtol=1e-12, atol=0)
    assert float(c.abs().max()) == 0.0
    # torch's gradient of a symmetric input is not symmetrised: compare the symmetric parts
    assert torch.allclose(gK, 0.5 * (rK + rK.transpose(-1, -2)), rtol=1e-9, atol=1e-12)
    assert torch.allclose(gr, rr, rtol=1e-10, atol=1e-12)


def test_profiled_constant_is_the_gls_mean_and_maximises_the_density():
    K = spd((), 15, seed=2)
    r = torch.randn(15, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 4.0
    lp, c = gaussian_log_density(K, r, profile=True)
    Ki = torch.linalg.inv(K)
    one = torch.ones(15, dtype=torch.float64)
    assert float(c) == pytest.approx(float(one @ Ki @ r / (one @ Ki @ one)), rel=1e-12)
    for dc in (-0.1, 0.1):  # log p at c + dc is lower
        assert float(gaussian_log_density(K, r - float(c) - dc)[0]) < float(lp)
    assert float(gaussian_log_density(K, r - float(c))[0]) == pytest.approx(float(lp), rel=1e-12)
    rr = r.clone().requires_grad_()
    (g,) = torch.autograd.grad(gaussian_log_density(K, rr, profile=True)[0], rr)
    assert abs(float(g.sum())) < 1e-10          # a constant shift of r changes nothing at the optimum


def test_indefinite_covariance_is_reported():
    K = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    with pytest.raises(NotPositiveDefinite, match="column"):
        gaussian_log_density(K, torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"K \[\*batch, N, N\] and r \[\*batch, N\]"):
        gaussian_log_density(torch.eye(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64))


class Matern(gpytorch.models.ExactGP):
    def __init__(self, x, y, prior: bool = False):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean(
            constant_prior=gpytorch.priors.NormalPrior(0.0, 1.0) if prior else None)
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=3))

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def test_generic_objective_equals_gpytorch_mll_and_its_autograd_gradient():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 3, dtype=torch.float64, generator=g)
    y = torch.sin(4 * x).sum(-1) + 3.0
    model = Matern(x, y, prior=True).double()
    um = inspect_model(model)
    pv = um.parameter_vector()
    u = pv.get() + 0.3
    f, grad = objective(um, pv)(u[None], torch.arange(1))
    pv.set(u)
    with mll_settings():
        loss = -um.mll(um.model(um.x), um.y).sum()
        ref = pv.gradient(loss)
    assert float(f[0]) == pytest.approx(float(loss.detach()), rel=1e-12)
    assert torch.allclose(grad[0], ref, rtol=1e-8, atol=1e-12)
    # a prior on the constant keeps it a free parameter; without one it is profiled (GLS) with zero gradient
    assert profiled_constant(FitSettings(), um) is None
    plain = inspect_model(Matern(x, y).double())
    prof = profiled_constant(FitSettings(), plain)
    assert prof is plain.model.mean_module
    assert profiled_constant(FitSettings(profile_mean=False), plain) is None
    ppv = plain.parameter_vector()
    fp, gp = objective(plain, ppv, prof)(ppv.get()[None], torch.arange(1))
    fu, _ = objective(plain, ppv)(ppv.get()[None], torch.arange(1))
    k = [i for i, name in enumerate(ppv.names) if "raw_constant" in name]
    assert float(fp[0]) < float(fu[0])               # constant 0 against data around 3: the GLS constant is better
    assert float(gp[0, k].abs().max()) < 1e-10


def test_switched_off_lengthscale_is_revived_to_the_typical_ratio():
    from tlgp_torch.training.generic import revive_switched_off
    from tlgp_torch.training.prepare import generator
    from tlgp_torch.training.starts import feature_spread
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 3, dtype=torch.float64, generator=g) * torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    um = inspect_model(Matern(x, x.sum(-1)).double())
    pv = um.parameter_vector()
    s = feature_spread(x, generator=generator(0))
    k = [i for i, name in enumerate(pv.names) if "lengthscale" in name][0]
    at = sum(pv.sizes[:k])
    u = pv.get()
    u[at:at + 3] = (torch.tensor([20.0, 60.0, 5000.0], dtype=torch.float64) * s).log()   # l/s: 20, 60, 5000
    before = u.clone()
    assert revive_switched_off(um, pv, u, 1e-3) == 1
    assert torch.equal(u[:at + 2], before[:at + 2]) and torch.equal(u[at + 3:], before[at + 3:])
    assert float(u[at + 2].exp() / s[2]) == pytest.approx(1200 ** 0.5, rel=1e-9)   # geometric median of 20, 60
    assert revive_switched_off(um, pv, u, 1e-3) == 0                               # nothing left to revive


def test_a_switched_off_lengthscale_that_carries_a_trend_is_left_alone():
    """l/s = 5000 is switched off under an outputscale of var(y) (the kernel varies by 4e-8 var(y) along the
    feature) and revived; under the source's outputscale of 1e6 var(y) (4e-2 var(y): a flat-limit trend) it stays."""
    from tlgp_torch.training.generic import revive_switched_off
    from tlgp_torch.training.prepare import generator
    from tlgp_torch.training.starts import feature_spread
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 3, dtype=torch.float64, generator=g)
    y = torch.sin(3 * x[:, 0]) + x[:, 2]
    model = Matern(x, y).double()
    um = inspect_model(model)
    pv = um.parameter_vector()
    s = feature_spread(x, generator=generator(0))
    model.covar_module.base_kernel.lengthscale = torch.tensor([1.0, 2.0, 5000.0], dtype=torch.float64) * s
    var_y = float(y.var())
    model.covar_module.outputscale = var_y
    seed = pv.get()
    model.covar_module.outputscale = 1e6 * var_y
    source = pv.get()
    pv.set(seed)
    u = seed.clone()
    assert revive_switched_off(um, pv, u, 1e-3, amplitude_from=source) == 0 and torch.equal(u, seed)
    assert revive_switched_off(um, pv, u, 1e-3) == 1                      # judged by u's own outputscale
    assert float(model.covar_module.base_kernel.lengthscale[0, 2] / s[2]) == pytest.approx(5000.0, rel=1e-9)
    assert float(model.covar_module.outputscale) == pytest.approx(var_y, rel=1e-6)   # the model is left as it was
