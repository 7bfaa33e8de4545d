"""tlgp_torch: anisotropic (ARD) Gaussian-process models for FFLUX, trained fast by transfer learning.

The package face re-exports what users touch; everything else lives in one module per concept
(io, data, features, kernels, likelihoods, models, optim, training, export, generation, config, cli, runtime).

Example:
    >>> import torch
    >>> from tlgp_torch import TransferTrainer
    >>> x = torch.rand(60, 3, dtype=torch.float64)
    >>> result = TransferTrainer(seed=0, device="cpu").fit((x, torch.sin(3 * x).sum(-1)))
    >>> result.theta.shape
    torch.Size([3])
"""
from tlgp_torch.config.experiment import Config, load_config
from tlgp_torch.models.anisotropic_gp import AnisotropicGP
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.mll_fit import fit_gpytorch_mll_tl
from tlgp_torch.training.result import TrainResult
from tlgp_torch.training.transfer import TransferTrainer
from tlgp_torch.version import __version__

__all__ = ["AnisotropicGP", "Config", "DirectTrainer", "TrainResult", "TransferTrainer", "__version__",
           "fit_gpytorch_mll_tl", "load_config"]
