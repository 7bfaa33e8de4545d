"""Random initial hyperparameters for direct learning, scaled to each feature's spread.

A feature's spread s_d is defined by s_d^2 = E[delta_d^2] / 2 over random pairs of training points, so that
theta_d = 1 / (2 s_d^2) puts a typical pair's exponent theta_d delta_d^2 at 1. Starts and bounds are written in
the dimensionless 2 theta_d s_d^2, hence do not depend on the features' units (bohr, radians).

Example:
    >>> import torch
    >>> from tlgp_torch.training.starts import feature_spread, log_theta_bounds, random_log_theta
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.rand(50, 1, dtype=torch.float64, generator=gen) * torch.tensor([1.0, 10.0], dtype=torch.float64)
    >>> s = feature_spread(x)                          # [D]; the second feature is 10x wider
    >>> torch.allclose(s[1], 10 * s[0])                # the same pairs for both features: exact up to rounding
    True
    >>> log_theta = random_log_theta(s, 4, gen)        # [4, D]: 2 theta s^2 log-uniform in [1e-3, 1] x min(1, 3/D)
    >>> z = 2 * log_theta.exp() * s ** 2
    >>> log_theta.shape, bool(((z >= 1e-3) & (z <= 1.0)).all())
    (torch.Size([4, 2]), True)
    >>> lo, hi = log_theta_bounds(s)                   # the optimiser's box: 2 theta s^2 in [1e-8, 1e3]
    >>> bool(((log_theta > lo) & (log_theta < hi)).all())
    True
"""
from __future__ import annotations

import math

import torch

from tlgp_torch.kernels.formula import wrap_angle
from tlgp_torch.training.settings import FitSettings


def feature_spread(x: torch.Tensor, cyclic: torch.Tensor | None = None, max_pairs: int = 20000,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-feature spread s_d with s_d^2 = E[delta_d^2] / 2 over random pairs (wrapped for periodic features)."""
    n = x.shape[0]
    if n < 2:
        raise ValueError("need at least 2 points to measure feature spreads")
    gen = generator or torch.Generator().manual_seed(0)
    i = torch.randint(n, (max_pairs,), generator=gen).to(x.device)
    j = torch.randint(n, (max_pairs,), generator=gen).to(x.device)
    delta = x[i] - x[j]
    if cyclic is not None and bool(cyclic.any()):
        delta = torch.where(cyclic.to(x.device), wrap_angle(delta), delta)
    spread = (0.5 * delta.pow(2).mean(0)).sqrt()
    return torch.where(spread > 0, spread, torch.ones_like(spread))


def log_theta_bounds(spread: torch.Tensor, low: float = 1e-8, high: float = 1e3) -> tuple[torch.Tensor, torch.Tensor]:
    """Box for log(theta_d): 2 theta_d s_d^2 within [low, high]."""
    base = -(2.0 * spread.pow(2)).log()
    return base + math.log(low), base + math.log(high)


def random_log_theta(spread: torch.Tensor, count: int, generator: torch.Generator,
                     init_range: tuple[float, float] = (1e-3, 1.0)) -> torch.Tensor:
    """count x D random log(theta): 2 theta_d s_d^2 log-uniform in init_range x min(1, 3 / D).

    The 3 / D keeps the expected exponent sum_d theta_d delta_d^2 of a random pair O(1) whatever D is;
    without it, starts with many features begin on the K = I plateau (flat likelihood, no progress).
    """
    lo, hi = math.log(init_range[0]), math.log(init_range[1])
    if not hi > lo:
        raise ValueError(f"init_range must be increasing, got {init_range}")
    shift = math.log(min(1.0, 3.0 / spread.numel()))
    uniform = torch.rand(count, spread.numel(), generator=generator, dtype=spread.dtype).to(spread.device)
    return -(2.0 * spread.pow(2)).log() + shift + lo + (hi - lo) * uniform


def parameter_bounds(settings: FitSettings, spread: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box for the optimised parameters (log theta, and log nugget when learned)."""
    lo, hi = log_theta_bounds(spread)
    if settings.learn_nugget:
        lo = torch.cat([lo, lo.new_tensor([math.log(settings.noise_floor)])])
        hi = torch.cat([hi, hi.new_tensor([math.log(1.0)])])
    return lo, hi


def initial_parameters(settings: FitSettings, spread: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """count random starts: log theta from the feature spreads (+ log nugget, log-uniform in [10 floor, 1e-2])."""
    log_params = random_log_theta(spread, count, gen, settings.init_range)
    if settings.learn_nugget:
        lo, hi = math.log(10 * settings.noise_floor), math.log(1e-2)
        log_nugget = lo + (hi - lo) * torch.rand(count, 1, generator=gen, dtype=log_params.dtype).to(log_params.device)
        log_params = torch.cat([log_params, log_nugget], 1)
    return log_params
