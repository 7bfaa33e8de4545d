"""FFLUXPotential: a molecule's FFLUX GP models as one plain torch module (positions -> energies, charges)."""
# no `from __future__ import annotations`: TorchScript reads the class annotations below as types

from typing import Sequence

import torch
from torch import nn

from tlgp_torch.data.dataset import cyclic_feature_mask
from tlgp_torch.features.alf_features import (
    frame_features,
    frame_geometry,
    geometry_features,
    geometry_vjp,
    non_frame_atoms,
)
from tlgp_torch.features.elements import parse_atom_name
from tlgp_torch.io.ferebus_model import FerebusModel
from tlgp_torch.kernels.evaluation import kernel_sums, kernel_sums_and_grad, matmul_layout, weight_columns
from tlgp_torch.kernels.formula import direct_sq_dist
from tlgp_torch.units import ANGSTROM_TO_BOHR, HARTREE_TO_EV

__all__ = ["CHARGE_PROPERTY", "ENERGY_PROPERTIES", "FFLUXPotential", "energy_and_forces"]

ENERGY_PROPERTIES = ("iqa", "energy")  # FFLUX IQA energy, or the GFN2 atom-resolved stand-in (Hartree)
CHARGE_PROPERTY = "q00"                # atomic charge (e)
LENGTH_UNITS = {"angstrom": ANGSTROM_TO_BOHR, "bohr": 1.0}       # -> bohr
EXACT_BELOW = 1e-10  # rounding bound of the matmul form allowed per atom, times max(1, |mean|) in model units
ENERGY_UNITS = {"eV": HARTREE_TO_EV, "hartree": 1.0}              # hartree ->


