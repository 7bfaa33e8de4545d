"""Shared machinery of the trainers: objective adapter, chunked multi-start optimisation, final evaluation."""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from ..device import members_per_chunk, memory_budget, resolve_device
from ..models import CONVENTIONS
from ..objectives import KINDS, FFLUXLikelihood, NumericalWarning
from ..optim import OptimResult, StoppingRule, batched_adam, batched_lbfgs
from .init import feature_spread, log_theta_bounds, random_log_theta

log = logging.getLogger("tlgp_torch")
PROGRESS_EVERY_S = 30.0  # long optimisations log a progress line this often (logger "tlgp_torch", INFO)
OPTIMIZERS = ("lbfgs", "adam")


@dataclass
class FitSettings:
    """Model convention, objective and optimiser settings shared by DirectTrainer and TransferTrainer."""

    convention: str = "fflux"            # "fflux": fixed nugget; "gpytorch": learned noise (nugget = noise / outputscale)
    likelihood: str = "concentrated"     # "concentrated" or "marginal" (fflux only; gpytorch profiles mean and scale)
    nugget: float = 1e-10                # fixed nugget (fflux) or initial/floor scale (gpytorch: noise_floor)
    noise_floor: float = 1e-8            # lower bound of the learned nugget (gpytorch convention)
    optimizer: str = "lbfgs"
    lr: float = 0.05                     # Adam step size in log-theta
    history_size: int = 10
    stop: StoppingRule = field(default_factory=StoppingRule)
    init_range: tuple[float, float] = (1e-3, 1.0)  # 2 theta_d s_d^2 log-uniform in this range x min(1, 3/D)
    mean: str = "auto"                   # prediction mean: "auto" (GLS if concentrated else training mean), "gls", "train"
    device: str = "auto"
    dtype: torch.dtype = torch.float64
    seed: int = 0
    memory_fraction: float = 0.5         # of free RAM / GPU memory one batched evaluation may use

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


def make_likelihood(s: FitSettings, x: torch.Tensor, y: torch.Tensor, cyclic: torch.Tensor | None) -> FFLUXLikelihood:
    """FFLUX likelihood object for data x [N, D] or [G, N, D] under settings s."""
    return FFLUXLikelihood(x, y, cyclic=cyclic, kind=s.likelihood, nugget=s.nugget if not s.learn_nugget else s.noise_floor,
                           learn_nugget=s.learn_nugget)


