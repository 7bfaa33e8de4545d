"""TransferTrainer: seeding-relaxation transfer learning of hyperparameters (Isamura & Popelier, PCCP 2024).

seeding: K random subsets of m points, each source fitted by DL (sources x restarts batched);
selection: best source by MAE on the training points outside its subset (or by likelihood per point);
transfer: its lengthscales (and learned nugget) seed the target; relaxation: L-BFGS/Adam on the full set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..data.sampling import complement, random_subsets
from ..device import resolve_device, timed
from ..optim import StoppingRule
from ..predict import fflux_predict, fflux_weights
from .fitting import (FitSettings, feature_spread, final_state, generator, initial_parameters, make_likelihood,
                      optimise, parameter_bounds, prepare)
from .result import TrainResult

SELECTIONS = ("holdout_mae", "likelihood")
TRANSFERABLE = ("lengthscale", "noise")


@dataclass
class TransferTrainer(FitSettings):
    """Seeding-relaxation TL. source_size: points per source (int) or a fraction of N (float in (0, 1])."""

    n_sources: int = 2
    source_size: float | int = 0.3
    source_restarts: int = 2
    selection: str = "holdout_mae"
    transfer: tuple[str, ...] = ("lengthscale", "noise")
    source_stop: StoppingRule = field(default_factory=lambda: StoppingRule(rtol=1e-4))  # loose: only the basin matters
    relax_optimizer: str | None = None               # default: `optimizer`
    min_source_size: int = 16
    transfer_curvature: bool = True                  # seed the relaxation's L-BFGS memory with the source's pairs
    revive_floor: float | None = 1e-3                # floor on 2 theta_d s_d^2 of the seed (None: copy as is)

    def __post_init__(self):
        super().__post_init__()
        if self.n_sources < 1 or self.source_restarts < 1:
            raise ValueError(f"n_sources and source_restarts must be >= 1, got {self.n_sources}, {self.source_restarts}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        bad = [t for t in self.transfer if t not in TRANSFERABLE]
        if bad or "lengthscale" not in self.transfer:
            raise ValueError(f"transfer must include 'lengthscale' and only {TRANSFERABLE} (outputscale and mean are "
                             f"profiled out of the concentrated likelihood); got {self.transfer}")
        if isinstance(self.source_size, bool) or not isinstance(self.source_size, (int, float)) or self.source_size <= 0 \
                or (isinstance(self.source_size, float) and self.source_size > 1):
            raise ValueError(f"source_size must be a point count (int) or a fraction in (0, 1] (float), "
                             f"got {self.source_size!r}")

    def subset_size(self, n: int) -> int:
        """Points per source for a training set of n points."""
        m = int(round(self.source_size * n)) if isinstance(self.source_size, float) else self.source_size
        if m > n:
            raise ValueError(f"source_size={self.source_size} asks for {m} points per source but the training set "
                             f"has only {n}")
        if m < self.min_source_size:
            raise ValueError(f"source subsets of {m} points are too small (minimum {self.min_source_size}); "
                             f"the training set has {n} points: raise source_size or use DirectTrainer")
        return m

    def fit(self, data, prop: str | None = None) -> TrainResult:
        """Train on an AtomDataset (property `prop`) or an (x, y[, cyclic]) tuple."""
        x, y, cyclic, name = prepare(self, data, prop)
        device = resolve_device(self.device)
        n = x.shape[0]
        m = self.subset_size(n)
        if self.selection == "holdout_mae" and m >= n:
            raise ValueError("holdout_mae selection needs points outside the sources: use source_size < 1 "
                             "or selection='likelihood'")
        K, r = self.n_sources, self.source_restarts
        times: dict[str, float] = {}
        history: list = []
        gen = generator(self.seed)
        with timed(times, "seeding", device):
            spread = feature_spread(x, cyclic, generator=gen)
            lo, hi = parameter_bounds(self, spread)
            subsets = random_subsets(n, m, K, gen).to(device)
            lik_s = make_likelihood(self, x[subsets], y[subsets], cyclic)
            group = torch.arange(K, device=device).repeat_interleave(r)
            u0 = initial_parameters(self, spread, K * r, gen)
            src = optimise(self, lik_s, u0, self.source_stop, lo, hi, member_group=group,
                           history=history, stage="sources")
        with timed(times, "selection", device):
            f = src.f.reshape(K, r)
            best_r = f.argmin(1)
            members = torch.arange(K, device=device) * r + best_r
            u_src = src.x[members]
            if self.selection == "likelihood":
                score = f.gather(1, best_r[:, None]).squeeze(1)  # -ll / m
            else:
                score = self._holdout_mae(x, y, cyclic, subsets, lik_s, u_src)
            score = torch.where(torch.isfinite(f.min(1).values), score, torch.full_like(score, math.inf))
            if not bool(torch.isfinite(score).any()):
                raise FloatingPointError("no source model could be fitted (kernel matrices not positive definite "
                                         "at every start): check the data for duplicates or use DirectTrainer")
            k_best = int(torch.argmin(score))
        with timed(times, "transfer", device):
            u_seed = initial_parameters(self, spread, 1, gen)
            u_seed[0, : x.shape[1]] = u_src[k_best, : x.shape[1]]
            if self.revive_floor is not None:
                # a small source can switch a weakly relevant feature off (theta -> 0), where the log-theta
                # gradient vanishes and the relaxation cannot switch it back on: lift such features to a floor
                floor = -(2.0 * spread.pow(2)).log() + math.log(self.revive_floor)
                u_seed[0, : x.shape[1]] = torch.maximum(u_seed[0, : x.shape[1]], floor)
            if self.learn_nugget and "noise" in self.transfer:
                u_seed[0, -1] = u_src[k_best, -1]
            memory = None
            if self.transfer_curvature and src.memory is not None:
                # f = -ll / n is per point, so the source's curvature pairs approximate the target's
                chosen = int(members[k_best])
                memory = tuple(t[chosen:chosen + 1] for t in src.memory)
        with timed(times, "relaxation", device):
            lik = make_likelihood(self, x, y, cyclic)
            rel = optimise(self, lik, u_seed, self.stop, lo, hi, history=history, stage="relaxation",
                           optimizer=self.relax_optimizer, memory=memory)
        with timed(times, "evaluation", device):
            st = final_state(self, lik, y, rel.x[0])
        info = {"source_size": m, "n_sources": K, "source_restarts": r, "selected_source": k_best,
                "source_scores": score.tolist(), "source_ll": (-f * m).tolist(), "source_iters": src.n_iter.tolist(),
                "relax_iters": int(rel.n_iter[0]), "relax_reason": rel.reason[0]}
        return TrainResult(method="TL", convention=self.convention, likelihood=self.likelihood, theta=st["theta"],
                           nugget=st["nugget"], mean=st["mean"], sigma2=st["sigma2"], ll=float(-rel.f[0] * n),
                           ll_marginal=st["ll_marginal"], ll_concentrated=st["ll_concentrated"], stage_times=times,
                           n_full_evals=int(rel.n_evals.sum()), n_source_evals=int(src.n_evals.sum()), source_size=m,
                           history=history, info=info, x_train=x, y_train=y, cyclic=cyclic, property_name=name)

    def _holdout_mae(self, x, y, cyclic, subsets, lik_s, u_src) -> torch.Tensor:
        """MAE of each source on the training points outside its subset: [K]."""
        d = x.shape[1]
        ev = lik_s(u_src, member_group=torch.arange(u_src.shape[0], device=x.device), grad=False)
        theta = u_src[:, :d].exp()
        mean = ev.mean_gls if self.mean_rule == "gls" else y[subsets].mean(-1)
        out = []
        for k in range(subsets.shape[0]):
            if bool(ev.failed[k]):
                out.append(y.new_tensor(math.inf))
                continue
            idx = subsets[k]
            w = fflux_weights(x[idx], y[idx], theta[k], mean[k], float(ev.nugget[k]), cyclic)
            rest = complement(x.shape[0], idx)
            pred = fflux_predict(x[rest], x[idx], w, theta[k], mean[k], cyclic)
            out.append((pred - y[rest]).abs().mean())
        return torch.stack(out)
