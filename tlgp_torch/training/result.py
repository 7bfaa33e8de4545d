"""TrainResult: what a trainer returns (hyperparameters, FFLUX theta, timings, evaluation counts, history)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import torch

from tlgp_torch.kernels.formula import theta_to_lengthscale
from tlgp_torch.models.posterior import (
    fflux_factor,
    fflux_predict,
    fflux_variance,
    fflux_weights,
    gp_predict,
    profiled_sigma2,
)
from tlgp_torch.training.final import FinalState


@dataclass
class DirectInfo:
    """How one DirectTrainer task was trained (TrainResult.info, with batch_size)."""

    restart_ll: list[float]          # final ll of each restart
    restart_iters: list[int]         # optimiser iterations of each restart
    restart_evals: list[int]         # likelihood evaluations of each restart
    restart_reason: list[str]        # why each restart stopped
    best_restart: int                # index of the restart kept


@dataclass(kw_only=True)
class TransferInfo:
    """How one TransferTrainer task was trained (TrainResult.info, with batch_size; None fields are left out)."""

    source_size: int                 # points per source subset
    n_sources: int
    source_restarts: int
    selected_source: int             # index of the source whose hyperparameters seeded the target
    source_scores: list[float]       # selection score of each source (lower is better)
    source_ll: list[list[float]]     # [source][restart] final ll on the source subset
    source_iters: list[int] | None = None  # optimiser iterations of each source restart (exact path)
    relax_iters: int                 # iterations of the relaxation on the full set
    relax_reason: str                # why the relaxation stopped
    no_source: bool                  # every source failed: relaxed from a fresh random start
    relax_path: str                  # "exact" or "iterative"
    kernel: str | None = None        # iterative path: how the kernel was held
    preconditioner_ranks: list[int] | None = None  # iterative path: landmarks of each stage
    likelihood_note: str | None = None
    seed_ll: list[float] | None = None   # full-set ll of each candidate seed (exact path)
    seeds_relaxed: list[int] | None = None  # indices of the candidate seeds relaxed side by side
    seed_kept: int | None = None         # index of the candidate kept after halving
    source_mae_ratio: float | None = None  # best source's holdout MAE / that of predicting its subset's mean
    fallback: str | None = None          # why the target was fitted by DL's multi-start instead (else None)


def info_dict(info: DirectInfo | TransferInfo, **more: Any) -> dict[str, Any]:
    """The TrainResult.info dict of a trainer's info dataclass (fields that are None left out), plus `more`."""
    return {**{k: v for k, v in asdict(info).items() if v is not None}, **more}


