"""TL robustness: does TransferTrainer (defaults) reach DirectTrainer's (R=8) basin on every model? Side by side.

    python experiments/tl_robustness.py            # the full run (~1 h of a 2-core machine to itself)
    python experiments/tl_robustness.py --quick    # a reduced subset (minutes): say "reduced" when you quote it

Models: every atom's energy and q00 of the GFN2 sets (data/gfn2/<molecule>/, N=2000), every atom and property of
the FFLUX sets (../shared/data/fflux), and a synthetic family generated here (GP draws with ARD lengthscales
log-spread over 1-3 decades, D = 4..64, noise-free and noisy, 3 draws). The models of one atom (or one synthetic
problem) are fitted as one batched program (fit_many) by each method; the batch's wall time is each model's time.
Per model: ll of DL and TL, delta ll % (TL - DL, of |DL|), validation MAE of both, the batch times and speed-up.
Then the summary line, and a second line: how many models took TransferTrainer's DL fallback, and the speed-up
over the models whose DL batch takes >= 10 s (below that both are dominated by fixed per-iteration costs).
Writes results/tl_robustness/{models.csv, summary.json}.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import statistics
import sys
import time

import torch

from tlgp_torch.io.ichor_csv import read_ichor_csv, read_validation_set
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.transfer import TransferTrainer

REPO = pathlib.Path(__file__).resolve().parents[1]
LL_TOL = 0.1       # % of |ll_DL|: "within" DL's ll
ERR_TOL = 5.0      # % of DL's validation MAE
SLOW_DL_S = 10.0   # the summary's second speed-up counts models whose DL batch takes at least this long


def synthetic(d: int, decades: float, noise: float, draw: int, n: int = 400, n_val: int = 200):
    """A GP draw with ARD lengthscales 0.3 * 10^linspace(0, decades) (shuffled) on x ~ U[0, 1]^d, plus noise.

    Returns (x [n, d], y [n]), (x_val, f_val) (the noise-free function at the validation points), seeded by all
    arguments so that every run draws the same problems."""
    gen = torch.Generator().manual_seed(1000 * d + 100 * int(10 * decades) + 10 * draw + int(noise > 0))
    x = torch.rand(n + n_val, d, generator=gen, dtype=torch.float64)
    ls = 0.3 * 10 ** torch.linspace(0, decades, d, dtype=torch.float64)
    ls = ls[torch.randperm(d, generator=gen)]
    sq = ((x[:, None] - x[None]) / ls).pow(2).sum(-1)
    k = torch.exp(-0.5 * sq) + 1e-8 * torch.eye(n + n_val, dtype=torch.float64)
    f = torch.linalg.cholesky(k) @ torch.randn(n + n_val, generator=gen, dtype=torch.float64)
    y = f + noise * torch.randn(n + n_val, generator=gen, dtype=torch.float64)
    return (x[:n], y[:n]), (x[n:], f[n:])


def groups(args) -> list[dict]:
    """Batches to fit: {label, tasks [(data, prop)], val [(x, y) per task] or None}."""
    out = []
    gfn2 = pathlib.Path(args.gfn2_dir)
    for mol in args.molecules:
        folder = gfn2 / mol.lower()
        trains = sorted(folder.glob("*_TRAINING_SET.csv"))
        if not trains:
            print(f"(no GFN2 data in {folder}: skipped)", flush=True)
        for path in trains[: args.max_atoms]:
            out.append(_atom_group(path, ["energy", "q00"]))
    fflux = pathlib.Path(args.fflux_dir)
    for path in sorted(fflux.glob("*_TRAINING_SET.csv")) if fflux.is_dir() else []:
        if args.fflux_sets and path.name.removesuffix("_TRAINING_SET.csv") not in args.fflux_sets:
            continue
        out.append(_atom_group(path, args.fflux_properties))
    for d in args.dims:
        for dec in args.decades:
            for noise in args.noise:
                for draw in range(args.draws):
                    (x, y), val = synthetic(d, dec, noise, draw)
                    out.append({"label": f"SYN_D{d}_dec{dec:g}_noise{noise:g}_draw{draw}", "tasks": [((x, y), "y")],
                                "val": [val]})
    return out


def _atom_group(path: pathlib.Path, props: list[str] | None) -> dict:
    train = read_ichor_csv(path)
    props = [p for p in (props or train.property_names) if p in train.property_names]
    val_path = path.with_name(path.name.replace("_TRAINING_SET", "_VALIDATION_SET"))
    val = read_validation_set(val_path, like=train) if val_path.is_file() else None
    vals = [(val.x, val.property(p)) if val is not None and p in val.property_names else None for p in props]
    return {"label": path.name.removesuffix("_TRAINING_SET.csv"), "tasks": [(train, p) for p in props], "val": vals}


def fit(trainer, tasks) -> tuple[list, float]:
    """fit_many on the batch; (results, wall seconds)."""
    t0 = time.perf_counter()
    res = trainer.fit_many(tasks)
    return res, time.perf_counter() - t0


def mae(result, val) -> float:
    """Validation MAE in the property's own units (NaN without a validation set)."""
    if val is None or result.status != "ok":
        return math.nan
    return float((result.predict(val[0]) - val[1].to(result.y_train)).abs().mean())


