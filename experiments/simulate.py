"""GP potentials (DL vs TL) in simulation vs GFN2-xTB itself: optimised geometries, frequencies, forces, NVE drift.

The paper's test of TL models was FFLUX geometry optimisation and harmonic frequencies. For each system and
training method, from several distorted starts (validation conformers), this optimises with ASE BFGS on the GP
potential and on GFN2-xTB (tblite), then compares: RMSD of the optimised geometries (after alignment), energy
error at the minimum, harmonic frequencies (ase.vibrations) of both minima, autograd forces vs finite
differences of the potential, GP vs GFN2 forces on validation conformers, and energy drift of a short NVE run.

Needs the qm extra and trained models:  tlgp train configs/ethanol.toml --method tl --out runs/sim/ethanol_tl
(and --method dl --out runs/sim/ethanol_dl; the same for fomepizole).  Then:
    python experiments/simulate.py --systems ethanol fomepizole --runs runs/sim
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch

from tlgp_torch.config.experiment import load_config
from tlgp_torch.export import FFLUXCalculator
from tlgp_torch.export.molecule import trained_models
from tlgp_torch.export.potential import ENERGY_PROPERTIES, FFLUXPotential, energy_and_forces
from tlgp_torch.generation import QMSettings
from tlgp_torch.generation.xtb import tblite_calculator

EV_TO_KJ = 96.48533212331002
ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_potential_from_run(config: pathlib.Path, run: pathlib.Path) -> FFLUXPotential:
    """Energy (and charge, when trained) models of a `tlgp train` run as one potential in eV / angstrom."""
    cfg = load_config(config)
    props = [p for p in cfg.data.properties if p in ENERGY_PROPERTIES + ("q00",)]
    have = [p for p in props if all(cfg.checkpoint_path(run, a, p).is_file() for a in cfg.data.atoms)]
    return FFLUXPotential(trained_models(cfg, run, have))


def aligned_rmsd(a, b) -> float:
    """RMSD (angstrom) of two conformations after optimal superposition (Kabsch)."""
    from ase.build import minimize_rotation_and_translation
    a, b = a.copy(), b.copy()
    minimize_rotation_and_translation(a, b)
    return float(np.sqrt(((a.positions - b.positions) ** 2).sum(1).mean()))


def optimise(atoms, calc, fmax: float, steps: int):
    """BFGS to fmax (eV/A); returns (optimised Atoms, energy eV, converged, steps)."""
    from ase.optimize import BFGS
    at = atoms.copy()
    at.calc = calc
    opt = BFGS(at, logfile=None, maxstep=0.1)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    return at, float(at.get_potential_energy()), converged, opt.nsteps


def frequencies(atoms, calc, workdir: pathlib.Path, name: str) -> np.ndarray:
    """Harmonic frequencies (cm-1) of the 3N-6 internal modes (imaginary ones negative), ase.vibrations."""
    from ase.vibrations import Vibrations
    at = atoms.copy()
    at.calc = calc
    vib = Vibrations(at, name=str(workdir / name), delta=0.005, nfree=2)
    vib.run()
    energies = vib.get_energies()
    vib.clean()
    cm = np.where(np.iscomplex(energies), -np.abs(energies), np.real(energies)) / 1.239841984e-4  # eV -> cm-1
    return np.sort(cm)[6:]


def fd_forces_error(potential: FFLUXPotential, positions: torch.Tensor, h: float = 1e-4) -> float:
    """max |F_autograd - F_central differences| / max |F| of the potential at positions [F, N, 3]."""
    _, forces = energy_and_forces(potential, positions)
    fd = torch.zeros_like(positions)
    with torch.no_grad():
        for i in range(positions.shape[1]):
            for k in range(3):
                step = torch.zeros_like(positions)
                step[:, i, k] = h
                fd[:, i, k] = -(potential(positions + step)[0] - potential(positions - step)[0]) / (2 * h)
    return float((forces - fd).abs().max() / forces.abs().max())


def nve_drift(atoms, calc, ps: float, dt_fs: float, temperature: float, seed: int) -> dict:
    """Velocity Verlet from atoms at `temperature`: energy drift (meV/ps, linear fit) and fluctuation (meV)."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet
    at = atoms.copy()
    at.calc = calc
    MaxwellBoltzmannDistribution(at, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(at)
    ZeroRotation(at)
    md = VelocityVerlet(at, timestep=dt_fs * units.fs)
    times, energies = [], []

    def record():
        times.append(md.nsteps * dt_fs / 1000.0)
        energies.append(at.get_total_energy())

    md.attach(record, interval=1)
    t0 = time.perf_counter()
    md.run(int(round(ps * 1000 / dt_fs)))
    e = np.array(energies) * 1000.0
    slope = float(np.polyfit(np.array(times), e, 1)[0])
    return {"drift_meV_per_ps": slope, "fluct_meV": float(e.std()), "steps": len(e) - 1,
            "ms_per_step": 1000 * (time.perf_counter() - t0) / max(len(e) - 1, 1)}


def gfn2_reference(name: str, starts: list, force_frames: list, qm_calc, args, workdir: pathlib.Path):
    """GFN2 minima (BFGS from every start), their frequencies and GFN2 forces on force_frames; cached in --out."""
    key = f"{len(starts)}-{args.fmax}-{args.steps}-{len(force_frames)}"
    cache = args.out / f"{name}_gfn2_reference_{key}.npz"
    if cache.is_file():
        z = np.load(cache)
        refs = []
        for k, start in enumerate(starts):
            at = start.copy()
            at.positions = z[f"pos{k}"]
            refs.append({"atoms": at, "energy": float(z["energy"][k]), "converged": bool(z["converged"][k]),
                         "freq": z[f"freq{k}"]})
        return refs, z["forces"]
    refs = []
    for k, start in enumerate(starts):
        opt, e, conv, n = optimise(start, qm_calc, args.fmax, args.steps)
        refs.append({"atoms": opt, "energy": e, "converged": conv,
                     "freq": frequencies(opt, qm_calc, workdir, f"{name}_gfn2_{k}")})
    forces = []
    for f in force_frames:
        at = f.copy()
        at.calc = qm_calc
        forces.append(at.get_forces())
    forces = np.stack(forces)
    np.savez(cache, energy=np.array([r["energy"] for r in refs]), converged=np.array([r["converged"] for r in refs]),
             forces=forces, **{f"pos{k}": r["atoms"].positions for k, r in enumerate(refs)},
             **{f"freq{k}": r["freq"] for k, r in enumerate(refs)})
    return refs, forces


def run_system(name: str, args, qm_calc, workdir: pathlib.Path) -> tuple[list[dict], dict]:
    """All measurements of one system for both methods; returns (rows, frequencies per method)."""
    import ase.io
    config = ROOT / "configs" / f"{name}.toml"
    cfg = load_config(config, args.data_dir)
    frames = ase.io.read(cfg.data.dir / f"{cfg.data.system}_validation.xyz", ":")
    starts = [frames[i] for i in np.linspace(0, len(frames) - 1, args.starts).round().astype(int)]
    refs, ref_forces = gfn2_reference(name, starts, frames[:args.force_frames], qm_calc, args, workdir)
    check = torch.tensor(np.stack([f.positions for f in frames[:args.force_frames]]), dtype=torch.float64)
    rows, freq = [], {}
    for method in args.methods:
        run = args.runs / f"{name}_{method.lower()}"
        potential = load_potential_from_run(config, run)
        calc = FFLUXCalculator(potential)
        gp_forces = energy_and_forces(potential, check)[1].numpy()
        row = {"system": cfg.data.system, "method": method, "fd_force_rel_err": fd_forces_error(potential, check[:2]),
               "force_rmse_eV_A": float(np.sqrt(((gp_forces - ref_forces) ** 2).mean())),
               "force_mae_eV_A": float(np.abs(gp_forces - ref_forces).mean())}
        per_start = []
        for k, (start, ref) in enumerate(zip(starts, refs)):
            opt, e, conv, n = optimise(start, calc, args.fmax, args.steps)
            at = opt.copy()
            at.calc = qm_calc
            e_qm_at_gp = float(at.get_potential_energy())
            f_gp = frequencies(opt, calc, workdir, f"{name}_{method}_{k}")
            freq.setdefault(method, []).append((ref["freq"], f_gp))
            per_start.append({"rmsd_A": aligned_rmsd(opt, ref["atoms"]),
                              "dE_min_kJ": (e - ref["energy"]) * EV_TO_KJ,
                              "gfn2_excess_kJ": (e_qm_at_gp - ref["energy"]) * EV_TO_KJ,
                              "freq_mae_cm": float(np.abs(f_gp - ref["freq"]).mean()),
                              "freq_max_cm": float(np.abs(f_gp - ref["freq"]).max()),
                              "converged": conv and ref["converged"], "bfgs_steps": n})
        for key in ("rmsd_A", "dE_min_kJ", "gfn2_excess_kJ", "freq_mae_cm", "freq_max_cm"):
            vals = np.array([abs(p[key]) for p in per_start])
            row[key] = float(np.median(vals))
            row[key + "_max"] = float(vals.max())
        row["converged"] = f"{sum(p['converged'] for p in per_start)}/{len(per_start)}"
        row.update(nve_drift(opt, calc, args.nve_ps, args.dt, args.temperature, args.seed))
        row["per_start"] = per_start
        rows.append(row)
        print(f"  {cfg.data.system} {method}: done", file=sys.stderr, flush=True)
    return rows, freq


def parity_plot(freqs: dict, system: str, path: pathlib.Path) -> None:
    """GP vs GFN2 harmonic frequencies, all starts, one colour per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    top = 0.0
    for method, marker in zip(freqs, ("o", "x", "s")):
        ref = np.concatenate([r for r, _ in freqs[method]])
        gp = np.concatenate([g for _, g in freqs[method]])
        mae = np.abs(gp - ref).mean()
        ax.scatter(ref, gp, marker=marker, s=14, label=f"{method} (MAE {mae:.1f} cm$^{{-1}}$)", alpha=0.7)
        top = max(top, ref.max(), gp.max())
    ax.plot([0, top * 1.05], [0, top * 1.05], "k-", lw=0.7)
    ax.set(xlabel="GFN2-xTB frequency / cm$^{-1}$", ylabel="GP frequency / cm$^{-1}$",
           title=f"{system}: harmonic frequencies at the minima")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


COLUMNS = [("method", "{}"), ("converged", "{}"), ("rmsd_A", "{:.4f}"), ("dE_min_kJ", "{:.3f}"),
           ("gfn2_excess_kJ", "{:.4f}"), ("freq_mae_cm", "{:.1f}"), ("freq_max_cm", "{:.1f}"),
           ("force_mae_eV_A", "{:.4f}"), ("fd_force_rel_err", "{:.1e}"), ("drift_meV_per_ps", "{:.3f}"),
           ("fluct_meV", "{:.2f}")]


def table(rows: list[dict]) -> str:
    """Plain-text table, medians over starts (|values|)."""
    head = ["system"] + [c for c, _ in COLUMNS]
    lines = [head] + [[r["system"]] + [fmt.format(r[c]) for c, fmt in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", nargs="+", default=["ethanol", "fomepizole"], help="config names under configs/")
    p.add_argument("--methods", nargs="+", default=["DL", "TL"])
    p.add_argument("--runs", type=pathlib.Path, default=ROOT / "runs" / "sim",
                   help="folder with {system}_{dl,tl} outputs of `tlgp train`")
    p.add_argument("--data-dir", help="override the configs' data folder")
    p.add_argument("--starts", type=int, default=4, help="distorted starting conformers (validation frames)")
    p.add_argument("--fmax", type=float, default=1e-3, help="BFGS convergence, eV/A")
    p.add_argument("--steps", type=int, default=1000, help="BFGS step limit")
    p.add_argument("--force-frames", type=int, default=20, help="validation frames for the force comparison")
    p.add_argument("--nve-ps", type=float, default=0.5, help="NVE length, ps")
    p.add_argument("--dt", type=float, default=0.5, help="NVE time step, fs")
    p.add_argument("--temperature", type=float, default=300.0, help="initial Maxwell-Boltzmann temperature, K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments" / "results" / "simulate")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    qm_calc = tblite_calculator(QMSettings())
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.systems:
            t0 = time.perf_counter()
            r, freq = run_system(name, args, qm_calc, pathlib.Path(tmp))
            rows += r
            png = args.out / f"{r[0]['system']}_frequency_parity.png"
            parity_plot(freq, r[0]["system"], png)
            print(f"{r[0]['system']}: {time.perf_counter() - t0:.0f} s, wrote {png}", file=sys.stderr)
    print(table(rows))
    print("medians over starts of |value|; dE_min = E_GP(GP minimum) - E_GFN2(GFN2 minimum); gfn2_excess = "
          "E_GFN2(GP minimum) - E_GFN2(GFN2 minimum); forces vs GFN2 on validation conformers; drift from a "
          f"{args.nve_ps} ps NVE run at dt {args.dt} fs")
    (args.out / "simulate.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                        "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out / 'simulate.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
