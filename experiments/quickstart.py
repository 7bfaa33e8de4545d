"""Quickstart: DL vs TL on one atom's energy model, table + S-curve PNG, in well under a minute on 2 cores.

Uses the real FFLUX METHANOL C1 set when ../shared/data/fflux (or $TLGP_DATA_DIR) is there; otherwise it
makes a small SYNTHETIC triatomic set itself (Morse stretches + harmonic bend, Hartree; not quantum
chemistry), so it always runs.  python experiments/quickstart.py [--out results/quickstart]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

import torch

from tlgp_torch.compare import compare_methods, format_table
from tlgp_torch.data import AtomDataset, read_ichor_csv, read_validation_set, write_ichor_csv
from tlgp_torch.metrics import plot_s_curves, s_curve
from tlgp_torch.training import DirectTrainer, TransferTrainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def synthetic_triatomic(n: int, seed: int) -> AtomDataset:
    """SYNTHETIC water-like O1 set: features r1, r2 (bohr), angle (rad); energy from Morse + bend (Hartree)."""
    g = torch.Generator().manual_seed(seed)
    r = 1.81 + 0.25 * (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 2
    a = 1.82 + 0.35 * (torch.rand(n, 1, generator=g, dtype=torch.float64) - 0.5) * 2
    morse = 0.20 * (1 - torch.exp(-1.2 * (r - 1.81))).pow(2).sum(1)
    bend = 0.08 * (a[:, 0] - 1.82).pow(2) + 0.02 * (r[:, 0] - 1.81) * (r[:, 1] - 1.81) * torch.cos(a[:, 0])
    y = (-75.40 + morse + bend).unsqueeze(1)
    return AtomDataset(x=torch.cat([r, a], 1), y=y, property_names=["iqa"], system="SYNTHETIC", atom="O1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "results" / "quickstart"))
    p.add_argument("--synthetic", action="store_true", help="use the synthetic set even if real data exist")
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = pathlib.Path(os.environ.get("TLGP_DATA_DIR", REPO.parent / "shared" / "data" / "fflux"))
    if (data / "METHANOL_C1_TRAINING_SET.csv").is_file() and not args.synthetic:
        train = read_ichor_csv(data / "METHANOL_C1_TRAINING_SET.csv", ["iqa"])
        val = read_validation_set(data / "METHANOL_C1_VALIDATION_SET.csv", like=train, properties=["iqa"])
        label = "METHANOL C1 (FFLUX)"
    else:
        train, val = synthetic_triatomic(400, 0), synthetic_triatomic(500, 1)
        write_ichor_csv(train, out / "SYNTHETIC_O1_TRAINING_SET.csv")
        write_ichor_csv(val, out / "SYNTHETIC_O1_VALIDATION_SET.csv")
        label = "SYNTHETIC O1"
        print(f"no FFLUX data at {data}: using a synthetic triatomic set (written to {out})")
    trainers = {"DL": lambda seed: DirectTrainer(restarts=8, seed=seed), "TL": lambda seed: TransferTrainer(seed=seed)}
    curves = {}

    def keep_curve(row, result):
        curves[row["method"]] = s_curve(result.predict(val.x), val.property("iqa"), "iqa")
    summary, _ = compare_methods(trainers, train, val, "iqa", repeats=1, label=label, on_run=keep_curve)
    print(format_table(summary))
    png = plot_s_curves(curves, out / "s_curve.png", "kJ/mol", title=f"{label}: validation S-curves")
    print(f"S-curve: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
