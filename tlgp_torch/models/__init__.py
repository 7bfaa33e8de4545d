"""gpytorch models: `AnisotropicGP` (an ExactGP with the FFLUX kernel, any batch_shape) and the FFLUX
posterior (weights and prediction)."""
from tlgp_torch.models.anisotropic_gp import AnisotropicGP
from tlgp_torch.models.posterior import fflux_predict, fflux_weights

__all__ = ["AnisotropicGP", "fflux_predict", "fflux_weights"]
