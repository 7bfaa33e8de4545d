"""Many models at once: one-by-one vs batched DL/TL training of B real-data models (issue 4).

Members are built from GLYCINE C1: each member gets its own random N rows (without replacement) of the
training set and the real iqa targets; validation on the real validation set. For each B, both paths fit
the same members with the same seeds, so likelihoods and validation MAE must agree member by member.

    python experiments/throughput.py --sizes 1 8 26 --n-points 2000 --methods tl dl
    python experiments/throughput.py --sizes 494 --methods tl --paths batched   # a whole molecule's worth
    python experiments/throughput.py --sizes 26 --methods tl --repeats 4 --fresh # CPU: alternate, fresh processes
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from tlgp_torch.evaluation.metrics import errors
from tlgp_torch.io.ichor_csv import read_ichor_csv, read_validation_set
from tlgp_torch.runtime.device import resolve_device, synchronize
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.transfer import TransferTrainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def peak_bytes(device: torch.device) -> int:
    """Peak memory so far: CUDA allocator peak (reset per run), or the process's max RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def members_for(train, B: int, n_points: int) -> list:
    """B members: each its own random n_points rows of the training set (seed 1000 + b), iqa targets."""
    members = []
    for b in range(B):
        g = torch.Generator().manual_seed(1000 + b)
        members.append((train.subset(torch.randperm(train.n_points, generator=g)[:n_points]), "iqa"))
    return members


def warm_up(trainer, members: list) -> None:
    """One untimed fit (two members when there are several), so that timed runs do not pay first-call costs."""
    trainer.fit_many(members[:1] if len(members) == 1 else members[:2])


