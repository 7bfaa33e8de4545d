"""TransferTrainer: seeding-relaxation transfer learning of hyperparameters (Isamura & Popelier, PCCP 2024).

seeding: K random subsets of m points, each source fitted by DL (sources x restarts batched);
selection: best source by MAE on the training points outside its subset (or by likelihood per point);
transfer: its lengthscales (and learned nugget) seed the target; relaxation: L-BFGS/Adam on the full set.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace
from typing import Callable

import torch

from tlgp_torch.data.subsets import complement, random_subsets
from tlgp_torch.models.posterior import fflux_predict, fflux_weights
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.runtime.device import resolve_device, timed
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.final import FinalState, final_states
from tlgp_torch.training.iterative import IterativeSettings, choose_relax_path, relax_iterative
from tlgp_torch.training.multistart import make_likelihood, optimise
from tlgp_torch.training.prepare import generator, prepare_tasks
from tlgp_torch.training.relaxation import relax_candidates
from tlgp_torch.training.result import TrainResult, TransferInfo, build_results
from tlgp_torch.training.settings import FitSettings, with_cpu_allocator
from tlgp_torch.training.starts import feature_spread, initial_parameters, parameter_bounds
from tlgp_torch.training.user_fit import check_fit_arguments, fit_user_model
from tlgp_torch.training.user_model import is_user_model

log = logging.getLogger(__name__)
SELECTIONS = ("holdout_mae", "likelihood")
TRANSFERABLE = ("lengthscale", "noise")


@dataclass
class TransferTrainer(FitSettings):
    """Seeding-relaxation transfer learning (TL) of the hyperparameters.

    seeding: n_sources random subsets of source_size points, each fitted by DL from source_restarts random starts
    (all batched, stopped by source_stop); selection: the best source by `selection`; transfer: its lengthscales
    (and what `transfer` / `transfer_parameters` add) seed the target; relaxation: L-BFGS or Adam on the full set.

    Usage: TransferTrainer(**fields).fit(data) with data an AtomDataset (+ property name), an (x, y[, cyclic])
    tuple, or a user's gpytorch ExactGP / ExactMarginalLogLikelihood (trained in place; see training.user_fit).

    Fields (besides those of FitSettings: convention, likelihood, nugget, noise_floor, optimizer, lr,
    history_size, stop, init_range, mean, device, dtype, seed, memory_fraction, user_path, profile_mean,
    cpu_allocator; see help(FitSettings)):
        n_sources: number of source models (random subsets).
        source_size: points per source: an int, or a float in (0, 1] for a fraction of N.
        source_restarts: random starts per source (the best start represents the source).
        selection: "holdout_mae" (MAE of the source's predictions on the training points outside its subset) or
            "likelihood" (the source's log-likelihood per point).
        transfer: what the seed copies from the selected source on the FFLUX path: "lengthscale" (always) and
            "noise" (the learned nugget, gpytorch convention); outputscale and mean are profiled out.
        source_stop: the sources' StoppingRule (loose: only the basin matters).
        relax_optimizer: optimiser of the relaxation ("lbfgs" or "adam"; None: `optimizer`).
        min_source_size: smallest allowed subset (a ValueError asks for a larger source_size or DirectTrainer).
        transfer_curvature: seed the relaxation's L-BFGS history with the selected source's curvature pairs.
        revive_floor: floor on 2 theta_d s_d^2 of the seed, so a feature a small source switched off can come back
            (None: copy the source's theta as is). On the generic path (user models), lengthscales with
            2 theta_d s_d^2 below revive_floor^2 (switched off) restart at the geometric median l / s of the
            others, unless the source's outputscale makes the feature a flat-limit trend (sigma^2 (s_d / l_d)^2
            >= 1e-3 var(y); see training.generic.revive_switched_off).
        relax_path: "exact" (Cholesky), "iterative" (gpytorch CG + Lanczos, large N), "auto" (by memory).
        iterative: the IterativeSettings of the iterative relaxation.
        transfer_parameters: for user models on the generic path, which of the model's parameters the seed
            copies from the source: name fragments matched against the parameter names (default
            ("lengthscale",); e.g. ("lengthscale", "outputscale", "noise", "mean_module")) or a predicate
            name -> bool; the others start from data-based values (constant mean = mean(y), outputscale = var(y),
            noise = 1e-2 var(y), then outputscale and noise moved to their best common factor and ratio for the
            seed's lengthscales in closed form, training.generic.fit_amplitude); a second seed that also takes the
            source's outputscales and noise is relaxed too when the first relaxation ends below the selected
            source's ll per point, and the better kept.
        relax_seeds: how many distinct candidate seeds (screened by one full-set likelihood each: the transferred
            seed, the seed shifted by each of seed_shifts in every log theta, the other sources' optima) are relaxed
            side by side; after halving_iters L-BFGS iterations only the best goes on (successive halving).
        seed_shifts: shifts of every log theta of the transferred seed added as candidates, one Cholesky each: the
            likelihood along the common scale of all lengthscales can have two maxima, and the sources may all sit
            near the worse one. +1 (lengthscales / 1.65): a source fitted on m < N points can prefer longer
            lengthscales than the full set supports (WATER O1 q00); -4 (lengthscales x 7.4): the full set's
            better basin can lie that far towards longer lengthscales from every source (ETHANOL H4 energy).
        halving_iters: side-by-side iterations before the weaker seeds are dropped.
        fallback_ratio: when the selected (best) source's holdout MAE is at least this fraction of the holdout MAE
            of predicting its subset's mean, the sources learned nothing to transfer (e.g. 400 points in 32
            dimensions: m = 120 points per source show no structure); the target is then also fitted by DL from
            fallback_restarts random starts (the starts DirectTrainer draws with the same seed) and the better of
            the relaxation and the DL fit is kept (`info["fallback"]` says so). None: not by this test
            (fallback_below_n still applies). Only with selection="holdout_mae".
        fallback_below_n: a task with fewer training points than this is fitted by that DL fallback as well,
            whatever its sources scored: sources of 0.3 N < 30 points seed reliably only sometimes (WATER, N=59:
            O1 q44s and q33s ended 2.3 % and 0.5 % below DL), and both fits take well under a second there.
            0: off.
        fallback_restarts: random starts of that fallback.
        scale_probe: on the generic path (user models), after the relaxation, every lengthscale is multiplied by
            scale_probe^k (k = 1, 2, ..., or -1, -2, ...) with the amplitude refitted (one evaluation each, see
            training.generic.probe_common_scale); where that beats the relaxed mll, the model is relaxed again
            from the best probe and the better kept (`info["scale_probe"]`): a relaxation can stop on a ridge along
            the common lengthscale scale (synthetic D=64 Matern-2.5: 0.68 % below DL's mll before). None: off.

    Example:
        >>> import torch
        >>> x = torch.rand(80, 3, dtype=torch.float64)
        >>> result = TransferTrainer(seed=0, device="cpu").fit((x, torch.sin(3 * x).sum(-1)))
        >>> result.method, result.source_size
        ('TL', 24)
    """

    n_sources: int = 2                  # K: random subsets, one source model each
    source_size: float | int = 0.3      # points per source: a fraction of N (float) or a count (int)
    source_restarts: int = 1            # random starts per source (distinct seeds come from the other sources)
    selection: str = "holdout_mae"     # best source: "holdout_mae" (points outside its subset) or "likelihood"
    transfer: tuple[str, ...] = ("lengthscale", "noise")  # what seeds the target ("noise": a learned nugget)
    source_stop: StoppingRule = field(default_factory=lambda: StoppingRule(rtol=1e-4, max_iter=60))  # loose: basin only
    relax_optimizer: str | None = None               # default: `optimizer`
    min_source_size: int = 16           # a smaller subset is an error (use DirectTrainer)
    transfer_curvature: bool = True                  # seed the relaxation's L-BFGS history with the source's pairs
    revive_floor: float | None = 1e-3                # floor on 2 theta_d s_d^2 of the seed (None: copy as is)
    relax_path: str = "auto"                         # "exact" (Cholesky), "iterative" (gpytorch CG), "auto": by memory
    iterative: IterativeSettings = field(default_factory=IterativeSettings)
    transfer_parameters: tuple[str, ...] | Callable[[str], bool] = ("lengthscale",)  # user models, generic path
    relax_seeds: int = 2                             # best distinct seeds (screened on the full set) relaxed together
    seed_shifts: tuple[float, ...] = (1.0, -4.0)     # extra candidates: the seed with every log theta + shift
    halving_iters: int = 1                           # side-by-side iterations before only the best seed goes on
    fallback_ratio: float | None = 0.9               # sources no better than the mean: fit the target by DL instead
    fallback_below_n: int = 100                      # fewer training points: fit by the DL fallback as well
    fallback_restarts: int = 8                       # random starts of that DL fallback
    scale_probe: float | None = 1.2                  # user models: probe all lengthscales x 1.2^k after relaxing

    def __post_init__(self):
        super().__post_init__()
        if self.n_sources < 1 or self.source_restarts < 1:
            raise ValueError(f"n_sources and source_restarts must be >= 1, got {self.n_sources}, "
                             f"{self.source_restarts}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.fallback_restarts < 1 or (self.fallback_ratio is not None and self.fallback_ratio <= 0):
            raise ValueError(f"fallback_restarts must be >= 1 and fallback_ratio > 0 (or None), got "
                             f"{self.fallback_restarts}, {self.fallback_ratio}")
        if self.scale_probe is not None and not self.scale_probe > 1:
            raise ValueError(f"scale_probe must be > 1 (or None), got {self.scale_probe}")
        if self.fallback_below_n < 0:
            raise ValueError(f"fallback_below_n must be >= 0, got {self.fallback_below_n}")
        if self.relax_seeds < 1 or self.halving_iters < 1:
            raise ValueError(f"relax_seeds and halving_iters must be >= 1, got {self.relax_seeds}, "
                             f"{self.halving_iters}")
        bad = [t for t in self.transfer if t not in TRANSFERABLE]
        if bad or "lengthscale" not in self.transfer:
            raise ValueError(f"transfer must include 'lengthscale' and only {TRANSFERABLE} (outputscale and mean are "
                             f"profiled out of the concentrated likelihood); got {self.transfer}")
        size = self.source_size
        if isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0 \
                or (isinstance(size, float) and size > 1):
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
        """Train on an AtomDataset (property `prop`), an (x, y[, cyclic]) tuple, or a user's gpytorch ExactGP / mll
        (trained in place; see training.user_fit). Anything else is a TypeError listing the accepted forms."""
        if is_user_model(data):
            return fit_user_model(self, data, "TL")
        check_fit_arguments(data, prop)
        result = self.fit_many([(data, prop)])[0]
        if result.status != "ok":
            raise FloatingPointError(result.failure)
        return result

    @with_cpu_allocator
    def fit_many(self, tasks: list) -> list[TrainResult]:
        """Train several models sharing N and D as one batched program: tasks x sources x restarts, then tasks.

        Each task draws the same subsets and starts as it would alone (batched == one by one).
        """
        x, y, cyclic, names = prepare_tasks(self, tasks)
        device = resolve_device(self.device)
        B, n, d = x.shape
        m = self.subset_size(n)
        if self.selection == "holdout_mae" and m >= n:
            raise ValueError("holdout_mae selection needs points outside the sources: use source_size < 1 "
                             "or selection='likelihood'")
        K, r = self.n_sources, self.source_restarts
        times: dict[str, float] = {}
        history: list = []
        gens = [generator(self.seed) for _ in range(B)]
        with timed(times, "seeding", device):
            spreads = [feature_spread(x[b], cyclic, generator=gens[b]) for b in range(B)]
            bounds = [parameter_bounds(self, sp) for sp in spreads]
            subsets = torch.stack([random_subsets(n, m, K, g) for g in gens]).to(device)  # [B, K, m]
            rows = torch.arange(B, device=device)[:, None, None]
            lik_s = make_likelihood(self, x[rows, subsets].reshape(B * K, m, d), y[rows, subsets].reshape(B * K, m),
                                    cyclic)
            group = torch.arange(B * K, device=device).repeat_interleave(r)
            starts = torch.cat([initial_parameters(self, spreads[b], K * r, gens[b]) for b in range(B)])
            lo = torch.cat([lb.expand(K * r, -1) for lb, _ in bounds])
            hi = torch.cat([ub.expand(K * r, -1) for _, ub in bounds])
            sources = optimise(self, lik_s, starts, self.source_stop, lo, hi, member_group=group, history=history,
                           stage="sources")
        with timed(times, "selection", device):
            f = sources.f.reshape(B, K, r)
            best_r = f.argmin(2)                                                     # [B, K]
            members = (torch.arange(B * K, device=device) * r + best_r.reshape(-1))  # best restart of each source
            source_optima = sources.x[members]                                                   # [B*K, P]
            ratio = torch.full((B,), math.nan, dtype=x.dtype, device=device)        # best source MAE / mean's
            if self.selection == "likelihood":
                score = f.min(2).values                                              # -ll / m
            else:
                mae, mae_mean = self._holdout_mae(x, y, cyclic, subsets, lik_s, source_optima)
                score, mae_mean = mae.reshape(B, K), mae_mean.reshape(B, K)
            score = torch.where(torch.isfinite(f.min(2).values), score, torch.full_like(score, math.inf))
            k_best = score.argmin(1)                                                 # [B]
            if self.selection == "holdout_mae":
                ratio = (score / mae_mean).gather(1, k_best[:, None]).squeeze(1)
        with timed(times, "transfer", device):
            chosen = torch.arange(B, device=device) * K + k_best                     # source index in B*K
            seeds = torch.cat([initial_parameters(self, spreads[b], 1, gens[b]) for b in range(B)])
            seeds[:, :d] = source_optima[chosen, :d]
            if self.revive_floor is not None:
                # a small source can switch a weakly relevant feature off (theta -> 0), where the log-theta
                # gradient vanishes and the relaxation cannot switch it back on: lift such features to a floor
                floor = torch.stack([-(2.0 * sp.pow(2)).log() + math.log(self.revive_floor) for sp in spreads])
                seeds[:, :d] = torch.maximum(seeds[:, :d], floor)
            if self.learn_nugget and "noise" in self.transfer:
                seeds[:, -1] = source_optima[chosen, -1]
            curvature = None
            if self.transfer_curvature and sources.curvature is not None:
                # f = -ll / n is per point, so the source's curvature pairs approximate the target's
                curvature = tuple(t[members[chosen]] for t in sources.curvature)
            no_source = ~torch.isfinite(score.min(1).values)
            if bool(no_source.any()):  # every source failed: relax from a fresh random start instead
                seeds[no_source] = torch.cat([initial_parameters(self, spreads[b], 1, generator(self.seed + 1))
                                               for b in torch.nonzero(no_source).flatten().tolist()])
            cands, cand_curv = self._candidates(seeds, source_optima, members, k_best, sources.curvature, bounds,
                                                spreads, no_source)
        path = choose_relax_path(self.relax_path, n, device, self.memory_fraction)
        if path == "iterative":
            return self._relax_iterative(x, y, cyclic, names, seeds, times=times, history=history, sources=sources,
                                         m=m, K=K, r=r, k_best=k_best, score=score, f=f, no_source=no_source,
                                         device=device, bounds=bounds, curvature=curvature)
        with timed(times, "relaxation", device):
            lik = make_likelihood(self, x, y, cyclic)
            rel = relax_candidates(self, lik, cands, torch.stack([lb for lb, _ in bounds]),
                                   torch.stack([ub for _, ub in bounds]), self.stop, keep=self.relax_seeds,
                                   halving_iters=self.halving_iters, curvature=cand_curv, history=history,
                                   optimizer=self.relax_optimizer)
        with timed(times, "evaluation", device):
            states = final_states(self, lik, rel.x)
        source_evals = sources.n_evals.reshape(B, K * r).sum(1)
        infos = [TransferInfo(source_size=m, n_sources=K, source_restarts=r, selected_source=int(k_best[b]),
                              source_scores=score[b].tolist(), source_ll=(-f[b] * m).tolist(),
                              source_iters=sources.n_iter.reshape(B, K * r)[b].tolist(), relax_iters=int(rel.n_iter[b]),
                              relax_reason=rel.reason[b], no_source=bool(no_source[b]), relax_path="exact",
                              seed_ll=rel.screened_ll[b].tolist(), seeds_relaxed=rel.relaxed[b],
                              seed_kept=rel.kept[b], source_mae_ratio=float(ratio[b]))
                 for b in range(B)]
        results = build_results(self, "TL", states, x, y, cyclic, names, -rel.f * n, times, rel.n_evals.tolist(),
                                history, infos, n_source_evals=source_evals.tolist(), source_size=[m] * B)
        return self._fallback(tasks, results, ratio, n, device)

    def _fallback(self, tasks: list, results: list[TrainResult], ratio: torch.Tensor, n: int,
                  device) -> list[TrainResult]:
        """Where the best source predicts its hold-out points no better than fallback_ratio x the subset's mean
        does, or the tasks have fewer than fallback_below_n points, fit the task by DL (fallback_restarts starts,
        batched) too and keep the better of the two fits."""
        small = n < self.fallback_below_n
        reasons = {}
        for b in range(len(results)):
            if self.fallback_ratio is not None and float(ratio[b]) >= self.fallback_ratio:
                reasons[b] = (f"sources no better than the mean (holdout MAE ratio {float(ratio[b]):.3f} >= "
                              f"{self.fallback_ratio:g})")
            elif small:
                reasons[b] = f"N = {n} < fallback_below_n = {self.fallback_below_n}"
        todo = sorted(reasons)
        if not todo:
            return results
        log.info("TL: %d of %d tasks fitted by DL (%d starts) as well: sources no better than the mean (holdout MAE "
                 "ratio >= %s) or N = %d < %d", len(todo), len(results), self.fallback_restarts, self.fallback_ratio,
                 n, self.fallback_below_n)
        settings = {f.name: getattr(self, f.name) for f in fields(FitSettings)}
        times: dict[str, float] = {}
        with timed(times, "fallback", device):
            direct = DirectTrainer(restarts=self.fallback_restarts, **settings).fit_many([tasks[b] for b in todo])
        out = list(results)
        for res in out:
            res.stage_times["fallback"] = times["fallback"]
        for b, dl in zip(todo, direct):
            tl = out[b]
            why = (f"{reasons[b]}: DL from {self.fallback_restarts} starts, ll {dl.ll:.6g}, against the "
                   f"relaxation's {tl.ll:.6g}")
            info = {**tl.info, "fallback": why, "fallback_ll": dl.ll, "relaxation_ll": tl.ll}
            if dl.status == "ok" and (tl.status != "ok" or dl.ll > tl.ll):
                out[b] = replace(dl, method="TL", info={**info, "kept": "fallback", "fallback_info": dl.info},
                                 stage_times=tl.stage_times, n_full_evals=tl.n_full_evals + dl.n_full_evals,
                                 n_source_evals=tl.n_source_evals, source_size=tl.source_size)
            else:
                tl.info = {**info, "kept": "relaxation"}
                tl.n_full_evals += dl.n_full_evals
        return out

    def _candidates(self, seeds, source_optima, members, k_best, source_curvature, bounds, spreads, no_source):
        """Seeds for the relaxation, [B, C, P]: the transferred seed, the same with every log theta + each shift
        (probes of the likelihood along the common lengthscale scale, which can have a second, better maximum),
        and the other sources' best restarts (floored like the seed); with each one's source curvature pairs
        ([B, C, ...]) or None."""
        B, P = seeds.shape
        K = source_optima.shape[0] // B
        d = spreads[0].numel()
        lo = torch.stack([lb for lb, _ in bounds])
        hi = torch.stack([ub for _, ub in bounds])
        cands, origin = [seeds], [k_best]
        for shift in self.seed_shifts:
            shifted = seeds.clone()
            shifted[:, :d] = torch.minimum(torch.maximum(shifted[:, :d] + shift, lo[:, :d]), hi[:, :d])
            cands.append(shifted)
            origin.append(k_best)
        for j in range(1, K):
            k = (k_best + j) % K                                                     # the other sources, in order
            other = seeds.clone()
            other[:, :d] = source_optima[torch.arange(B, device=seeds.device) * K + k, :d]
            if self.revive_floor is not None:
                floor = torch.stack([-(2.0 * sp.pow(2)).log() + math.log(self.revive_floor) for sp in spreads])
                other[:, :d] = torch.maximum(other[:, :d], floor)
            if self.learn_nugget and "noise" in self.transfer:
                other[:, -1] = source_optima[torch.arange(B, device=seeds.device) * K + k, -1]
            cands.append(torch.where(no_source[:, None], seeds, other))
            origin.append(k)
        out = torch.stack(cands, 1)                                                  # [B, C, P]
        if not self.transfer_curvature or source_curvature is None:
            return out, None
        rows = members.reshape(B, K)
        idx = torch.stack([rows[torch.arange(B, device=seeds.device), k] for k in origin], 1)  # [B, C]
        return out, tuple(t[idx] for t in source_curvature)

    def _relax_iterative(self, x, y, cyclic, names, seeds, *, times, history, sources, m, K, r, k_best, score, f,
                         no_source, device, bounds, curvature) -> list[TrainResult]:
        """Relax each task on gpytorch's iterative path (no n x n Cholesky); likelihoods are CG/Lanczos estimates.

        Same objective and bounds as the exact path, nugget fixed at the seed's (raised to the iterative floor);
        the source's curvature pairs seed L-BFGS unless the nugget was learned (pairs in d+1 dimensions)."""
        B, n, d = x.shape
        if self.likelihood != "concentrated":
            log.warning("the iterative relaxation optimises the concentrated likelihood (GLS mean, profiled "
                        "sigma2), not the %s one of these settings", self.likelihood)
        states, outs = [], []
        with timed(times, "relaxation", device):
            for b in range(B):
                nugget = float(seeds[b, -1].exp()) if self.learn_nugget else self.nugget
                pairs = None if curvature is None or self.learn_nugget else tuple(t[b:b + 1] for t in curvature)
                out = relax_iterative(x[b], y[b], cyclic, seeds[b, :d].exp(), nugget, self.iterative,
                                      lower=bounds[b][0][:d], upper=bounds[b][1][:d], curvature=pairs, history=history,
                                      memory_fraction=self.memory_fraction)
                outs.append(out)
                states.append(FinalState(theta=out.theta, nugget=out.nugget, mean=out.mean, sigma2=out.sigma2,
                                         ll_concentrated=out.ll_concentrated_estimate, ll_marginal=math.nan))
        source_evals = sources.n_evals.reshape(B, K * r).sum(1)
        infos = [TransferInfo(source_size=m, n_sources=K, source_restarts=r, selected_source=int(k_best[b]),
                              source_scores=score[b].tolist(), source_ll=(-f[b] * m).tolist(),
                              relax_iters=outs[b].steps, relax_reason=outs[b].reason, no_source=bool(no_source[b]),
                              relax_path="iterative", kernel=outs[b].kernel, preconditioner_ranks=outs[b].ranks,
                              likelihood_note="ll_concentrated is a CG/Lanczos estimate (iterative path)")
                 for b in range(B)]
        ll = torch.tensor([o.ll_concentrated_estimate for o in outs], dtype=x.dtype)
        results = build_results(self, "TL", states, x, y, cyclic, names, ll, times, [o.evals for o in outs],
                                history, infos, n_source_evals=source_evals.tolist(), source_size=[m] * B)
        for res, out in zip(results, outs):
            res.__dict__["weights"] = out.weights  # CG solve: no n x n factorisation later either
        return results

    def _holdout_mae(self, x, y, cyclic, subsets, lik_s, source_optima) -> tuple[torch.Tensor, torch.Tensor]:
        """MAE of each source (tasks x sources, flattened) on its task's training points outside its subset, and
        the MAE there of predicting the subset's mean (the same shape)."""
        B, K, m = subsets.shape
        d = x.shape[-1]
        ev = lik_s(source_optima, member_group=torch.arange(source_optima.shape[0], device=x.device), grad=False)
        theta = source_optima[:, :d].exp()
        out, base = [], []
        for j in range(B * K):
            b, idx = j // K, subsets[j // K, j % K]
            rest = complement(x.shape[1], idx)
            base.append((y[b, rest] - y[b, idx].mean()).abs().mean())
            if bool(ev.failed[j]):
                out.append(y.new_tensor(math.inf))
                continue
            mean = ev.mean_gls[j] if self.mean_rule == "gls" else y[b, idx].mean()
            w = fflux_weights(x[b, idx], y[b, idx], theta[j], mean, float(ev.nugget[j]), cyclic)
            pred = fflux_predict(x[b, rest], x[b, idx], w, theta[j], mean, cyclic)
            out.append((pred - y[b, rest]).abs().mean())
        return torch.stack(out), torch.stack(base)