@dataclass
class TrainResult:
    """A trained model's hyperparameters and the record of how it was trained (what every trainer returns).

    Fields:
        method: "DL" or "TL". convention: "fflux" or "gpytorch". likelihood: the objective optimised
            ("concentrated", "marginal", or "exact_mll" for a user's gpytorch model).
        theta: [D] FFLUX theta = 1 / (2 l^2) (user models: of the first ARD kernel). nugget: noise / outputscale.
        mean: constant prediction mean (y units). sigma2: process variance (outputscale, y units).
        ll: final value of the objective (user models: N x gpytorch's exact mll, prior terms included).
        ll_marginal, ll_concentrated: both FFLUX log-likelihoods at the final hyperparameters (NaN where undefined).
        stage_times: device-synchronised wall seconds per stage. n_full_evals: objective evaluations on the full
            set. n_source_evals, source_size: TL's evaluations on subsets and their size.
        history: per-iteration records (stage, iteration, best ll, active members, seconds).
        info: method details; for user models info["path"] ("fast", "fast+generic", "generic") and
            info["path_reason"].
        x_train, y_train, cyclic, property_name: the training data. status, failure: "ok" or "failed" and why.
        gp: the user's trained gpytorch model (user-model fits only; predict and model() then use it).

    Example:
        >>> import torch
        >>> from tlgp_torch import DirectTrainer
        >>> x = torch.rand(40, 2, dtype=torch.float64)
        >>> result = DirectTrainer(restarts=2, seed=0, device="cpu").fit((x, x.sum(-1)))
        >>> mean, var = result.predict(x[:3], return_var=True)
        >>> mean.shape, bool((var > 0).all())
        (torch.Size([3]), True)
    """

    method: str                      # "DL" or "TL"
    convention: str                  # "fflux" or "gpytorch"
    likelihood: str                  # objective optimised: "concentrated" or "marginal"
    theta: torch.Tensor              # [D] FFLUX theta = 1 / (2 l^2)
    nugget: float                    # noise / outputscale (fixed, learned, or raised by jitter)
    mean: float                      # constant mean used for prediction (y units)
    sigma2: float                    # process variance (outputscale in y units) at the optimum
    ll: float                        # final value of the optimised objective
    ll_marginal: float               # FFLUX marginal log-likelihood at the final theta/nugget
    ll_concentrated: float           # FFLUX concentrated log-likelihood at the final theta/nugget
    stage_times: dict[str, float]    # device-synchronised wall seconds per stage
    n_full_evals: int                # likelihood(+gradient) evaluations on the full training set
    n_source_evals: int = 0          # evaluations on source subsets (TL only)
    source_size: int = 0             # points per source subset (TL only)
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    x_train: torch.Tensor | None = field(default=None, repr=False)
    y_train: torch.Tensor | None = field(default=None, repr=False)
    cyclic: torch.Tensor | None = field(default=None, repr=False)
    property_name: str | None = None
    status: str = "ok"               # "ok" or "failed" (then `failure` says why; other batch members are unaffected)
    failure: str | None = None
    gp: Any = field(default=None, repr=False)  # the user's trained gpytorch model (user-model fits only)

    @property
    def wall_time(self) -> float:
        """Total wall seconds over all stages."""
        return float(sum(self.stage_times.values()))

    @property
    def n_points(self) -> int:
        """Training-set size."""
        return int(self.x_train.shape[0])

    @property
    def full_eval_equivalents(self) -> float:
        """Cost in full-set evaluations, counting a source evaluation as (m / N)^3 of one."""
        return self.n_full_evals + self.n_source_evals * (self.source_size / max(self.n_points, 1)) ** 3

    @property
    def lengthscale(self) -> torch.Tensor:
        """GPyTorch lengthscales l = sqrt(1 / (2 theta))."""
        return theta_to_lengthscale(self.theta)

    def hyperparameters(self) -> dict[str, Any]:
        """Readable hyperparameters in both conventions."""
        return {"theta": self.theta.tolist(), "lengthscale": self.lengthscale.tolist(), "mean": self.mean,
                "nugget": self.nugget, "outputscale": self.sigma2, "noise": self.nugget * self.sigma2}

    @cached_property
    def weights(self) -> torch.Tensor:
        """FFLUX weights w = R^-1 (y - mean)."""
        return fflux_weights(self.x_train, self.y_train, self.theta, self.mean, self.nugget, self.cyclic)

    @cached_property
    def factor(self) -> torch.Tensor:
        """Lower Cholesky factor [N, N] of R = K + nugget I (for predictive variances)."""
        return fflux_factor(self.x_train, self.theta, self.nugget, self.cyclic)

    @property
    def predictive_sigma2(self) -> float:
        """Process variance that scales predictive variances (y units): the learned outputscale (gpytorch
        convention), else sigma^2 = (y - mean)' R^-1 (y - mean) / N profiled at the prediction mean (the
        concentrated likelihood's sigma^2; also used after a marginal-likelihood fit, whose kernel has unit
        amplitude whatever the scale of y)."""
        if self.convention == "gpytorch" or self.likelihood == "concentrated":
            return float(self.sigma2)
        return float(profiled_sigma2(self.y_train, self.mean, self.weights))

    def predict(self, x: torch.Tensor, return_var: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predictions at x [M, D] in the units of the training targets: mean [M], or (mean [M], variance [M]).

        variance = sigma^2 (1 - k' R^-1 k + nugget), the variance of a new observation (see predictive_sigma2).
        For a user-model fit both come from the user's gpytorch model (latent variance + Gaussian noise); a batched
        user model also takes x [B, M, D].
        """
        d = int(self.x_train.shape[-1])
        dims = (2, 3) if self.gp is not None and self.x_train.dim() == 3 else (2,)
        if not isinstance(x, torch.Tensor) or x.dim() not in dims or x.shape[-1] != d:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            hint = f" (one point: x.reshape(1, {d}))" if isinstance(x, torch.Tensor) and x.dim() == 1 else ""
            raise ValueError(f"x must be a tensor [M, {d}] (M points of the model's {d} features), got {got}{hint}")
        if self.gp is not None:
            return gp_predict(self.gp, x, return_var)
        x = x.to(self.x_train)
        mean = fflux_predict(x, self.x_train, self.weights, self.theta, self.mean, self.cyclic)
        if not return_var:
            return mean
        return mean, fflux_variance(x, self.x_train, self.factor, self.theta, self.predictive_sigma2, self.nugget,
                                    self.cyclic)

    def model(self):
        """The trained gpytorch model: the user's own (user-model fits), else the equivalent AnisotropicGP."""
        if self.gp is not None:
            return self.gp
        from tlgp_torch.models.anisotropic_gp import AnisotropicGP
        return AnisotropicGP.from_fflux(self.x_train, self.y_train, self.theta, self.mean, self.nugget,
                                        cyclic=self.cyclic, convention=self.convention, sigma2=self.sigma2)

    def summary(self) -> dict[str, Any]:
        """Flat dict of the headline numbers (for tables and CSV)."""
        return {"method": self.method, "property": self.property_name, "n": self.n_points,
                "d": int(self.theta.numel()), "wall_s": self.wall_time, "n_full_evals": self.n_full_evals,
                "n_source_evals": self.n_source_evals, "full_eval_equiv": self.full_eval_equivalents,
                "ll": self.ll, "ll_concentrated": self.ll_concentrated, "ll_marginal": self.ll_marginal,
                "nugget": self.nugget, "mean": self.mean,
                **{f"t_{k}": v for k, v in self.stage_times.items()}}


def build_results(trainer, method: str, states: list[FinalState], x: torch.Tensor, y: torch.Tensor,
                  cyclic: torch.Tensor | None, names: list, ll: torch.Tensor, times: dict[str, float],
                  full_evals: list[int], history: list, infos: list[DirectInfo | TransferInfo],
                  **extra) -> list[TrainResult]:
    """One TrainResult per task of a batched fit (failed tasks get status 'failed' and NaN hyperparameters)."""
    out = []
    for b, state in enumerate(states):
        out.append(TrainResult(
            method=method, convention=trainer.convention, likelihood=trainer.likelihood, theta=state.theta,
            nugget=state.nugget, mean=state.mean, sigma2=state.sigma2,
            ll=-math.inf if state.failed else float(ll[b]), ll_marginal=state.ll_marginal,
            ll_concentrated=state.ll_concentrated, stage_times=dict(times), n_full_evals=full_evals[b],
            history=history, info=info_dict(infos[b], batch_size=len(states)), x_train=x[b], y_train=y[b],
            cyclic=cyclic, property_name=names[b], status="failed" if state.failed else "ok", failure=state.failure,
            **{k: v[b] for k, v in extra.items()}))
    return out
