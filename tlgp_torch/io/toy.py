"""Small stand-ins for trained FEREBUS models, for examples and quick checks (not trained on anything).

Example:
    >>> from tlgp_torch.io.toy import water_stand_in_models
    >>> models = water_stand_in_models()
    >>> [(m.atom, m.property, m.n_points) for m in models[:2]]
    [('O1', 'iqa', 5), ('O1', 'q00', 5)]
"""
from __future__ import annotations

import torch

from tlgp_torch.io.ferebus_model import FerebusModel

__all__ = ["water_stand_in_models"]

WATER_ALF = (("O1", (1, 2, 3)), ("H2", (2, 1, 3)), ("H3", (3, 1, 2)))


def water_stand_in_models(seed: int = 0, n_points: int = 5,
                          properties: tuple[str, ...] = ("iqa", "q00")) -> list[FerebusModel]:
    """One FerebusModel per water atom (O1, H2, H3) and property: D = 3 features, `n_points` random training
    points around 1.8 bohr, theta = 1, mean -0.5, small random weights (rbf-cyclic kernel).

    Args:
        seed: seed of the torch.Generator that draws the points and weights.
        n_points: training points per model.
        properties: the properties, each atom's models in this order.

    Returns:
        A list of 3 * len(properties) models, atom by atom.

    Example:
        >>> models = water_stand_in_models(properties=("iqa",))
        >>> [m.atom for m in models], models[0].x.shape
        (['O1', 'H2', 'H3'], torch.Size([5, 3]))
    """
    gen = torch.Generator().manual_seed(seed)

    def model(atom: str, prop: str, alf: tuple[int, int, int]) -> FerebusModel:
        return FerebusModel(system="WATER", atom=atom, property=prop, alf=alf, n_atoms=3, kernel_type="rbf-cyclic",
                            theta=torch.ones(3, dtype=torch.float64), mean=-0.5,
                            x=1.8 + torch.rand(n_points, 3, dtype=torch.float64, generator=gen),
                            y=torch.zeros(n_points, dtype=torch.float64),
                            weights=0.01 * torch.randn(n_points, dtype=torch.float64, generator=gen))

    return [model(atom, prop, alf) for atom, alf in WATER_ALF for prop in properties]
