"""One memory model for every likelihood path: how many n x n buffers a path holds, and how many members fit.

Every path that sizes work by memory asks this module. A path holds about ``buffers`` dense n x n matrices per
batch member, so one evaluation of ``members`` members of n points needs

    bytes = buffers * members * n^2 * itemsize,

and a budget of B bytes (``runtime.device.memory_budget``: a fraction of free GPU memory or available RAM) holds
max(1, floor(B / (buffers * n^2 * itemsize))) members. The per-path buffer counts are the named constants below.

Example:
    >>> from tlgp_torch.likelihoods.memory import BATCHED_EXACT_BUFFERS, members_that_fit, nn_bytes
    >>> nn_bytes(1000, BATCHED_EXACT_BUFFERS)  # K, L, R^-1 and a temporary, float64
    32000000
    >>> members_that_fit(1000, BATCHED_EXACT_BUFFERS, budget=10**8)
    3
"""
from __future__ import annotations

# From this N on, the exact likelihood evaluates each member in one n x n buffer (FFLUXLikelihood(lean=None)).
LEAN_MIN_N = 4096

# Exact likelihood, batched path: K, its Cholesky factor L, R^-1 and a temporary n x n per member. Measured as the
# peak over the process at N=3000 in tests/test_objectives.py::test_lean_path_needs_about_one_matrix (> 3).
BATCHED_EXACT_BUFFERS = 4.0
# Exact likelihood, lean path: one n x n buffer (K, then L, then R^-1 in place) and a quarter for the row-block
# temporaries of the gradient. Measured < 1.75 at N=3000 in the same test.
LEAN_EXACT_BUFFERS = 1.25
# Multi-start optimisation (training.multistart): a member's share of a chunk. An estimate with margin over the
# batched exact path's 4 (the evaluation's temporaries and the optimiser's state), not measured on its own.
MULTISTART_BUFFERS = 6.0
# Iterative likelihood, dense kernel: the kernel, its n x n gradient in linear_operator's backward, one n x n buffer
# of that backward and row-block temporaries. Measured 5.6 n^2 doubles over the process at N=3000, where the row
# blocks are 0.23 n^2 each.
ITERATIVE_DENSE_BUFFERS = 5.0
# Final GLS mean and weights (training.iterative.final_mean_and_weights): one n x n Cholesky factor in place and a
# tenth for the solves' temporaries.
GLS_WEIGHTS_BUFFERS = 1.1
# That last factorisation runs alone, after the optimisation's buffers are freed: it may take this fraction of the
# free memory, more than an optimisation's memory_fraction.
GLS_WEIGHTS_FRACTION = 0.8
# On the CPU a batch is evaluated a few members at a time, at most this many bytes of n x n buffers per call:
# larger buffers come from fresh mmaps (page faults on every call) and fall out of cache, which made batched fits
# 10-16 % slower than one by one (8 glycine models of N=1000; with the cap 19.9 s against 20.1 s, measured).
CPU_CALL_BYTES = 8 * 2**20
CPU_CALL_BUFFERS = 1.0  # that cap counts one n x n matrix (the kernel) per member


def nn_bytes(n: int, buffers: float, members: int = 1, itemsize: int = 8) -> int:
    """Bytes of ``buffers`` n x n matrices per member for ``members`` members: int(buffers members n^2 itemsize).

    Args:
        n: points per member (the matrices are n x n).
        buffers: n x n matrices a path holds per member (one of this module's constants).
        members: batch members evaluated at once.
        itemsize: bytes per element (8 for float64).

    Example:
        >>> nn_bytes(10000, LEAN_EXACT_BUFFERS)
        1000000000
    """
    return int(buffers * members * n * n * itemsize)


def members_that_fit(n: int, buffers: float, budget: int, itemsize: int = 8) -> int:
    """How many members of n points fit in ``budget`` bytes, at ``buffers`` n x n matrices each; at least 1.

    Args:
        n: points per member.
        buffers: n x n matrices a path holds per member.
        budget: bytes available (e.g. ``runtime.device.memory_budget(device, fraction)``).
        itemsize: bytes per element (8 for float64).

    Example:
        >>> members_that_fit(1000, MULTISTART_BUFFERS, budget=10**9)
        20
    """
    return max(1, int(budget // nn_bytes(n, buffers, 1, itemsize)))


def exact_buffers(n: int) -> float:
    """n x n buffers per member of the exact likelihood with its default path for n points (lean from LEAN_MIN_N).

    Example:
        >>> exact_buffers(1000), exact_buffers(10000)
        (4.0, 1.25)
    """
    return LEAN_EXACT_BUFFERS if n >= LEAN_MIN_N else BATCHED_EXACT_BUFFERS


__all__ = [
    "BATCHED_EXACT_BUFFERS", "CPU_CALL_BUFFERS", "CPU_CALL_BYTES", "GLS_WEIGHTS_BUFFERS", "GLS_WEIGHTS_FRACTION",
    "ITERATIVE_DENSE_BUFFERS", "LEAN_EXACT_BUFFERS", "LEAN_MIN_N", "MULTISTART_BUFFERS", "exact_buffers",
    "members_that_fit", "nn_bytes",
]