def summarise(rows: list[dict], tag: str = "") -> str:
    """The summary lines of a run (rows as written to models.csv): the issue's line (share within LL_TOL % of
    DL's ll and within ERR_TOL % of its validation MAE, worst delta ll, median and minimum speed-up), then how many
    models took TransferTrainer's DL fallback, and the speed-up by regime: models whose DL batch takes >= SLOW_DL_S,
    models that ran the fallback (its cost is a DL fit, so their speed-up is below 1 by construction), the rest.
    tag ends the first line (e.g. " [REDUCED: --quick]")."""
    if not rows:
        return "no models"
    ok = [r for r in rows if r["dll_pct"] >= -LL_TOL]
    err_ok = [r for r in rows if not (r["mae_tl"] > r["mae_dl"] * (1 + ERR_TOL / 100))]
    worst = min(rows, key=lambda r: r["dll_pct"])

    def spread(sel: list[dict]) -> str:
        v = [r["speedup"] for r in sel]
        return f"median {statistics.median(v):.1f}x, minimum {min(v):.1f}x" if v else "none"
    ran = [isinstance(r["fallback"], str) and bool(r["fallback"]) for r in rows]
    fell = [r for r, f in zip(rows, ran) if f]
    rest = [r for r, f in zip(rows, ran) if not f]
    slow = [r for r in rows if r["t_dl"] >= SLOW_DL_S]
    return (f"TL within {LL_TOL} % of DL's ll on {len(ok)}/{len(rows)} models; validation MAE within {ERR_TOL:g} % "
            f"on {len(err_ok)}/{len(rows)}; worst dll {worst['dll_pct']:+.3f} % ({worst['model']}); "
            f"speed-up {spread(rows)}{tag}"
            f"\nDL fallback (sources no better than the mean, or N < fallback_below_n) on {len(fell)}/{len(rows)} "
            f"models, its fit kept on {sum(r['fallback'] == 'fallback' for r in fell)}; speed-up where DL takes >= "
            f"{SLOW_DL_S:g} s: {spread(slow)} over {len(slow)}; on the models that ran the fallback: {spread(fell)} "
            f"over {len(fell)}; on the others: {spread(rest)} over {len(rest)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced subset: WATER O1 and METHANOL C1 (iqa, q00), "
                   "synthetic D=4, 8 x 1, 2 decades, noise-free, one draw; no GFN2 set (N=2000 DL is too slow)")
    p.add_argument("--molecules", nargs="*", default=["ETHANOL", "FOMEPIZOLE"])
    p.add_argument("--max-atoms", type=int, default=None, help="GFN2 atoms per molecule (default: all)")
    p.add_argument("--fflux-sets", nargs="*", default=None, help="e.g. WATER_O1 METHANOL_C1 (default: all)")
    p.add_argument("--fflux-properties", nargs="*", default=None, help="default: every property of the file")
    p.add_argument("--dims", nargs="*", type=int, default=[4, 8, 16, 32, 64])
    p.add_argument("--decades", nargs="*", type=float, default=[1.0, 2.0, 3.0])
    p.add_argument("--noise", nargs="*", type=float, default=[0.0, 0.01])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--restarts", type=int, default=8, help="DL random starts (R)")
    p.add_argument("--gfn2-dir", default=str(REPO / "data" / "gfn2"))
    p.add_argument("--fflux-dir", default=os.environ.get("TLGP_DATA_DIR", str(REPO.parent / "shared/data/fflux")))
    p.add_argument("--out", default=str(REPO / "results" / "tl_robustness"))
    p.add_argument("--summarise", metavar="CSV", help="print the summary of a finished run's models.csv and exit")
    args = p.parse_args(argv)
    if args.summarise:
        import pandas as pd
        print(summarise(pd.read_csv(args.summarise, keep_default_na=False, na_values=[""]).to_dict("records")))
        return 0
    if args.quick:
        args.molecules = []
        args.fflux_sets, args.fflux_properties = ["WATER_O1", "METHANOL_C1"], ["iqa", "q00"]
        args.dims, args.decades, args.noise, args.draws = [4, 8], [1.0, 2.0], [0.0], 1
    rows = []
    t_start = time.perf_counter()
    for g in groups(args):
        dl, t_dl = fit(DirectTrainer(restarts=args.restarts), g["tasks"])
        tl, t_tl = fit(TransferTrainer(), g["tasks"])
        for (_, prop), a, b, val in zip(g["tasks"], dl, tl, g["val"]):
            dll = 100.0 * (b.ll - a.ll) / abs(a.ll) if math.isfinite(a.ll) and a.ll != 0 else math.nan
            row = {"model": f"{g['label']} {prop}", "n": a.n_points, "d": int(a.theta.numel()), "ll_dl": a.ll,
                   "ll_tl": b.ll, "dll_pct": dll, "mae_dl": mae(a, val), "mae_tl": mae(b, val), "t_dl": t_dl,
                   "t_tl": t_tl, "speedup": t_dl / t_tl, "batch": len(g["tasks"]), "fallback": b.info.get("kept", "")}
            rows.append(row)
            print(f"{row['model']:40s} N={row['n']:5d} D={row['d']:3d}  ll DL {a.ll:12.3f} TL {b.ll:12.3f} "
                  f"dll {dll:+8.3f} %  MAE DL {row['mae_dl']:.4g} TL {row['mae_tl']:.4g}  "
                  f"t DL {t_dl:7.1f} s TL {t_tl:6.1f} s  x{row['speedup']:.1f}"
                  + (f"  (DL fallback: {row['fallback']} kept)" if row["fallback"] else ""), flush=True)
    summary = summarise(rows, " [REDUCED: --quick]" if args.quick else "")
    print(f"\n{summary}\n(total {time.perf_counter() - t_start:.0f} s, {torch.get_num_threads()} threads)")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import pandas as pd
    pd.DataFrame(rows).to_csv(out / "models.csv", index=False)
    (out / "summary.json").write_text(json.dumps({"summary": summary, "args": vars(args), "rows": rows}, indent=2,
                                                 default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
