"""User-written gpytorch models (ARD RBF, Matern-2.5, Matern-1.5) trained four ways, side by side in one run.

    python experiments/gpytorch_models.py [--runs 3] [--kernels rbf matern25 matern15]
        [--sets GLYCINE_C1 ethanol synthetic] [--synthetic-d 8 16 32 64] [--n-train 0] [--n-test 0]

Methods: TransferTrainer().fit(model) (TL), DirectTrainer(restarts=8).fit(model) (DL), and the usual gpytorch
recipes on the same model: Adam 200 iterations at lr 0.1 (Adam-200), and torch.optim.LBFGS with a strong-Wolfe
line search (L-BFGS, up to 500 iterations); TL-generic / DL-generic force the generic path. Columns: wall
seconds, the final mll (gpytorch's exact mll per point), test RMSE (standardised y units), medians over runs
(seeds 0..runs-1); then TL's speed-up over DL and Adam-200 and its mll gap to DL, per row. Data: GLYCINE C1
iqa from ../shared/data/fflux (or $TLGP_DATA_DIR), the first *_TRAINING_SET.csv
of data/gfn2/ethanol (GFN2 energies; skipped with a note while it is generating), and a synthetic anisotropic
family (D from --synthetic-d, lengthscales log-spaced over two decades, N=2000 train / 500 test).
--n-train / --n-test > 0 subsample for a reduced run. y is standardised with the training mean and sd (what a
gpytorch user does; --raw-y keeps Hartree, where GaussianLikelihood's default noise floor 1e-4 exceeds var(y)).
Writes results/gpytorch_models/{runs.csv, table.csv}.
"""
from __future__ import annotations

import argparse
import math
import os
import pathlib
import platform
import statistics
import sys
import time
import warnings

import gpytorch
import torch

from tlgp_torch import DirectTrainer, TransferTrainer
from tlgp_torch.io.ichor_csv import read_ichor_csv, read_validation_set
from tlgp_torch.runtime.allocator import tune_cpu_allocator

REPO = pathlib.Path(__file__).resolve().parents[1]
KERNELS = {"rbf": lambda d: gpytorch.kernels.RBFKernel(ard_num_dims=d),
           "matern25": lambda d: gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d),
           "matern15": lambda d: gpytorch.kernels.MaternKernel(nu=1.5, ard_num_dims=d)}


class UserGP(gpytorch.models.ExactGP):
    """What a user writes: ConstantMean, ScaleKernel(ARD kernel), GaussianLikelihood with gpytorch's defaults."""

    def __init__(self, x, y, kernel: str):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(KERNELS[kernel](x.shape[-1]))

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def machine() -> str:
    """CPU model, cores and threads (or the GPU) the numbers were measured on."""
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{gpu}; torch {torch.__version__}, "
            f"gpytorch {gpytorch.__version__}, python {platform.python_version()}")


def data_sets(names: list[str], synthetic_d: list[int]) -> dict[str, tuple]:
    """name -> (x_train, y_train, x_test, y_test), float64."""
    out = {}
    fflux = pathlib.Path(os.environ.get("TLGP_DATA_DIR", REPO.parent / "shared" / "data" / "fflux"))
    for name in names:
        if name == "synthetic":
            for d in synthetic_d:
                g = torch.Generator().manual_seed(d)
                x = torch.rand(2500, d, generator=g, dtype=torch.float64)
                w = 4.0 * torch.logspace(0, -2, d, dtype=torch.float64)  # relevance over two decades
                y = (torch.sin(w * x) / w).sum(-1) + 1e-3 * torch.randn(2500, generator=g, dtype=torch.float64)
                out[f"synthetic D={d}"] = (x[:2000], y[:2000], x[2000:], y[2000:])
        elif name == "ethanol":
            files = sorted((REPO / "data" / "gfn2" / "ethanol").glob("*_TRAINING_SET.csv"))
            if not files:
                print(f"note: no GFN2 ethanol set in {REPO / 'data' / 'gfn2' / 'ethanol'} yet; row skipped",
                      file=sys.stderr)
                continue
            train = read_ichor_csv(files[0])
            prop = train.property_names[0]
            val = read_validation_set(str(files[0]).replace("TRAINING", "VALIDATION"), like=train, properties=[prop])
            out[f"GFN2 {files[0].name.split('_TRAINING')[0]} {prop}"] = (train.x, train.property(prop), val.x,
                                                                          val.property(prop))
        else:
            train = read_ichor_csv(fflux / f"{name}_TRAINING_SET.csv", properties=["iqa"])
            val = read_validation_set(fflux / f"{name}_VALIDATION_SET.csv", like=train, properties=["iqa"])
            out[f"{name} iqa"] = (train.x, train.property("iqa"), val.x, val.property("iqa"))
    return {k: tuple(torch.as_tensor(t, dtype=torch.float64) for t in v) for k, v in out.items()}


def mll_of(model) -> float:
    """gpytorch's exact mll (per point) of the model at its parameters (Cholesky)."""
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    try:
        with torch.no_grad(), gpytorch.settings.max_cholesky_size(20000):
            return float(mll(model(*model.train_inputs), model.train_targets))
    except Exception:  # noqa: BLE001 - a diverged baseline is reported as NaN
        return math.nan


def rmse(model, x, y) -> float:
    """Test RMSE of the posterior mean (y units)."""
    model.eval()
    try:
        with torch.no_grad(), gpytorch.settings.max_cholesky_size(20000), gpytorch.settings.skip_posterior_variances():
            return float((model(x).mean - y).square().mean().sqrt())
    except Exception:  # noqa: BLE001
        return math.nan


