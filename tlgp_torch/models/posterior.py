r"""FFLUX predictions from weights, the form FFLUX itself evaluates:

.. math::

    y(x) = mu + sum_i w_i k(x, x_i),    w = R^-1 (y - mu 1),    R = K(X, X) + nugget I,

with k the FFLUX kernel exp(-sum_d theta_d delta_d^2) and X [N, D] the training features. The weights are the
`[weights]` section of a FEREBUS .model file.

Example:
    >>> import torch
    >>> from tlgp_torch.models import fflux_predict, fflux_weights
    >>> x = torch.rand(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> y = torch.sin(3 * x).sum(-1)
    >>> theta = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> w = fflux_weights(x, y, theta, mean=0.5, nugget=1e-10)
    >>> p = fflux_predict(x, x, w, theta, mean=0.5)
    >>> bool(torch.allclose(p, y, atol=1e-6))      # interpolates y up to nugget * w (here < 1e-7)
    True

The predictive variance of an observation at x, in the units of y, is
var(x) = sigma^2 (1 - k(x)' R^-1 k(x) + nugget), R = K + nugget I, with sigma^2 the process variance: the same
formula in both conventions (gpytorch: outputscale (1 - k' R^-1 k) + noise, noise = nugget outputscale).
"""
from __future__ import annotations

import gpytorch
import torch

from tlgp_torch.kernels.formula import fill_rbf_matrix, rbf_matrix
from tlgp_torch.likelihoods.gls import cholesky_in_place, factor_solve, gls_from_solves


def _factor_in_place(x: torch.Tensor, theta: torch.Tensor, nugget: float, cyclic: torch.Tensor | None) -> torch.Tensor:
    """One n x n buffer whose column-major view holds the lower Cholesky factor of K(x, x) + nugget I."""
    n = x.shape[0]
    A = fill_rbf_matrix(torch.empty(n, n, dtype=x.dtype, device=x.device), x, theta, cyclic)
    A.diagonal().add_(float(nugget))
    info = cholesky_in_place(A)
    if info:
        raise torch.linalg.LinAlgError(f"kernel matrix + nugget {float(nugget):.3g} I is not positive definite "
                                       f"(order-{info} leading minor); raise the nugget")
    return A.mT


def fflux_weights(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, mean: float | torch.Tensor,
                  nugget: float | torch.Tensor, cyclic: torch.Tensor | None = None) -> torch.Tensor:
    """Weights w = (K + nugget I)^-1 (y - mean 1) of one model or a batch of them.

    Args:
        x: training features [N, D] or [B, N, D] (bohr / radians).
        y: training targets [N] or [B, N].
        theta: inverse squared length scales [D] or [B, D].
        mean: constant mean in y units (float or [B]).
        nugget: nugget on the diagonal (float or [B]).
        cyclic: bool mask [D] of the periodic features, or None.

    Returns:
        w [N] or [B, N] (one model: from one in-place Cholesky factor, no second n x n buffer).

    Raises:
        torch.linalg.LinAlgError: when K + nugget I is not positive definite.

    Example:
        >>> import torch
        >>> from tlgp_torch.kernels import rbf_matrix
        >>> from tlgp_torch.models import fflux_weights
        >>> x = torch.rand(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> y, theta = x.sum(-1), torch.ones(2, dtype=torch.float64)
        >>> w = fflux_weights(x, y, theta, mean=1.0, nugget=1e-6)
        >>> R = rbf_matrix(x, x, theta) + 1e-6 * torch.eye(10, dtype=torch.float64)
        >>> bool(torch.allclose(R @ w, y - 1.0))
        True
    """
    r = y - torch.as_tensor(mean, dtype=x.dtype, device=x.device).unsqueeze(-1)
    if x.dim() == 2:  # one model: one n x n buffer, factorised in place (LAPACK works on the column-major view)
        return factor_solve(_factor_in_place(x, theta, nugget, cyclic), r.unsqueeze(-1)).squeeze(-1)
    K = rbf_matrix(x, x, theta, cyclic)
    nug = torch.as_tensor(nugget, dtype=x.dtype, device=x.device).reshape(-1, 1, 1) if K.dim() == 3 else nugget
    R = K + nug * torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
    L = torch.linalg.cholesky(R)
    return torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)


def fflux_gls_weights(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, nugget: float,
                      cyclic: torch.Tensor | None = None, centre: float | None = None) -> tuple[float, torch.Tensor]:
    """GLS mean 1'R^-1 y / 1'R^-1 1 and weights R^-1 (y - mean) of one model (x [N, D], y [N]) from one in-place
    Cholesky factor; centre (default: the sample mean) is subtracted first, so a value near the GLS mean avoids
    cancellation against y's offset.

    Example:
        >>> import torch
        >>> x = torch.rand(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> mean, w = fflux_gls_weights(x, 3.0 + 0 * x[:, 0], torch.ones(2, dtype=torch.float64), 1e-6)
        >>> round(mean, 6), float(w.abs().max()) < 1e-6         # a constant y is its own GLS mean
        (3.0, True)
    """
    c = float(y.mean()) if centre is None else float(centre)
    mean, w = gls_from_solves(c, factor_solve(_factor_in_place(x, theta, nugget, cyclic),
                                              torch.stack([y - c, torch.ones_like(y)], -1)))
    return float(mean), w


