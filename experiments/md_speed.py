"""Issue 19: what one MD step costs with the exported potential, side by side with today's path and GFN2-xTB.

    python experiments/md_speed.py                                   # synthetic N=2000 models of both molecules
    python experiments/md_speed.py --models ETHANOL=runs/ethanol/export/ETHANOL --nve-steps 10000
    python experiments/md_speed.py --quick                           # fewer repeats, 1000 NVE steps
    python experiments/md_speed.py --device cuda --geometries .device_data/md_geometries.json --frames 1 8 64 512 4096

For ETHANOL and FOMEPIZOLE (the paper molecules; GFN2 sets, N=2000 training points per model) it times energy
plus forces of F = 1, 8, 64 frames per call on 1 and 2 threads, for:
  today      the broadcast [F, A, M, D] formula (predict_features, every property as before) + autograd forces
  eager      FFLUXPotential.energy_and_forces (stacked models, matmul distances, analytic forces, no charges)
  pt         the TorchScript file's energy_and_forces
  pt2        the torch.export file (program="forward") + autograd forces
  pt2-forces the torch.export file of the analytic program (program="forces")
  xtb        GFN2-xTB single points (tblite, one thread, accuracy 0.01) on the same frames
round-robin (each repeat runs every path once), so that the machine's noise hits all paths alike; medians.
Models: `--models SYSTEM=DIR` reads the FEREBUS .model files of a trained, exported molecule ("given"); otherwise
synthetic models of the same shape (N=2000 points around the GFN2-optimised geometry, random theta and
weights; energy and q00 of every atom, as the issue's potentials): the cost depends on the shapes only. The
ASE NVE run (velocity Verlet, 0.5 fs, 300 K start) needs given models (it is skipped for synthetic ones).
`--device cuda` times eager and pt only (no xtb, no NVE) for F up to 4096: the device step of
experiments/device_checks.sh. Writes results/md_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tblite reads it once, at import: xtb runs on one thread

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tlgp_torch.config import load_config  # noqa: E402
from tlgp_torch.export.potential import FFLUXPotential  # noqa: E402
from tlgp_torch.export.precision import float32_errors  # noqa: E402
from tlgp_torch.export.saving import load_potential, save_potential  # noqa: E402
from tlgp_torch.features import alf_features  # noqa: E402
from tlgp_torch.io.ferebus_model import FerebusModel, read_ferebus_model  # noqa: E402
from tlgp_torch.units import ANGSTROM_TO_BOHR  # noqa: E402

MOLECULES = {"ETHANOL": ("g2:CH3CH2OH", "configs/ethanol.toml"),
             "FOMEPIZOLE": ("smiles:Cc1cn[nH]c1", "configs/fomepizole.toml")}


def equilibrium(system: str, stored: dict) -> tuple[list[int], np.ndarray]:
    """Atomic numbers and GFN2-optimised positions (angstrom) of a paper molecule (as the data generator does),
    from `stored` (a --geometries file: for machines without ase / tblite) where it has them."""
    if system in stored:
        return list(stored[system]["numbers"]), np.asarray(stored[system]["positions"], dtype=np.float64)
    from ase import Atoms
    from ase.optimize import BFGS

    from tlgp_torch.generation.molecules import load_molecule
    from tlgp_torch.generation.xtb import QMSettings, tblite_calculator
    mol = load_molecule(MOLECULES[system][0])
    atoms = Atoms(numbers=mol.numbers, positions=mol.positions)
    atoms.calc = tblite_calculator(QMSettings())
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=200)
    return list(mol.numbers), atoms.positions.copy()


def synthetic_models(system: str, numbers: list[int], eq: np.ndarray, n: int, seed: int) -> list[FerebusModel]:
    """Energy and q00 models of every atom: N training points around eq (0.08 A noise), random theta, weights."""
    cfg = load_config(ROOT / MOLECULES[system][1])
    gen = torch.Generator().manual_seed(seed)
    alf = torch.tensor([[i - 1 for i in cfg.data.alf[a]] for a in cfg.data.atoms])
    pos = torch.as_tensor(eq) + 0.08 * torch.randn(n, len(numbers), 3, generator=gen, dtype=torch.float64)
    x = alf_features(pos * ANGSTROM_TO_BOHR, alf)
    d = x.shape[-1]
    models = []
    for a, atom in enumerate(cfg.data.atoms):
        for prop, scale in (("energy", 1e-3), ("q00", 1e-4)):
            theta = 0.05 + 0.5 * torch.rand(d, generator=gen, dtype=torch.float64)
            w = scale * torch.randn(n, generator=gen, dtype=torch.float64)
            models.append(FerebusModel(system=system, atom=atom, property=prop, alf=tuple(cfg.data.alf[atom]),
                                       n_atoms=len(numbers), kernel_type="rbf-cyclic", theta=theta, mean=-1.0,
                                       x=x[:, a], y=torch.zeros(n, dtype=torch.float64), weights=w))
    return models


def today(potential: FFLUXPotential):
    """Today's (main before issue 19) evaluation: every property by the broadcast formula, forces by autograd."""
    def run(pos: torch.Tensor):
        p = pos.detach().requires_grad_(True)
        pred = potential.predict_features(potential.features(p))  # [F, P, A]
        energy = pred[:, 0].sum(-1) * potential.energy_scale
        (grad,) = torch.autograd.grad(energy.sum(), p)
        return energy.detach(), -grad
    return run


