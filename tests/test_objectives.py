"""FFLUX likelihoods: reproduce FEREBUS's reference values; analytic gradient equals autograd."""
import math
import os
import subprocess
import sys

import pytest
import torch

from tlgp_torch.io.ferebus_model import read_ferebus_model
from tlgp_torch.kernels.formula import rbf_matrix
from tlgp_torch.likelihoods.exact import FFLUXLikelihood, fflux_log_likelihood

REFERENCE = [  # file, relative tolerance (ammonia's theta is printed with few digits)
    ("WATER_iqa_O1.marginal.model", 1e-6), ("WATER_iqa_O1.concentrated.model", 1e-6),
    ("AMMONIA_iqa_N1.marginal.model", 1e-5), ("AMMONIA_iqa_N1.concentrated.model", 1e-5),
    ("METHANOL_iqa_C1.marginal.model", 1e-6), ("METHANOL_iqa_C1.concentrated.model", 1e-6),
]


@pytest.mark.parametrize("name,rtol", REFERENCE)
def test_reference_likelihood(fflux_dir, name, rtol):
    m = read_ferebus_model(fflux_dir / "reference" / name)
    kind = name.split(".")[1]
    ll = fflux_log_likelihood(m.x, m.y, m.theta, kind=kind, nugget=m.nugget)
    assert ll == pytest.approx(m.likelihood, rel=rtol)


def test_reference_means(fflux_dir):
    """The concentrated file's mean is the GLS mean, the marginal file's the training mean."""
    for kind in ("concentrated", "marginal"):
        m = read_ferebus_model(fflux_dir / "reference" / f"METHANOL_iqa_C1.{kind}.model")
        ev = FFLUXLikelihood(m.x, m.y, kind=kind)(m.theta.log()[None], grad=False)
        assert float(ev.mean[0]) == pytest.approx(m.mean, abs=1e-8)


def _autograd_ll(x, y, u, cyc, kind, learn, nugget):
    d, n = x.shape[1], x.shape[0]
    theta = u[:d].exp()
    g = u[d].exp() if learn else torch.tensor(nugget, dtype=x.dtype)
    L = torch.linalg.cholesky(rbf_matrix(x, x, theta, cyc) + g * torch.eye(n, dtype=x.dtype))
    solve = lambda v: torch.cholesky_solve(v[:, None], L)[:, 0]  # noqa: E731
    if kind == "concentrated":
        mu = solve(y).sum() / solve(torch.ones_like(y)).sum()
        s2 = ((y - mu) * solve(y - mu)).sum() / n
        return -n / 2 * s2.log() - L.diagonal().log().sum()
    r = y - y.mean()
    return -0.5 * (r * solve(r)).sum() - L.diagonal().log().sum() - n / 2 * math.log(2 * math.pi)


@pytest.mark.parametrize("kind", ["concentrated", "marginal"])
@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("cache", [True, False, "lean"])
def test_analytic_gradient_matches_autograd(kind, learn, cache):
    gen = torch.Generator().manual_seed(1)
    n, d = 50, 9
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x[:, 5::3] = (torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi  # spans the seam
    y = torch.sin(x).sum(1)
    cyc = torch.zeros(d, dtype=torch.bool)
    cyc[2::3] = True
    u = torch.rand(d, generator=gen, dtype=torch.float64) * 2 - 1.5
    if learn:
        u = torch.cat([u, torch.tensor([-6.0], dtype=torch.float64)])
    u.requires_grad_()
    ref = _autograd_ll(x, y, u, cyc, kind, learn, 1e-4)
    ref.backward()
    lik = FFLUXLikelihood(x, y, cyclic=cyc, kind=kind, nugget=1e-4, learn_nugget=learn,
                          cache_bytes=1e9 if cache else 0, lean=cache == "lean")
    assert (lik.cyc_cache is not None) == (cache is True)
    lik.block_rows = 7  # several row blocks, the last one short
    ev = lik(u.detach()[None])
    assert float(ev.ll[0]) == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(ev.grad[0], u.grad, rtol=1e-9, atol=1e-11)


def test_batched_groups_equal_single():
    """Members on different data sets (groups) give the same values as separate evaluations."""
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 30, 6, generator=gen, dtype=torch.float64) * 4
    y = x.sum(-1).cos()
    u = torch.rand(5, 6, generator=gen, dtype=torch.float64) - 2
    groups = torch.tensor([0, 1, 2, 1, 0])
    lik = FFLUXLikelihood(x, y, cyclic=torch.tensor([0, 0, 1, 0, 0, 1], dtype=torch.bool))
    ev = lik(u, member_group=groups)
    for i, g in enumerate(groups.tolist()):
        one = FFLUXLikelihood(x[g], y[g], cyclic=lik.cyc)(u[i:i + 1])
        torch.testing.assert_close(ev.ll[i], one.ll[0])
        torch.testing.assert_close(ev.grad[i], one.grad[0])


