"""lean_kernel_matrix: the kernel of rbf_matrix, and the gradient autograd takes through rbf_matrix."""
import math

import pytest
import torch

from tlgp_torch.kernels.formula import rbf_matrix
from tlgp_torch.kernels.lean import lean_kernel_matrix
from tlgp_torch.likelihoods.landmarks import pivoted_landmarks


def _data(n=23, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64) * 2.0
    x[:, 5] = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi  # pairs that wrap
    cyc = torch.tensor([False, False, False, True, False, True])
    log_theta = torch.log(torch.tensor([0.3, 1.2, 0.05, 0.7, 2.0, 0.9], dtype=torch.float64))
    G = torch.randn(n, n, generator=gen, dtype=torch.float64)  # not symmetric, as gpytorch's probe terms are not
    return x, cyc, log_theta, G


@pytest.mark.parametrize("block_rows", [1, 5, 23, None])
@pytest.mark.parametrize("periodic", [True, False])
def test_lean_kernel_value_and_gradient_equal_autograd(block_rows, periodic):
    x, cyc, log_theta, G = _data()
    cyc = cyc if periodic else None
    u = log_theta.clone().requires_grad_(True)
    K_ref = rbf_matrix(x, x, u.exp(), cyc)
    (g_ref,) = torch.autograd.grad((K_ref * G).sum(), u)
    v = log_theta.clone().requires_grad_(True)
    K = lean_kernel_matrix(v, x, cyc, block_rows)
    (g,) = torch.autograd.grad((K * G).sum(), v)
    torch.testing.assert_close(K, K_ref.detach(), rtol=1e-13, atol=1e-14)  # blocked matmuls round apart
    torch.testing.assert_close(g, g_ref, rtol=1e-11, atol=1e-11)
    assert g.abs().min() > 0  # every feature, periodic ones included, contributes


def test_lean_kernel_gradcheck():
    x, cyc, log_theta, _ = _data(n=9, seed=1)
    u = log_theta.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: lean_kernel_matrix(t, x, cyc, 4), (u,))


def test_lean_kernel_rejects_bad_shapes():
    x, cyc, log_theta, _ = _data()
    with pytest.raises(ValueError, match=r"x \[N, D\] and log_theta \[D\]"):
        lean_kernel_matrix(log_theta[:3], x, cyc)


@pytest.mark.numerics
def test_blocked_operator_products_and_derivative_equal_the_dense_kernel():
    """BlockedKernelOperator: products, entries, diagonal and the bilinear derivative of the dense kernel."""
    from linear_operator.operators import DenseLinearOperator

    from tlgp_torch.kernels.blocked import BlockedKernelOperator
    x, cyc, log_theta, _ = _data(n=31, seed=2)
    idx = tuple(torch.nonzero(cyc).flatten().tolist())
    op = BlockedKernelOperator(x, log_theta, idx, block_rows=7)
    K = rbf_matrix(x, x, log_theta.exp(), cyc)
    rhs = torch.randn(31, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(op @ rhs, K @ rhs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.to_dense(), K)
    torch.testing.assert_close(op[torch.tensor([4, 9]), :].to_dense(), K[[4, 9]], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(op.diagonal(), torch.ones(31, dtype=torch.float64))
    # landmarks with the index tie rule: the same from either form, although their entries differ in last bits
    piv, piv_ref = pivoted_landmarks(op, 8), pivoted_landmarks(DenseLinearOperator(K), 8)
    assert piv.tolist() == piv_ref.tolist() and piv[0] == 0  # diag K = 1: the first pivot is a tie, index 0 wins
    # d/d log theta of u^T K v, summed over columns: autograd through rbf_matrix
    gen = torch.Generator().manual_seed(4)
    left, right = (torch.randn(31, 5, dtype=torch.float64, generator=gen) for _ in range(2))
    u = log_theta.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad((left * (rbf_matrix(x, x, u.exp(), cyc) @ right)).sum(), u)
    none, g = op._bilinear_derivative(left, right)
    assert none is None
    torch.testing.assert_close(g, ref, rtol=1e-11, atol=1e-11)


def test_blocked_operator_solve_gradient_reaches_log_theta():
    """Through linear_operator's CG solve and its backward, the blocked operator's log theta gradient equals the
    lean dense kernel's."""
    from linear_operator import settings, to_linear_operator

    from tlgp_torch.kernels.blocked import BlockedKernelOperator
    x, cyc, log_theta, _ = _data(n=40, seed=5)
    idx = tuple(torch.nonzero(cyc).flatten().tolist())
    y = torch.sin(x.sum(-1, keepdim=True))
    grads = []
    for blocked in (True, False):
        u = log_theta.clone().requires_grad_(True)
        K = BlockedKernelOperator(x, u, idx, block_rows=9) if blocked else lean_kernel_matrix(u, x, cyc)
        R = to_linear_operator(K).add_diagonal(torch.tensor(1e-4, dtype=torch.float64))
        with settings.max_cholesky_size(0), settings.cg_tolerance(1e-5), settings.max_cg_iterations(1000):
            quad, _ = R.inv_quad_logdet(y, logdet=False)
        (g,) = torch.autograd.grad(quad, u)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-6)


def _largest_allocation(kernel: str, x, y, cyc, monkeypatch) -> int:
    from torch.profiler import ProfilerActivity, profile

    import tlgp_torch.kernels.blocked as lk
    from tlgp_torch.likelihoods.iterative import IterativeLikelihood
    monkeypatch.setattr(lk, "block_rows_for", lambda x: 40)
    lik = IterativeLikelihood(x, y, cyc, 1e-2, kernel=kernel, preconditioner_rank=20, trace_samples=4,
                              max_cg_iterations=30, lanczos_iterations=30)
    u = torch.full((x.shape[1],), 0.3, dtype=torch.float64).log()
    lik(u)  # landmarks picked outside the profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        lik(u)
    return max(e.cpu_memory_usage for e in prof.events())


@pytest.mark.filterwarnings("ignore::UserWarning")  # CG capped at 30 iterations; the profiler's start notice
def test_blocked_iterative_evaluation_allocates_nothing_n_by_n(monkeypatch):
    """One ll+gradient evaluation with kernel='blocked' allocates at most a row block (40 x n), the dense kernel
    at least n x n (1.04 n^2 doubles measured at n=1200)."""
    x, cyc, _, _ = _data(n=400, seed=6)
    y = torch.sin(x.sum(-1))
    n2 = 400 * 400 * 8
    assert _largest_allocation("blocked", x, y, cyc, monkeypatch) <= 0.11 * n2
    assert _largest_allocation("dense", x, y, cyc, monkeypatch) >= n2