def parameter_bounds(s: FitSettings, spread: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box for the optimised parameters (log theta, and log nugget when learned)."""
    lo, hi = log_theta_bounds(spread)
    if s.learn_nugget:
        lo = torch.cat([lo, lo.new_tensor([math.log(s.noise_floor)])])
        hi = torch.cat([hi, hi.new_tensor([math.log(1.0)])])
    return lo, hi


def initial_parameters(s: FitSettings, spread: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """count random starts: log theta from the feature spreads (+ log nugget, log-uniform in [10 floor, 1e-2])."""
    u = random_log_theta(spread, count, gen, s.init_range)
    if s.learn_nugget:
        lo, hi = math.log(10 * s.noise_floor), math.log(1e-2)
        ln = lo + (hi - lo) * torch.rand(count, 1, generator=gen, dtype=u.dtype).to(u.device)
        u = torch.cat([u, ln], 1)
    return u


def optimise(s: FitSettings, lik: FFLUXLikelihood, u0: torch.Tensor, stop: StoppingRule,
             lower: torch.Tensor, upper: torch.Tensor, member_group: torch.Tensor | None = None,
             history: list | None = None, stage: str = "", optimizer: str | None = None,
             memory: tuple | None = None) -> OptimResult:
    """Maximise the likelihood from every row of u0, members batched in memory-sized chunks."""
    n = lik.n
    opt = optimizer or s.optimizer
    u0 = feasible_starts(lik, u0, upper, member_group)
    chunk = members_per_chunk(n, memory_budget(u0.device, s.memory_fraction))
    if chunk < u0.shape[0]:
        log.info("%s: %d members in chunks of %d (memory budget)", stage, u0.shape[0], chunk)
    parts = []
    t0 = time.perf_counter()
    last = [t0]
    for start in range(0, u0.shape[0], chunk):
        sel = torch.arange(start, min(start + chunk, u0.shape[0]), device=u0.device)
        groups = None if member_group is None else member_group[sel]

        def fun(p, members, groups=groups):
            ev = lik(p, members, member_group=groups)
            return -ev.ll / n, -ev.grad / n

        def record(it, f, active, start=start):
            now = time.perf_counter()
            if now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                log.info("%s: iteration %d, %d of %d member(s) still optimising, best ll %.2f, %.0f s", stage or "fit",
                         it, int(active.sum()), active.numel(), float(-(f.min()) * n), now - t0)
            if history is not None:
                history.append({"stage": stage, "iter": it, "best_ll": float(-(f.min()) * n),
                                "active": int(active.sum()) , "chunk_start": start, "t": time.perf_counter() - t0})

        per_member = lambda b: b[sel] if b.dim() == 2 and b.shape[0] == u0.shape[0] else b  # noqa: E731
        kw = dict(stop=stop, lower=per_member(lower), upper=per_member(upper), f_scale=n, callback=record)
        if opt == "lbfgs":
            mem = None if memory is None else tuple(t[sel] for t in memory)
            parts.append(batched_lbfgs(fun, u0[sel], history_size=s.history_size, memory=mem, **kw))
        else:
            parts.append(batched_adam(fun, u0[sel], lr=s.lr, **kw))
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    memory = None
    if all(p.memory is not None for p in parts):
        memory = tuple(torch.cat([p.memory[i] for p in parts]) for i in range(3))
    return OptimResult(x=cat("x"), f=cat("f"), grad=cat("grad"), n_iter=cat("n_iter"), n_evals=cat("n_evals"),
                       converged=cat("converged"), reason=sum((p.reason for p in parts), []), memory=memory)


def feasible_starts(lik: FFLUXLikelihood, u0: torch.Tensor, upper: torch.Tensor,
                    member_group: torch.Tensor | None = None, tries: int = 6) -> torch.Tensor:
    """Repair starts whose kernel matrix cannot be factorised (the wrapped-phi kernel is not positive definite
    for long lengthscales): raise all their thetas x10 (towards K = I) until it factorises, at most `tries` times."""
    u = u0.clone()
    d = lik.d
    upper = upper.expand_as(u)
    todo = torch.arange(u.shape[0], device=u.device)
    for _ in range(tries):
        ev = lik(u[todo], todo, grad=False, member_group=member_group)
        todo = todo[ev.failed]
        if not todo.numel():
            break
        log.info("%d start(s) not positive definite: shortening their lengthscales", todo.numel())
        u[todo, :d] = torch.minimum(u[todo, :d] + math.log(10.0), upper[todo, :d])
    return u


def final_states(s: FitSettings, lik: FFLUXLikelihood, u: torch.Tensor) -> list[dict]:
    """Per task (group b of lik, parameters u[b]): both FFLUX likelihoods, prediction mean, nugget, sigma2.

    A task whose kernel matrix cannot be factorised even with jitter gets {"failed": reason}; others go on.
    """
    b = u.shape[0]
    finite = torch.isfinite(u).all(-1)
    ev = lik(torch.nan_to_num(u), torch.arange(b, device=u.device), grad=False,
             member_group=torch.arange(b, device=u.device))
    out = []
    for k in range(b):
        if not bool(finite[k]) or bool(ev.failed[k]):
            out.append({"failed": f"kernel matrix not positive definite even with jitter up to {lik.max_jitter:.1e} "
                                  "(duplicate training points, or a periodic feature spanning the whole circle)"})
            continue
        nugget = float(ev.nugget[k])
        if bool(ev.jittered[k]):
            start = float(u[k, -1].exp()) if lik.learn_nugget else lik.nugget
            warnings.warn(f"kernel matrix needed jitter: nugget raised from {start:.3g} to {nugget:.3g} "
                          "(near-duplicate training points, or a periodic feature spanning the whole circle: the "
                          "wrapped-difference kernel is not positive definite at long lengthscales)",
                          NumericalWarning, stacklevel=3)
        out.append({"theta": u[k, : lik.d].exp(), "nugget": nugget,
                    "mean": float(ev.mean_gls[k]) if s.mean_rule == "gls" else float(lik.y[k].mean()),
                    "sigma2": float(ev.sigma2[k]) if s.likelihood == "concentrated" else 1.0,
                    "ll_concentrated": float(ev.ll_concentrated[k]), "ll_marginal": float(ev.ll_marginal[k])})
    return out


def prepare_tasks(s: FitSettings, tasks: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list]:
    """Stack tasks [(data, prop), ...] sharing N and D into x [B, N, D], y [B, N] (one batched model)."""
    if not tasks:
        raise ValueError("no tasks to fit")
    prepared = [prepare(s, data, prop) for data, prop in tasks]
    shapes = {tuple(p[0].shape) for p in prepared}
    if len(shapes) > 1:
        raise ValueError(f"tasks batched together need the same number of points and features; got {sorted(shapes)}")
    cyc = [p[2] for p in prepared]
    if any((c is None) != (cyc[0] is None) or (c is not None and not torch.equal(c, cyc[0])) for c in cyc):
        raise ValueError("tasks batched together need the same periodic-feature mask")
    x = torch.stack([p[0] for p in prepared])
    y = torch.stack([p[1] for p in prepared])
    return x, y, cyc[0], [p[3] for p in prepared]


def prepare(s: FitSettings, data, prop: str | None):
    """(x, y, cyclic, name) on the chosen device from an AtomDataset (+ property) or an (x, y[, cyclic]) tuple."""
    device = resolve_device(s.device)
    if isinstance(data, tuple):
        x, y = data[0], data[1]
        cyclic = data[2] if len(data) > 2 else None
        name = prop
    else:
        names = data.property_names
        if prop is None:
            if len(names) != 1:
                raise ValueError(f"dataset has properties {names}: name the one to train")
            prop = names[0]
        x, y, cyclic, name = data.x, data.property(prop), data.cyclic, prop
    x = torch.as_tensor(x).to(device=device, dtype=s.dtype)
    y = torch.as_tensor(y).to(device=device, dtype=s.dtype).reshape(-1)
    if x.dim() != 2 or y.numel() != x.shape[0]:
        raise ValueError(f"x must be [N, D] with one target per row; got x {tuple(x.shape)}, y {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 training points, got {x.shape[0]}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("training data contain NaN or inf")
    if cyclic is not None:
        cyclic = torch.as_tensor(cyclic, dtype=torch.bool, device=device)
    _warn_duplicates(x, getattr(data, "source", None))
    return x, y, cyclic, name


def _warn_duplicates(x: torch.Tensor, source) -> None:
    """Warn about identical training points: they make R singular at a small nugget (jitter will be added)."""
    uniq, inverse, counts = torch.unique(x, dim=0, return_inverse=True, return_counts=True)
    if uniq.shape[0] == x.shape[0]:
        return
    dup_groups = torch.nonzero(counts > 1).flatten()[:3]
    rows = [torch.nonzero(inverse == g).flatten().tolist()[:4] for g in dup_groups.tolist()]
    where = f" in {source}" if source else ""
    warnings.warn(f"{x.shape[0] - uniq.shape[0]} duplicate training point(s){where} (0-based rows, e.g. {rows}); "
                  "the kernel matrix will need jitter above the nugget: remove them for a clean model",
                  NumericalWarning, stacklevel=4)


def generator(seed: int) -> torch.Generator:
    """CPU generator seeded from the config (random draws are made on the CPU, then moved)."""
    return torch.Generator().manual_seed(int(seed))


__all__ = ["FitSettings", "feasible_starts", "feature_spread", "final_states", "prepare_tasks", "generator", "initial_parameters", "make_likelihood",
           "optimise", "parameter_bounds", "prepare"]
