"""Settings shared by DirectTrainer and TransferTrainer: convention, objective, optimiser, device."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import torch

from tlgp_torch.likelihoods.exact import KINDS
from tlgp_torch.models.anisotropic_gp import CONVENTIONS
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.runtime.allocator import ALLOCATOR_MODES, cpu_allocator
from tlgp_torch.runtime.device import resolve_device

log = logging.getLogger("tlgp_torch")


PROGRESS_EVERY_S = 30.0  # long optimisations log a progress line this often (logger "tlgp_torch", INFO)


OPTIMIZERS = ("lbfgs", "adam")
USER_PATHS = ("auto", "fast", "generic")


@dataclass
class FitSettings:
    """Model convention, objective and optimiser settings shared by DirectTrainer and TransferTrainer.

    The FFLUX kernel is k(x, x') = exp(-sum_d theta_d delta_d^2), theta_d = 1 / (2 l_d^2), with R = K + nugget I.

    Fields:
        convention: "fflux" (unit amplitude, fixed nugget, constant mean) or "gpytorch" (outputscale sigma^2 and
            mean profiled, nugget = noise / outputscale learned in [noise_floor, 1]).
        likelihood: objective of the fflux convention: "concentrated" (-N/2 log sigma^2 - 1/2 log|R| with the GLS
            mean and sigma^2 profiled out) or "marginal" (training mean, unit amplitude); gpytorch: concentrated.
        nugget: fixed nugget of the fflux convention (raised by jitter only where R cannot be factorised).
        noise_floor: lower bound of the learned nugget (gpytorch convention); also the bottom of the generic
            path's random noise starts (noise = nugget x var(y), nugget log-uniform in [10 noise_floor, 1e-2]).
        optimizer: "lbfgs" (batched L-BFGS, one history and line search per start) or "adam".
        lr: Adam's step size (in log theta / the optimised parameters).
        history_size: L-BFGS curvature pairs kept.
        stop: the per-member StoppingRule (|change of ll| <= atol + rtol |ll| `patience` times, or max_iter).
        init_range: random starts draw 2 theta_d s_d^2 log-uniform in this range x min(1, 3 / D) (s_d: the
            spread of feature d), so a random pair's exponent is O(1) whatever D is.
        mean: prediction mean: "auto" (GLS if concentrated, else training mean), "gls" or "train".
        device: "auto" (GPU if available), "cpu", "cuda" or "cuda:k".
        dtype: of training (float64 by default).
        seed: of every random draw (starts, subsets); the same seed gives the same result.
        memory_fraction: fraction of free RAM / GPU memory one batched evaluation may use.
        user_path: for a user's gpytorch model: "auto" (the analytic fast path where the model is
            ScaleKernel(ARD RBF / CyclicRBF) + ConstantMean + GaussianLikelihood without priors, else the generic
            path through gpytorch's mll), "fast" (error if the model does not qualify) or "generic".
        profile_mean: generic path: maximise the mll over a trainable ConstantMean's constant in closed form (the
            GLS constant) at every evaluation, as the fast path does, where the constant has no prior or
            constraint; the optimum is the same and the slow ridge along the constant goes.
        cpu_allocator: "tuned" (on the CPU with glibc, raise malloc's mmap and trim thresholds to 1 GiB while
            training, so the N x N buffers of each evaluation reuse heap memory instead of freshly faulted pages,
            and give the free memory back when the fit ends; see runtime.allocator) or "system" (leave malloc as
            it is). Process-wide: once raised, the thresholds stay raised.

    Raises:
        ValueError: naming the field (convention, likelihood, optimizer, user_path, mean) whose value is not one
            of the accepted ones, or the gpytorch convention with likelihood="marginal".

    Example:
        >>> from tlgp_torch.training import FitSettings
        >>> s = FitSettings(convention="gpytorch", device="cpu")
        >>> s.mean_rule, s.learn_nugget, s.dtype
        ('gls', True, torch.float64)
        >>> FitSettings(likelihood="marginal").mean_rule     # the marginal likelihood keeps the training mean
        'train'
        >>> FitSettings(optimizer="sgd")
        Traceback (most recent call last):
        ...
        ValueError: optimizer must be one of ('lbfgs', 'adam'), got 'sgd'
    """

    convention: str = "fflux"            # "fflux": fixed nugget; "gpytorch": learned nugget = noise / outputscale
    likelihood: str = "concentrated"     # "concentrated" or "marginal" (fflux only; gpytorch profiles mean and scale)
    nugget: float = 1e-10                # fixed nugget (fflux) or initial/floor scale (gpytorch: noise_floor)
    noise_floor: float = 1e-8            # lower bound of the learned nugget (gpytorch convention)
    optimizer: str = "lbfgs"              # "lbfgs" (batched L-BFGS) or "adam"
    lr: float = 0.05                     # Adam step size in log-theta
    history_size: int = 10               # L-BFGS curvature pairs kept
    stop: StoppingRule = field(default_factory=StoppingRule)
    init_range: tuple[float, float] = (1e-3, 1.0)  # 2 theta_d s_d^2 log-uniform in this range x min(1, 3/D)
    mean: str = "auto"                   # prediction mean: "auto" (GLS if concentrated else train), "gls", "train"
    device: str = "auto"                 # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    dtype: torch.dtype = torch.float64
    seed: int = 0                        # random starts and subsets: same seed, same result
    memory_fraction: float = 0.5         # of free RAM / GPU memory one batched evaluation may use
    user_path: str = "auto"              # user gpytorch models: "auto" (fast where it applies), "fast", "generic"
    profile_mean: bool = True            # generic path: constant mean at its GLS value (closed form) per evaluation
    cpu_allocator: str = "tuned"         # "tuned": glibc malloc thresholds raised while training on the CPU; "system"

    def __post_init__(self):
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {self.convention!r}")
        if self.likelihood not in KINDS:
            raise ValueError(f"likelihood must be one of {KINDS}, got {self.likelihood!r}")
        if self.convention == "gpytorch" and self.likelihood != "concentrated":
            raise ValueError("the gpytorch convention learns outputscale and mean, i.e. the concentrated likelihood "
                             "with a learned nugget; use likelihood='concentrated'")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.user_path not in USER_PATHS:
            raise ValueError(f"user_path must be one of {USER_PATHS}, got {self.user_path!r}")
        if self.cpu_allocator not in ALLOCATOR_MODES:
            raise ValueError(f"cpu_allocator must be one of {ALLOCATOR_MODES}, got {self.cpu_allocator!r}")
        if self.mean not in ("auto", "gls", "train"):
            raise ValueError(f"mean must be 'auto', 'gls' or 'train', got {self.mean!r}")

    @property
    def mean_rule(self) -> str:
        """'gls' or 'train': the constant mean used for predictions."""
        return self.mean if self.mean != "auto" else ("gls" if self.likelihood == "concentrated" else "train")

    @property
    def learn_nugget(self) -> bool:
        """True when the nugget (noise / outputscale) is optimised."""
        return self.convention == "gpytorch"


def with_cpu_allocator(method):
    """Decorator for a trainer method (self: FitSettings): run it inside runtime.allocator.cpu_allocator with the
    trainer's cpu_allocator mode on its resolved device."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with cpu_allocator(self.cpu_allocator, resolve_device(self.device)):
            return method(self, *args, **kwargs)
    return wrapper
