"""GFN2-xTB single points through tblite: atom-resolved energies (Hartree), Mulliken charges, gradients."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tlgp_torch.generation.dependencies import require
from tlgp_torch.units import ANGSTROM_TO_BOHR

__all__ = ["GFN2", "QMSettings", "SCFError", "tblite_calculator"]


class SCFError(RuntimeError):
    """tblite failed on one geometry (SCF not converged, or a non-finite result).

    Example:
        >>> from tlgp_torch.generation import SCFError
        >>> issubclass(SCFError, RuntimeError)
        True
    """


@dataclass(frozen=True)
class QMSettings:
    """tblite settings; accuracy 0.01 makes atom-resolved energies reproducible to < 3e-7 Ha between runs.

    Attributes:
        method: "GFN2-xTB", "GFN1-xTB" or "IPEA1-xTB".
        accuracy: tblite's accuracy (smaller is tighter).
        max_iterations: SCF iteration cap.
        electronic_temperature: K.

    Example:
        >>> from tlgp_torch.generation import QMSettings
        >>> QMSettings().method
        'GFN2-xTB'
    """

    method: str = "GFN2-xTB"              # tblite method: "GFN2-xTB", "GFN1-xTB" or "IPEA1-xTB"
    accuracy: float = 0.01                # tblite accuracy (smaller is tighter)
    max_iterations: int = 250             # SCC iterations at most
    electronic_temperature: float = 300.0  # K (Fermi smearing)


def tblite_calculator(qm: QMSettings, charge: int = 0, uhf: int = 0):
    """tblite's ASE calculator with these settings (verbosity 0), for MD and optimisation.

    Example:
        >>> import ase
        >>> atoms = ase.Atoms("OH2", positions=[[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]])
        >>> atoms.calc = tblite_calculator(QMSettings())
        >>> round(float(atoms.get_potential_energy()), 1)             # eV (-5.07 Ha)
        -138.0
    """
    tblite_ase = require("tblite.ase")
    return tblite_ase.TBLite(method=qm.method, charge=charge, multiplicity=uhf + 1, accuracy=qm.accuracy,
                             max_iterations=qm.max_iterations, electronic_temperature=qm.electronic_temperature,
                             verbosity=0)


class GFN2:
    """Fresh-start single points (no wavefunction reuse, so a label does not depend on the previous frame).

    Calling it with positions [N, 3] in angstrom gives a dict: energy (Ha), energies [N] (atom-resolved, Ha;
    they sum to the energy), charges [N] (Mulliken, e) and gradient [N, 3] (Ha/bohr). Needs tblite.

    Args:
        numbers: N atomic numbers.
        charge: total charge (e).
        uhf: number of unpaired electrons.
        qm: tblite settings.

    Raises:
        SCFError: (on call) when the SCF does not converge or the result is not finite.

    Example:
        >>> import numpy as np
        >>> from tlgp_torch.generation import GFN2
        >>> positions = np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]])   # water, angstrom
        >>> labels = GFN2([8, 1, 1])(positions)
        >>> round(labels["energy"], 2), labels["energies"].shape, labels["gradient"].shape
        (-5.07, (3,), (3, 3))
        >>> bool(abs(labels["energies"].sum() - labels["energy"]) < 1e-8)
        True
    """

    def __init__(self, numbers, charge: int = 0, uhf: int = 0, qm: QMSettings = QMSettings()) -> None:
        self.interface = require("tblite.interface")
        self.numbers = np.asarray(numbers, dtype=np.int32)
        self.charge, self.uhf, self.qm = charge, uhf, qm
        self._calc = None

    def _calculator(self, bohr: np.ndarray):
        if self._calc is None:
            calc = self.interface.Calculator(self.qm.method, self.numbers, bohr, charge=float(self.charge),
                                             uhf=self.uhf)
            calc.set("verbosity", 0)
            calc.set("accuracy", self.qm.accuracy)
            calc.set("max-iter", self.qm.max_iterations)
            calc.set("temperature", self.qm.electronic_temperature * 3.166808578545117e-06)  # K -> Hartree
            self._calc = calc
        else:
            self._calc.update(bohr)
        return self._calc

    def __call__(self, positions) -> dict[str, np.ndarray | float]:
        """Energy, atomic energies [N] (Ha), Mulliken charges [N] (e), gradient [N, 3] (Ha/bohr); positions in
        angstrom [N, 3]."""
        bohr = np.ascontiguousarray(np.asarray(positions, dtype=np.float64) * ANGSTROM_TO_BOHR)
        try:
            res = self._calculator(bohr).singlepoint()
        except RuntimeError as err:  # TBLiteRuntimeError: SCF not converged, ...
            self._calc = None
            raise SCFError(str(err).strip()) from None
        out = {"energy": float(res.get("energy")), "energies": np.array(res.get("energies")),
               "charges": np.array(res.get("charges")), "gradient": np.array(res.get("gradient"))}
        if not all(np.isfinite(v).all() for v in out.values()):
            raise SCFError("non-finite energy, charges or gradient")
        return out
