"""A user's own GPyTorch model seen by the trainers: checks, ARD kernels, fast-path test, flat parameters, write-back.

`inspect_model` turns an `ExactGP` or an `ExactMarginalLogLikelihood` into a `UserModel`: the mll, its model and
likelihood, the training data, the kernels with ARD lengthscales, and whether the analytic FFLUX/RBF objective
reaches the same optimum as gpytorch's exact mll (the fast path) or why not. `ParameterVector` flattens the
trainable raw parameters into one vector u [P] for the batched optimisers; `set_value` writes a hyperparameter
through its constraint and reports a value the constraint refuses.

Example:
    >>> import gpytorch, torch
    >>> class GP(gpytorch.models.ExactGP):
    ...     def __init__(self, x, y):
    ...         super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
    ...         self.mean_module = gpytorch.means.ConstantMean()
    ...         self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=2))
    ...     def forward(self, x):
    ...         return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
    >>> x = torch.rand(20, 2, dtype=torch.float64)
    >>> um = inspect_model(GP(x, x.sum(-1)).double())
    >>> um.fast_path_reason is None, [name for name, _ in um.ard_kernels]
    (True, ['covar_module.base_kernel'])
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import gpytorch
import torch

from tlgp_torch.kernels.cyclic_rbf import CyclicRBFKernel

ACCEPTED_MODELS = ("a gpytorch.models.ExactGP with train data set (single output, batch_shape allowed)",
                   "a gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model) on such a model")
FAST_KERNELS = (gpytorch.kernels.RBFKernel, CyclicRBFKernel)


@dataclass
class UserModel:
    """A checked user model: mll (the objective, prior terms included), model, likelihood and training data.

    x: [*batch, N, D] training inputs; y: [*batch, N] targets; ard_kernels: (name, kernel) of every kernel
    with ARD lengthscales; fast_path_reason: None when the analytic FFLUX/RBF objective applies, else why not;
    cyclic: the periodic-feature mask of a CyclicRBFKernel on the fast path (None otherwise).
    """

    mll: gpytorch.mlls.ExactMarginalLogLikelihood
    model: gpytorch.models.ExactGP
    likelihood: gpytorch.likelihoods.Likelihood
    x: torch.Tensor
    y: torch.Tensor
    ard_kernels: list[tuple[str, gpytorch.kernels.Kernel]]
    fast_path_reason: str | None
    cyclic: torch.Tensor | None = None
    batch_shape: torch.Size = field(default_factory=torch.Size)

    @property
    def n(self) -> int:
        """Training points per batch member."""
        return int(self.x.shape[-2])

    @property
    def d(self) -> int:
        """Input features."""
        return int(self.x.shape[-1])

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Trainable (requires_grad) raw parameters of the mll, model and likelihood, in a fixed order."""
        return [(n, p) for n, p in self.mll.named_parameters() if p.requires_grad]

    def parameter_vector(self) -> ParameterVector:
        """The trainable parameters as one optimisation vector (see ParameterVector)."""
        return ParameterVector(self.mll, self.named_parameters())


def is_user_model(obj) -> bool:
    """True for anything that should take the user-model route of `fit` (a gpytorch model or mll)."""
    return isinstance(obj, (gpytorch.models.GP, gpytorch.mlls.MarginalLogLikelihood))


