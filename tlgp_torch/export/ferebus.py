"""TrainResult -> FerebusModel, the FFLUX energy-label mapping, and the one function that writes .model files."""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Sequence

import torch

from tlgp_torch.data.dataset import cyclic_feature_mask
from tlgp_torch.evaluation.metrics import property_unit
from tlgp_torch.io.ferebus_model import FerebusModel, ferebus_model_filename, write_ferebus_model
from tlgp_torch.training.result import TrainResult

__all__ = ["FFLUX_ENERGY", "map_fflux_energy", "to_ferebus_model", "write_fflux_model"]

FFLUX_ENERGY = "iqa"  # the only property name under which FFLUX looks for energy models


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


def map_fflux_energy(models: Sequence[FerebusModel], label: str | None) -> list[FerebusModel]:
    """Models of property `label` relabelled `iqa`, the name FFLUX reads energies under; None: unchanged.

    The mapping is explicit and recorded: each relabelled model keeps its true label in the metadata (written as a
    header comment, ``# true_property = energy``). Without it, models keep their own names (an ``energy`` model
    is written as ``SYSTEM_energy_ATOM.model``, which FFLUX does not load as an energy).

    Args:
        models: the molecule's models (any properties).
        label: property to write as iqa (e.g. "energy" for GFN2-xTB data sets), or None.

    Raises:
        ValueError: naming `label` when no model has that property, or when the set already has iqa models.

    Example:
        >>> from tlgp_torch.io.toy import water_stand_in_models
        >>> mapped = map_fflux_energy(water_stand_in_models(properties=("energy", "q00")), "energy")
        >>> [m.property for m in mapped[:2]], mapped[0].metadata["true_property"]
        (['iqa', 'q00'], 'energy')
    """
    models = list(models)
    if label is None or label == FFLUX_ENERGY:
        return models
    have = sorted({m.property for m in models})
    if label not in have:
        raise ValueError(f"fflux_energy: no model has property {label!r} to write as {FFLUX_ENERGY!r} "
                         f"(properties: {', '.join(have)})")
    if FFLUX_ENERGY in have:
        raise ValueError(f"fflux_energy: the models already include {FFLUX_ENERGY!r}; writing {label!r} under that "
                         "name too would give two energy models per atom")
    note = (f"trained on {label!r}, written as property {FFLUX_ENERGY} for FFLUX (fflux_energy = {label!r}); "
            f"it is not an IQA energy")
    return [dataclasses.replace(m, property=FFLUX_ENERGY, metadata={**m.metadata, "true_property": label,
                                                                    "note": note})
            if m.property == label else m for m in models]


def write_fflux_model(model: FerebusModel, folder: str | os.PathLike) -> pathlib.Path:
    """Write `model` as folder/{SYSTEM}_{property}_{ATOM}.model (atomically; FFLUX's reader rules met by
    write_ferebus_model: prefactor line, '# end' trailer). The one writer of .model files for `tlgp train` and
    `tlgp export`.

    Example:
        >>> import tempfile
        >>> from tlgp_torch.io.toy import water_stand_in_models
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_fflux_model(water_stand_in_models(properties=("iqa",))[0], tmp)
        ...     lines = path.read_text().splitlines()
        >>> path.name, lines[-1]
        ('WATER_iqa_O1.model', '# end')
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return write_ferebus_model(model, folder / ferebus_model_filename(model.system, model.property, model.atom))