def plain_adam(model, steps: int = 200, lr: float = 0.1) -> None:
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with gpytorch.settings.max_cholesky_size(20000):
        for _ in range(steps):
            opt.zero_grad()
            (-mll(model(*model.train_inputs), model.train_targets)).backward()
            opt.step()


def plain_lbfgs(model, max_iter: int = 500) -> None:
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -mll(model(*model.train_inputs), model.train_targets)
        loss.backward()
        return loss
    with gpytorch.settings.max_cholesky_size(20000):
        opt.step(closure)


def run_one(method: str, kernel: str, data: tuple, seed: int, allocator: str = "tuned") -> dict:
    x, y, xt, yt = data
    model = UserGP(x, y, kernel).double()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    try:
        if method in ("TL", "TL-generic"):
            TransferTrainer(seed=seed, device="cpu", cpu_allocator=allocator,
                            user_path="generic" if method == "TL-generic" else "auto").fit(model)
        elif method in ("DL", "DL-generic"):
            DirectTrainer(restarts=8, seed=seed, device="cpu", cpu_allocator=allocator,
                          user_path="generic" if method == "DL-generic" else "auto").fit(model)
        elif method == "Adam-200":
            plain_adam(model)
        else:
            plain_lbfgs(model)
    except Exception as exc:  # noqa: BLE001 - the gpytorch recipes can step into NaN; report, go on
        print(f"note: {method} {kernel} failed: {type(exc).__name__}: {exc}"[:200], file=sys.stderr)
        return {"wall_s": time.perf_counter() - t0, "mll": math.nan, "rmse": math.nan}
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "mll": mll_of(model), "rmse": rmse(model, xt, yt)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    ap.add_argument("--sets", nargs="+", default=["GLYCINE_C1", "ethanol", "synthetic"])
    ap.add_argument("--synthetic-d", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--n-train", type=int, default=0, help="subsample the training sets (0: all)")
    ap.add_argument("--n-test", type=int, default=0, help="subsample the test sets (0: all)")
    ap.add_argument("--methods", nargs="+", default=["TL", "DL", "Adam-200", "L-BFGS"],
                    choices=["TL", "DL", "Adam-200", "L-BFGS", "TL-generic", "DL-generic"],
                    help="TL-generic / DL-generic force the generic path (to measure the fast path's speed-up)")
    ap.add_argument("--raw-y", action="store_true", help="keep y in its own units (Hartree for ethanol and "
                    "GLYCINE: GaussianLikelihood's default noise >= 1e-4 then exceeds var(y) and every mll is flat); "
                    "default: standardise y with the training mean and sd, as gpytorch users do")
    ap.add_argument("--allocator", choices=["tuned", "system"], default="tuned",
                    help="tuned: glibc malloc thresholds raised for every method, the gpytorch recipes too "
                    "(runtime.allocator; the trainers' default); system: malloc left alone for every method")
    ap.add_argument("--out", default=str(REPO / "results" / "gpytorch_models"))
    args = ap.parse_args()
    tuned = args.allocator == "tuned" and tune_cpu_allocator()
    warnings.simplefilter("ignore")
    sets = data_sets(args.sets, args.synthetic_d)
    if args.n_train or args.n_test:
        g = torch.Generator().manual_seed(0)
        for k, (x, y, xt, yt) in list(sets.items()):
            i = torch.randperm(len(x), generator=g)[:args.n_train or len(x)]
            j = torch.randperm(len(xt), generator=g)[:args.n_test or len(xt)]
            sets[k] = (x[i], y[i], xt[j], yt[j])
    if not args.raw_y:
        for k, (x, y, xt, yt) in list(sets.items()):
            mu, sd = y.mean(), y.std()
            sets[k] = (x, (y - mu) / sd, xt, (yt - mu) / sd)
    print(f"machine: {machine()}; CPU allocator: " + ("glibc thresholds raised (all methods)" if tuned else "system"))
    print(f"medians of {args.runs} run(s); mll = gpytorch exact mll per point; RMSE in "
          + ("y units" if args.raw_y else "units of the training sd of y (y standardised; --raw-y: own units)"))
    rows, runs = [], []
    for name, data in sets.items():
        for kernel in args.kernels:
            med = {}
            for method in args.methods:
                res = [run_one(method, kernel, data, seed, args.allocator) for seed in range(args.runs)]
                runs += [{"set": name, "kernel": kernel, "method": method, "seed": s, **r} for s, r in enumerate(res)]
                med[method] = {k: statistics.median(r[k] for r in res) for k in ("wall_s", "mll", "rmse")}
            row = {"set": name, "N": len(data[0]), "D": data[0].shape[1], "kernel": kernel}
            for method in args.methods:
                row.update({f"{method} s": med[method]["wall_s"], f"{method} mll": med[method]["mll"],
                            f"{method} rmse": med[method]["rmse"]})
            if "TL" in med and "DL" in med:
                row["TL speed-up vs DL"] = med["DL"]["wall_s"] / med["TL"]["wall_s"]
                row["TL mll gap to DL %"] = 100 * (med["DL"]["mll"] - med["TL"]["mll"]) / abs(med["DL"]["mll"])
            if "TL" in med and "TL-generic" in med:
                row["fast path speed-up (TL)"] = med["TL-generic"]["wall_s"] / med["TL"]["wall_s"]
            if "TL" in med and "Adam-200" in med:
                row["TL speed-up vs Adam"] = med["Adam-200"]["wall_s"] / med["TL"]["wall_s"]
            rows.append(row)
            print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import pandas as pd
    pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)
    table = pd.DataFrame(rows)
    table.to_csv(out / "table.csv", index=False)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
