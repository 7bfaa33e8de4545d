"""Many models at once: one-by-one vs batched DL/TL training of B real-data models (issue 4).

Members are built from GLYCINE C1: each member gets its own random N rows (without replacement) of the
training set and the real iqa targets; validation on the real validation set. For each B, both paths fit
the same members with the same seeds, so likelihoods and validation MAE must agree member by member.

    python experiments/throughput.py --sizes 1 8 26 --n-points 2000 --methods tl dl
    python experiments/throughput.py --sizes 494 --methods tl --paths batched   # a whole molecule's worth
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import time

import torch

from tlgp_torch.data import read_ichor_csv, read_validation_set
from tlgp_torch.device import resolve_device, synchronize
from tlgp_torch.metrics import errors
from tlgp_torch.training import DirectTrainer, TransferTrainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def peak_bytes(device: torch.device) -> int:
    """Peak memory so far: CUDA allocator peak (reset per run), or the process's max RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 26, 64, 128])
    p.add_argument("--n-points", type=int, default=2000)
    p.add_argument("--methods", nargs="+", default=["tl", "dl"], choices=["tl", "dl"])
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=os.environ.get("TLGP_DATA_DIR", str(REPO.parent / "shared/data/fflux")))
    p.add_argument("--paths", nargs="+", default=["one_by_one", "batched"], choices=["one_by_one", "batched"])
    p.add_argument("--out", default=str(REPO / "results" / "throughput"))
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    data = pathlib.Path(args.data_dir)
    train = read_ichor_csv(data / "GLYCINE_C1_TRAINING_SET.csv", ["iqa"])
    val = read_validation_set(data / "GLYCINE_C1_VALIDATION_SET.csv", like=train, properties=["iqa"])
    rows = []
    for method in args.methods:
        trainer = (TransferTrainer(device=args.device) if method == "tl"
                   else DirectTrainer(restarts=args.restarts, device=args.device))
        for B in args.sizes:
            members = []
            for b in range(B):
                g = torch.Generator().manual_seed(1000 + b)
                members.append((train.subset(torch.randperm(train.n_points, generator=g)[: args.n_points]), "iqa"))
            trainer.fit_many(members[:1] if B == 1 else members[:2])  # warm-up, untimed
            timing = {}
            results = {}
            for path in args.paths:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                synchronize(device)
                t0 = time.perf_counter()
                res = ([trainer.fit_many([m])[0] for m in members] if path == "one_by_one"
                       else trainer.fit_many(members))
                synchronize(device)
                timing[path] = (time.perf_counter() - t0, peak_bytes(device))
                results[path] = res
            mae = {k: [errors(r.predict(val.x.to(r.x_train)).cpu(), val.property("iqa"), "iqa")["mae"]
                       if r.status == "ok" else float("nan") for r in v] for k, v in results.items()}
            nan = float("nan")
            row = {"method": method.upper(), "B": B, "N": args.n_points, "device": str(device)}
            for path in ("one_by_one", "batched"):
                row[f"{path}_s"] = timing[path][0] if path in timing else nan
                row[f"peak_mb_{path}"] = timing[path][1] / 2**20 if path in timing else nan
            row["speedup"] = row["one_by_one_s"] / row["batched_s"]
            last = results[args.paths[-1]]
            row["models_per_min"] = 60 * B / timing[args.paths[-1]][0]
            row["median_mae"] = statistics.median(mae[args.paths[-1]])
            row["failed"] = sum(r.status != "ok" for r in last)
            row["max_rel_dll"] = row["max_rel_dmae"] = nan
            row["bit_identical"] = None
            if len(results) == 2:
                pairs = list(zip(results["one_by_one"], results["batched"]))
                row["max_rel_dll"] = max(abs(a.ll_concentrated - b.ll_concentrated) / abs(a.ll_concentrated)
                                         for a, b in pairs)
                row["max_rel_dmae"] = max(abs(a - b) / a for a, b in zip(mae["one_by_one"], mae["batched"]))
                row["bit_identical"] = sum(bool(torch.equal(a.theta, b.theta)) for a, b in pairs)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'method':<6} {'B':>4} {'N':>5} {'1-by-1 s':>9} {'batched s':>9} {'speed-up':>8} {'models/min':>10} "
          f"{'max Δll':>9} {'max ΔMAE':>9} {'identical':>9} {'MAE kJ/mol':>10}")
    for r in rows:
        ident = "-" if r["bit_identical"] is None else f"{r['bit_identical']}/{r['B']}"
        print(f"{r['method']:<6} {r['B']:>4} {r['N']:>5} {r['one_by_one_s']:>9.2f} {r['batched_s']:>9.2f} "
              f"{r['speedup']:>8.2f} {r['models_per_min']:>10.1f} {r['max_rel_dll']:>9.1e} "
              f"{r['max_rel_dmae']:>9.1e} {ident:>9} {r['median_mae']:>10.4f}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps({"device": str(device), "torch": torch.__version__,
                                                     "rows": rows}, indent=2))
    print(f"wrote {out / 'throughput.json'} (CPU peak memory is the process max RSS, monotone over the run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
