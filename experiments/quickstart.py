"""Quickstart: make a small GFN2-xTB ethanol set, then DL vs TL on one atom's energy model; table + S-curve PNG.

Generates 400 training + 200 validation ethanol conformations (300 K Langevin MD on the GFN2-xTB surface, labelled
with tblite's atom-resolved energies; these are NOT IQA energies), cached under --out, so a rerun skips it.
Needs the qm extra:  pip install -e ".[plot,qm]"   Then:  python experiments/quickstart.py [--atom C1] [--out DIR]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_CONFIG = REPO / "configs" / "data" / "ethanol_quickstart.toml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "results" / "quickstart"), help="output folder (data cache, PNG)")
    p.add_argument("--atom", default="C1", help="ethanol atom whose energy model is trained (C1 C2 O3 H4..H9)")
    p.add_argument("--workers", type=int, default=None, help="processes for data generation (default: one per core)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        import tblite.interface  # noqa: F401  (fail early, with the install hint, when the qm extra is missing)

        from tlgp_torch.generation import generate, load_generation_config
    except ImportError as err:
        print(f"quickstart: the data generation needs the qm extra ({err}): pip install -e \".[plot,qm]\"",
              file=sys.stderr)
        return 2
    from tlgp_torch.evaluation.compare import compare_methods, format_table, warm_up
    from tlgp_torch.evaluation.metrics import plot_s_curves, s_curve
    from tlgp_torch.io.ichor_csv import read_ichor_csv, read_validation_set
    from tlgp_torch.training.direct import DirectTrainer
    from tlgp_torch.training.transfer import TransferTrainer

    out = pathlib.Path(args.out)
    cfg = load_generation_config(DATA_CONFIG, out_dir=out / "ETHANOL")
    rep = generate(cfg, workers=args.workers, progress=sys.stderr.isatty(), log=print)
    t_data = time.perf_counter() - t0
    print(f"data: {rep.n_train} + {rep.n_validation} ethanol conformations in {cfg.out_dir} "
          f"({'cached' if rep.up_to_date else f'{rep.wall_s:.1f} s'}; GFN2-xTB atomic energies, not IQA)")
    if args.atom not in rep.alf:
        print(f"quickstart: no atom {args.atom!r} in ethanol; choose one of {', '.join(rep.alf)}", file=sys.stderr)
        return 2
    train = read_ichor_csv(cfg.out_dir / f"ETHANOL_{args.atom}_TRAINING_SET.csv", ["energy"])
    val = read_validation_set(cfg.out_dir / f"ETHANOL_{args.atom}_VALIDATION_SET.csv", like=train,
                              properties=["energy"])
    label = f"ETHANOL {args.atom} (GFN2)"
    trainers = {"DL": lambda seed: DirectTrainer(restarts=8, seed=seed), "TL": lambda seed: TransferTrainer(seed=seed)}
    curves = {}

    def keep_curve(row, result):
        curves[row["method"]] = s_curve(result.predict(val.x), val.property("energy"), "energy")
    warm_up(trainers, train, "energy")
    summary, _ = compare_methods(trainers, train, val, "energy", repeats=1, label=label, on_run=keep_curve)
    print(format_table(summary))
    png = plot_s_curves(curves, out / "s_curve.png", "kJ/mol", title=f"{label}: validation S-curves")
    print(f"S-curve: {png}")
    print(f"total {time.perf_counter() - t0:.1f} s (data {t_data:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