def fflux_predict(x_new: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, theta: torch.Tensor,
                  mean: float | torch.Tensor, cyclic: torch.Tensor | None = None, chunk: int = 4096) -> torch.Tensor:
    """Predictions y(x) = mean + sum_i w_i k(x, x_i) at x_new, chunked over M.

    Args:
        x_new: points [M, D] or [B, M, D] (bohr / radians).
        x: training features [N, D] or [B, N, D].
        weights: w [N] or [B, N] (fflux_weights).
        theta: inverse squared length scales [D] or [B, D].
        mean: constant mean in y units (float or [B]).
        cyclic: bool mask [D] of the periodic features, or None.
        chunk: points per chunk.

    Returns:
        Predictions [M] or [B, M] in y units.

    Example:
        >>> import torch
        >>> from tlgp_torch.models import fflux_predict
        >>> x = torch.zeros(1, 2, dtype=torch.float64)
        >>> x_new = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
        >>> w = torch.tensor([2.0], dtype=torch.float64)
        >>> p = fflux_predict(x_new, x, w, torch.ones(2, dtype=torch.float64), mean=1.0)
        >>> [round(v, 4) for v in p.tolist()]       # 1 + 2 exp(0), 1 + 2 exp(-1)
        [3.0, 1.7358]
    """
    out = []
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).unsqueeze(-1)
    for s in range(0, x_new.shape[-2], chunk):
        k = rbf_matrix(x_new[..., s:s + chunk, :], x, theta, cyclic)
        out.append((k @ weights.unsqueeze(-1)).squeeze(-1) + m)
    return torch.cat(out, -1)


def fflux_factor(x: torch.Tensor, theta: torch.Tensor, nugget: float, cyclic: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Lower Cholesky factor L [N, N] of R = K(x, x) + nugget I for one model (x [N, D], theta [D])."""
    return _factor_in_place(x, theta, nugget, cyclic)


def profiled_sigma2(y: torch.Tensor, mean: float | torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Process variance sigma^2 = (y - mu)' R^-1 (y - mu) / N profiled at the mean mu (the concentrated likelihood's
    sigma^2 when mu is the GLS mean): y [..., N], weights R^-1 (y - mu) [..., N]."""
    mu = torch.as_tensor(mean, dtype=y.dtype, device=y.device).unsqueeze(-1)
    return ((y - mu) * weights).sum(-1) / y.shape[-1]


def fflux_variance(x_new: torch.Tensor, x: torch.Tensor, factor: torch.Tensor, theta: torch.Tensor,
                   sigma2: float | torch.Tensor, nugget: float, cyclic: torch.Tensor | None = None,
                   chunk: int = 4096) -> torch.Tensor:
    """Predictive variance sigma^2 (1 - k' R^-1 k + nugget) at x_new [M, D] (y units), from training x [N, D] and
    the lower Cholesky factor of R (fflux_factor); chunked over M.

    Example:
        >>> x = torch.rand(10, 2, dtype=torch.float64); theta = torch.ones(2, dtype=torch.float64)
        >>> var = fflux_variance(x[:3], x, fflux_factor(x, theta, 1e-6), theta, 2.0, 1e-6)
        >>> bool((var < 1e-4).all())  # at training points the variance is about the noise, 2e-6
        True
    """
    out = []
    for s in range(0, x_new.shape[-2], chunk):
        k = rbf_matrix(x_new[s:s + chunk], x, theta, cyclic)                      # [m, N]
        v = torch.linalg.solve_triangular(factor, k.mT, upper=False)             # L^-1 k: [N, m]
        out.append(torch.as_tensor(sigma2, dtype=x.dtype) * (1.0 - v.square().sum(0) + float(nugget)))
    return torch.cat(out)


def gp_predict(model, x: torch.Tensor, return_var: bool = False, max_exact: int = 20000
               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean (and the variance of an observation: latent variance + Gaussian noise) of a gpytorch ExactGP
    at x [*batch, M, D], in the units of its train_targets, by Cholesky up to max_exact points. For a likelihood
    without a homoscedastic noise (FixedNoiseGaussianLikelihood: the noise at new points is unknown) the variance
    is the latent one. An AnisotropicGP answers in the units of its raw targets (its own predict)."""
    from tlgp_torch.models.anisotropic_gp import AnisotropicGP

    if isinstance(model, AnisotropicGP):
        return model.predict(x, return_var=return_var)
    model.eval()
    x = x.to(model.train_inputs[0])
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(max_exact), \
            gpytorch.settings.skip_posterior_variances(not return_var):
        f = model(x)
        if not return_var:
            return f.mean
        var = f.variance
        if isinstance(model.likelihood, gpytorch.likelihoods.GaussianLikelihood):
            var = var + model.likelihood.noise
        return f.mean, var
