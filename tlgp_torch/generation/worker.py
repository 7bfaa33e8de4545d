"""Work units of a generation run (reference geometry; one labelled trajectory or normal-mode chunk) for workers."""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from tlgp_torch.generation.checks import Topology
from tlgp_torch.generation.errors import GenerationError
from tlgp_torch.generation.sampling import (
    MDSettings,
    NormalModes,
    hessian,
    langevin_md,
    normal_mode_samples,
    normal_modes,
    optimize,
)
from tlgp_torch.generation.xtb import GFN2, QMSettings, SCFError

__all__ = ["init_worker", "reference_task", "sample_task"]

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_QUEUE = None


def init_worker(queue=None) -> None:
    """Worker start-up: one OpenMP/BLAS thread (tblite collapses when threads share cores) and the progress queue."""
    global _QUEUE
    for var in THREAD_VARS:
        os.environ[var] = "1"
    _QUEUE = queue


def _report(task: int, done: int, local=None) -> None:
    if local is not None:
        local(task, done)
    elif _QUEUE is not None:
        _QUEUE.put((task, done))


def reference_task(spec: dict[str, Any], progress=None) -> dict[str, Any]:
    """Optimised starting geometry (and normal modes when asked) on the GFN2 surface."""
    t0 = time.perf_counter()
    qm = QMSettings(**spec["qm"])
    numbers, pos = spec["numbers"], np.asarray(spec["positions"], dtype=np.float64)
    if spec["optimize"]:
        pos = optimize(numbers, pos, spec["charge"], spec["uhf"], qm)
    gfn2 = GFN2(numbers, spec["charge"], spec["uhf"], qm)
    try:
        out = {"positions": pos, "energy": gfn2(pos)["energy"]}
        if spec["normal_modes"]:
            modes = normal_modes(numbers, pos, hessian(gfn2, pos))
            out.update(wavenumbers=modes.wavenumbers, vectors=modes.vectors, eigenvalues=modes.eigenvalues)
    except SCFError as err:
        raise GenerationError(f"reference geometry: GFN2 failed ({err}); run stopped") from None
    out["wall_s"] = time.perf_counter() - t0
    return out


def sample_task(spec: dict[str, Any], progress=None) -> dict[str, Any]:
    """One MD trajectory or normal-mode chunk: sample, check each frame, label it with fresh GFN2 single points.

    Frames that fail a check or an SCF are kept with ok = False and a reason in `drops`; MD problems stop the run.
    """
    t0 = time.perf_counter()
    task, n = spec["task"], spec["n_frames"]
    numbers, ref = spec["numbers"], np.asarray(spec["reference"], dtype=np.float64)
    qm = QMSettings(**spec["qm"])
    rng = np.random.default_rng([spec["seed"], task])
    topology = Topology.of(numbers, ref)
    label = f"{spec['role']} {'trajectory' if spec['method'] == 'md' else 'normal-mode chunk'} {task}"
    drops: list[tuple[int, str]] = []
    if spec["method"] == "md":
        positions, times = langevin_md(numbers, ref, n, MDSettings(**spec["md"]), rng, topology, spec["charge"],
                                       spec["uhf"], qm, label=label, progress=lambda k: _report(task, k, progress))
    else:
        modes = NormalModes(*(np.asarray(spec[k]) for k in ("wavenumbers", "vectors", "eigenvalues")))
        positions = normal_mode_samples(ref, modes, n, spec["md"]["temperature"], rng, spec["min_wavenumber"])
        times = np.full(n, np.nan)
    gfn2 = GFN2(numbers, spec["charge"], spec["uhf"], qm)
    natoms = len(numbers)
    energy, energies, charges = np.full(n, np.nan), np.full((n, natoms), np.nan), np.full((n, natoms), np.nan)
    ok = np.zeros(n, dtype=bool)
    for i in range(n):
        why = topology.problem(positions[i]) if spec["method"] != "md" else None
        if why is None:
            try:
                res = gfn2(positions[i])
                if abs(res["energies"].sum() - res["energy"]) > 1e-8:
                    raise SCFError(f"atomic energies sum to {res['energies'].sum()!r}, total is {res['energy']!r}")
                energy[i], energies[i], charges[i], ok[i] = res["energy"], res["energies"], res["charges"], True
            except SCFError as err:
                why = f"GFN2 failed ({err})"
        if why is not None:
            drops.append((i, f"{label}, frame {i}: {why}; frame dropped"))
        if spec["method"] != "md":
            _report(task, i + 1, progress)
    return {"positions": positions, "times": times, "energy": energy, "energies": energies, "charges": charges,
            "ok": ok, "drops": drops, "wall_s": time.perf_counter() - t0}
