"""AnisotropicGP: a GPyTorch ExactGP with an ARD (cyclic) RBF kernel, in the FFLUX or the GPyTorch convention."""
from __future__ import annotations

import gpytorch
import torch
from gpytorch.constraints import GreaterThan

from tlgp_torch.kernels.cyclic_rbf import CyclicRBFKernel
from tlgp_torch.kernels.formula import lengthscale_to_theta, theta_to_lengthscale

CONVENTIONS = ("fflux", "gpytorch")
MAX_EXACT = 20000  # below this many points gpytorch must use Cholesky, never CG


class AnisotropicGP(gpytorch.models.ExactGP):
    r"""A gpytorch ExactGP with the FFLUX kernel (`CyclicRBFKernel`), in the FFLUX or the GPyTorch convention.

    'fflux' convention (what FEREBUS fits): unit amplitude, fixed nugget, constant mean c, raw y.

    .. math::

        y ~ GP(c, k),   k(x, x') = exp(-sum_d theta_d delta_d^2),   likelihood noise = nugget (not trained)

    'gpytorch' convention (what a GPyTorch user fits): ScaleKernel with outputscale s, learned noise v, y
    standardised to zero mean and unit standard deviation internally (predictions come back in y units).

    .. math::

        (y - mean(y)) / std(y) ~ GP(c, s k),   noise v

    Both give the same predictive mean as the FFLUX model with theta_d = 1 / (2 l_d^2), nugget v / s and the
    mean c mapped back to y units; `fflux_parameters` returns them and `from_fflux` goes the other way.

    Batched when train_y is [B, N] (train_x [B, N, D] or shared [N, D]): batch_shape [B], one independent model
    per member (a whole molecule's atoms and properties as one gpytorch model). Train it like any ExactGP, with
    gpytorch's ExactMarginalLogLikelihood and a torch optimiser, or use the trainers of `tlgp_torch.training`.

    Args:
        train_x: features [N, D] (or [B, N, D] / shared [N, D] for a batch), bohr / radians.
        train_y: targets [N] (or [B, N]).
        cyclic: bool mask [D] of the periodic features (wrapped differences), or None.
        convention: "fflux" or "gpytorch".
        nugget: fixed noise of the fflux convention, a float or a tensor [B].
        noise_floor: lower bound of the learned noise (gpytorch convention, standardised units).

    Raises:
        ValueError: for an unknown convention or mismatched shapes of train_x and train_y.

    Example:
        >>> import gpytorch, torch
        >>> from tlgp_torch import AnisotropicGP
        >>> gen = torch.Generator().manual_seed(0)
        >>> x = torch.rand(20, 2, dtype=torch.float64, generator=gen)
        >>> y = torch.sin(3 * x).sum(-1)
        >>> # the GPyTorch convention, trained as any ExactGP (a few Adam steps)
        >>> model = AnisotropicGP(x, y, convention="gpytorch")
        >>> mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        >>> optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        >>> _ = model.train()
        >>> for _ in range(5):
        ...     optimizer.zero_grad()
        ...     loss = -mll(model(*model.train_inputs), model.train_targets)
        ...     loss.backward()
        ...     optimizer.step()
        >>> model.predict(torch.rand(4, 2, dtype=torch.float64, generator=gen)).shape
        torch.Size([4])
        >>> sorted(model.fflux_parameters())          # the equivalent FFLUX model
        ['mean', 'nugget', 'sigma2', 'theta']
        >>> # the FFLUX convention from known hyperparameters, for 3 targets at once
        >>> theta = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 0.5]], dtype=torch.float64)   # [B, D]
        >>> batch = AnisotropicGP.from_fflux(x, torch.stack([y, 2 * y, -y]), theta, mean=0.0, nugget=1e-6)
        >>> batch.batch_shape, batch.predict(x[:4]).shape
        (torch.Size([3]), torch.Size([3, 4]))
    """

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        cyclic: torch.Tensor | None = None,
        convention: str = "fflux",
        nugget: float | torch.Tensor = 1e-10,
        noise_floor: float = 1e-8,
    ):
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        batch_mismatch = train_x.dim() == 3 and train_x.shape[0] != train_y.shape[0]
        if train_y.dim() not in (1, 2) or train_x.dim() not in (2, train_y.dim() + 1) \
                or train_x.shape[-2] != train_y.shape[-1] or batch_mismatch:
            raise ValueError("train_x must be [N, D] and train_y [N] (or [B, N, D] / [N, D] and [B, N] for a batch); "
                             f"got {tuple(train_x.shape)}, {tuple(train_y.shape)}")
        batch = train_y.shape[:-1]
        if batch and train_x.dim() == 2:
            train_x = train_x.expand(*batch, *train_x.shape)
        y_mean = train_y.mean(-1) if convention == "gpytorch" else train_y.new_zeros(batch)
        y_std = train_y.std(-1) if convention == "gpytorch" and train_y.shape[-1] > 1 else train_y.new_ones(batch)
        y_std = torch.where(y_std > 0, y_std, torch.ones_like(y_std))
        nug = torch.as_tensor(nugget, dtype=train_y.dtype).expand(batch)
        floor = noise_floor if convention == "gpytorch" else min(noise_floor, float(nug.min())) * 0.5
        likelihood = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=GreaterThan(floor), batch_shape=batch)
        super().__init__(train_x, (train_y - y_mean.unsqueeze(-1)) / y_std.unsqueeze(-1), likelihood)
        self.convention = convention
        self.register_buffer("y_mean", y_mean)
        self.register_buffer("y_std", y_std)
        d = train_x.shape[-1]
        base = CyclicRBFKernel(cyclic=cyclic, ard_num_dims=d, batch_shape=batch)
        self.mean_module = gpytorch.means.ConstantMean(batch_shape=batch)
        if convention == "gpytorch":
            self.covar_module = gpytorch.kernels.ScaleKernel(base, batch_shape=batch)
        else:
            self.covar_module = base
            likelihood.noise = nug.unsqueeze(-1)
            likelihood.raw_noise.requires_grad_(False)
        self.to(train_x)

    @property
    def batch_shape(self) -> torch.Size:
        """torch.Size([]) for one model, [B] for a batch."""
        return self.y_mean.shape

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        """Prior N(c, k(x, x)) at x [..., M, D] (standardised units in the gpytorch convention)."""
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    @property
    def base_kernel(self) -> CyclicRBFKernel:
        """The ARD kernel (inside the ScaleKernel for the gpytorch convention)."""
        return self.covar_module.base_kernel if self.convention == "gpytorch" else self.covar_module

    @classmethod
    def from_fflux(cls, x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, mean: float | torch.Tensor,
                   nugget: float | torch.Tensor, cyclic: torch.Tensor | None = None, convention: str = "fflux",
                   sigma2: float | torch.Tensor = 1.0, noise_floor: float = 1e-8) -> AnisotropicGP:
        """Build a model from FFLUX hyperparameters, in either convention, with the FFLUX model's predictive mean.

        Args:
            x: training features [N, D] or [B, N, D] (bohr / radians).
            y: training targets [N] or [B, N].
            theta: inverse squared length scales [D] (one model) or [B, D] (a batch), theta = 1 / (2 l^2).
            mean: constant mean in y units (float or [B]).
            nugget: nugget relative to the process variance (float or [B]).
            cyclic: bool mask [D] of the periodic features, or None.
            convention: "fflux" or "gpytorch" (then outputscale = sigma2 / std(y)^2, noise = nugget outputscale).
            sigma2: process variance in y units squared (float or [B]; only the gpytorch convention uses it).
            noise_floor: lower bound of the noise constraint (lowered below the nugget when needed).

        Returns:
            An AnisotropicGP with batch_shape y.shape[:-1].

        Example:
            >>> import torch
            >>> from tlgp_torch import AnisotropicGP
            >>> x = torch.rand(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
            >>> y = torch.sin(3 * x).sum(-1)
            >>> theta = torch.tensor([1.0, 2.0], dtype=torch.float64)
            >>> a = AnisotropicGP.from_fflux(x, y, theta, mean=0.5, nugget=1e-6)
            >>> b = AnisotropicGP.from_fflux(x, y, theta, mean=0.5, nugget=1e-6, convention="gpytorch", sigma2=2.0)
            >>> bool(torch.allclose(a.predict(x[:3]), b.predict(x[:3])))     # same predictive mean
            True
            >>> b.fflux_parameters()["theta"]
            tensor([1.0000, 2.0000], dtype=torch.float64)
        """
        batch = y.shape[:-1]
        as_b = lambda v: torch.as_tensor(v, dtype=y.dtype, device=y.device).expand(batch).clone()  # noqa: E731
        mean, nugget, sigma2 = as_b(mean), as_b(nugget), as_b(sigma2)
        if convention == "gpytorch" and y.shape[-1] > 1:
            std = y.std(-1)
            scale = torch.where(std > 0, sigma2 / std.square(), torch.ones_like(std))
        else:
            scale = torch.ones_like(sigma2)
        floor = min(noise_floor, 0.5 * float((nugget * scale.clamp(max=1.0)).min()))  # noise must lie above it
        model = cls(x, y, cyclic=cyclic, convention=convention, nugget=nugget, noise_floor=floor)
        with torch.no_grad():
            model.base_kernel.lengthscale = theta_to_lengthscale(theta.to(y)).reshape(*batch, 1, -1)
            if convention == "gpytorch":
                s = sigma2 / model.y_std.square()
                model.covar_module.outputscale = s
                model.likelihood.noise = (nugget * s).unsqueeze(-1)
                model.mean_module.constant.copy_((mean - model.y_mean) / model.y_std)
            else:
                model.mean_module.constant.copy_(mean)
        return model

    @classmethod
    def from_results(cls, results) -> AnisotropicGP:
        """One batched model (batch_shape [B]) from B TrainResults with the same N, D, convention and cyclic mask.

        Args:
            results: TrainResults of successful fits (status "ok").

        Returns:
            An AnisotropicGP whose member b predicts like results[b] (see from_fflux).

        Raises:
            ValueError: for an empty or failed result, or results of different shapes, conventions or masks.
        """
        results = list(results)
        if not results:
            raise ValueError("from_results needs at least one TrainResult")
        first = results[0]
        for r in results:
            if r.status != "ok":
                raise ValueError(f"cannot batch a failed model ({r.property_name}: {r.failure})")
            if r.x_train.shape != first.x_train.shape or r.convention != first.convention or not (
                    (r.cyclic is None and first.cyclic is None) or torch.equal(r.cyclic, first.cyclic)):
                raise ValueError("batched models need the same training-set shape, convention and cyclic mask")
        stack = lambda name: torch.stack([torch.as_tensor(getattr(r, name), dtype=torch.float64)  # noqa: E731
                                          for r in results])
        return cls.from_fflux(stack("x_train"), stack("y_train"), stack("theta"), stack("mean"), stack("nugget"),
                              cyclic=first.cyclic, convention=first.convention, sigma2=stack("sigma2"))

    def fflux_parameters(self) -> dict[str, torch.Tensor | float]:
        """theta, mean (y units), nugget (noise / outputscale) and sigma2 of the equivalent FFLUX model(s).

        Returns:
            A dict with theta [D] (or [B, D]) and mean, nugget, sigma2 as floats (or tensors [B] for a batch).
        """
        batch = self.batch_shape
        theta = lengthscale_to_theta(self.base_kernel.lengthscale.detach()).reshape(*batch, -1)
        noise = self.likelihood.noise.detach().reshape(batch)
        scale = self.covar_module.outputscale.detach().reshape(batch) if self.convention == "gpytorch" \
            else torch.ones_like(noise)
        mean = self.mean_module.constant.detach().reshape(batch) * self.y_std + self.y_mean
        out = {"theta": theta, "mean": mean, "nugget": noise / scale, "sigma2": scale * self.y_std.square()}
        return out if batch else {k: v if k == "theta" else float(v) for k, v in out.items()}

    def process_variance(self) -> torch.Tensor:
        """sigma^2 in y units, [] or [B]: outputscale y_std^2 (gpytorch convention), else the profiled
        (y - mu)' R^-1 (y - mu) / N at the model's constant mean (the concentrated likelihood's sigma^2)."""
        if self.convention == "gpytorch":
            return self.covar_module.outputscale.detach().reshape(self.batch_shape) * self.y_std.square()
        x = self.train_inputs[0]
        self.eval()
        with torch.no_grad(), gpytorch.settings.max_cholesky_size(MAX_EXACT), \
                gpytorch.settings.skip_posterior_variances(True):
            self(x[..., :1, :])  # builds the prediction cache R^-1 (y - mu)
        alpha = self.prediction_strategy.mean_cache
        resid = self.train_targets - self.mean_module.constant.detach().unsqueeze(-1)
        return (resid * alpha).sum(-1) / resid.shape[-1]

    def predict(self, x: torch.Tensor, chunk: int = 4096, return_var: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean at x [M, D] (or [B, M, D]) in the units of the training targets: [M] or [B, M]
        (exact Cholesky, chunked over M); with return_var, also the variance of a new observation in y units,
        sigma^2 (1 - k' R^-1 k + nugget) with sigma^2 = process_variance() in both conventions (gpytorch's own
        posterior is in standardised units, and unscaled under the fflux convention).

        Example:
            >>> x = torch.rand(30, 2, dtype=torch.float64)
            >>> model = AnisotropicGP(x, x.sum(-1), nugget=1e-6)
            >>> mean, var = model.predict(x[:4], return_var=True)
            >>> mean.shape, var.shape
            (torch.Size([4]), torch.Size([4]))
        """
        self.eval()
        means, variances = [], []
        x = x.to(self.train_inputs[0])
        if self.batch_shape and x.dim() == 2:
            x = x.expand(*self.batch_shape, *x.shape)
        with torch.no_grad(), gpytorch.settings.max_cholesky_size(MAX_EXACT), \
                gpytorch.settings.skip_posterior_variances(not return_var), gpytorch.settings.fast_pred_var(False):
            for start in range(0, x.shape[-2], chunk):
                f = self(x[..., start:start + chunk, :])
                means.append(f.mean)
                if return_var:
                    variances.append(f.variance + self.likelihood.noise)
        mean = torch.cat(means, -1) * self.y_std.unsqueeze(-1) + self.y_mean.unsqueeze(-1)
        if not return_var:
            return mean
        scale = self.y_std.square() if self.convention == "gpytorch" else self.process_variance()
        return mean, torch.cat(variances, -1) * scale.unsqueeze(-1)
