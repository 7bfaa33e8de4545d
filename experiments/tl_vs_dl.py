"""TL vs DL on real FFLUX sets (METHANOL C1, NMA C1, GLYCINE C1): same code, same machine, one run, medians.

    python experiments/tl_vs_dl.py [--sets METHANOL_C1 NMA_C1 GLYCINE_C1] [--repeats 3] [--restarts 8]

Prints the table and writes results/tl_vs_dl/{tl_vs_dl.csv, tl_vs_dl.json} (all runs + medians + machine).
Data: $TLGP_DATA_DIR or ../shared/data/fflux relative to the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import pandas as pd
import torch

from tlgp_torch.evaluation.compare import compare_methods, format_table, warm_up
from tlgp_torch.io.ichor_csv import read_ichor_csv, read_validation_set
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.transfer import TransferTrainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["METHANOL_C1", "NMA_C1", "GLYCINE_C1"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--restarts", type=int, default=8, help="DL random starts (R)")
    p.add_argument("--property", default="iqa", help="target column (e.g. energy for the GFN2 sets)")
    p.add_argument("--rtol", type=float, default=StoppingRule().rtol, help="stopping rule for DL and TL alike")
    p.add_argument("--window", type=int, default=StoppingRule().window,
                   help="slow-progress window of the stopping rule (0: off), for DL and TL alike")
    p.add_argument("--device", default="auto")
    p.add_argument("--convention", default="fflux", choices=("fflux", "gpytorch"))
    p.add_argument("--mean", default="auto", choices=("auto", "gls", "train"), help="prediction mean")
    p.add_argument("--allocator", default="tuned", choices=("tuned", "system"),
                   help="FitSettings.cpu_allocator for DL and TL alike (process-wide once tuned: compare modes "
                   "in separate runs)")
    p.add_argument("--data-dir", default=os.environ.get("TLGP_DATA_DIR", str(REPO.parent / "shared/data/fflux")))
    p.add_argument("--out", default=str(REPO / "results" / "tl_vs_dl"))
    args = p.parse_args(argv)
    data = pathlib.Path(args.data_dir)
    if not data.is_dir():
        print(f"data folder {data} not found: pass --data-dir or set TLGP_DATA_DIR", file=sys.stderr)
        return 2
    stop = StoppingRule(rtol=args.rtol, window=args.window)
    common = dict(stop=stop, device=args.device, convention=args.convention, mean=args.mean,
                  cpu_allocator=args.allocator)
    trainers = {"DL": lambda seed: DirectTrainer(restarts=args.restarts, seed=seed, **common),
                "TL": lambda seed: TransferTrainer(seed=seed, **common)}
    summary, runs = [], []
    t0 = time.perf_counter()
    for name in args.sets:
        train = read_ichor_csv(data / f"{name}_TRAINING_SET.csv", [args.property])
        val = read_validation_set(data / f"{name}_VALIDATION_SET.csv", like=train, properties=[args.property])
        warm_up(trainers, train, args.property)
        s, r = compare_methods(trainers, train, val, args.property, repeats=args.repeats, label=name,
                               on_run=lambda row, _res: print(f"  {row['set']} {row['method']} seed {row['seed']}: "
                                                        f"{row['wall_s']:.2f} s, ll {row['ll_concentrated']:.3f}, "
                                                        f"MAE {row['val_mae']:.4f} {row['unit']}", flush=True))
        summary += s
        runs += r
    info = machine()
    print(f"\nTL vs DL (R={args.restarts}, {args.convention} convention, mean {args.mean}), "
          f"medians of {args.repeats}; {info['cpu']}, {info['torch_threads']} threads, torch {info['torch']}; "
          f"total {time.perf_counter() - t0:.0f} s")
    print(format_table(summary))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)
    pd.DataFrame(summary).to_csv(out / "tl_vs_dl.csv", index=False)
    (out / "tl_vs_dl.json").write_text(json.dumps({"machine": info, "args": vars(args), "summary": summary,
                                                  "runs": runs}, indent=2, default=str))
    print(f"wrote {out}/tl_vs_dl.csv, runs.csv, tl_vs_dl.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
