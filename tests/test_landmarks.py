"""pivoted_landmarks: greedy pivoted Cholesky whose ties break by index, so no last bit chooses a landmark."""
import pytest
import torch
from linear_operator.operators import DenseLinearOperator

from tlgp_torch.kernels.formula import rbf_matrix
from tlgp_torch.likelihoods.landmarks import pivoted_landmarks

pytestmark = pytest.mark.numerics


def _kernel(n=60, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64)
    return rbf_matrix(x, x, torch.full((d,), 3.0, dtype=torch.float64)), gen


def test_without_ties_the_pivots_are_linear_operators():
    """On a matrix whose residual maxima are far apart the rule is plain greedy pivoting: linear_operator's
    pivoted Cholesky picks the same rows in the same order."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(40, 40, generator=gen, dtype=torch.float64)
    K = a @ a.mT / 40 + torch.diag(torch.linspace(1.0, 2.0, 40, dtype=torch.float64))
    _, perm = DenseLinearOperator(K).pivoted_cholesky(rank=12, return_pivots=True, error_tol=0.0)
    assert pivoted_landmarks(K, 12).tolist() == perm[:12].tolist()


def test_last_bit_changes_pick_the_same_landmarks():
    """An RBF kernel (diagonal all ones: the first pivot is a tie) and the same kernel with every entry moved by a
    few ulps, as another vector unit or kernel form computes it: the same landmarks, the first one index 0."""
    K, gen = _kernel()
    noise = torch.randn(K.shape, generator=gen, dtype=torch.float64)
    K2 = K * (1 + 4e-16 * (noise + noise.mT))  # symmetric, a few ulps; diagonal stays 1 +- ulps
    a, b = pivoted_landmarks(K, 30), pivoted_landmarks(K2, 30)
    assert a[0] == 0 and a.tolist() == b.tolist()
    assert len(set(a.tolist())) == 30
    # the same through a linear operator and through a row function
    assert pivoted_landmarks(DenseLinearOperator(K), 30).tolist() == a.tolist()
    assert pivoted_landmarks(K, 30, row=lambda i: K[i], diagonal=torch.ones(60, dtype=torch.float64)).equal(a)


def test_a_low_rank_matrix_ends_in_index_order():
    """Rank 2: two greedy pivots, then (every residual zero to rtol) the free indices in ascending order."""
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.5], [0.5, 0.5]], dtype=torch.float64)
    K = v @ v.mT  # diagonal 1, 1, 2, 4.25, 0.5
    assert pivoted_landmarks(K, 5).tolist() == [3, 1, 0, 2, 4]
    assert pivoted_landmarks(K, 10).tolist() == [3, 1, 0, 2, 4]  # at most N


def test_bad_arguments_are_named():
    K, _ = _kernel(n=5)
    with pytest.raises(ValueError, match=r"matrix must be one square matrix \[N, N\], got shape \(5, 4\)"):
        pivoted_landmarks(K[:, :4], 2)
    with pytest.raises(ValueError, match="rank must be >= 1, got 0"):
        pivoted_landmarks(K, 0)