def inspect_model(obj) -> UserModel:
    """Check a user's ExactGP or ExactMarginalLogLikelihood and describe it (raises TypeError/ValueError).

    Args:
        obj: an `ExactGP` (its mll is built as `ExactMarginalLogLikelihood(obj.likelihood, obj)`) or an
            `ExactMarginalLogLikelihood`. The model must hold its training data, one input tensor x [*batch, N, D],
            one target per row y [*batch, N], and at least one kernel with ARD lengthscales (ard_num_dims set).
    """
    if isinstance(obj, gpytorch.mlls.MarginalLogLikelihood):
        if type(obj) is not gpytorch.mlls.ExactMarginalLogLikelihood:
            raise TypeError(f"fit needs gpytorch.mlls.ExactMarginalLogLikelihood, got {type(obj).__name__}: the "
                            "trainers maximise the exact marginal likelihood (variational, leave-one-out and summed "
                            "objectives are not supported)")
        mll, model = obj, obj.model
    else:
        model = obj
        if not isinstance(model, gpytorch.models.ExactGP):
            raise TypeError(f"fit needs a gpytorch.models.ExactGP, got {type(model).__name__} (approximate and "
                            f"multitask models are not supported); accepted: {'; '.join(ACCEPTED_MODELS)}")
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    if not isinstance(model, gpytorch.models.ExactGP):
        raise TypeError(f"the mll's model must be a gpytorch.models.ExactGP, got {type(model).__name__}")
    likelihood = mll.likelihood
    if model.train_inputs is None or model.train_targets is None:
        raise ValueError("model has no training data: build it with ExactGP(train_x, train_y, likelihood) or call "
                         "model.set_train_data(x, y, strict=False) before fit")
    if len(model.train_inputs) != 1:
        raise ValueError(f"model has {len(model.train_inputs)} training-input tensors; fit supports one x [N, D]")
    x, y = model.train_inputs[0], model.train_targets
    if isinstance(likelihood, gpytorch.likelihoods.MultitaskGaussianLikelihood) \
            or int(getattr(model, "num_outputs", 1)) != 1 or x.dim() < 2 or y.shape != x.shape[:-1]:
        raise ValueError(f"multi-output models are not supported: train_inputs[0] {tuple(x.shape)} and train_targets "
                         f"{tuple(y.shape)} (expected x [*batch, N, D] and y [*batch, N], one target per row); train "
                         "one model per output, or a batched model (batch_shape [P]) with y [P, N]")
    if x.requires_grad or y.requires_grad:
        raise ValueError("the model's training data require grad (x.requires_grad or y.requires_grad): pass "
                         "x.detach() / y.detach() to set_train_data; hyperparameters are fitted, not the data")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("the model's training data contain NaN or inf")
    ard, isotropic = [], []
    for name, mod in model.named_modules():
        if isinstance(mod, gpytorch.kernels.Kernel) and getattr(mod, "has_lengthscale", False):
            (ard if mod.ard_num_dims is not None else isotropic).append((name or "model", mod))
    if not ard:
        seen = ", ".join(f"{n} ({type(k).__name__})" for n, k in isotropic) or "none"
        raise ValueError(f"the model's kernel has no ARD lengthscales (kernels with a lengthscale: {seen}); build the "
                         f"kernel with ard_num_dims={x.shape[-1]}, e.g. RBFKernel(ard_num_dims={x.shape[-1]})")
    um = UserModel(mll=mll, model=model, likelihood=likelihood, x=x, y=y, ard_kernels=ard, fast_path_reason=None,
                   batch_shape=x.shape[:-2])
    um.fast_path_reason = _fast_path_reason(um)
    if um.fast_path_reason is None:
        base = _scaled_base(model)[1]
        um.cyclic = base.cyclic.clone() if isinstance(base, CyclicRBFKernel) and base.cyclic.numel() else None
    return um


def _scaled_base(model) -> tuple[gpytorch.kernels.Kernel | None, gpytorch.kernels.Kernel | None]:
    """(ScaleKernel, its base kernel) when the model's covariance is one, else (None, the covariance module)."""
    covar = getattr(model, "covar_module", None)
    if isinstance(covar, gpytorch.kernels.ScaleKernel):
        return covar, covar.base_kernel
    return None, covar


