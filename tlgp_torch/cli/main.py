"""Command line: `tlgp train | submit | merge | compare | export | predict | data generate` (one entry point,
console script `tlgp`; every flag in docs/cli.md)."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pathlib
import sys
import traceback
from typing import Any

import pandas as pd
import torch

from tlgp_torch.config.experiment import Config, load_config
from tlgp_torch.data.dataset import AtomDataset
from tlgp_torch.evaluation.compare import compare_methods, format_metric, format_table, validation_metrics, warm_up
from tlgp_torch.evaluation.metrics import errors
from tlgp_torch.export.ferebus import map_fflux_energy, to_ferebus_model, write_fflux_model
from tlgp_torch.io.atomic import atomic_write_text
from tlgp_torch.io.checkpoint import load_checkpoint, save_checkpoint
from tlgp_torch.io.errors import DataFormatError
from tlgp_torch.io.ichor_csv import read_ichor_csv, read_validation_set
from tlgp_torch.runtime.sharding import parse_shard, shard_from_env, shard_jobs, shard_results_name
from tlgp_torch.version import __version__

RESULT_KEY = ["system", "atom", "property", "method"]
RESULT_COLUMNS = RESULT_KEY + ["wall_s", "n_full_evals", "ll_concentrated", "ll_marginal", "val_mae", "val_rmse",
                               "val_max", "unit"]


class _Interrupted(Exception):
    """Ctrl-C during a run, with the message that says how to resume."""


def _say(msg: str, err: bool = False) -> None:
    """Print a line without breaking a tqdm progress bar."""
    from tqdm import tqdm
    tqdm.write(msg, file=sys.stderr if err else sys.stdout)


def _progress(items: list, args: argparse.Namespace, desc: str):
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="model", file=sys.stderr, disable=not (args.progress or sys.stderr.isatty()))


def _load_sets(cfg: Config, atoms: list[str] | None = None) -> dict[str, tuple[AtomDataset, AtomDataset | None]]:
    """Training and (when present) validation set of every atom, read up front so data errors stop the run early."""
    sets = {}
    for atom in cfg.data.atoms if atoms is None else atoms:
        train = read_ichor_csv(cfg.train_path(atom), cfg.data.properties)
        vpath = cfg.validation_path(atom)
        if vpath is None:
            _say(f"note: no validation set for {cfg.data.system} {atom} "
                 f"({cfg.data.dir / cfg.data.validation.format(system=cfg.data.system, atom=atom)}): "
                 "no validation metrics", err=True)
        sets[atom] = (train, read_validation_set(vpath, like=train) if vpath else None)
    return sets


def _row(cfg: Config, atom: str, prop: str, result, val: dict) -> dict[str, Any]:
    return {"system": cfg.data.system, "atom": atom, "property": prop, "method": result.method,
            "wall_s": result.wall_time, "n_full_evals": result.n_full_evals,
            "ll_concentrated": result.ll_concentrated, "ll_marginal": result.ll_marginal, **val}


def _merge_results(path: pathlib.Path, row: dict[str, Any]) -> None:
    """Add or replace (same system, atom, property, method) one row of results.csv, atomically."""
    new = pd.DataFrame([row], columns=RESULT_COLUMNS)
    if path.is_file():
        old = pd.read_csv(path, dtype={k: str for k in RESULT_KEY})
        same = (old[RESULT_KEY] == new[RESULT_KEY].iloc[0]).all(axis=1)
        new = pd.concat([old[~same], new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, new.to_csv(index=False))


def _export_ferebus(cfg: Config, atom: str, prop: str, result, out: pathlib.Path) -> pathlib.Path | None:
    """Write the FEREBUS .model file when the ALF and atom count are known, else return None."""
    alf = cfg.data.alf.get(atom)
    if alf is None:
        return None
    d = int(result.theta.numel())
    n_atoms = cfg.data.n_atoms or (d + 6) // 3
    if cfg.data.n_atoms is None and (d + 6) % 3:
        _say(f"warning: {d} features is not 3N-6: set [data] n_atoms; FEREBUS .model export skipped", err=True)
        return None
    model = to_ferebus_model(result, cfg.data.system, atom, prop, alf, n_atoms)
    label = cfg.export.fflux_energy if prop == cfg.export.fflux_energy else None
    return write_fflux_model(map_fflux_energy([model], label)[0], out / "ferebus")


def _batches(jobs: list, sets: dict, size: int) -> list[list]:
    """Pending (atom, prop) jobs grouped into batches of at most `size` whose training sets share N and D."""
    groups: dict[tuple, list] = {}
    for atom, prop in jobs:
        groups.setdefault(tuple(sets[atom][0].x.shape), []).append((atom, prop))
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


def cmd_train(args: argparse.Namespace) -> int:
    """Train every (atom, property) of the config in batches; finished models are skipped on a rerun."""
    cfg = load_config(args.config, args.data_dir)
    method = args.method or cfg.train.method
    shard = parse_shard(args.shard) if args.shard else shard_from_env()
    _pick_gpu()
    trainer = cfg.trainer(method)
    out = cfg.output_dir(args.out)
    jobs = cfg.jobs()
    results_csv = out / "results.csv"
    if shard is not None and shard[1] > 1:
        jobs = shard_jobs(jobs, shard)
        results_csv = out / "shards" / shard_results_name(shard)
        _say(f"shard {shard[0]}/{shard[1]}: {len(jobs)} model(s): {', '.join(f'{a} {p}' for a, p in jobs) or 'none'}"
             f" (`tlgp merge {args.config}` gathers all shards)")
    needed = list(dict.fromkeys(atom for atom, _ in jobs))
    sets = _load_sets(cfg, needed)
    for atom in cfg.data.atoms:
        if atom not in cfg.data.alf:
            _say(f"warning: no ALF for {atom} in [data] alf: FEREBUS .model export skipped", err=True)
    ckpt = {job: cfg.checkpoint_path(out, *job) for job in jobs}
    pending = [job for job in jobs if args.overwrite or not ckpt[job].exists() or not _checkpoint_readable(ckpt[job])]
    for job in jobs:
        if job not in pending:
            _say(f"skip {ckpt[job].stem}: checkpoint {ckpt[job]} exists (use --overwrite to retrain)")
    batches = _batches(pending, sets, args.batch_size)
    if len(batches) > 1 or (batches and len(batches[0]) > 1):
        _say(f"{len(pending)} model(s) in {len(batches)} batched fit(s) of up to {args.batch_size}")
    done = failed = 0
    try:
        with _progress(pending, args, f"{cfg.data.system} {method.upper()}") as bar:
            for batch in batches:
                results = trainer.fit_many([(sets[atom][0], prop) for atom, prop in batch])
                for (atom, prop), result in zip(batch, results):
                    name = ckpt[(atom, prop)].stem
                    bar.update(1)
                    if result.status != "ok":
                        failed += 1
                        _say(f"{name} FAILED: {result.failure}", err=True)
                        continue
                    metrics = validation_metrics(result, sets[atom][1], prop)
                    row = _row(cfg, atom, prop, result, metrics)
                    model_file = _export_ferebus(cfg, atom, prop, result, out)
                    _merge_results(results_csv, row)
                    alf = cfg.data.alf.get(atom)
                    save_checkpoint(result, ckpt[(atom, prop)], system=cfg.data.system, atom=atom, property=prop,
                                    method=result.method, config=str(cfg.path), alf=list(alf) if alf else None,
                                    n_atoms=cfg.data.n_atoms, results=row)  # written last: marks the model finished
                    done += 1
                    _say(f"{name} {result.method}: {result.wall_time:.2f} s (batch of {len(batch)}), "
                         f"{result.n_full_evals} full-set evals, ll_conc {result.ll_concentrated:.2f}, "
                         f"val MAE {format_metric(metrics['val_mae'])} {metrics['unit']}"
                         + (f" -> {model_file}" if model_file else ""))
    except KeyboardInterrupt:
        raise _Interrupted(f"interrupted: {done} model(s) finished this run are saved under {out}; run the same "
                           "command again to resume (finished models are skipped)") from None
    _say(f"{done} model(s) trained, {len(jobs) - len(pending)} skipped, {failed} failed; "
         f"results in {results_csv}")
    return 1 if failed else 0


def _checkpoint_readable(path: pathlib.Path) -> bool:
    """True if a finished model's checkpoint loads; a corrupted one is moved to PATH.corrupt (kept for
    inspection), reported, and its model is trained again instead of the run stopping."""
    try:
        load_checkpoint(path)
        return True
    except (ValueError, OSError) as err:
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        _say(f"error: {err}; moved to {bad}, retraining {path.stem}", err=True)
        return False


def _pick_gpu() -> None:
    """Under torchrun, LOCAL_RANK picks this worker's GPU (device "auto" then means that GPU)."""
    import os
    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())


