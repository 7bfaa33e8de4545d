"""The KeOps kernel (optional extra): its products and hyperparameter gradients equal the dense FFLUX kernel's."""
import math

import gpytorch
import pytest
import torch

from tlgp_torch.kernels.cyclic_rbf import CyclicRBFKernel
from tlgp_torch.likelihoods.iterative import IterativeLikelihood
from tlgp_torch.training.iterative import IterativeSettings, relax_iterative

pytest.importorskip("pykeops", reason="pykeops not installed (optional extra: pip install 'tlgp_torch[keops]')")

from tlgp_torch.kernels.keops import CyclicRBFKeOpsKernel


def _data(n=300, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64) * 2.0
    x[:, -1] = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi  # a phi that wraps
    cyclic = torch.zeros(d, dtype=torch.bool)
    cyclic[-1] = True
    return x, cyclic, gen


def _kernels(cyclic, d):
    dense = CyclicRBFKernel(cyclic=cyclic, ard_num_dims=d).double()
    keops = CyclicRBFKeOpsKernel(cyclic=cyclic, ard_num_dims=d).double()
    with torch.no_grad():
        dense.lengthscale = torch.tensor([[0.7, 1.3, 2.0, 0.9]], dtype=torch.float64)
        keops.lengthscale = dense.lengthscale
    return dense, keops


def test_keops_products_and_gradients_equal_the_dense_kernel():
    x, cyclic, gen = _data()
    dense, keops = _kernels(cyclic, x.shape[1])
    v = torch.randn(x.shape[0], 3, generator=gen, dtype=torch.float64)
    w = torch.randn(x.shape[0], 3, generator=gen, dtype=torch.float64)
    with gpytorch.settings.max_cholesky_size(0), gpytorch.settings.lazily_evaluate_kernels(False):
        k_dense = dense(x, x).to_dense()
        op = keops(x, x)
        assert type(op).__name__ == "KernelLinearOperator"  # symbolic: no n x n storage
        torch.testing.assert_close(op @ v, k_dense @ v, rtol=1e-12, atol=1e-12)
        (g_dense,) = torch.autograd.grad((w * (dense(x, x).to_dense() @ v)).sum(), dense.raw_lengthscale)
        (g_keops,) = torch.autograd.grad((w * (keops(x, x) @ v)).sum(), keops.raw_lengthscale)
    torch.testing.assert_close(g_keops, g_dense, rtol=1e-10, atol=1e-10)
    assert float(g_dense.abs().min()) > 1e-6  # the wrapped feature's gradient is exercised too


def test_keops_kernel_is_dense_below_max_cholesky_size():
    x, cyclic, _ = _data(n=50)
    dense, keops = _kernels(cyclic, x.shape[1])
    with gpytorch.settings.max_cholesky_size(1000), gpytorch.settings.lazily_evaluate_kernels(False):
        torch.testing.assert_close(keops(x, x).to_dense(), dense(x, x).to_dense(), rtol=0, atol=0)


@pytest.mark.numerics
def test_iterative_estimate_with_keops_equals_it_without():
    """The iterative likelihood estimate (CG + Lanczos, fixed landmarks and probes) and its gradient agree with
    and without KeOps kernel products (dense lean kernel); a relaxation step records that it used KeOps."""
    x, cyclic, gen = _data(n=400)
    y = torch.sin(x[:, 0] * 2.0) + x[:, 1] ** 2 + torch.cos(x[:, 3])
    u = torch.tensor([0.5, 0.5, 0.5, 3.0], dtype=torch.float64).log()
    kw = dict(preconditioner_rank=50, trace_samples=8, cg_tolerance=1e-8)
    a = IterativeLikelihood(x, y, cyclic, 1e-6, kernel="keops", **kw)(u)
    b = IterativeLikelihood(x, y, cyclic, 1e-6, kernel="dense", **kw)(u)
    # 8e-5 measured: last-bit differences of the products change the Lanczos quadrature's iterations
    assert abs(a.ll - b.ll) < 5e-4 * abs(b.ll)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6 * float(b.grad.abs().max()))
    assert float(b.grad.abs().min()) > 0  # every feature's gradient is exercised, the wrapped one included
    out = relax_iterative(x, y, cyclic, u.exp(), 1e-6, IterativeSettings(kernel="keops", max_iter=1,
                                                                         preconditioner_rank=50, trace_samples=4),
                          lower=u - 1.0, upper=u + 1.0)
    assert out.kernel == "keops" and out.steps == 1 and not torch.equal(out.theta, u.exp())