def measure(trainer, members: list, path: str, val, device: torch.device) -> dict:
    """Train the members one by one or batched: wall time, peak memory, and per member theta, ll and validation MAE."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    t0 = time.perf_counter()
    res = [trainer.fit_many([m])[0] for m in members] if path == "one_by_one" else trainer.fit_many(members)
    synchronize(device)
    wall = time.perf_counter() - t0
    mae = [errors(r.predict(val.x.to(r.x_train)).cpu(), val.property("iqa"), "iqa")["mae"] if r.status == "ok"
           else float("nan") for r in res]
    return {"s": wall, "peak": peak_bytes(device), "mae": mae, "ll": [r.ll_concentrated for r in res],
            "theta": [r.theta.cpu().tolist() for r in res], "failed": sum(r.status != "ok" for r in res)}


def fresh_measure(argv: list[str], method: str, B: int, path: str) -> dict:
    """measure() in a new Python process, so that neither path inherits the other's heap, caches or peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "m.json"
        cmd = [sys.executable, __file__, *argv, "--worker", method, str(B), path, str(out)]
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 26, 64, 128])
    p.add_argument("--n-points", type=int, default=2000)
    p.add_argument("--methods", nargs="+", default=["tl", "dl"], choices=["tl", "dl"])
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=os.environ.get("TLGP_DATA_DIR", str(REPO.parent / "shared/data/fflux")))
    p.add_argument("--paths", nargs="+", default=["one_by_one", "batched"], choices=["one_by_one", "batched"])
    p.add_argument("--repeats", type=int, default=1,
                   help="time each path this often, the order of the paths alternating (ABBA...); medians reported")
    p.add_argument("--fresh", action="store_true",
                   help="each timed run in its own process (honest per-path peak memory, no shared heap state)")
    p.add_argument("--out", default=str(REPO / "results" / "throughput"))
    p.add_argument("--worker", nargs=4, metavar=("METHOD", "B", "PATH", "JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    data = pathlib.Path(args.data_dir)
    train = read_ichor_csv(data / "GLYCINE_C1_TRAINING_SET.csv", ["iqa"])
    val = read_validation_set(data / "GLYCINE_C1_VALIDATION_SET.csv", like=train, properties=["iqa"])
    make = {"tl": lambda: TransferTrainer(device=args.device),
            "dl": lambda: DirectTrainer(restarts=args.restarts, device=args.device)}
    if args.worker:
        method, B, path, dest = args.worker
        trainer, members = make[method](), members_for(train, int(B), args.n_points)
        warm_up(trainer, members)
        pathlib.Path(dest).write_text(json.dumps(measure(trainer, members, path, val, device)))
        return 0
    parent_argv = [a for a in argv if a != "--fresh"]
    rows = []
    for method in args.methods:
        trainer = make[method]()
        for B in args.sizes:
            members = members_for(train, B, args.n_points)
            if not args.fresh:
                warm_up(trainer, members)
            runs: dict[str, list[dict]] = {path: [] for path in args.paths}
            for rep in range(args.repeats):
                for path in (args.paths if rep % 2 == 0 else args.paths[::-1]):
                    m = (fresh_measure(parent_argv, method, B, path) if args.fresh
                         else measure(trainer, members, path, val, device))
                    runs[path].append(m)
                    print(f"{method.upper()} B={B} {path} run {rep + 1}: {m['s']:.2f} s", flush=True)
            nan = float("nan")
            row = {"method": method.upper(), "B": B, "N": args.n_points, "device": str(device),
                   "repeats": args.repeats, "fresh": args.fresh}
            for path in ("one_by_one", "batched"):
                times = [m["s"] for m in runs.get(path, [])]
                row[f"{path}_s"] = statistics.median(times) if times else nan
                row[f"{path}_all_s"] = times
                row[f"peak_mb_{path}"] = max(m["peak"] for m in runs[path]) / 2**20 if times else nan
            row["speedup"] = row["one_by_one_s"] / row["batched_s"]
            last = runs[args.paths[-1]][0]
            row["models_per_min"] = 60 * B / row[f"{args.paths[-1]}_s"]
            row["median_mae"] = statistics.median(last["mae"])
            row["failed"] = last["failed"]
            row["max_rel_dll"] = row["max_rel_dmae"] = nan
            row["bit_identical"] = None
            # every repeat of a path must give the same models (deterministic trainers)
            row["repeats_identical"] = all(m["theta"] == v[0]["theta"] for v in runs.values() for m in v)
            if len(runs) == 2:
                a, b = runs["one_by_one"][0], runs["batched"][0]
                row["max_rel_dll"] = max(abs(p - q) / abs(p) for p, q in zip(a["ll"], b["ll"]))
                row["max_rel_dmae"] = max(abs(p - q) / p for p, q in zip(a["mae"], b["mae"]))
                row["bit_identical"] = sum(p == q for p, q in zip(a["theta"], b["theta"]))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'method':<6} {'B':>4} {'N':>5} {'1-by-1 s':>9} {'batched s':>9} {'speed-up':>8} {'models/min':>10} "
          f"{'peak MB 1/b':>13} {'max Δll':>9} {'max ΔMAE':>9} {'identical':>9} {'MAE kJ/mol':>10}")
    for r in rows:
        ident = "-" if r["bit_identical"] is None else f"{r['bit_identical']}/{r['B']}"
        peaks = f"{r['peak_mb_one_by_one']:.0f}/{r['peak_mb_batched']:.0f}"
        print(f"{r['method']:<6} {r['B']:>4} {r['N']:>5} {r['one_by_one_s']:>9.2f} {r['batched_s']:>9.2f} "
              f"{r['speedup']:>8.2f} {r['models_per_min']:>10.1f} {peaks:>13} {r['max_rel_dll']:>9.1e} "
              f"{r['max_rel_dmae']:>9.1e} {ident:>9} {r['median_mae']:>10.4f}")
    if args.repeats > 1:
        print(f"times are medians of {args.repeats} runs per path, the order alternating; all runs in the JSON")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps({"device": str(device), "torch": torch.__version__,
                                                     "rows": rows}, indent=2))
    note = "per run, fresh processes" if args.fresh else "max RSS of this process, monotone over the run"
    print(f"wrote {out / 'throughput.json'} (CPU peak memory: {note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
