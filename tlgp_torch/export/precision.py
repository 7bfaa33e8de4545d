"""How far a float32 potential is from its float64 original: energy and force errors at given geometries."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from tlgp_torch.export.potential import FFLUXPotential

__all__ = ["PrecisionReport", "float32_errors"]


@dataclass(frozen=True)
class PrecisionReport:
    """Errors of the float32 potential against float64 at F frames, in the potential's units (energy_unit,
    energy_unit / length_unit): max |dE| over frames, max |dE| / |E|, max and RMS |dF| over all components,
    max |dF| / max |F|.

    Example:
        >>> from tlgp_torch.export.precision import PrecisionReport
        >>> report = PrecisionReport(frames=8, energy_max_abs=2e-5, energy_max_rel=5e-7, forces_max_abs=3e-6,
        ...                          forces_rms=1e-6, forces_max_rel=2e-6, energy_unit="eV", length_unit="angstrom")
        >>> print(report)
        float32 vs float64 at 8 frames: energy max 2e-05 eV (5e-07 relative), forces max 3e-06 eV/angstrom, RMS 1e-06
        eV/angstrom (2e-06 of the largest force)
    """

    frames: int
    energy_max_abs: float
    energy_max_rel: float
    forces_max_abs: float
    forces_rms: float
    forces_max_rel: float
    energy_unit: str
    length_unit: str

    def __str__(self) -> str:
        e, f = self.energy_unit, f"{self.energy_unit}/{self.length_unit}"
        return (f"float32 vs float64 at {self.frames} frames: energy max {self.energy_max_abs:.3g} {e} "
                f"({self.energy_max_rel:.2g} relative), forces max {self.forces_max_abs:.3g} {f}, "
                f"RMS {self.forces_rms:.3g} {f} ({self.forces_max_rel:.2g} of the largest force)")


def float32_errors(potential: FFLUXPotential, positions: torch.Tensor) -> PrecisionReport:
    """Evaluate a float32 copy of a float64 `potential` (positions [F, N, 3] in its length unit) against it.

    Example:
        >>> import torch
        >>> from tlgp_torch.io.toy import water_stand_in_models
        >>> models = water_stand_in_models()          # O1, H2, H3 x (iqa, q00): small stand-ins
        >>> positions = torch.tensor([[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]],
        ...                          dtype=torch.float64)    # [F=1, N=3, 3] angstrom: O, H, H
        >>> from tlgp_torch.export import FFLUXPotential
        >>> from tlgp_torch.export.precision import float32_errors
        >>> gen = torch.Generator().manual_seed(1)
        >>> frames = positions + 0.05 * torch.randn(4, 3, 3, dtype=torch.float64, generator=gen)   # [4, 3, 3]
        >>> report = float32_errors(FFLUXPotential(models), frames)
        >>> print(report)
        float32 vs float64 at 4 frames: energy max ... eV (... relative), forces max ... eV/angstrom, RMS ...
        >>> # float32 rounds at eps = 1.2e-7 relative; a few roundings per term stay far below 1e-4
        >>> report.energy_max_rel < 1e-4 and report.forces_max_rel < 1e-4
        True
    """
    if potential.x_train.dtype != torch.float64:
        raise ValueError(f"potential must be float64 (the reference), got {potential.x_train.dtype}")
    low = copy.deepcopy(potential).to(torch.float32)
    e64, f64 = potential.energy_and_forces(positions)
    e32, f32 = low.energy_and_forces(positions.to(torch.float32))
    de, df = (e32.double() - e64).abs(), (f32.double() - f64).abs()
    return PrecisionReport(
        frames=int(positions.shape[0]), energy_max_abs=float(de.max()), energy_max_rel=float((de / e64.abs()).max()),
        forces_max_abs=float(df.max()), forces_rms=float(df.pow(2).mean().sqrt()),
        forces_max_rel=float(df.max() / f64.abs().max()), energy_unit=potential.energy_unit,
        length_unit=potential.length_unit)
