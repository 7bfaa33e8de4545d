"""AnisotropicGP: a GPyTorch ExactGP with an ARD (cyclic) RBF kernel, in the FFLUX or the GPyTorch convention."""
from __future__ import annotations

import gpytorch
import torch
from gpytorch.constraints import GreaterThan

from .kernels import CyclicRBFKernel, lengthscale_to_theta, theta_to_lengthscale

CONVENTIONS = ("fflux", "gpytorch")
MAX_EXACT = 20000  # below this many points gpytorch must use Cholesky, never CG


class AnisotropicGP(gpytorch.models.ExactGP):
    """Exact GP: 'fflux' = unit amplitude, fixed nugget, constant mean; 'gpytorch' = ScaleKernel, learned noise, standardised y."""

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        cyclic: torch.Tensor | None = None,
        convention: str = "fflux",
        nugget: float = 1e-10,
        noise_floor: float = 1e-8,
    ):
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if train_x.dim() != 2 or train_y.shape != train_x.shape[:1]:
            raise ValueError(f"train_x must be [N, D] and train_y [N]; got {tuple(train_x.shape)}, {tuple(train_y.shape)}")
        y_mean = train_y.mean() if convention == "gpytorch" else train_y.new_tensor(0.0)
        y_std = train_y.std() if convention == "gpytorch" and train_y.numel() > 1 else train_y.new_tensor(1.0)
        y_std = torch.where(y_std > 0, y_std, torch.ones_like(y_std))
        floor = noise_floor if convention == "gpytorch" else min(noise_floor, nugget) * 0.5
        likelihood = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=GreaterThan(floor))
        super().__init__(train_x, (train_y - y_mean) / y_std, likelihood)
        self.convention = convention
        self.register_buffer("y_mean", y_mean)
        self.register_buffer("y_std", y_std)
        d = train_x.shape[-1]
        base = CyclicRBFKernel(cyclic=cyclic, ard_num_dims=d)
        self.mean_module = gpytorch.means.ConstantMean()
        if convention == "gpytorch":
            self.covar_module = gpytorch.kernels.ScaleKernel(base)
        else:
            self.covar_module = base
            likelihood.noise = nugget
            likelihood.raw_noise.requires_grad_(False)
        self.to(train_x)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        """Prior at x (standardised units in the gpytorch convention)."""
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    @property
    def base_kernel(self) -> CyclicRBFKernel:
        """The ARD kernel (inside the ScaleKernel for the gpytorch convention)."""
        return self.covar_module.base_kernel if self.convention == "gpytorch" else self.covar_module

    @classmethod
    def from_fflux(cls, x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, mean: float, nugget: float,
                   cyclic: torch.Tensor | None = None, convention: str = "fflux", sigma2: float = 1.0,
                   noise_floor: float = 1e-8) -> "AnisotropicGP":
        """Build a model from FFLUX hyperparameters (theta, constant mean, nugget, process variance sigma2)."""
        scale = sigma2 / float(y.std()) ** 2 if convention == "gpytorch" and y.numel() > 1 and float(y.std()) > 0 else 1.0
        floor = min(noise_floor, 0.5 * nugget * min(1.0, scale))  # the given noise must lie above the constraint
        model = cls(x, y, cyclic=cyclic, convention=convention, nugget=nugget, noise_floor=floor)
        with torch.no_grad():
            model.base_kernel.lengthscale = theta_to_lengthscale(theta.to(x)).reshape(1, -1)
            if convention == "gpytorch":
                s = sigma2 / float(model.y_std) ** 2
                model.covar_module.outputscale = s
                model.likelihood.noise = nugget * s
                model.mean_module.constant.fill_((mean - float(model.y_mean)) / float(model.y_std))
            else:
                model.mean_module.constant.fill_(mean)
        return model

    def fflux_parameters(self) -> dict[str, torch.Tensor | float]:
        """theta, mean (y units), nugget (noise / outputscale) and sigma2 of the equivalent FFLUX model."""
        theta = lengthscale_to_theta(self.base_kernel.lengthscale.detach()).reshape(-1)
        noise = float(self.likelihood.noise.detach())
        scale = float(self.covar_module.outputscale.detach()) if self.convention == "gpytorch" else 1.0
        mean = float(self.mean_module.constant.detach()) * float(self.y_std) + float(self.y_mean)
        return {"theta": theta, "mean": mean, "nugget": noise / scale, "sigma2": scale * float(self.y_std) ** 2}

    def predict(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Posterior mean at x [M, D] in the units of the training targets (exact Cholesky, chunked over M)."""
        self.eval()
        out = []
        with torch.no_grad(), gpytorch.settings.max_cholesky_size(MAX_EXACT), \
                gpytorch.settings.skip_posterior_variances(True), gpytorch.settings.fast_pred_var(False):
            for start in range(0, x.shape[0], chunk):
                out.append(self(x[start:start + chunk].to(self.train_inputs[0])).mean)
        return torch.cat(out) * self.y_std + self.y_mean