def autograd_forces(module):
    def run(pos: torch.Tensor):
        p = pos.detach().requires_grad_(True)
        energy = module(p)[0]
        (grad,) = torch.autograd.grad(energy.sum(), p)
        return energy.detach(), -grad
    return run


def xtb_path(numbers: list[int]):
    from tlgp_torch.generation.xtb import GFN2
    calc = GFN2(numbers)

    def run(pos: torch.Tensor):
        for frame in pos.numpy():
            calc(frame)
    return run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_round_robin(paths: dict, pos: torch.Tensor, repeats: int, device: torch.device,
                     budget_s: float) -> dict[str, float]:
    """Median ms per frame of each path: warm-up calls (3; TorchScript optimises after its profiling runs; 1 for
    today and xtb), then `repeats` rounds (fewer for a path whose calls exceed budget_s / repeats)."""
    times: dict[str, list[float]] = {k: [] for k in paths}
    cost = {}
    for name, fn in paths.items():
        for _ in range(1 if name in ("today", "xtb") else 3):
            t0 = time.perf_counter()
            fn(pos)
            sync(device)
            cost[name] = time.perf_counter() - t0
    for r in range(repeats):
        for name, fn in paths.items():
            if r > 0 and cost[name] * (r + 1) > budget_s:
                continue  # a slow path (today's at F=64) gets fewer repeats, never fewer than one
            t0 = time.perf_counter()
            fn(pos)
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 / pos.shape[0] for k, v in times.items()}


def nve(potential, numbers: list[int], eq: np.ndarray, steps: int, seed: int) -> dict:
    """ASE velocity Verlet (0.5 fs) from eq with 300 K Maxwell-Boltzmann velocities: wall time and drift.
    potential: an FFLUXPotential or a saved file (the TorchScript .pt: the MD path)."""
    from ase import Atoms, units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet

    from tlgp_torch.export.ase_calculator import FFLUXCalculator
    atoms = Atoms(numbers=numbers, positions=eq)
    atoms.calc = FFLUXCalculator(potential)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    total = []
    dyn.attach(lambda: total.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()), interval=10)
    t0 = time.perf_counter()
    dyn.run(steps)
    wall = time.perf_counter() - t0
    e = np.asarray(total)
    n = len(numbers)
    return {"steps": steps, "timestep_fs": 0.5, "wall_s": wall, "ms_per_step": wall * 1e3 / steps,
            "drift_meV_per_atom": float(e[-1] - e[0]) * 1e3 / n,
            "max_deviation_meV_per_atom": float(np.abs(e - e[0]).max()) * 1e3 / n,
            "final_temperature_K": float(atoms.get_temperature()), "finite": bool(np.isfinite(e).all())}


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="+", default=list(MOLECULES), choices=list(MOLECULES))
    ap.add_argument("--models", nargs="*", default=[], metavar="SYSTEM=DIR", help="trained .model files")
    ap.add_argument("--frames", nargs="+", type=int, default=[1, 8, 64])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per (path, cell) at most, after one call")
    ap.add_argument("--n-points", type=int, default=2000, help="training points of synthetic models")
    ap.add_argument("--nve-steps", type=int, default=10000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--today-max-frames", type=int, default=64, help="largest F for today's (slow) path")
    ap.add_argument("--quick", action="store_true", help="3 repeats, 1000 NVE steps")
    ap.add_argument("--geometries", help="JSON of the molecules' equilibrium geometries (from --save-geometries)")
    ap.add_argument("--save-geometries", help="optimise the molecules, write their geometries here and stop")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/md_speed.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.nve_steps = 3, min(args.nve_steps, 1000)
    stored = json.loads(pathlib.Path(args.geometries).read_text()) if args.geometries else {}
    if args.save_geometries:
        geo = {}
        for system in args.systems:
            numbers, eq = equilibrium(system, stored)
            geo[system] = {"numbers": numbers, "positions": eq.tolist()}
        pathlib.Path(args.save_geometries).write_text(json.dumps(geo) + "\n")
        print(f"wrote {args.save_geometries}")
        return 0
    device = torch.device(args.device)
    on_cpu = device.type == "cpu"
    given = dict(item.split("=", 1) for item in args.models)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
            "commit": commit.strip(), "machine": machine(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    print(" | ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    rows, extra = [], {}
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="md_speed_"))
    for system in args.systems:
        numbers, eq = equilibrium(system, stored)
        if system in given:
            models, kind = [read_ferebus_model(p) for p in sorted(pathlib.Path(given[system]).glob("*.model"))], \
                "given"
        else:
            models, kind = synthetic_models(system, numbers, eq, args.n_points, args.seed), "synthetic"
        keep = [m for m in models if m.property in ("energy", "iqa", "q00")]
        pot = FFLUXPotential(keep).to(device)
        n_models = len(keep)
        gen = np.random.default_rng(args.seed + 1)
        frames = torch.as_tensor(eq + 0.05 * gen.standard_normal((max(args.frames), len(numbers), 3)))
        frames = frames.to(device)
        paths = {"today": today(pot), "eager": pot.energy_and_forces}
        pt = save_potential(pot.cpu(), tmp / f"{system}.pt")
        scripted = load_potential(pt, map_location=device)[0]
        pot.to(device)
        paths["pt"] = scripted.energy_and_forces
        if on_cpu:
            paths["pt2"] = autograd_forces(load_potential(save_potential(pot, tmp / f"{system}.pt2"))[0])
            forces_program = load_potential(save_potential(pot, tmp / f"{system}.f.pt2", program="forces"))[0]
            paths["pt2-forces"] = lambda p, m=forces_program: m(p)[:2]
            paths["xtb"] = xtb_path(numbers)
        e_ref, f_ref = today(pot)(frames[:8])
        e_new, f_new = pot.energy_and_forces(frames[:8])
        agree = {"energy_max_rel": float(((e_new - e_ref) / e_ref).abs().max()),
                 "forces_max_rel": float((f_new - f_ref).abs().max() / f_ref.abs().max())}
        precision = float32_errors(pot.cpu(), frames.cpu()) if on_cpu else None
        pot.to(device)
        extra[system] = {"models": kind, "n_models": n_models, "n_atoms": len(numbers),
                         "n_points": int(keep[0].n_points), "fast_vs_today": agree,
                         "float32": None if precision is None else precision.__dict__}
        print(f"\n{system}: {n_models} {kind} models, N={keep[0].n_points}, {len(numbers)} atoms; fast vs today at "
              f"8 frames: energy {agree['energy_max_rel']:.1e} relative, forces {agree['forces_max_rel']:.1e} of max"
              + (f"\n  {precision}" if precision else ""), flush=True)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for f in args.frames:
                use = {k: v for k, v in paths.items()
                       if not (k == "today" and f > args.today_max_frames) and not (k == "xtb" and threads != 1)}
                ms = time_round_robin(use, frames[:f], args.repeats, device, args.budget)
                for path, value in ms.items():
                    rows.append({"system": system, "atoms": len(numbers), "path": path, "threads": threads,
                                 "frames": f, "ms_per_frame": value})
                print(f"  threads {threads} F {f:5d}: " + "  ".join(f"{k} {v:.3f}" for k, v in ms.items()), flush=True)
        if on_cpu and system == "ETHANOL" and args.nve_steps > 0:
            torch.set_num_threads(1)
            if kind == "given":
                extra[system]["nve"] = nve(pt, numbers, eq, args.nve_steps, args.seed)  # the TorchScript file
                print(f"  NVE: {extra[system]['nve']}", flush=True)
            else:
                print("  NVE skipped: synthetic models are not a potential energy surface (pass --models)")
    print_table(rows, args.threads[0])
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"info": info, "rows": rows, "systems": extra}, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


