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
    """FFLUX model with the result's theta, weights and mean (prediction = mean + sum_i w_i k(x, x_i))."""
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