def cmd_submit(args: argparse.Namespace) -> int:
    """Launch the config's shards as a SLURM job array ([submit] table) or local processes, via submitit."""
    import dataclasses

    from tlgp_torch.runtime.submit import submit_shards
    cfg = load_config(args.config, args.data_dir)
    settings = cfg.submit
    if args.shards is not None or args.local:
        settings = dataclasses.replace(settings, shards=args.shards or settings.shards,
                                       cluster="local" if args.local else settings.cluster)
    out = cfg.output_dir(args.out).resolve()
    argv = ["train", str(cfg.path.resolve()), "--out", str(out), "--data-dir", str(cfg.data.dir),
            "--batch-size", str(args.batch_size)] + (["--method", args.method] if args.method else [])
    jobs = submit_shards(main, argv, settings, out / "submitit")
    print(f"{cfg.data.system}: {len(jobs)} shard(s) submitted to {settings.cluster} "
          f"(job ids {', '.join(str(j.job_id) for j in jobs)}); logs in {out / 'submitit'}")
    if not args.wait:
        print(f"when they finish: tlgp merge {args.config} --out {out}")
        return 0
    failed = []
    for i, job in enumerate(jobs):
        try:
            job.result()
        except Exception as err:  # submitit re-raises the task's error or reports a scheduler failure
            failed.append(f"shard {i}/{len(jobs)} (job {job.job_id}): {str(err).strip().splitlines()[-1]}")
    for msg in failed:
        _say(f"FAILED {msg}; rerun it with tlgp train {args.config} --shard i/n (finished models are skipped)",
             err=True)
    rc = cmd_merge(args)
    return 1 if failed else rc