@pytest.mark.parametrize("lean", [False, True])
def test_duplicate_points_get_jitter_not_nan(lean):
    """Identical rows make R singular at a tiny nugget: jitter escalation, reported, never NaN."""
    x = torch.rand(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = torch.cat([x, x[:5]])
    y = x.sum(1)
    ev = FFLUXLikelihood(x, y, nugget=1e-16, lean=lean)(torch.zeros(1, 3))
    assert bool(ev.jittered[0]) and float(ev.nugget[0]) > 1e-16
    assert torch.isfinite(ev.ll).all() and torch.isfinite(ev.grad).all()


@pytest.mark.parametrize("lean", [False, True])
def test_hopeless_member_fails_alone(lean):
    """The wrapped-difference kernel is not positive definite for long lengthscales on a full circle: such a
    member gets ll = -inf after jitter escalation, the other member is untouched."""
    x = torch.linspace(-math.pi, math.pi, 41, dtype=torch.float64)[:-1, None]
    lik = FFLUXLikelihood(x, x[:, 0].sin(), cyclic=torch.tensor([True]), nugget=1e-6, max_jitter=1e-4, lean=lean)
    ev = lik(torch.tensor([[-2.0], [1.0]], dtype=torch.float64))
    assert ev.failed.tolist() == [True, False] and ev.jittered.tolist() == [True, False]
    assert ev.ll[0] == -math.inf and torch.isfinite(ev.ll[1]) and (ev.grad[0] == 0).all()


def test_bad_arguments():
    x = torch.rand(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="kind"):
        FFLUXLikelihood(x, x[:, 0], kind="loo")
    with pytest.raises(ValueError, match="finite"):
        FFLUXLikelihood(x, torch.tensor([1.0, 2.0, float("nan"), 3.0, 4.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="cyclic"):
        FFLUXLikelihood(x, x[:, 0], cyclic=torch.ones(3, dtype=torch.bool))


LEAN_PEAK = """
import sys, torch
from tlgp_torch.likelihoods.exact import FFLUXLikelihood
n, lean = 3000, sys.argv[1] == "lean"
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
gen = torch.Generator().manual_seed(0)
x = torch.rand(n, 6, generator=gen, dtype=torch.float64) * 4 - 2
x[:, 5] *= 1.6  # a periodic feature that wraps
lik = FFLUXLikelihood(x, x.sum(1).sin(), cyclic=torch.tensor([0, 0, 0, 0, 0, 1], dtype=torch.bool), lean=lean)
lik.block_rows = 200  # temporaries of 200 x n (the default is 16 MB: small against a big n x n matrix)
u = torch.full((1, 6), 1.0, dtype=torch.float64)
lik(u)  # warm-up: allocator pools and BLAS buffers
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
base = status("VmRSS")
ev = lik(u)
print((status("VmHWM") - base) / (n * n * 8), float(ev.ll[0]), float(ev.grad[0, 0]))
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="peak-memory reset needs a writable Linux /proc/self/clear_refs")
def test_lean_path_needs_about_one_matrix():
    """Peak memory of one N=3000 likelihood+gradient: the lean path needs ~1 n x n matrix, the batched one ~4;
    both give the same numbers."""
    out = {}
    for mode in ("lean", "batched"):
        run = subprocess.run([sys.executable, "-c", LEAN_PEAK, mode], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        out[mode] = [float(v) for v in run.stdout.strip().splitlines()[-1].split()]  # last line: libraries may print
    assert out["lean"][0] < 1.75 and out["batched"][0] > 3.0, out
    assert math.isfinite(out["lean"][1])
    assert out["lean"][1] == pytest.approx(out["batched"][1], rel=1e-12)
    assert out["lean"][2] == pytest.approx(out["batched"][2], rel=1e-9)


def test_one_numerical_warning_class():
    """The package warns with linear_operator's NumericalWarning (re-exported by likelihoods), so one filter
    catches both gpytorch's and ours; e.g. duplicate training points."""
    from linear_operator.utils.warnings import NumericalWarning

    import tlgp_torch.likelihoods as likelihoods
    from tlgp_torch.likelihoods import exact
    from tlgp_torch.training.direct import DirectTrainer
    from tlgp_torch.training.prepare import prepare

    assert likelihoods.NumericalWarning is exact.NumericalWarning is NumericalWarning
    x = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    x[5] = x[0]
    with pytest.warns(NumericalWarning, match="1 duplicate training point"):
        prepare(DirectTrainer(device="cpu"), (x, x.sum(1)), None)


def test_fflux_log_likelihood_warning_names_the_callers_line():
    """A kernel matrix that does not factorise at the given nugget (a duplicated point, nugget 1e-18) gives -inf and
    a warning that points at the line that called fflux_log_likelihood, not at the package."""
    from tlgp_torch.likelihoods import NumericalWarning, fflux_log_likelihood

    x = torch.rand(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[9] = x[0]
    with pytest.warns(NumericalWarning, match="not positive definite") as rec:
        ll = fflux_log_likelihood(x, torch.sin(3 * x).sum(-1), torch.ones(2, dtype=torch.float64), nugget=1e-18)
    assert ll == -math.inf
    assert [w.filename for w in rec if "not positive definite" in str(w.message)] == [__file__]
