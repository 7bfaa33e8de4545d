r"""The Gaussian log-density of a dense covariance with its analytic backward, optionally profiling a constant.

For a covariance K [*batch, N, N] (symmetric positive definite) and a residual r [*batch, N]:

.. math::

    \log p = -\tfrac12 (r - c 1)^T K^{-1} (r - c 1) - \tfrac12 \log|K| - \tfrac N2 \log 2\pi,

with c = 0, or (profile=True) the generalised-least-squares constant c = 1^T K^{-1} r / 1^T K^{-1} 1 that
maximises log p. The gradients are

.. math::

    \partial \log p / \partial K = \tfrac12 (\alpha \alpha^T - K^{-1}), \qquad
    \partial \log p / \partial r = -\alpha, \qquad \alpha = K^{-1} (r - c 1),

(with c profiled, the envelope theorem makes these exact too, and 1^T alpha = 0: the gradient reaching a
constant mean vanishes). K^-1 comes from one cholesky_inverse of the forward pass's factor, about N^3 flops
instead of the 3-4 N^3 of autograd through torch.linalg.cholesky's backward (two triangular solves and products
of N x N matrices): the generic training path (training.generic) evaluates gpytorch's exact marginal
likelihood with this density in place of MultivariateNormal.log_prob, the same number.

Example:
    >>> import torch
    >>> from tlgp_torch.likelihoods.gaussian import gaussian_log_density
    >>> g = torch.Generator().manual_seed(0)
    >>> a = torch.randn(5, 5, dtype=torch.float64, generator=g)
    >>> K = (a @ a.T + 5 * torch.eye(5, dtype=torch.float64)).requires_grad_()
    >>> r = torch.randn(5, dtype=torch.float64, generator=g)
    >>> lp, c = gaussian_log_density(K, r)
    >>> ref = torch.distributions.MultivariateNormal(torch.zeros(5, dtype=torch.float64), K).log_prob(r)
    >>> bool(torch.allclose(lp, ref)), float(c)
    (True, 0.0)
    >>> lp_max, c = gaussian_log_density(K.detach(), r, profile=True)   # the best constant: log p is higher
    >>> bool(lp_max >= lp)
    True
"""
from __future__ import annotations

import math

import torch

from tlgp_torch.likelihoods.gls import gls_from_solves


class NotPositiveDefinite(RuntimeError):
    """K has no Cholesky factor in its dtype (raised by gaussian_log_density; callers fall back to jitter)."""


def residual_solve(L: torch.Tensor, r: torch.Tensor, profile: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c [*batch], alpha [*batch, N], resid [*batch, N]) from the Cholesky factor L of K and the residual r:
    resid = r - c 1 and alpha = K^-1 resid, with c the GLS constant 1'K^-1 r / 1'K^-1 1 (profile) or 0.
    r' K^-1 r of the density is (resid * alpha).sum(-1)."""
    if profile:
        c, alpha = gls_from_solves(0.0, torch.cholesky_solve(torch.stack([r, torch.ones_like(r)], -1), L))
        return c, alpha, r - c.unsqueeze(-1)
    return r.new_zeros(r.shape[:-1]), torch.cholesky_solve(r.unsqueeze(-1), L)[..., 0], r


class _LogDensity(torch.autograd.Function):
    """(K, r, profile) -> (log p [*batch], c [*batch]); the backward is the analytic one of the module docstring."""

    @staticmethod
    def forward(ctx, K: torch.Tensor, r: torch.Tensor, profile: bool):
        L, info = torch.linalg.cholesky_ex(K)
        if bool((info != 0).any()):
            raise NotPositiveDefinite(f"the covariance is not positive definite (Cholesky failed at column "
                                      f"{int(info.max())} of {K.shape[-1]})")
        c, alpha, resid = residual_solve(L, r, profile)
        logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        n = K.shape[-1]
        value = -0.5 * ((resid * alpha).sum(-1) + logdet + n * math.log(2 * math.pi))
        ctx.save_for_backward(L, alpha)
        ctx.mark_non_differentiable(c)
        return value, c

    @staticmethod
    def backward(ctx, grad_value: torch.Tensor, grad_c: torch.Tensor):
        L, alpha = ctx.saved_tensors
        g = grad_value.unsqueeze(-1)
        grad_K = grad_r = None
        if ctx.needs_input_grad[0]:
            grad_K = torch.cholesky_inverse(L).mul_(-0.5)
            grad_K.add_(0.5 * alpha.unsqueeze(-1) * alpha.unsqueeze(-2)).mul_(g.unsqueeze(-1))
        if ctx.needs_input_grad[1]:
            grad_r = -g * alpha
        return grad_K, grad_r, None


def gaussian_log_density(K: torch.Tensor, r: torch.Tensor, profile: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """log N(r - c 1; 0, K) per batch member and the constant c (0, or the GLS constant when profile=True).

    Args:
        K: covariance [*batch, N, N], symmetric positive definite (any float dtype; float64 for training).
        r: residual y - mean [*batch, N] (same dtype and device).
        profile: subtract the constant c = 1'K^-1 r / 1'K^-1 1 that maximises the density.

    Returns:
        (log_p [*batch], c [*batch]); log_p is differentiable in K and r with the analytic backward, c is not.

    Raises:
        ValueError: when the shapes do not match ([*batch, N, N] and [*batch, N]).
        NotPositiveDefinite: when K has no Cholesky factor (no jitter is added here).

    Example:
        >>> import torch
        >>> from tlgp_torch.likelihoods.gaussian import gaussian_log_density
        >>> K = torch.eye(3, dtype=torch.float64)
        >>> lp, c = gaussian_log_density(K, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), profile=True)
        >>> float(c)                                           # with K = I the GLS constant is the mean
        2.0
    """
    if K.dim() < 2 or K.shape[-1] != K.shape[-2] or r.shape != K.shape[:-1]:
        raise ValueError(f"gaussian_log_density needs K [*batch, N, N] and r [*batch, N], got K {tuple(K.shape)} "
                         f"and r {tuple(r.shape)}")
    return _LogDensity.apply(K, r, profile)