class FFLUXPotential(nn.Module):
    """Per-atom FFLUX GP models of one molecule: forward(positions [F, N, 3]) -> (energy [F], energies [F, N],
    charges [F, N]); evaluate / energy_and_forces add analytic forces [F, N, 3].

    Each atom's energy is E_a(x) = mu_a + sum_m w_am exp(-sum_d theta_ad delta_amd^2) at its ALF features x
    (bohr, radians; delta wrapped on the periodic features), the total energy their sum. The fast path stacks
    the models of one property (all atoms: A models, zero-padded to the largest N) into batched tensors:
    distances by one batched matmul of centred, theta-scaled features, and forces
    F = -sum_a J_a^T dE_a/dx_a, with dE/dx = sum_m w_m k_m (-2 theta (x - x_m)) from a second matmul and
    J_a^T g from geometry_vjp (no autograd graph). The matmul distance rounds at about eps (|qs|^2 + |xs|^2),
    which large weights (nearly noise-free models) carry into E: each call bounds that rounding per query,
    4 eps sum_m |w_m| k_m (|qs|^2 + |xs_m|^2), and recomputes by exact differences (the reference formula) where
    it exceeds 1e-10 max(1, |mean|) in model units (float64; float32 mode has no fallback). Charges (q00) only
    where asked (`evaluate`) or in forward. predict_features keeps the broadcast formula as the reference.

    Everything is a buffer, so the module holds no gpytorch objects and exports by torch.jit.script and
    torch.export. Units are fixed at construction: positions in `length_unit` ("angstrom" or "bohr"), energies
    in `energy_unit` ("eV" or "hartree"), charges in e; `dtype` float64 (default) or float32 (inference mode:
    see docs/deployment.md for its measured errors). Atomic energies are the model predictions (IQA, or GFN2
    atom-resolved energies). Charges are NaN where the module has no q00 models.

    Example:
        >>> import torch
        >>> from tlgp_torch.io.toy import water_stand_in_models
        >>> models = water_stand_in_models()          # O1, H2, H3 x (iqa, q00): small stand-ins
        >>> positions = torch.tensor([[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]],
        ...                          dtype=torch.float64)    # [F=1, N=3, 3] angstrom: O, H, H
        >>> pot = FFLUXPotential(models)                  # or FFLUXPotential.from_files(paths of .model files)
        >>> energy, forces = pot.energy_and_forces(positions)         # [F], [F, N, 3]; eV, eV/angstrom
        >>> energy.shape, forces.shape
        (torch.Size([1]), torch.Size([1, 3, 3]))
        >>> energy, forces, energies, charges = pot.evaluate(positions, True)
        >>> torch.allclose(energy, energies.sum(-1))                  # E = sum of the atomic energies (eV)
        True
        >>> charges.shape, pot.properties, pot.atom_names
        (torch.Size([1, 3]), ['iqa', 'q00'], ['O1', 'H2', 'H3'])
        >>> # ALF features are invariant to translation: the forces sum to 0 (up to rounding, ~1e-16 eV/angstrom)
        >>> bool(forces.sum(1).abs().max() < 1e-12)
        True
        >>> # the analytic forces are -dE/dpositions: autograd through forward agrees to rounding
        >>> pos = positions.clone().requires_grad_(True)
        >>> (grad,) = torch.autograd.grad(pot(pos)[0].sum(), pos)
        >>> torch.allclose(forces, -grad, rtol=1e-10, atol=1e-12)
        True
    """

    length_unit: str
    energy_unit: str
    properties: list[str]
    atom_names: list[str]
    charge_index: int
    complete: bool
    exporting: bool  # True while torch.export traces: the wrap term without a data-dependent branch

    def __init__(self, models: Sequence[FerebusModel], length_unit: str = "angstrom", energy_unit: str = "eV",
                 allow_partial: bool = False, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
        if length_unit not in LENGTH_UNITS or energy_unit not in ENERGY_UNITS:
            raise ValueError(f"length_unit must be one of {sorted(LENGTH_UNITS)} and energy_unit one of "
                             f"{sorted(ENERGY_UNITS)}, got {length_unit!r}, {energy_unit!r}")
        if not models:
            raise ValueError("FFLUXPotential needs at least one model")
        self.length_unit, self.energy_unit = length_unit, energy_unit
        self.length_scale = float(LENGTH_UNITS[length_unit])
        self.energy_scale = float(ENERGY_UNITS[energy_unit])
        by_key = _index_models(models)
        n_atoms = _one({m.n_atoms for m in models}, "number_of_atoms")
        d = _one({m.n_features for m in models}, "number_of_features")
        if d != 3 * n_atoms - 6:
            raise ValueError(f"{d} features for {n_atoms} atoms: FFLUX models use 3N-6 ALF features")
        atoms = sorted({atom for atom, _ in by_key}, key=lambda a: parse_atom_name(a)[1])
        props = sorted({p for _, p in by_key}, key=_property_rank)
        energy = props[0] if props[0] in ENERGY_PROPERTIES else None
        missing = [(a, p) for a in atoms for p in props if (a, p) not in by_key]
        if missing:
            raise ValueError("every modelled atom needs a model of every property; missing " +
                             ", ".join(f"{a} {p}" for a, p in missing))
        index = [parse_atom_name(a)[1] - 1 for a in atoms]
        if max(index) >= n_atoms:
            raise ValueError(f"atom {atoms[index.index(max(index))]} is outside the molecule's {n_atoms} atoms")
        self.complete = energy is not None and len(atoms) == n_atoms
        if not self.complete and not allow_partial:
            raise ValueError(f"a potential needs an energy model ({' or '.join(ENERGY_PROPERTIES)}) of each of the "
                             f"{n_atoms} atoms; got {', '.join(f'{a} {p}' for a, p in sorted(by_key))} "
                             "(allow_partial=True gives predict_features only)")
        alf = {}
        for (atom, prop), m in by_key.items():
            if alf.setdefault(atom, m.alf) != m.alf:
                raise ValueError(f"{atom}: the {prop} model's ALF {m.alf} differs from {alf[atom]}")
        self.properties, self.atom_names = list(props), list(atoms)
        self.charge_index = props.index(CHARGE_PROPERTY) if CHARGE_PROPERTY in props else -1
        numbers = torch.zeros(n_atoms, dtype=torch.long)
        numbers[index] = torch.tensor([parse_atom_name(a)[0] for a in atoms])
        alf_t = torch.tensor([[i - 1 for i in alf[a]] for a in atoms], dtype=torch.long)
        m_max = max(m.n_points for m in models)
        shape = (len(props), len(atoms))
        f64 = torch.float64
        x, w = torch.zeros(*shape, m_max, d, dtype=f64), torch.zeros(*shape, m_max, dtype=f64)
        theta, wrap = torch.zeros(*shape, d, dtype=f64), torch.zeros(*shape, d, dtype=torch.bool)
        mean, prefactor = torch.zeros(shape, dtype=f64), torch.zeros(shape, dtype=f64)
        for p, prop in enumerate(props):
            for a, atom in enumerate(atoms):
                m = by_key[(atom, prop)]
                n = m.n_points  # shorter sets are zero-padded: zero weights add nothing
                x[p, a, :n], w[p, a, :n], theta[p, a] = m.x.to(f64), m.weights.to(f64), m.theta.to(f64)
                mean[p, a], prefactor[p, a] = m.mean, m.prefactor
                if m.kernel_type == "rbf-cyclic":
                    wrap[p, a] = cyclic_feature_mask(d)
        self.register_buffer("numbers", numbers)
        self.register_buffer("atoms", torch.tensor(index, dtype=torch.long))
        self.register_buffer("alf", alf_t)
        self.register_buffer("others", non_frame_atoms(alf_t, n_atoms) if n_atoms > 3 else alf_t[:, :0])
        for name, value in (("x_train", x), ("weights", w), ("theta", theta), ("wrap", wrap), ("mean", mean),
                            ("prefactor", prefactor)):
            self.register_buffer(name, value)
        # the fast path: per property, the A models as one batch in matmul form (weights carry the prefactor)
        angle = torch.zeros(d, dtype=torch.bool)
        angle[2] = True  # the angle XCP is in [0, pi]: never wraps against training angles in [0, pi]
        lay = matmul_layout(x.flatten(0, 1), theta.flatten(0, 1), wrap.flatten(0, 1), angle)
        self.exporting = False
        self.register_buffer("cyc", lay.pop("cyc"))
        weights = weight_columns((prefactor.unsqueeze(-1) * w).flatten(0, 1), lay["xs_sq"])
        lay["xs_t"] = lay.pop("xs").transpose(1, 2).contiguous()  # [B, D, M]: both matmuls read it contiguously
        for name, value in lay.items():
            self.register_buffer("fast_" + name, value.unflatten(0, shape))
        self.register_buffer("fast_weights", weights.unflatten(0, shape))
        # a call whose matmul rounding bound exceeds this (model units) is recomputed by exact differences
        self.register_buffer("fast_limit", EXACT_BELOW * mean.abs().clamp_min(1.0))
        if dtype != f64:
            self.to(dtype)

    @classmethod
    def from_files(cls, paths: Sequence, **kwargs) -> "FFLUXPotential":
        """Potential from FEREBUS .model files (FEREBUS's own or tlgp_torch's); kwargs as the constructor."""
        from tlgp_torch.io.ferebus_model import read_ferebus_model
        return cls([read_ferebus_model(p) for p in paths], **kwargs)

    @property
    def n_atoms(self) -> int:
        """Number of atoms of the molecule."""
        return int(self.numbers.numel())

    def features(self, positions: torch.Tensor) -> torch.Tensor:
        """ALF features [F, A, 3N-6] (bohr, radians) of the modelled atoms at positions [F, N, 3]."""
        bohr = self._check(positions).to(self.x_train.dtype) * self.length_scale
        return frame_features(bohr, self.alf, self.others)

    def _check(self, positions: torch.Tensor) -> torch.Tensor:
        n = self.numbers.shape[0]
        if positions.dim() != 3 or positions.shape[1] != n or positions.shape[2] != 3:
            hint = " (one frame: positions.unsqueeze(0))" if positions.dim() == 2 else ""
            raise ValueError("positions must be [F, N, 3] with N = " + str(n) + " atoms (" +
                             ", ".join(self.atom_names) + ")" + hint + ", got " + str(list(positions.shape)))
        return positions

    def _sums(self, q: torch.Tensor, p: int) -> torch.Tensor:
        """Predictions [A, F] of property p at features q [A, F, D] (fast path, differentiable)."""
        return self.mean[p].unsqueeze(-1) + kernel_sums(
            q, self.fast_centre[p], self.fast_sqrt_theta[p], self.fast_xs_t[p].transpose(1, 2), self.fast_xs_sq[p],
            self.fast_weights[p], self.cyc, self.fast_x_cyc[p], self.fast_theta_cyc[p], self.fast_shift[p],
            self.fast_period[p], self.fast_win_lo[p], self.fast_win_hi[p], self._exact_x(p), self.fast_limit[p],
            not self.exporting)

    def _exact_x(self, p: int) -> torch.Tensor | None:
        """Training features of property p for the exact fallback; None in float32 (its rounding is the mode's)."""
        return self.fast_x[p] if self.fast_x.dtype == torch.float64 else None

    def _per_atom(self, pred: torch.Tensor) -> torch.Tensor:
        """[A, F] predictions of the modelled atoms -> [F, N]."""
        out = torch.zeros(pred.shape[1], self.numbers.shape[0], dtype=pred.dtype, device=pred.device)
        return out.index_copy(1, self.atoms, pred.t())

    def predict_features(self, features: torch.Tensor) -> torch.Tensor:
        """Model predictions [F, P, A] (model units: Hartree, e, ...) at features [F, A, D]."""
        out = []
        for p in range(len(self.properties)):
            dist = direct_sq_dist(features.transpose(0, 1), self.x_train[p], self.theta[p], self.wrap[p])  # [A, F, M]
            k = torch.exp(-dist.transpose(0, 1))  # [F, A, M]
            out.append(self.mean[p] + self.prefactor[p] * (k * self.weights[p]).sum(-1))
        return torch.stack(out, dim=1)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total energy [F], atomic energies [F, N], charges [F, N]) at positions [F, N, 3].

        The fast path, differentiable by autograd (for forces `evaluate` / `energy_and_forces` are faster).
        """
        if not self.complete:
            raise RuntimeError("this potential lacks energy models of some atoms: use predict_features")
        q = self.features(positions).transpose(0, 1)  # [A, F, D]
        energies = self._per_atom(self._sums(q, 0)) * self.energy_scale
        charges = torch.full_like(energies, float("nan"))
        if self.charge_index >= 0:
            charges = self._per_atom(self._sums(q, self.charge_index))
        return energies.sum(-1), energies, charges

    @torch.jit.export
    def evaluate(self, positions: torch.Tensor, charges: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(energy [F], forces [F, N, 3] = -dE/dpositions, atomic energies [F, N], charges [F, N]) at positions
        [F, N, 3], in the module's units; forces analytic (no autograd), charges computed only if `charges`
        (else NaN)."""
        if not self.complete:
            raise RuntimeError("this potential lacks energy models of some atoms: use predict_features")
        bohr = self._check(positions).detach().to(self.x_train.dtype) * self.length_scale
        geo = frame_geometry(bohr, self.alf, self.others)  # shared by the features and their forces
        q = geometry_features(geo).transpose(0, 1)  # [A, F, D]
        e, g = kernel_sums_and_grad(q, self.fast_centre[0], self.fast_sqrt_theta[0],
                                    self.fast_xs_t[0].transpose(1, 2),
                                    self.fast_xs_sq[0], self.fast_weights[0], self.cyc, self.fast_x_cyc[0],
                                    self.fast_theta_cyc[0], self.fast_shift[0], self.fast_period[0],
                                    self.fast_win_lo[0], self.fast_win_hi[0], self._exact_x(0), self.fast_limit[0],
                                    not self.exporting)
        energies = self._per_atom(e + self.mean[0].unsqueeze(-1)) * self.energy_scale
        grad = geometry_vjp(geo, bohr, self.alf, self.others, g.transpose(0, 1))  # dE/dbohr [F, N, 3]
        forces = grad * (-self.energy_scale * self.length_scale)
        q00 = torch.full_like(energies, float("nan"))
        if charges and self.charge_index >= 0:
            q00 = self._per_atom(self._sums(q, self.charge_index))
        return energies.sum(-1), forces, energies, q00

    @torch.jit.export
    def energy_and_forces(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(energy [F], forces [F, N, 3] = -dE/dpositions) in the module's units: `evaluate` without charges."""
        out = self.evaluate(positions, False)
        return out[0], out[1]


def energy_and_forces(potential, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(energy [F], forces [F, N, 3]) of any module with the FFLUXPotential forward (eager, scripted, exported):
    its analytic `energy_and_forces` where it has one (eager, TorchScript), else autograd through forward.

    Forces are F = -dE/dpositions, in the module's energy unit per length unit (eV/angstrom by default).

    Args:
        potential: an FFLUXPotential, its TorchScript (torch.jit.load) or torch.export program (.module()), or
            any module whose forward(positions) returns (energy [F], ...).
        positions: [F, N, 3] atomic positions of F frames, in the potential's length unit.

    Returns:
        (energy [F], forces [F, N, 3]), detached.

    Example:
        >>> import torch
        >>> from tlgp_torch.io.toy import water_stand_in_models
        >>> models = water_stand_in_models()          # O1, H2, H3 x (iqa, q00): small stand-ins
        >>> positions = torch.tensor([[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]],
        ...                          dtype=torch.float64)    # [F=1, N=3, 3] angstrom: O, H, H
        >>> from tlgp_torch.export import FFLUXPotential, energy_and_forces
        >>> pot = FFLUXPotential(models)
        >>> class ForwardOnly(torch.nn.Module):            # like a torch.export program: forward only
        ...     def __init__(self, pot):
        ...         super().__init__()
        ...         self.pot = pot
        ...     def forward(self, positions):
        ...         return self.pot(positions)
        >>> e_auto, f_auto = energy_and_forces(ForwardOnly(pot), positions)     # by autograd
        >>> e, f = energy_and_forces(pot, positions)                            # analytic
        >>> f.shape, torch.allclose(e, e_auto), torch.allclose(f, f_auto, rtol=1e-10, atol=1e-12)
        (torch.Size([1, 3, 3]), True, True)
    """
    if hasattr(potential, "energy_and_forces"):
        return potential.energy_and_forces(positions)
    pos = positions.detach().to(torch.float64).requires_grad_(True)
    energy = potential(pos)[0]
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    return energy.detach(), -grad


def _index_models(models: Sequence[FerebusModel]) -> dict[tuple[str, str], FerebusModel]:
    systems = {m.system.replace("_", "").upper() for m in models}
    if len(systems) > 1:
        raise ValueError(f"models of several systems: {sorted(systems)}; one potential is one molecule")
    out: dict[tuple[str, str], FerebusModel] = {}
    for m in models:
        key = (m.atom, m.property)
        if key in out:
            raise ValueError(f"two models of {m.atom} {m.property}")
        out[key] = m
    return out


def _property_rank(prop: str) -> tuple[int, str]:
    """Energy first, then q00, then the rest alphabetically."""
    if prop in ENERGY_PROPERTIES:
        return (0, prop)
    return (1, prop) if prop == CHARGE_PROPERTY else (2, prop)


def _one(values: set, what: str):
    if len(values) != 1:
        raise ValueError(f"the models disagree on {what}: {sorted(values)}")
    return values.pop()
