"""`tlgp data generate`: sample, label, check, de-duplicate, split and write a GFN2-xTB data set, with caching."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from tlgp_torch.generation.assemble import assemble
from tlgp_torch.generation.config import GenerationConfig, config_hash
from tlgp_torch.generation.molecules import Molecule, load_molecule
from tlgp_torch.generation.report import GenerationReport, package_versions
from tlgp_torch.generation.runner import Runner, load_npz, save_npz
from tlgp_torch.generation.worker import reference_task, sample_task

__all__ = ["GenerationReport", "generate", "plan_tasks"]

FORMAT_VERSION = 2  # bump when sampling or labelling code changes what a cached work unit holds


def plan_tasks(cfg: GenerationConfig) -> list[dict[str, Any]]:
    """Work units: whole trajectories (or chunks) for training, then separate ones for validation.

    Validation gets about its share of the trajectories (at least one when it has frames), so no training
    frame is correlated with a validation frame; each unit samples oversample times the frames it must give.

    Returns:
        One dict per unit: role ("training" / "validation"), task (its index) and n_frames.

    Example:
        >>> from tlgp_torch.generation import GenerationConfig, MoleculeSpec, SamplingSpec, SplitSpec, plan_tasks
        >>> cfg = GenerationConfig(molecule=MoleculeSpec(system="WATER", source="g2:H2O"),
        ...                        sampling=SamplingSpec(trajectories=5), split=SplitSpec(train=2000, validation=500))
        >>> [(task["role"], task["n_frames"]) for task in plan_tasks(cfg)]
        [('training', 550), ('training', 550), ('training', 550), ('training', 550), ('validation', 550)]
    """
    s, sp = cfg.sampling, cfg.split
    n_val = 0 if sp.validation == 0 else max(1, min(s.trajectories - 1, round(s.trajectories * sp.validation
                                                                              / (sp.train + sp.validation))))
    n_train = s.trajectories - n_val
    tasks = [{"role": "training", "task": k, "n_frames": math.ceil(sp.train * s.oversample / n_train)}
             for k in range(n_train)]
    tasks += [{"role": "validation", "task": n_train + k, "n_frames": math.ceil(sp.validation * s.oversample / n_val)}
              for k in range(n_val)]
    return tasks


def _say(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)


def generate(cfg: GenerationConfig, workers: int | None = None, in_process: bool = False, progress: bool = False,
             force: bool = False, log: Callable[[str], None] | None = None) -> GenerationReport:
    """Make the data set of `cfg` under cfg.out_dir, reusing cached work; returns a GenerationReport.

    workers: processes (default cfg.workers, 0 = one per core); in_process runs everything here (tests).
    Rerunning an unchanged config recomputes nothing; an interrupted run resumes at the last finished work unit.

    Writes {SYSTEM}_{ATOM}_TRAINING_SET.csv and _VALIDATION_SET.csv for every atom (ALF features in bohr /
    radians; `energy` = GFN2-xTB atom-resolved energy in Hartree, `q00` = Mulliken charge in e: stand-ins, NOT
    IQA energies or QTAIM charges), the frames as xyz, a README.md and provenance.json. Needs the qm extra.

    Args:
        cfg: the config (load_generation_config).
        workers: processes (default cfg.workers, 0 = one per core).
        in_process: run every work unit in this process.
        progress: show a progress bar.
        force: recompute everything, ignoring the cache.
        log: called with progress messages.

    Raises:
        GenerationError: naming the frame when MD fragments, the SCF fails during MD, or too few frames remain.
        MoleculeError: for an unusable starting molecule.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.generation import load_generation_config
        >>> text = '''
        ... [molecule]
        ... system = "WATER"
        ... source = "g2:H2O"
        ... [sampling]
        ... method = "normal_modes"
        ... trajectories = 2
        ... [split]
        ... train = 4
        ... validation = 2
        ... [output]
        ... dir = "data/{system}"
        ... '''
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name) / "water.toml"
        >>> _ = path.write_text(text)
        >>> cfg = load_generation_config(path)
        >>> from tlgp_torch.generation.pipeline import generate
        >>> report = generate(cfg, in_process=True)           # GFN2-xTB, about a second for water
        >>> report.n_train, report.n_validation, report.alf["O1"]
        (4, 2, [1, 2, 3])
        >>> sorted(path.name for path in cfg.out_dir.glob("*_TRAINING_SET.csv"))
        ['WATER_H2_TRAINING_SET.csv', 'WATER_H3_TRAINING_SET.csv', 'WATER_O1_TRAINING_SET.csv']
        >>> generate(cfg, in_process=True).up_to_date           # a rerun finds everything cached
        True
        >>> tmp.cleanup()
    """
    t_start = time.perf_counter()
    out, system = cfg.out_dir, cfg.system
    mol: Molecule = load_molecule(cfg.molecule.source, cfg.molecule.charge, cfg.molecule.uhf, cfg.molecule.seed,
                                  cfg.path.parent if cfg.path else None)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    nm = cfg.sampling.method == "normal_modes"
    versions = package_versions()
    mol_key = config_hash(FORMAT_VERSION, versions["tblite"], versions["ase"], mol.numbers,
                          np.round(mol.positions, 8).tolist(), mol.charge, mol.uhf, cfg.molecule.optimize, cfg.qm, nm)
    tasks = plan_tasks(cfg)
    sampling = {k: v for k, v in asdict(cfg.sampling).items() if k not in ("oversample", "duplicate_tolerance",
                                                                           "trajectories")}
    for t in tasks:
        t["key"] = config_hash(mol_key, sampling, t["role"], t["task"], t["n_frames"])
    run_key = config_hash(mol_key, [t["key"] for t in tasks], cfg.split, cfg.sampling.duplicate_tolerance)
    report = GenerationReport(system=system, out_dir=out)
    prov_path = out / "provenance.json"
    if not force and prov_path.is_file():
        prov = json.loads(prov_path.read_text())
        if prov.get("key") == run_key and all((out / f).is_file() for f in prov.get("files", [])):
            report.__dict__.update(n_train=prov["counts"]["train"], n_validation=prov["counts"]["validation"],
                                   n_sampled=prov["counts"]["sampled"], n_duplicates=prov["counts"]["duplicates"],
                                   drops=prov["dropped"], tasks_cached=len(tasks), up_to_date=True,
                                   alf=prov["alf"], files=prov["files"], wall_s=time.perf_counter() - t_start)
            return report

    n_workers = workers if workers is not None else cfg.workers
    if not n_workers:
        n_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ref_path = cache / "reference.npz"
    ref = None if force else load_npz(ref_path, mol_key)
    todo = [t for t in tasks if force or load_npz(cache / f"task_{t['task']:03d}.npz", t["key"]) is None]
    report.tasks_cached, report.tasks_computed = len(tasks) - len(todo), len(todo)
    base = {"numbers": mol.numbers, "charge": mol.charge, "uhf": mol.uhf, "qm": asdict(cfg.qm)}
    t_compute = time.perf_counter()
    with Runner(min(n_workers, max(len(todo), 1)), in_process) as runner:
        if ref is None:
            _say(log, f"{system}: GFN2 reference geometry" + (" + normal modes" if nm else "") + " ...")

            def keep_ref(spec, res):
                nonlocal ref
                ref = {k: np.asarray(v) for k, v in res.items()}
                save_npz(ref_path, mol_key, ref)
            runner.run(reference_task, [{**base, "positions": mol.positions, "optimize": cfg.molecule.optimize,
                                         "normal_modes": nm}], keep_ref)
        if todo:
            from tqdm import tqdm
            extra = {k: ref[k] for k in ("wavenumbers", "vectors", "eigenvalues")} if nm else {}
            specs = [{**base, **t, "method": cfg.sampling.method, "seed": cfg.sampling.seed,
                      "reference": ref["positions"], "md": asdict(cfg.sampling.md),
                      "min_wavenumber": cfg.sampling.min_wavenumber, **extra}
                     for t in todo]
            total = sum(t["n_frames"] for t in todo)
            _say(log, f"{system}: {len(todo)} {'normal-mode chunk' if nm else 'MD trajectory'}(s) to run "
                      f"({total} frames, {len(tasks) - len(todo)} cached) on "
                      f"{1 if runner.in_process else runner.workers} process(es)")
            with tqdm(total=total, desc=f"{system} {cfg.sampling.method}", unit="frame", file=sys.stderr,
                      disable=not progress) as bar:
                def keep(spec, res):
                    arrays = {k: res[k] for k in ("positions", "times", "energy", "energies", "charges", "ok")}
                    arrays["drops"] = np.array([f"{i}\t{msg}" for i, msg in res["drops"]], dtype=str)
                    arrays["wall_s"] = np.array(res["wall_s"])
                    save_npz(cache / f"task_{spec['task']:03d}.npz", spec["key"], arrays)
                runner.run(sample_task, specs, keep, bar)
    report.compute_s = time.perf_counter() - t_compute
    assemble(cfg, mol, ref, tasks, cache, run_key, report, versions)
    report.wall_s = time.perf_counter() - t_start
    return report


