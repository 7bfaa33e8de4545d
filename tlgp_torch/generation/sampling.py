"""Conformation sampling on the GFN2 surface: optimisation, Langevin MD and normal-mode sampling."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tlgp_torch.features.elements import MASSES
from tlgp_torch.generation.checks import Topology
from tlgp_torch.generation.dependencies import require
from tlgp_torch.generation.errors import GenerationError
from tlgp_torch.generation.xtb import GFN2, QMSettings, tblite_calculator
from tlgp_torch.units import BOHR_IN_ANGSTROM

__all__ = ["MDSettings", "NormalModes", "hessian", "langevin_md", "normal_mode_samples", "normal_modes", "optimize"]

HARTREE_PER_K = 3.166811563e-06                  # Boltzmann constant in Hartree / K
CM_PER_SQRT_AU = 5140.487                        # sqrt(Ha / (bohr^2 u)) in cm-1
BOHR = BOHR_IN_ANGSTROM


@dataclass(frozen=True)
class MDSettings:
    """Langevin MD: temperature (K), time step and frame stride (fs), equilibration (ps), friction (1/fs)."""

    temperature: float = 300.0
    timestep_fs: float = 0.5
    stride_fs: float = 10.0
    equilibration_ps: float = 2.0
    friction: float = 0.01

    @property
    def stride_steps(self) -> int:
        """MD steps between recorded frames."""
        return max(1, round(self.stride_fs / self.timestep_fs))

    @property
    def equilibration_steps(self) -> int:
        """MD steps before the first recorded frame."""
        return round(1000 * self.equilibration_ps / self.timestep_fs)


DEFAULT_QM = QMSettings()  # frozen: safe to share as a default argument

def _atoms(numbers, positions, charge: int, uhf: int, qm: QMSettings):
    ase = require("ase")
    atoms = ase.Atoms(numbers=list(numbers), positions=np.asarray(positions, dtype=np.float64))
    atoms.calc = tblite_calculator(qm, charge, uhf)
    return atoms


def optimize(numbers, positions, charge: int = 0, uhf: int = 0, qm: QMSettings = DEFAULT_QM,
             fmax: float = 0.005, steps: int = 1000) -> np.ndarray:
    """GFN2-optimised positions (angstrom; ASE BFGS to fmax eV/angstrom); GenerationError if it fails."""
    optimize_mod = require("ase.optimize")
    calculator = require("ase.calculators.calculator")
    atoms = _atoms(numbers, positions, charge, uhf, qm)
    try:
        converged = optimize_mod.BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    except calculator.CalculationFailed as err:
        raise GenerationError(f"GFN2 optimisation of the starting geometry failed: {err}") from None
    if not converged:
        raise GenerationError(f"GFN2 optimisation did not reach fmax {fmax} eV/angstrom in {steps} steps")
    return np.array(atoms.positions)


def langevin_md(numbers, positions, n_frames: int, md: MDSettings, rng: np.random.Generator, topology: Topology,
                charge: int = 0, uhf: int = 0, qm: QMSettings = DEFAULT_QM, label: str = "trajectory",
                progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positions [F, N, 3] angstrom, times [F] fs) every stride_fs after equilibration, on the GFN2 surface.

    Raises GenerationError naming the frame when the molecule fragments or the SCF fails during the run.
    """
    units = require("ase.units")
    langevin = require("ase.md.langevin")
    velocities = require("ase.md.velocitydistribution")
    calculator = require("ase.calculators.calculator")
    constraints = require("ase.constraints")
    atoms = _atoms(numbers, positions, charge, uhf, qm)
    atoms.set_constraint(constraints.FixCom())  # ASE's recommended way to hold the centre of mass
    if hasattr(velocities, "thermalize_momenta"):  # ase >= 3.29
        velocities.thermalize_momenta(atoms, md.temperature, rng=rng)
    else:  # pragma: no cover
        velocities.MaxwellBoltzmannDistribution(atoms, temperature_K=md.temperature, rng=rng)
    velocities.Stationary(atoms)
    velocities.ZeroRotation(atoms)
    dyn = langevin.Langevin(atoms, timestep=md.timestep_fs * units.fs, temperature_K=md.temperature,
                            friction=md.friction / units.fs, fixcm=False, rng=rng)
    out, times = np.empty((n_frames, len(numbers), 3)), np.empty(n_frames)
    frame, step = -1, 0

    def where() -> str:
        return (f"{label}, frame {frame} (MD step {step}, t = {step * md.timestep_fs / 1000:.3f} ps, "
                f"T = {md.temperature:g} K)" if frame >= 0 else f"{label}, equilibration step {step}")

    try:
        dyn.run(md.equilibration_steps)
        step = md.equilibration_steps
        for frame in range(n_frames):
            dyn.run(md.stride_steps)
            step += md.stride_steps
            why = topology.problem(atoms.positions)
            if why is None and not np.isfinite(atoms.get_forces()).all():
                why = "non-finite forces"
            if why is not None:
                raise GenerationError(f"{where()}: {why}; run stopped (lower the temperature or time step, or "
                                      "check the starting geometry)")
            out[frame], times[frame] = atoms.positions, step * md.timestep_fs
            if progress is not None:
                progress(frame + 1)
    except calculator.CalculationFailed as err:
        raise GenerationError(f"{where()}: GFN2 SCF failed during MD ({err}); run stopped") from None
    return out, times