def cmd_merge(args: argparse.Namespace) -> int:
    """Gather the models of all shards (their checkpoints) into results.csv; rc 1 while some are missing."""
    cfg = load_config(args.config, args.data_dir)
    out = cfg.output_dir(args.out)
    jobs = cfg.jobs()
    rows, missing = [], []
    for atom, prop in jobs:
        path = cfg.checkpoint_path(out, atom, prop)
        if not path.is_file():
            missing.append(f"{atom} {prop}")
            continue
        rows.append(load_checkpoint(path)[1]["results"])
    if rows:
        atomic_write_text(out / "results.csv", pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(index=False))
    print(f"{cfg.data.system}: {len(rows)} of {len(jobs)} model(s) in {out / 'results.csv'}")
    if missing:
        print(f"missing ({len(missing)}): {', '.join(missing)}; rerun their shards (finished models are skipped)",
              file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a trained molecule: FEREBUS .model files FFLUX can load, plus TorchScript / torch.export potentials."""
    from tlgp_torch.export.molecule import export_molecule, trained_models
    cfg = load_config(args.config, args.data_dir)
    out = cfg.output_dir(args.out)
    dest = pathlib.Path(args.to) if args.to else out / "export"
    models = trained_models(cfg, out)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    fflux_energy = args.fflux_energy if args.fflux_energy is not None else cfg.export.fflux_energy
    report = export_molecule(models, dest, formats, overwrite=args.overwrite, fflux_energy=fflux_energy or None)
    for note in report.notes:
        _say(f"note: {note}", err=True)
    print(f"{cfg.data.system}: {len(report.model_files)} .model file(s) and "
          f"{', '.join(p.name for p in report.potential_files) or 'no torch potential'} in {report.folder}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """DL vs TL on every (atom, property): medians over --repeats seeds, table + compare.csv / compare.json."""
    cfg = load_config(args.config, args.data_dir)
    out = cfg.output_dir(args.out)
    sets = _load_sets(cfg)
    seed0 = cfg.direct_trainer().seed
    trainers = {"DL": lambda seed: cfg.trainer("dl", seed=seed), "TL": lambda seed: cfg.trainer("tl", seed=seed)}
    jobs = cfg.jobs()
    summary: list[dict] = []
    runs: list[dict] = []
    try:
        warm_up(trainers, sets[cfg.data.atoms[0]][0], cfg.data.properties[0])
        with _progress(jobs, args, f"{cfg.data.system} DL vs TL") as bar:
            for atom, prop in bar:
                train, val = sets[atom]
                s, r = compare_methods(trainers, train, val, prop, repeats=args.repeats, seed=seed0,
                                       label=f"{cfg.data.system} {atom} {prop}")
                summary += s
                runs += r
    except KeyboardInterrupt:
        raise _Interrupted("interrupted: compare writes its tables only at the end; nothing was saved") from None
    print(format_table(summary))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.csv", pd.DataFrame(summary).to_csv(index=False))
    doc = {"config": str(cfg.path), "repeats": args.repeats, "seeds": list(range(seed0, seed0 + args.repeats)),
           "summary": summary, "runs": runs}
    atomic_write_text(out / "compare.json", json.dumps(_jsonable(doc), indent=2) + "\n")
    print(f"wrote {out / 'compare.csv'} and {out / 'compare.json'}" + (
        f" (medians over {args.repeats} seeds)" if args.repeats > 1 else ""))
    return 0


def _jsonable(obj: Any) -> Any:
    """obj with NaN / inf floats replaced by None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _read_points(path: pathlib.Path, d: int, prop: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(features [M, d], property values or None) from an ICHOR CSV, which may lack the property column."""
    try:
        data = read_ichor_csv(path, [prop])
    except DataFormatError as err:
        if err.column != prop:
            raise
        data = read_ichor_csv(path, [])
    if data.n_features != d:
        raise DataFormatError(f"the model needs {d} features; the file has {data.n_features}", path, 1)
    return data.x, (data.property(prop) if data.property_names else None)


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict with a checkpoint; print errors when the data carry the property; write a CSV."""
    result, meta = load_checkpoint(args.checkpoint)
    prop = meta.get("property") or result.property_name
    x, y = _read_points(pathlib.Path(args.data), int(result.theta.numel()), prop)
    pred = result.predict(x).cpu()
    table = pd.DataFrame({"index": range(x.shape[0]), "prediction": pred.numpy()})
    if y is not None:
        e = errors(pred, y, prop)
        table["truth"], table["error"] = y.numpy(), (pred - y).numpy()
        print(f"{prop} on {e['n']} points: MAE {e['mae']:.4g} {e['unit']}, RMSE {e['rmse']:.4g} {e['unit']}, "
              f"max {e['max']:.4g} {e['unit']}")
    else:
        print(f"{len(table)} predictions of {prop} (no {prop!r} column in {args.data}: no errors)")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, table.to_csv(index=False, float_format="%.17g"))
    print(f"wrote {out} (values in the data file's units)")
    return 0


def cmd_data_generate(args: argparse.Namespace) -> int:
    """Make a GFN2-xTB data set (ICHOR CSVs per atom, extended xyz, provenance.json); cached work is reused."""
    try:
        from tlgp_torch.generation import generate, load_generation_config
        cfg = load_generation_config(args.config, args.out)
        show = args.progress or sys.stderr.isatty()
        try:
            report = generate(cfg, workers=args.workers, progress=show, force=args.force, log=_say)
        except KeyboardInterrupt:
            raise _Interrupted(f"interrupted: finished work units are cached under {cfg.out_dir / 'cache'}; run the "
                               "same command again to resume") from None
    except ImportError as err:
        print(f"tlgp: error: {err}", file=sys.stderr)
        return 2
    for msg in report.drops[:20]:
        _say(f"dropped: {msg}", err=True)
    if len(report.drops) > 20:
        _say(f"... {len(report.drops) - 20} more dropped frames: see {report.out_dir / 'provenance.json'}", err=True)
    if report.up_to_date:
        print(f"{cfg.system}: up to date in {report.out_dir} ({report.n_train} training + {report.n_validation} "
              "validation conformations; nothing recomputed; --force to redo)")
        return 0
    print(f"{cfg.system}: {report.n_train} training + {report.n_validation} validation conformations in "
          f"{report.out_dir} ({report.n_sampled} sampled, {len(report.drops)} dropped, {report.n_duplicates} "
          f"near-duplicates; {report.tasks_computed} work unit(s) computed, {report.tasks_cached} cached; "
          f"{report.wall_s:.1f} s)")
    print("labels: GFN2-xTB atom-resolved energies (Hartree) and Mulliken charges; NOT IQA energies")
    print("ALF (1-based) for a training config: alf = { " + ", ".join(f"{a} = {v}" for a, v in report.alf.items())
          + " }")
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("config", help="TOML config")
    run.add_argument("--data-dir", help="folder of the ICHOR CSVs (overrides $TLGP_DATA_DIR and [data] dir)")
    run.add_argument("--out", help="output folder (default: [output] dir)")
    run.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p = argparse.ArgumentParser(prog="tlgp", description="Fast anisotropic GP models for FFLUX (TL of hyperparameters)")
    p.add_argument("--version", action="version", version=f"tlgp_torch {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", parents=[common, run], help="train every (atom, property) of a config")
    t.add_argument("--method", choices=("tl", "dl"), help="override [train] method")
    t.add_argument("--overwrite", action="store_true", help="retrain models whose checkpoint exists")
    t.add_argument("--batch-size", type=int, default=32, help="models trained together as one batched program "
                   "(those sharing N and D; finished models are written after each batch)")
    t.add_argument("--shard", help="train only shard i/n (0-based) of the config's models, round robin; default "
                   "under torchrun: RANK/WORLD_SIZE. Shards share --out; `tlgp merge` gathers them")
    t.set_defaults(func=cmd_train)
    mg = sub.add_parser("merge", parents=[common, run], help="gather the models of all shards into results.csv")
    mg.set_defaults(func=cmd_merge)
    sb = sub.add_parser("submit", parents=[common, run], help="train the config's shards as a SLURM job array "
                        "([submit] table; submitit) or as local processes")
    sb.add_argument("--shards", type=int, help="override [submit] shards")
    sb.add_argument("--local", action="store_true", help="run the shards as processes on this machine")
    sb.add_argument("--wait", action="store_true", help="wait for all shards, then merge")
    sb.add_argument("--method", choices=("tl", "dl"), help="override [train] method")
    sb.add_argument("--batch-size", type=int, default=32, help="as in tlgp train")
    sb.set_defaults(func=cmd_submit)
    c = sub.add_parser("compare", parents=[common, run], help="DL vs TL timings, likelihoods and errors")
    c.add_argument("--repeats", type=int, default=1, help="runs per method with seeds seed..seed+k-1 (medians)")
    c.set_defaults(func=cmd_compare)
    e = sub.add_parser("export", parents=[common, run], help="write a trained molecule as FEREBUS .model files "
                       "(the folder FFLUX reads) and torch potentials (.pt TorchScript, .pt2 torch.export)")
    e.add_argument("--to", help="destination; the molecule goes to TO/SYSTEM/ (default: OUT/export)")
    e.add_argument("--formats", default="ferebus,pt,pt2", help="comma list of ferebus, pt, pt2 (default: all)")
    e.add_argument("--overwrite", action="store_true", help="replace files in an existing export folder")
    e.add_argument("--fflux-energy", metavar="PROPERTY", help="write the models of PROPERTY (e.g. energy, for "
                   "GFN2-xTB data) as SYSTEM_iqa_ATOM.model, the name FFLUX reads energies under; the true label "
                   "goes into each file's header and manifest.json (default: [export] fflux_energy, else none)")
    e.set_defaults(func=cmd_export)
    r = sub.add_parser("predict", parents=[common], help="predict with a trained checkpoint")
    r.add_argument("checkpoint", help="model checkpoint (.pt) written by `tlgp train`")
    r.add_argument("data", help="CSV with features f1..fD (and optionally the property)")
    r.add_argument("--out", default="preds.csv", help="output CSV (default: preds.csv)")
    r.set_defaults(func=cmd_predict)
    d = sub.add_parser("data", help="make labelled data sets (GFN2-xTB; needs the qm extra)")
    dsub = d.add_subparsers(dest="data_command", required=True)
    g = dsub.add_parser("generate", parents=[common], help="sample conformations, label them with GFN2-xTB, write "
                        "ICHOR CSVs (cached: a rerun recomputes nothing, an interrupted run resumes)")
    g.add_argument("config", help="data TOML (see configs/data/)")
    g.add_argument("--out", help="output folder (default: [output] dir)")
    g.add_argument("--workers", type=int, help="worker processes (default: [output] workers, 0 = one per core)")
    g.add_argument("--force", action="store_true", help="recompute everything, ignoring the cache")
    g.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    g.set_defaults(func=cmd_data_generate)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The `tlgp` argument parser (docs/cli.md is generated from it by tlgp_torch.cli.reference)."""
    return _parser()


class _TqdmHandler(logging.Handler):
    """Library log lines (progress of long fits, path switches) on stderr without breaking progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        _say(f"{record.levelname.lower()}: {record.getMessage()}" if record.levelno >= logging.WARNING
             else record.getMessage(), err=True)


def _setup_logging() -> None:
    logger = logging.getLogger("tlgp_torch")
    if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
        logger.addHandler(_TqdmHandler())
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the `tlgp` command line; returns the exit code (2 on config/data errors, 130 on Ctrl-C)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, usage errors
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    _setup_logging()
    try:
        return args.func(args)
    except _Interrupted as msg:
        print(f"tlgp: {msg}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("tlgp: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError) as err:  # config and data problems
        if args.debug:
            traceback.print_exc()
        else:
            print(f"tlgp: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
