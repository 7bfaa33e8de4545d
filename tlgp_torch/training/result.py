"""TrainResult: what a trainer returns (hyperparameters, FFLUX theta, timings, evaluation counts, history)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from tlgp_torch.kernels.formula import theta_to_lengthscale
from tlgp_torch.models.posterior import fflux_predict, fflux_weights


@dataclass
class TrainResult:
    """A trained model's hyperparameters and the record of how it was trained."""

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

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions at x [M, D] (same units as the training targets)."""
        d = int(self.x_train.shape[-1])
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != d:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            hint = f" (one point: x.reshape(1, {d}))" if isinstance(x, torch.Tensor) and x.dim() == 1 else ""
            raise ValueError(f"x must be a tensor [M, {d}] (M points of the model's {d} features), got {got}{hint}")
        x = x.to(self.x_train)
        return fflux_predict(x, self.x_train, self.weights, self.theta, self.mean, self.cyclic)

    def model(self):
        """The equivalent gpytorch AnisotropicGP (for gpytorch tooling)."""
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


def build_results(trainer, method: str, states: list[dict], x: torch.Tensor, y: torch.Tensor,
                  cyclic: torch.Tensor | None, names: list, ll: torch.Tensor, times: dict[str, float],
                  full_evals: list[int], history: list, infos: list[dict], **extra) -> list[TrainResult]:
    """One TrainResult per task of a batched fit (failed tasks get status 'failed' and NaN hyperparameters)."""
    out = []
    for b, st in enumerate(states):
        failed = "failed" in st
        nan = float("nan")
        out.append(TrainResult(
            method=method, convention=trainer.convention, likelihood=trainer.likelihood,
            theta=x.new_full((x.shape[-1],), nan) if failed else st["theta"],
            nugget=nan if failed else st["nugget"], mean=nan if failed else st["mean"],
            sigma2=nan if failed else st["sigma2"], ll=-math.inf if failed else float(ll[b]),
            ll_marginal=-math.inf if failed else st["ll_marginal"],
            ll_concentrated=-math.inf if failed else st["ll_concentrated"], stage_times=dict(times),
            n_full_evals=full_evals[b], history=history, info={**infos[b], "batch_size": len(states)},
            x_train=x[b], y_train=y[b], cyclic=cyclic, property_name=names[b],
            status="failed" if failed else "ok", failure=st.get("failed"), **{k: v[b] for k, v in extra.items()}))
    return out
