"""DirectTrainer: direct learning (DL) from R random hyperparameter guesses on the full training set."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..device import resolve_device, timed
from .fitting import (FitSettings, feature_spread, final_state, generator, initial_parameters, make_likelihood,
                      optimise, parameter_bounds, prepare)
from .result import TrainResult


@dataclass
class DirectTrainer(FitSettings):
    """Multi-start DL: `restarts` random starts optimised on the full set (batched), best kept by likelihood."""

    restarts: int = 8

    def __post_init__(self):
        super().__post_init__()
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")

    def fit(self, data, prop: str | None = None) -> TrainResult:
        """Train on an AtomDataset (property `prop`) or an (x, y[, cyclic]) tuple."""
        x, y, cyclic, name = prepare(self, data, prop)
        device = resolve_device(self.device)
        times: dict[str, float] = {}
        history: list = []
        gen = generator(self.seed)
        with timed(times, "optimisation", device):
            spread = feature_spread(x, cyclic, generator=gen)
            lo, hi = parameter_bounds(self, spread)
            u0 = initial_parameters(self, spread, self.restarts, gen)
            lik = make_likelihood(self, x, y, cyclic)
            res = optimise(self, lik, u0, self.stop, lo, hi, history=history, stage="DL")
            best = int(torch.argmin(res.f))
        with timed(times, "evaluation", device):
            st = final_state(self, lik, y, res.x[best])
        info = {"restart_ll": (-res.f * x.shape[0]).tolist(), "restart_iters": res.n_iter.tolist(),
                "restart_evals": res.n_evals.tolist(), "restart_reason": res.reason, "best_restart": best}
        return TrainResult(method="DL", convention=self.convention, likelihood=self.likelihood, theta=st["theta"],
                           nugget=st["nugget"], mean=st["mean"], sigma2=st["sigma2"], ll=float(-res.f[best] * x.shape[0]),
                           ll_marginal=st["ll_marginal"], ll_concentrated=st["ll_concentrated"], stage_times=times,
                           n_full_evals=int(res.n_evals.sum()), history=history, info=info, x_train=x, y_train=y,
                           cyclic=cyclic, property_name=name)
