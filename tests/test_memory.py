"""The one memory model (likelihoods.memory): the numbers of the five rules it replaced, and its users."""
import doctest

import pytest
import torch

import tlgp_torch.likelihoods.memory as memory
from tlgp_torch.likelihoods.exact import FFLUXLikelihood
from tlgp_torch.likelihoods.memory import (
    BATCHED_EXACT_BUFFERS,
    CPU_CALL_BUFFERS,
    CPU_CALL_BYTES,
    GLS_WEIGHTS_BUFFERS,
    ITERATIVE_DENSE_BUFFERS,
    LEAN_MIN_N,
    MULTISTART_BUFFERS,
    exact_buffers,
    members_that_fit,
    nn_bytes,
)


@pytest.mark.parametrize("n", [1, 7, 500, 1000, 4095, 4096, 20000])
def test_rules_give_the_numbers_of_the_old_formulas(n):
    """Each constant reproduces the formula it replaced (written out here as it was), in bytes and in members."""
    assert nn_bytes(n, exact_buffers(n)) == int((1.25 if n >= 4096 else 4) * n * n * 8)  # exact_bytes
    assert nn_bytes(n, exact_buffers(n), members=3) == int((1.25 if n >= 4096 else 4) * 3 * n * n * 8)
    assert nn_bytes(n, ITERATIVE_DENSE_BUFFERS) == int(5 * n * n * 8)                      # iterative_dense_bytes
    for budget in (0, 10**6, 123456789, 64 * 2**30):
        assert members_that_fit(n, MULTISTART_BUFFERS, budget) == max(1, budget // (6 * n * n * 8))  # members_per_chunk
        # the weights' test n^2 itemsize 1.1 <= budget: equal for integer budgets whatever the rounding of the product
        assert (nn_bytes(n, GLS_WEIGHTS_BUFFERS) <= budget) == (n * n * 8 * 1.1 <= budget)
    assert members_that_fit(n, CPU_CALL_BUFFERS, CPU_CALL_BYTES) == max(1, int(8 * 2**20 // (n * n * 8)))


def test_exact_buffers_switch_at_the_lean_threshold():
    assert LEAN_MIN_N == 4096
    assert exact_buffers(LEAN_MIN_N - 1) == BATCHED_EXACT_BUFFERS == 4.0
    assert exact_buffers(LEAN_MIN_N) == 1.25


def test_itemsize_scales_the_rule():
    """float32 halves the bytes and doubles the members that fit."""
    assert nn_bytes(1000, BATCHED_EXACT_BUFFERS, itemsize=4) * 2 == nn_bytes(1000, BATCHED_EXACT_BUFFERS)
    assert members_that_fit(1000, MULTISTART_BUFFERS, 10**9, itemsize=4) == 41  # 1e9 // 2.4e7
    assert members_that_fit(1000, MULTISTART_BUFFERS, 10**9) == 20               # 1e9 // 4.8e7


def test_cpu_likelihood_evaluates_as_many_members_per_call_as_fit_the_cache_cap():
    """FFLUXLikelihood on the CPU asks the memory model: 8 MiB of one n x n each is 4 members of n=500, 1 of 2000."""
    gen = torch.Generator().manual_seed(0)
    for n, expected in ((500, 4), (2000, 1)):
        x = torch.rand(n, 2, generator=gen, dtype=torch.float64)
        assert FFLUXLikelihood(x, x.sum(1)).members_per_call == expected


def test_examples_in_the_docstrings_run():
    result = doctest.testmod(memory)
    assert result.attempted >= 5 and result.failed == 0
