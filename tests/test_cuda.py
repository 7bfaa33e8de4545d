"""CUDA paths against the CPU (skipped where no GPU is present, as in CI; run on a lent GPU by
experiments/device_checks.sh)."""
import dataclasses
import math

import pytest
import torch

from tlgp_torch.likelihoods.exact import FFLUXLikelihood
from tlgp_torch.models.posterior import fflux_weights
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.transfer import TransferTrainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _data(n=200, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64) * 3 - 1.5
    x[:, -1] = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi  # wraps
    y = (4 * x[:, 0]).sin() + (3 * x[:, 1:-1]).cos().sum(1) + (2 * x[:, -1]).cos()  # rough: well-conditioned K
    cyc = torch.zeros(d, dtype=torch.bool)
    cyc[-1] = True
    return x, y, cyc


@pytest.mark.parametrize("lean", [False, True])
def test_likelihood_on_cuda_equals_cpu(lean):
    x, y, cyc = _data()
    u = torch.full((3, x.shape[1]), 0.5, dtype=torch.float64) + torch.linspace(-1, 1, 3, dtype=torch.float64)[:, None]
    cpu = FFLUXLikelihood(x, y, cyclic=cyc, lean=lean)(u)
    gpu = FFLUXLikelihood(x.cuda(), y.cuda(), cyclic=cyc, lean=lean)(u.cuda())
    torch.testing.assert_close(gpu.ll.cpu(), cpu.ll, rtol=1e-10, atol=0)
    torch.testing.assert_close(gpu.grad.cpu(), cpu.grad, rtol=1e-8, atol=1e-8)


def test_in_place_weights_on_cuda_equal_cpu():
    x, y, cyc = _data()
    theta = torch.full((x.shape[1],), 2.0, dtype=torch.float64)
    w = fflux_weights(x, y, theta, 0.1, 1e-8, cyc)
    torch.testing.assert_close(fflux_weights(x.cuda(), y.cuda(), theta.cuda(), 0.1, 1e-8, cyc.cuda()).cpu(), w,
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("trainer", [DirectTrainer(restarts=2, seed=0, stop=StoppingRule(max_iter=60)),
                                     TransferTrainer(seed=0, source_size=0.5, stop=StoppingRule(max_iter=60))],
                         ids=["DL", "TL"])
def test_training_on_cuda_matches_cpu(trainer):
    """Same optimum on both devices (paths may differ in the last bits, so compare the likelihood)."""
    tasks = [(_data(seed=s), None) for s in (1, 2)]
    cpu = dataclasses.replace(trainer, device="cpu").fit_many(tasks)
    gpu = dataclasses.replace(trainer, device="cuda").fit_many(tasks)
    for a, b in zip(cpu, gpu):
        assert b.status == "ok" and b.x_train.is_cuda
        assert b.ll_concentrated == pytest.approx(a.ll_concentrated, rel=1e-4)


def _iterative_estimate(device: str, kernel: str = "dense"):
    """The iterative ll estimate on `device`, twice, next to the exact ll and gradient (CPU)."""
    from tlgp_torch.likelihoods.iterative import IterativeLikelihood
    x, y, cyc = _data(n=400)
    u = torch.full((x.shape[1],), 0.5, dtype=torch.float64).log()
    # as many landmarks as points: the preconditioner is R itself, so the estimate must equal the exact values
    lik = IterativeLikelihood(x.to(device), y.to(device), cyc.to(device), 1e-6, preconditioner_rank=x.shape[0],
                              trace_samples=32, kernel=kernel)
    a, b = lik(u.to(device)), lik(u.to(device))
    exact = FFLUXLikelihood(x, y, cyclic=cyc, nugget=1e-6, max_jitter=0)(u.reshape(1, -1))
    return a, b, float(exact.ll[0]), exact.grad[0]


@pytest.mark.parametrize("kernel", ["dense", "blocked"])
def test_iterative_estimate_on_cuda_is_deterministic_and_near_exact(kernel):
    """The iterative estimate on the GPU (landmarks, CG, Lanczos, probes), with the kernel dense or in row blocks,
    is deterministic and, with a full-rank preconditioner, equals the exact ll and gradient (on the CPU: ll to
    4e-11, gradient to 9e-10, measured)."""
    a, b, ll, grad = _iterative_estimate("cuda", kernel)
    assert abs(a.ll - b.ll) <= 1e-9 * abs(a.ll)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-8)
    assert abs(a.ll - ll) < 1e-6 * abs(ll)
    assert float((a.grad.cpu() - grad).norm()) < 1e-4 * float(grad.norm())
