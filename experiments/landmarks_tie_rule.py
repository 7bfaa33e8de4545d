"""Landmarks with the index tie rule (pivoted_landmarks) against linear_operator's pivoted Cholesky.

Prints, side by side in one run: seconds to pick the landmarks (median of --repeats), the Nystroem residual
trace tr(K - K[:, P] K[P, P]^-1 K[P, :]) of each landmark set (the preconditioner's quality: lower is better),
and whether the landmarks are the same from the dense and the row-blocked kernel.

    OMP_NUM_THREADS=1 python experiments/landmarks_tie_rule.py --n 2000 --rank 200
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from linear_operator.operators import DenseLinearOperator

from tlgp_torch.kernels.blocked import BlockedKernelOperator
from tlgp_torch.kernels.formula import rbf_matrix
from tlgp_torch.likelihoods.landmarks import pivoted_landmarks


def residual_trace(K: torch.Tensor, piv: torch.Tensor) -> float:
    """tr(K - K[:, P] K[P, P]^-1 K[P, :]) with a tiny jitter on K[P, P] (relative 1e-12)."""
    kpp = K[piv][:, piv]
    chol = torch.linalg.cholesky(kpp + 1e-12 * torch.eye(len(piv), dtype=K.dtype))
    root = torch.linalg.solve_triangular(chol, K[piv], upper=False)  # [k, N]
    return float(K.diagonal().sum() - root.square().sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=12)
    parser.add_argument("--rank", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, args.d, generator=gen, dtype=torch.float64) * 2.0
    log_theta = torch.full((args.d,), -1.0, dtype=torch.float64)
    K = rbf_matrix(x, x, log_theta.exp())
    blocked = BlockedKernelOperator(x, log_theta, block_rows=256)
    times: dict[str, list[float]] = {"linear_operator": [], "tie rule": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _, perm = DenseLinearOperator(K).pivoted_cholesky(rank=args.rank, return_pivots=True, error_tol=0.0)
        times["linear_operator"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = pivoted_landmarks(K, args.rank)
        times["tie rule"].append(time.perf_counter() - t0)
    theirs = perm[: args.rank]
    same_forms = pivoted_landmarks(blocked, args.rank).equal(ours)
    base = statistics.median(times["linear_operator"])
    print(f"N = {args.n}, D = {args.d}, rank = {args.rank}, {args.repeats} repeats (median seconds)")
    print(f"{'landmarks':<16} {'seconds':>9} {'ratio':>6} {'residual trace':>15} {'first 5 pivots'}")
    for name, piv in (("linear_operator", theirs), ("tie rule", ours)):
        t = statistics.median(times[name])
        print(f"{name:<16} {t:9.4f} {t / base:6.2f} {residual_trace(K, piv):15.6g} {piv[:5].tolist()}")
    print(f"same landmarks from the dense and the blocked kernel (tie rule): {bool(same_forms)}")


if __name__ == "__main__":
    main()