def hessian(gfn2: GFN2, positions, step: float = 0.005) -> np.ndarray:
    """Cartesian Hessian [3N, 3N] in Ha/bohr^2 by central differences of GFN2 gradients (step in bohr)."""
    x0 = np.asarray(positions, dtype=np.float64).reshape(-1)
    h = np.empty((x0.size, x0.size))
    for k in range(x0.size):
        grads = []
        for sign in (1, -1):
            x = x0.copy()
            x[k] += sign * step * BOHR
            grads.append(gfn2(x.reshape(-1, 3))["gradient"].reshape(-1))
        h[k] = (grads[0] - grads[1]) / (2 * step)
    return 0.5 * (h + h.T)


@dataclass
class NormalModes:
    """Vibrational modes: wavenumbers [M] (cm-1), Cartesian vectors [M, N, 3] per unit mass-weighted amplitude."""

    wavenumbers: np.ndarray
    vectors: np.ndarray
    eigenvalues: np.ndarray  # Ha / (bohr^2 u)


def _is_linear(numbers, positions) -> bool:
    m = np.array([MASSES[z] for z in numbers])
    x = np.asarray(positions, dtype=np.float64)
    x = x - (m[:, None] * x).sum(0) / m.sum()
    inertia = np.einsum("i,ij,ik->jk", m, x, x)
    moments = np.linalg.eigvalsh(np.trace(inertia) * np.eye(3) - inertia)
    return moments[0] < 1e-6 * moments[-1]


def normal_modes(numbers, positions, hess: np.ndarray) -> NormalModes:
    """Normal modes of a Hessian (Ha/bohr^2), without the 6 rigid-body modes (5 for a linear molecule)."""
    masses = np.repeat([MASSES[z] for z in numbers], 3)
    inv_sqrt = 1.0 / np.sqrt(masses)
    lam, vec = np.linalg.eigh(hess * inv_sqrt[:, None] * inv_sqrt[None, :])
    n_rigid = 5 if _is_linear(numbers, positions) else 6
    keep = np.sort(np.argsort(np.abs(lam))[n_rigid:])
    lam, vec = lam[keep], vec[:, keep]
    wavenumbers = np.sign(lam) * np.sqrt(np.abs(lam)) * CM_PER_SQRT_AU
    cart = (vec * inv_sqrt[:, None]).T.reshape(len(keep), -1, 3)
    return NormalModes(wavenumbers=wavenumbers, vectors=cart, eigenvalues=lam)


def normal_mode_samples(positions, modes: NormalModes, n: int, temperature: float, rng: np.random.Generator,
                        min_wavenumber: float = 150.0) -> np.ndarray:
    """n geometries [n, N, 3] (angstrom): classical Boltzmann displacements along the modes >= min_wavenumber."""
    active = modes.wavenumbers >= min_wavenumber
    if not active.any():
        raise GenerationError(f"no vibrational mode at or above {min_wavenumber} cm-1 to sample")
    sigma = np.sqrt(HARTREE_PER_K * temperature / modes.eigenvalues[active])  # bohr sqrt(u)
    q = rng.standard_normal((n, int(active.sum()))) * sigma
    disp = np.einsum("fm,mnk->fnk", q, modes.vectors[active]) * BOHR
    return np.asarray(positions, dtype=np.float64)[None] + disp