def _fast_path_reason(um: UserModel) -> str | None:
    """None when gpytorch's exact mll of this model has the same optimum as the analytic concentrated objective."""
    model = um.model
    if um.batch_shape:
        return f"batched model (batch_shape {tuple(um.batch_shape)})"
    if list(model.named_priors()) or list(model.added_loss_terms()):
        return "the model has priors or added loss terms (they change the objective)"
    scale, base = _scaled_base(model)
    if scale is None:
        return "the covariance is not a ScaleKernel (the analytic objective profiles the outputscale)"
    if type(base) not in FAST_KERNELS:
        return f"kernel {type(base).__name__} (the analytic objective is ARD RBF or CyclicRBF)"
    if base.active_dims is not None and base.active_dims.numel() != um.d:
        return "the kernel uses active_dims"
    if base.ard_num_dims != um.d:
        return f"the kernel's ard_num_dims={base.ard_num_dims} differs from D={um.d}"
    mean = getattr(model, "mean_module", None)
    if type(mean) is not gpytorch.means.ConstantMean:
        return f"mean {type(mean).__name__} (the analytic objective profiles a constant mean)"
    if type(um.likelihood) is not gpytorch.likelihoods.GaussianLikelihood:
        return f"likelihood {type(um.likelihood).__name__} (the analytic objective learns a homoscedastic noise)"
    needed = {"covar_module.raw_outputscale", "covar_module.base_kernel.raw_lengthscale",
              "mean_module.raw_constant"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if not needed <= trainable or not um.likelihood.noise_covar.raw_noise.requires_grad:
        return "some of lengthscale, outputscale, constant mean or noise are fixed (requires_grad=False)"
    if len([p for p in model.parameters() if p.requires_grad]) != 4:
        return "the model has trainable parameters beyond lengthscale, outputscale, constant mean and noise"
    return None


def constraint_of(module: torch.nn.Module, name: str):
    """The gpytorch constraint of `module.raw_<name>` (None when unconstrained)."""
    return getattr(module, f"raw_{name}_constraint", None)


def set_value(module: torch.nn.Module, name: str, value: torch.Tensor, where: str = "") -> str | None:
    """Write hyperparameter `name` (e.g. "lengthscale", "noise") of `module` through its constraint's inverse
    transform. A value outside the constraint is clamped just inside it and a message naming the parameter, the
    constraint and the value is returned (None when the value fits).

    Args:
        module: the gpytorch module owning `raw_<name>`; value: the hyperparameter, broadcastable to its shape.
        where: the module's dotted name, for the message.
    """
    raw = getattr(module, f"raw_{name}")
    value = torch.as_tensor(value, dtype=raw.dtype, device=raw.device).expand_as(raw).clone()
    con = constraint_of(module, name)
    problem = None
    if con is not None:
        lo, hi = con.lower_bound.to(value), con.upper_bound.to(value)
        bad = (value < lo) | (value > hi)
        if bool(bad.any()):
            label = f"{where}.{name}" if where else name
            problem = (f"{label}: optimum {value[bad].flatten()[0].item():.4g} lies outside the constraint {con} "
                       f"of raw_{name}")
        width = torch.where(torch.isfinite(hi - lo), (hi - lo) * 1e-6, lo.abs() * 1e-6 + 1e-300)
        value = torch.minimum(torch.maximum(value, lo + width), hi - width)
        value = con.inverse_transform(value)
    with torch.no_grad():
        raw.copy_(value)
    return problem


class ParameterVector:
    """The trainable parameters of a model as one flat vector u [P] for the optimisers (read, write, gradient, masks).

    A parameter whose constraint has a finite lower bound b and no upper bound (Positive, GreaterThan: lengthscales,
    outputscales, noises) is optimised as u = log(value - b), as the fast path optimises log theta, so that steps are
    relative and a lengthscale on a flat ridge moves by decades, not by units of its raw value; every other
    parameter (unconstrained, Interval) is optimised as its raw value.

    Args:
        root: the module the names are relative to (the mll); named: [(name, Parameter), ...] to optimise.

    Example:
        >>> k = gpytorch.kernels.RBFKernel(ard_num_dims=3)
        >>> pv = ParameterVector(k, list(k.named_parameters()))
        >>> torch.allclose(pv.get(), k.lengthscale.detach().log().reshape(-1).double())
        True
    """

    def __init__(self, root: torch.nn.Module, named: list[tuple[str, torch.nn.Parameter]]):
        if not named:
            raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.sizes = [p.numel() for p in self.params]
        self.modules, self.log_constraints = [], []
        for name in self.names:
            path, _, leaf = name.rpartition(".")
            module = root.get_submodule(path) if path else root
            con = getattr(module, f"{leaf}_constraint", None)
            log_space = con is not None and bool(torch.isfinite(con.lower_bound).all()) \
                and not bool(torch.isfinite(con.upper_bound).any())
            self.modules.append(module)
            self.log_constraints.append(con if log_space else None)
        self._u: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """P, the total number of trainable scalars."""
        return sum(self.sizes)

    def get(self) -> torch.Tensor:
        """The current optimisation variables u [P] (float64)."""
        parts = []
        for p, con in zip(self.params, self.log_constraints):
            raw = p.detach().to(torch.float64)
            if con is not None:
                raw = (con.transform(raw) - con.lower_bound.to(raw)).clamp_min(1e-300).log()
            parts.append(raw.reshape(-1))
        return torch.cat(parts)

    def _raw(self, part: torch.Tensor, con) -> torch.Tensor:
        return part if con is None else con.inverse_transform(con.lower_bound.to(part) + part.exp())

    def set(self, u: torch.Tensor) -> None:
        """Write u [P] into the parameters (in place: the user's Parameter objects are kept)."""
        self._u = u.detach().to(torch.float64)
        with torch.no_grad():
            for p, part, con in zip(self.params, self._u.split(self.sizes), self.log_constraints):
                p.copy_(self._raw(part, con).reshape(p.shape).to(p))

    def gradient(self, loss: torch.Tensor) -> torch.Tensor:
        """d loss / d u [P] at the u last `set` (autograd to the raw parameters, then the chain rule to u)."""
        if self._u is None:
            self._u = self.get()
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        out = []
        for p, g, part, con in zip(self.params, grads, self._u.split(self.sizes), self.log_constraints):
            g = (torch.zeros_like(p) if g is None else g).reshape(-1).to(torch.float64)
            if con is not None:
                leaf = part.clone().requires_grad_(True)
                with torch.enable_grad():
                    (g,) = torch.autograd.grad(self._raw(leaf, con), leaf, g)
            out.append(g)
        return torch.cat(out)

    def mask(self, select: Callable[[str], bool]) -> torch.Tensor:
        """Boolean [P]: True on the elements of the parameters whose name `select` accepts."""
        return torch.cat([torch.full((s,), bool(select(n)), dtype=torch.bool) for n, s in zip(self.names, self.sizes)])

    def log_lengthscale_box(self, kernels: list[torch.nn.Module], spread: torch.Tensor, low: float = 1e-8,
                            high: float = 1e3) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds (lower [P], upper [P]) on u: the ARD lengthscales of `kernels` (log space) within the fast path's
        box 2 theta_d s_d^2 in [low, high], i.e. l_d in [s_d / sqrt(high), s_d / sqrt(low)]; +-inf elsewhere.

        spread: [D] feature spreads s_d (training.starts.feature_spread)."""
        lo, hi = [], []
        for p, module, con in zip(self.params, self.modules, self.log_constraints):
            lo_p = torch.full((p.numel(),), -math.inf, dtype=torch.float64)
            hi_p = torch.full((p.numel(),), math.inf, dtype=torch.float64)
            if con is not None and p is getattr(module, "raw_lengthscale", None) and any(module is k for k in kernels):
                dims = module.active_dims.cpu() if module.active_dims is not None else torch.arange(spread.numel())
                s = spread.cpu()[dims].to(torch.float64).expand(*p.shape[:-1], -1).reshape(-1)
                b = float(con.lower_bound.reshape(-1)[0])
                lo_p = (s / math.sqrt(high) - b).clamp_min(1e-300).log()
                hi_p = (s / math.sqrt(low) - b).clamp_min(1e-300).log()
            lo.append(lo_p)
            hi.append(hi_p)
        return torch.cat(lo), torch.cat(hi)


def name_selector(spec) -> Callable[[str], bool]:
    """A predicate on parameter names from a tuple of name fragments (matched as substrings, e.g. "lengthscale",
    "outputscale", "noise", "mean_module") or a callable name -> bool."""
    if callable(spec):
        return spec
    if isinstance(spec, str) or not all(isinstance(s, str) for s in spec):
        raise TypeError(f"transfer_parameters must be a tuple of name fragments or a callable name -> bool, got "
                        f"{spec!r}")
    frags = tuple(spec)
    return lambda name: any(f in name for f in frags)


def log_uniform(lo: float, hi: float, count: int, gen: torch.Generator) -> torch.Tensor:
    """count values log-uniform in [lo, hi] (float64, CPU)."""
    return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(count, generator=gen,
                                                                                dtype=torch.float64))
