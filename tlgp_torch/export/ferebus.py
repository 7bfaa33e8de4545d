"""TrainResult -> FerebusModel (write it with tlgp_torch.data.write_ferebus_model)."""
from __future__ import annotations

from typing import Sequence

import torch

from tlgp_torch.data.dataset import cyclic_feature_mask
from tlgp_torch.evaluation.metrics import property_unit
from tlgp_torch.io.ferebus_model import FerebusModel
from tlgp_torch.training.result import TrainResult

__all__ = ["to_ferebus_model"]


def _units_y(prop: str) -> str:
    unit = property_unit(prop)[1]
    return "Ha" if unit == "kJ/mol" else unit or "au"


def to_ferebus_model(result: TrainResult, system: str, atom: str, prop: str, alf: Sequence[int], n_atoms: int,
                     kernel_type: str | None = None) -> FerebusModel:
    """FFLUX model with the result's theta, weights and mean (prediction = mean + sum_i w_i k(x, x_i)).

    A result in the GPyTorch convention exports exactly too: theta = 1 / (2 l^2), and its weights already
    include the outputscale (nugget = noise / outputscale), so the predictive mean is unchanged.

    Args:
        result: a successful fit (its weights are computed if needed).
        system: system name (one word).
        atom: atom name, e.g. "O1".
        prop: property name, e.g. "iqa" (sets units.y: Ha for energies).
        alf: 1-based (C, X, P) of the atom's ALF.
        n_atoms: atoms in the molecule.
        kernel_type: "rbf" or "rbf-cyclic" (default: rbf-cyclic when the result has periodic features).

    Returns:
        A FerebusModel (write it with tlgp_torch.io.write_ferebus_model).

    Raises:
        ValueError: when the result's periodic mask is not FFLUX's (features 3, 6, 9, ...).

    Example:
        >>> import torch
        >>> from tlgp_torch import DirectTrainer
        >>> from tlgp_torch.export import to_ferebus_model
        >>> x = torch.rand(30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> result = DirectTrainer(restarts=1, seed=0, device="cpu").fit((x, torch.sin(3 * x).sum(-1)))
        >>> model = to_ferebus_model(result, "WATER", "O1", "iqa", alf=(1, 2, 3), n_atoms=3)
        >>> model.kernel_type       # an (x, y) pair has no periodic features; an AtomDataset has FFLUX's
        'rbf'
        >>> bool(torch.allclose(model.predict(x[:5]), result.predict(x[:5])))
        True
    """
    d = int(result.theta.numel())
    cyclic = result.cyclic
    if kernel_type is None:
        kernel_type = "rbf-cyclic" if cyclic is not None and bool(cyclic.any()) else "rbf"
        if kernel_type == "rbf-cyclic" and not torch.equal(cyclic.cpu(), cyclic_feature_mask(d)):
            raise ValueError("FFLUX's rbf-cyclic kernel wraps features 3, 6, 9, ...; this model was trained with "
                             "another periodic mask and cannot be exported exactly")
    cpu = lambda t: t.detach().cpu().to(torch.float64)  # noqa: E731
    ll = result.ll_concentrated if result.likelihood == "concentrated" else result.ll_marginal
    meta = {"trainer": f"tlgp_torch {result.method}", "objective": result.likelihood,
            "convention": result.convention}
    return FerebusModel(system=system, atom=atom, property=prop, alf=tuple(alf), n_atoms=int(n_atoms),
                        kernel_type=kernel_type, theta=cpu(result.theta), mean=float(result.mean),
                        x=cpu(result.x_train), y=cpu(result.y_train), weights=cpu(result.weights),
                        nugget=float(result.nugget), likelihood=float(ll), metadata=meta, units_y=_units_y(prop))
