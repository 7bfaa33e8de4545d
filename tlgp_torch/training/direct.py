"""DirectTrainer: direct learning (DL) from R random hyperparameter guesses on the full training set."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tlgp_torch.runtime.device import resolve_device, timed
from tlgp_torch.training.final import final_states
from tlgp_torch.training.multistart import make_likelihood, optimise
from tlgp_torch.training.prepare import generator, prepare_tasks
from tlgp_torch.training.result import DirectInfo, TrainResult, build_results
from tlgp_torch.training.settings import FitSettings, with_cpu_allocator
from tlgp_torch.training.starts import feature_spread, initial_parameters, parameter_bounds
from tlgp_torch.training.user_fit import check_fit_arguments, fit_user_model
from tlgp_torch.training.user_model import is_user_model


@dataclass
class DirectTrainer(FitSettings):
    """Direct learning (DL): `restarts` random starts optimised on the full set (batched), best kept by likelihood.

    Usage: DirectTrainer(**fields).fit(data) with data an AtomDataset (+ property name), an (x, y[, cyclic])
    tuple, or a user's gpytorch ExactGP / ExactMarginalLogLikelihood (trained in place; see training.user_fit).

    Fields (besides those of FitSettings: convention, likelihood, nugget, noise_floor, optimizer, lr,
    history_size, stop, init_range, mean, device, dtype, seed, memory_fraction, user_path, profile_mean,
    cpu_allocator; see help(FitSettings)):
        restarts: number of random starts R (each with its own L-BFGS history / Adam state and stopping test).

    Example:
        >>> import torch
        >>> x = torch.rand(50, 2, dtype=torch.float64)
        >>> result = DirectTrainer(restarts=2, seed=0, device="cpu").fit((x, x.sum(-1)))
        >>> len(result.info["restart_ll"])
        2
    """

    restarts: int = 8  # random starts, optimised together; the best by likelihood is kept

    def __post_init__(self):
        super().__post_init__()
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")

    def fit(self, data, prop: str | None = None) -> TrainResult:
        """Train on an AtomDataset (property `prop`), an (x, y[, cyclic]) tuple, or a user's gpytorch ExactGP / mll
        (trained in place; see training.user_fit). Anything else is a TypeError listing the accepted forms."""
        if is_user_model(data):
            return fit_user_model(self, data, "DL")
        check_fit_arguments(data, prop)
        result = self.fit_many([(data, prop)])[0]
        if result.status != "ok":
            raise FloatingPointError(result.failure)
        return result

    @with_cpu_allocator
    def fit_many(self, tasks: list) -> list[TrainResult]:
        """Train several models sharing N and D, e.g. the properties of one atom, as one batched tensor program.

        tasks: [(AtomDataset, property) or ((x, y[, cyclic]), None), ...]. Each task draws the same random starts
        as it would alone, so batched and one-by-one fits agree; a task that fails is reported, the others finish.
        """
        x, y, cyclic, names = prepare_tasks(self, tasks)
        device = resolve_device(self.device)
        B, n, _ = x.shape
        R = self.restarts
        times: dict[str, float] = {}
        history: list = []
        with timed(times, "optimisation", device):
            u0, lo, hi = [], [], []
            for b in range(B):
                gen = generator(self.seed)
                spread = feature_spread(x[b], cyclic, generator=gen)
                bounds = parameter_bounds(self, spread)
                u0.append(initial_parameters(self, spread, R, gen))
                lo.append(bounds[0].expand(R, -1))
                hi.append(bounds[1].expand(R, -1))
            lik = make_likelihood(self, x, y, cyclic)
            group = torch.arange(B, device=device).repeat_interleave(R)
            res = optimise(self, lik, torch.cat(u0), self.stop, torch.cat(lo), torch.cat(hi), member_group=group,
                           history=history, stage="DL")
            f = res.f.reshape(B, R)
            best = f.argmin(1)
            u_best = res.x.reshape(B, R, -1)[torch.arange(B, device=device), best]
        with timed(times, "evaluation", device):
            states = final_states(self, lik, u_best)
        evals = res.n_evals.reshape(B, R)
        infos = [DirectInfo(restart_ll=(-f[b] * n).tolist(), restart_iters=res.n_iter.reshape(B, R)[b].tolist(),
                            restart_evals=evals[b].tolist(), restart_reason=res.reason[b * R:(b + 1) * R],
                            best_restart=int(best[b])) for b in range(B)]
        return build_results(self, "DL", states, x, y, cyclic, names, -f.min(1).values * n, times,
                             evals.sum(1).tolist(), history, infos)
