"""Kernels: wrapped differences, CyclicRBFKernel against the FFLUX formula and finite differences."""
import math

import gpytorch
import pytest
import torch

from tlgp_torch.kernels.cyclic_rbf import CyclicRBFKernel
from tlgp_torch.kernels.formula import lengthscale_to_theta, rbf_matrix, scaled_sq_dist, wrap_angle, wrap_correction


def test_wrap_angle_values():
    d = torch.tensor([0.0, 1.0, -1.0, 3.0, -3.0, 4.0, -4.0, 2 * math.pi - 0.1, -(2 * math.pi - 0.1)],
                     dtype=torch.float64)
    expect = torch.tensor([0.0, 1.0, -1.0, 3.0, -3.0, 4.0 - 2 * math.pi, -4.0 + 2 * math.pi, -0.1, 0.1],
                          dtype=torch.float64)
    torch.testing.assert_close(wrap_angle(d), expect)
    assert float(wrap_angle(torch.tensor(math.pi, dtype=torch.float64)).abs()) == pytest.approx(math.pi)


def _direct(x1, x2, theta, cyclic):
    out = torch.empty(x1.shape[0], x2.shape[0], dtype=x1.dtype)
    for i in range(x1.shape[0]):
        for j in range(x2.shape[0]):
            s = 0.0
            for d in range(x1.shape[1]):
                delta = float(x1[i, d] - x2[j, d])
                if cyclic[d]:
                    delta = math.copysign(1.0, delta) * (math.fmod(abs(delta) + math.pi, 2 * math.pi) - math.pi)
                s += float(theta[d]) * delta * delta
            out[i, j] = math.exp(-s)
    return out


def test_rbf_matrix_matches_direct_formula_across_seam():
    gen = torch.Generator().manual_seed(0)
    x1 = torch.rand(7, 6, generator=gen, dtype=torch.float64)
    x2 = torch.rand(5, 6, generator=gen, dtype=torch.float64)
    x1[:, 5] = torch.linspace(-math.pi + 0.01, math.pi, 7, dtype=torch.float64)
    x2[:, 5] = torch.tensor([math.pi - 0.02, -math.pi + 0.03, 0.0, 2.0, -2.5], dtype=torch.float64)
    theta = torch.tensor([0.3, 1.2, 0.05, 0.7, 2.0, 0.9], dtype=torch.float64)
    cyc = torch.tensor([False, False, True, False, False, True])
    torch.testing.assert_close(rbf_matrix(x1, x2, theta, cyc), _direct(x1, x2, theta, cyc), rtol=1e-12, atol=1e-14)
    # a point just across the seam is close, not 2 pi away
    k = rbf_matrix(torch.tensor([[math.pi - 0.01]]), torch.tensor([[-math.pi + 0.01]]), torch.tensor([1.0]),
                   torch.tensor([True]))
    assert float(k) == pytest.approx(math.exp(-0.02 ** 2))


def test_gpytorch_kernel_equals_fflux_formula():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(9, 6, generator=gen, dtype=torch.float64) * 6 - 3
    cyc = torch.tensor([False, False, True, False, False, True])
    k = CyclicRBFKernel(cyclic=cyc, ard_num_dims=6).double()
    k.lengthscale = torch.tensor([[0.5, 1.0, 2.0, 0.3, 0.8, 1.5]], dtype=torch.float64)
    theta = lengthscale_to_theta(k.lengthscale.detach()).reshape(-1)
    with torch.no_grad():
        dense = k(x, x).to_dense()
        diag = k(x, x, diag=True)
    torch.testing.assert_close(dense, rbf_matrix(x, x, theta, cyc), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(diag, torch.ones(9, dtype=torch.float64))


def test_gradient_finite_differences_across_seam():
    """gradcheck w.r.t. inputs and lengthscales with points straddling +-pi in the periodic dimension."""
    cyc = torch.tensor([False, True])
    k = CyclicRBFKernel(cyclic=cyc, ard_num_dims=2).double()
    x1 = torch.tensor([[0.1, math.pi - 0.05], [0.4, -math.pi + 0.1], [1.0, 0.5]], dtype=torch.float64,
                      requires_grad=True)
    x2 = torch.tensor([[0.2, -math.pi + 0.02], [0.9, math.pi - 0.3]], dtype=torch.float64, requires_grad=True)
    raw = k.raw_lengthscale.detach().clone().requires_grad_(True)

    def f(a, b, r):
        theta = lengthscale_to_theta(k.raw_lengthscale_constraint.transform(r)).reshape(-1)
        return rbf_matrix(a, b, theta, cyc)

    assert torch.autograd.gradcheck(f, (x1, x2, raw), eps=1e-6, atol=1e-8)
    with torch.no_grad():
        k.raw_lengthscale.copy_(raw)
    k.raw_lengthscale.grad = None
    k(x1, x2).to_dense().sum().backward()  # the gpytorch module backpropagates to its lengthscale
    assert k.raw_lengthscale.grad is not None and torch.isfinite(k.raw_lengthscale.grad).all()


def test_batch_shape_kernel():
    k = CyclicRBFKernel(cyclic=torch.tensor([False, True]), ard_num_dims=2, batch_shape=torch.Size([3])).double()
    x = torch.rand(3, 4, 2, dtype=torch.float64)
    with gpytorch.settings.lazily_evaluate_kernels(False):
        assert k(x, x).to_dense().shape == (3, 4, 4)


def test_mask_length_checked():
    with pytest.raises(ValueError, match="cyclic mask"):
        CyclicRBFKernel(cyclic=torch.ones(3, dtype=torch.bool), ard_num_dims=2)


def test_periodic_flag_changes_no_bit_where_nothing_wraps():
    """wrap_correction is exactly 0 for |delta| <= pi, so flagging a feature that never wraps as periodic changes
    no bit of the distances, and where it wraps the distance is FEREBUS's wrapped one."""
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(30, 3, generator=gen, dtype=torch.float64) * 3.0 - 1.5   # spans < pi
    theta = torch.rand(3, generator=gen, dtype=torch.float64) + 0.1
    flagged = scaled_sq_dist(x, x, theta, torch.tensor([False, True, True]))
    assert torch.equal(flagged, scaled_sq_dist(x, x, theta))
    x[:, 2] = (torch.rand(30, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi  # crosses the seam
    wrapped = scaled_sq_dist(x, x, theta, torch.tensor([False, False, True]))
    delta = x.unsqueeze(1) - x.unsqueeze(0)
    delta[..., 2] = wrap_angle(delta[..., 2])
    torch.testing.assert_close(wrapped, (delta.pow(2) * theta).sum(-1), rtol=1e-12, atol=1e-12)
    assert bool((wrap_correction(torch.tensor([-math.pi, 0.5, math.pi], dtype=torch.float64)) == 0).all())


@pytest.mark.parametrize("reach", [2.0 * math.pi, 7.0 * math.pi])
def test_wrap_correction_is_ferebus_wrap_squared_minus_delta_squared(reach):
    """The fast form (-4 pi (|delta| - pi) within 3 pi) and the general fallback (angles more than a period apart)
    both equal wrap_angle(delta)^2 - delta^2, and are exactly 0 where |delta| <= pi."""
    gen = torch.Generator().manual_seed(5)
    delta = (torch.rand(4001, generator=gen, dtype=torch.float64) * 2 - 1) * reach
    expected = wrap_angle(delta).pow(2) - delta.pow(2)
    got = wrap_correction(delta)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12 * reach**2)
    assert bool((got[delta.abs() <= math.pi] == 0).all())
    assert bool((got[delta.abs() > math.pi + 1e-9] < 0).all())