def print_table(rows: list[dict], threads1: int) -> None:
    """One markdown table: ms per frame, the speed-up over today's path and the ratio to xtb (same F, threads);
    then the issue's criteria."""
    def get(system, path, threads, f):
        return next((r["ms_per_frame"] for r in rows if (r["system"], r["path"], r["threads"], r["frames"]) ==
                     (system, path, threads, f)), None)
    print("\n| system | path | threads | F | ms/frame | speed-up vs today | / xtb (1 thread, same frames) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        t = get(r["system"], "today", r["threads"], r["frames"])
        x = get(r["system"], "xtb", 1, r["frames"])
        print(f"| {r['system']} | {r['path']} | {r['threads']} | {r['frames']} | {r['ms_per_frame']:.3f} | "
              + (f"{t / r['ms_per_frame']:.1f}x" if t else "-") + " | "
              + (f"{r['ms_per_frame'] / x:.2f}" if x else "-") + " |")
    print("\nissue 19 criteria (1 thread):")
    for path in ("eager", "pt", "pt2-forces", "pt2"):
        e1, e64 = get("ETHANOL", path, threads1, 1), get("ETHANOL", path, threads1, 64)
        x1 = get("ETHANOL", "xtb", 1, 1)
        fo1 = get("FOMEPIZOLE", path, threads1, 1)
        if e1 is None:
            continue
        line = f"  {path}: ETHANOL F=1 {e1:.3f} ms (<= 2)"
        if e64 is not None:
            line += f", F=64 {e64:.3f} ms/frame (<= 0.5), F=64/F=1 {e64 / e1:.2f} (<= 0.25)"
        if x1:
            line += f", F=1 / xtb {e1 / x1:.2f} (<= 1)"
        if fo1:
            line += f", FOMEPIZOLE/ETHANOL per atom {fo1 / 12 / (e1 / 9):.2f} (<= 2)"
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
