"""fit_gpytorch_mll_tl: a BoTorch-style function that fits a gpytorch ExactMarginalLogLikelihood by TL (or DL)."""
from __future__ import annotations

import gpytorch

from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.result import TrainResult
from tlgp_torch.training.transfer import TransferTrainer


def fit_gpytorch_mll_tl(mll: gpytorch.mlls.ExactMarginalLogLikelihood, trainer: TransferTrainer | DirectTrainer |
                        None = None, **settings) -> TrainResult:
    """Fit the hyperparameters of mll.model in place, as `botorch.fit.fit_gpytorch_mll(mll)` does, by transfer
    learning (the default) or by the DirectTrainer passed as `trainer`; the model is left in eval mode.

    The objective is gpytorch's exact marginal log-likelihood, log p(y | X, params) / N plus the model's prior
    terms. ScaleKernel(ARD RBF) + ConstantMean + GaussianLikelihood models take the analytic fast path; every
    other model with ARD lengthscales takes the generic path (result.info["path"] says which).

    Args:
        mll: gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model) of an ExactGP holding x [N, D], y [N].
        trainer: a TransferTrainer (default: TransferTrainer(**settings)) or a DirectTrainer.
        settings: TransferTrainer fields when no trainer is given (e.g. seed=1, n_sources=4).

    Returns:
        The TrainResult (stage times, evaluation counts, ll = N x the final mll, history, info["path"]).

    Example:
        >>> import torch
        >>> from tlgp_torch.models.anisotropic_gp import AnisotropicGP
        >>> x = torch.rand(60, 3, dtype=torch.float64)
        >>> model = AnisotropicGP(x, torch.sin(3 * x).sum(-1), convention="gpytorch")
        >>> mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        >>> result = fit_gpytorch_mll_tl(mll, seed=0, device="cpu")
        >>> result.info["path"], model.training
        ('fast', False)
    """
    if trainer is not None and settings:
        raise TypeError(f"pass either a trainer or TransferTrainer settings, not both (got {sorted(settings)})")
    if not isinstance(mll, gpytorch.mlls.MarginalLogLikelihood):
        raise TypeError(f"fit_gpytorch_mll_tl needs a gpytorch.mlls.ExactMarginalLogLikelihood, got "
                        f"{type(mll).__name__}; to fit a model, use TransferTrainer().fit(model)")
    trainer = trainer if trainer is not None else TransferTrainer(**settings)
    if not isinstance(trainer, (TransferTrainer, DirectTrainer)):
        raise TypeError(f"trainer must be a TransferTrainer or a DirectTrainer, got {type(trainer).__name__}")
    return trainer.fit(mll)


__all__ = ["fit_gpytorch_mll_tl"]
