"""Scaling of TL training with N and D: wall time, peak memory, validation MAE; exact vs iterative side by side.

Three tables, every measurement in its own fresh process (clean peak-memory numbers: CUDA max allocated, or
the CPU's max RSS):
  eval  - one likelihood+gradient: tlgp_torch's exact path vs plain gpytorch (ExactMarginalLogLikelihood +
          backward, Cholesky) on the same data and hyperparameters, vs N;
  n     - TL of one model vs N (first N rows of a big set, e.g. the 100k GFN2 ethanol set), exact path, and the
          iterative path where --iterative-max allows: likelihood (exact evaluation of both results where it fits)
          and validation MAE side by side;
  d     - TL at fixed N vs D over several molecules.

    tlgp data generate configs/data/ethanol_100k.toml
    python experiments/scaling.py --sizes 1000 2000 4000 8000 --device cpu
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import multiprocessing as mp
import pathlib
import resource
import statistics
import sys
import time

import torch

from tlgp_torch.units import HARTREE_TO_KJMOL

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_BIG = ROOT / "data" / "gfn2" / "ethanol_100k"
SHARED = ROOT.parent / "shared" / "data" / "fflux"


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load(path: str, n: int | None, prop: str):
    from tlgp_torch.io.ichor_csv import read_ichor_csv
    data = read_ichor_csv(path, [prop])
    if n is not None:
        if n > data.n_points:
            raise ValueError(f"{path} has {data.n_points} points, asked for {n}")
        data = dataclasses.replace(data, x=data.x[:n].contiguous(), y=data.y[:n].contiguous())
    return data


def job_eval(spec: dict) -> dict:
    """One likelihood+gradient, ours vs gpytorch, at a TL-like theta; median of `repeats`."""
    import gpytorch

    from tlgp_torch.likelihoods.exact import FFLUXLikelihood
    from tlgp_torch.models.anisotropic_gp import AnisotropicGP
    device = torch.device(spec["device"])
    data = _load(spec["train"], spec["n"], spec["prop"])
    x, y = data.x.to(device), data.property(spec["prop"]).to(device)
    spread = x.std(0)
    theta = 0.5 / (spread * 2.0) ** 2  # lengthscales twice the feature spread: a typical optimum's scale
    out = {"n": spec["n"], "d": x.shape[1], "impl": spec["impl"]}
    try:
        if spec["impl"] == "tlgp":
            lik = FFLUXLikelihood(x, y, cyclic=data.cyclic.to(device), nugget=1e-10, max_jitter=1e-6)
            u = theta.log().reshape(1, -1)

            def run():
                ev = lik(u)
                return float(ev.ll[0])
        else:
            model = AnisotropicGP.from_fflux(x, y, theta, float(y.mean()), 1e-10, cyclic=data.cyclic.to(device))
            model.train()
            mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)

            def run():
                with gpytorch.settings.max_cholesky_size(10**7), gpytorch.settings.cholesky_max_tries(6):
                    model.zero_grad()
                    loss = -mll(model(x), model.train_targets)
                    loss.backward()
                return float(-loss.detach()) * x.shape[0]
        times = []
        for _ in range(spec["repeats"]):
            _sync(device)
            t0 = time.perf_counter()
            value = run()
            _sync(device)
            times.append(time.perf_counter() - t0)
        out.update(seconds=statistics.median(times), value=value, peak_gb=_peak_bytes(device) / 1e9)
    except (RuntimeError, MemoryError) as err:  # out of memory, or not positive definite
        out.update(seconds=math.nan, error=str(err).splitlines()[0][:120], peak_gb=_peak_bytes(device) / 1e9)
    return out


def job_train(spec: dict) -> dict:
    """TL of one model on the first n points (exact or iterative relaxation); validation MAE; exact ll if it fits."""
    # the trainers' progress lines (a spawned worker does not inherit the parent's logging set-up)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from tlgp_torch.likelihoods.exact import FFLUXLikelihood
    from tlgp_torch.training.iterative import IterativeSettings
    from tlgp_torch.training.transfer import TransferTrainer
    device = torch.device(spec["device"])
    data = _load(spec["train"], spec["n"], spec["prop"])
    val = _load(spec["val"], None, spec["prop"])
    it = IterativeSettings(max_iter=spec["iter_max_iter"], preconditioner_rank=spec["iter_rank"],
                           trace_samples=spec["iter_probes"], kernel=spec["iter_kernel"])
    trainer = TransferTrainer(seed=0, device=spec["device"], relax_path=spec["path"], nugget=spec["nugget"],
                              source_size=min(0.3, 600 / spec["n"]) if spec["n"] > 2000 else 0.3, iterative=it)
    out = {"n": spec["n"], "d": data.n_features, "path": spec["path"], "system": spec["label"]}
    _sync(device)
    t0 = time.perf_counter()
    try:
        res = trainer.fit(data, spec["prop"])
    except (RuntimeError, MemoryError, FloatingPointError) as err:
        out.update(seconds=math.nan, error=str(err).splitlines()[0][:120], peak_gb=_peak_bytes(device) / 1e9)
        return out
    _sync(device)
    out["seconds"] = time.perf_counter() - t0
    out["peak_gb"] = _peak_bytes(device) / 1e9
    pred = res.predict(val.x.to(device)).cpu()
    scale = HARTREE_TO_KJMOL if spec["prop"] in ("energy", "iqa") else 1.0
    out["val_mae"] = float((pred - val.property(spec["prop"])).abs().mean()) * scale
    out["unit"] = "kJ/mol" if scale != 1.0 else "e"
    out["ll_reported"] = res.ll_concentrated
    out["nugget"] = res.nugget  # the iterative path raises the nugget to its floor: ll_exact is at this nugget
    if spec["exact_ll"]:
        lik = FFLUXLikelihood(data.x.to(device), data.property(spec["prop"]).to(device), cyclic=data.cyclic.to(device),
                              nugget=res.nugget, max_jitter=1e-6)
        out["ll_exact"] = float(lik(res.theta.log().reshape(1, -1).to(device), grad=False).ll[0])
    out["relax_steps"] = res.info.get("relax_iters")
    out["full_evals"] = res.n_full_evals
    out["relax_s"] = res.stage_times.get("relaxation")
    return out


def _iter_spec(args) -> dict:
    """The job_train keys of the relaxation settings."""
    return {"nugget": args.nugget, "iter_max_iter": args.iter_max_iter, "iter_rank": args.iter_rank,
            "iter_probes": args.iter_probes, "iter_kernel": args.iter_kernel}


def _run(fn, spec: dict) -> dict:
    """Run fn(spec) in a fresh process (clean peak memory); errors come back as rows."""
    pool = mp.get_context("spawn").Pool(1)
    try:
        return pool.apply(fn, (spec,))
    except Exception as err:  # noqa: BLE001 - report, do not stop the sweep
        return {**{k: spec.get(k) for k in ("n", "impl", "path")}, "seconds": math.nan, "error": repr(err)[:160]}
    finally:
        # let the worker exit by itself: a terminated one (the Pool context's exit) can leave pykeops's cache
        # pickles empty, and every later `import gpytorch` then fails with EOFError
        pool.close()
        pool.join()


def _save(path: pathlib.Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def _table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.4g}"
        return "-" if v is None else str(v)
    lines = [cols] + [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", nargs="+", default=["eval", "n", "d"], choices=["eval", "n", "d"])
    p.add_argument("--data", type=pathlib.Path, default=DEFAULT_BIG, help="folder of the big set (ICHOR CSVs)")
    p.add_argument("--system", default="ETHANOL")
    p.add_argument("--atom", default="C1")
    p.add_argument("--prop", default="energy")
    p.add_argument("--sizes", nargs="+", type=int, default=[1000, 2000, 4000, 8000])
    p.add_argument("--paths", nargs="+", default=["exact", "iterative"], choices=["exact", "iterative"],
                   help="relaxation paths of the n table")
    p.add_argument("--iterative-max", type=int, default=4000, help="largest N also trained on the iterative path")
    p.add_argument("--nugget", type=float, default=1e-10, help="fixed nugget of both paths (the iterative path "
                   "raises it to its floor, 1e-6: pass --nugget 1e-6 to compare like with like)")
    p.add_argument("--iter-max-iter", type=int, default=60, help="L-BFGS iterations of the iterative relaxation")
    p.add_argument("--iter-rank", type=int, default=None, help="Nystroem landmarks of the preconditioner (doubled on "
                   "a stall; default: IterativeSettings.initial_rank, max(500, N / 20))")
    p.add_argument("--iter-probes", type=int, default=64, help="probe vectors of the log-determinant")
    p.add_argument("--iter-kernel", default="auto", choices=["auto", "dense", "blocked", "keops"],
                   help="how the iterative path holds the kernel (IterativeSettings.kernel)")
    p.add_argument("--exact-ll-max", type=int, default=8000, help="largest N whose results get an exact ll")
    p.add_argument("--gpytorch-max", type=int, default=10**9, help="largest N of the eval table's gpytorch cells")
    p.add_argument("--d-n", type=int, default=1000, help="N of the vs-D table")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each eval timing (median)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments" / "results" / "scaling.json")
    args = p.parse_args(argv)
    train = str(args.data / f"{args.system}_{args.atom}_TRAINING_SET.csv")
    val = str(args.data / f"{args.system}_{args.atom}_VALIDATION_SET.csv")
    dev = args.device
    print(f"device {dev}; data {train}", flush=True)
    doc: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    if "eval" in args.tables:
        rows = []
        for n in args.sizes:
            for impl in ("tlgp", "gpytorch"):
                if impl == "gpytorch" and n > args.gpytorch_max:
                    rows.append({"n": n, "impl": impl, "seconds": math.nan, "error": "skipped (--gpytorch-max)"})
                    continue
                rows.append(_run(job_eval, {"train": train, "n": n, "prop": args.prop, "impl": impl, "device": dev,
                                            "repeats": args.repeats}))
                print(_table(rows[-1:], ["n", "impl", "seconds", "peak_gb", "error"]), flush=True)
        for n in args.sizes:
            a = next(r for r in rows if r["n"] == n and r["impl"] == "tlgp")
            b = next(r for r in rows if r["n"] == n and r["impl"] == "gpytorch")
            ok = a.get("seconds") and not math.isnan(a["seconds"])
            a["gpytorch_over_tlgp"] = b["seconds"] / a["seconds"] if ok else math.nan
        print(f"\none likelihood + gradient (median of {args.repeats}):")
        print(_table(rows, ["n", "d", "impl", "seconds", "peak_gb", "gpytorch_over_tlgp", "error"]))
        doc["eval"] = rows
    if "n" in args.tables:
        rows = []
        for n in args.sizes:
            for path in args.paths:
                if path == "iterative" and n > args.iterative_max:
                    continue
                rows.append(_run(job_train, {"train": train, "val": val, "n": n, "prop": args.prop, "path": path,
                                             "device": dev, **_iter_spec(args), "label": args.system,
                                             "exact_ll": n <= args.exact_ll_max}))
                print(_table(rows[-1:], ["n", "path", "seconds", "peak_gb", "val_mae", "ll_exact", "error"]),
                      flush=True)
                _save(args.out, {**doc, "n": rows})  # an interrupted sweep keeps its finished rows
        for r in rows:  # the iterative result next to the exact one on the same data (same nugget when equal)
            ex = next((e for e in rows if e["n"] == r["n"] and e["path"] == "exact"), None)
            if r["path"] == "iterative" and ex and ex.get("nugget") == r.get("nugget") and "ll_exact" in r \
                    and "ll_exact" in ex:
                r["dll_pct"] = 100 * (r["ll_exact"] / ex["ll_exact"] - 1)
                r["dmae_pct"] = 100 * (r["val_mae"] / ex["val_mae"] - 1)
        print("\nTL of one model vs N (ll_exact: FFLUX concentrated ll of the result at its nugget, exact evaluation;"
              " dll_pct, dmae_pct: iterative vs exact at the same N and nugget):")
        print(_table(rows, ["system", "n", "d", "path", "nugget", "seconds", "relax_s", "peak_gb", "val_mae", "unit",
                            "ll_reported", "ll_exact", "dll_pct", "dmae_pct", "relax_steps", "full_evals", "error"]))
        doc["n"] = rows
    if "d" in args.tables:
        sets = [("WATER", "O1", "iqa", SHARED), ("METHANOL", "C1", "iqa", SHARED), ("ETHANOL", "C1", "energy",
                ROOT / "data" / "gfn2" / "ethanol"), ("FOMEPIZOLE", "C1", "energy", ROOT / "data" / "gfn2" /
                "fomepizole"), ("GLYCINE", "C1", "iqa", SHARED)]
        rows = []
        for system, atom, prop, folder in sets:
            tr, va = folder / f"{system}_{atom}_TRAINING_SET.csv", folder / f"{system}_{atom}_VALIDATION_SET.csv"
            if not (tr.is_file() and va.is_file()):
                print(f"skip {system}: {tr} or its validation set not found", flush=True)
                continue
            from tlgp_torch.io.ichor_csv import read_ichor_csv
            n = min(args.d_n, read_ichor_csv(tr, [prop]).n_points)
            rows.append(_run(job_train, {"train": str(tr), "val": str(va), "n": n, "prop": prop, "path": "exact",
                                         "device": dev, **_iter_spec(args), "label": system,
                                         "exact_ll": False}))
            print(_table(rows[-1:], ["system", "n", "d", "seconds", "val_mae"]), flush=True)
        print("\nTL of one model vs D (exact path):")
        print(_table(rows, ["system", "n", "d", "seconds", "peak_gb", "val_mae", "unit", "error"]))
        doc["d"] = rows
    _save(args.out, doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
