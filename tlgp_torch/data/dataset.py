"""In-memory container for one atom's FFLUX training or validation set."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, replace

import torch

__all__ = ["AtomDataset", "cyclic_feature_mask"]


def cyclic_feature_mask(n_features: int) -> torch.Tensor:
    """Bool mask [D], True at the 1-based feature indices 3, 6, 9, ... (FFLUX rbf-cyclic rule).

    In ALF features these are the angle f3 and the phi of every non-frame atom; FFLUX wraps their differences
    into [-pi, pi]. (f3 is in [0, pi] and never wraps, so flagging it changes nothing.)

    Raises:
        ValueError: for a negative n_features.

    Example:
        >>> from tlgp_torch.data import cyclic_feature_mask
        >>> cyclic_feature_mask(6)
        tensor([False, False,  True, False, False,  True])
    """
    if n_features < 0:
        raise ValueError(f"n_features must be >= 0, got {n_features}")
    return torch.arange(1, n_features + 1) % 3 == 0


@dataclass
class AtomDataset:
    """Features x [N, D] (bohr / radians) and properties y [N, P] of one atom of one system.

    What read_ichor_csv returns and what the trainers take (with a property name).

    Attributes:
        x: features [N, D] (bohr / radians, the ALF features of the atom).
        y: properties [N, P] (Hartree for energies, e for q00, atomic units for multipoles).
        property_names: P names, one per column of y (e.g. ["iqa", "q00"]).
        system: system name (e.g. "WATER"), or None.
        atom: atom name (e.g. "O1"), or None.
        source: the file it was read from, or None.
        cyclic: bool mask [D] of the periodic features (default cyclic_feature_mask(D)).

    Raises:
        ValueError: for x or y that are not 2-D, different N, a wrong number of or repeated property names,
            or a cyclic mask that is not bool [D].

    Example:
        >>> import torch
        >>> from tlgp_torch.data import AtomDataset
        >>> gen = torch.Generator().manual_seed(0)
        >>> data = AtomDataset(x=torch.rand(10, 6, dtype=torch.float64, generator=gen),
        ...                    y=torch.rand(10, 2, dtype=torch.float64, generator=gen),
        ...                    property_names=["iqa", "q00"], system="WATER", atom="O1")
        >>> len(data), data.n_features, data.feature_names[:3]
        (10, 6, ['f1', 'f2', 'f3'])
        >>> data.property("q00").shape, data.select(["q00"]).property_names
        (torch.Size([10]), ['q00'])
        >>> data.subset(torch.arange(4)).n_points, data.cyclic.tolist()
        (4, [False, False, True, False, False, True])
    """

    x: torch.Tensor
    y: torch.Tensor
    property_names: list[str]
    system: str | None = None
    atom: str | None = None
    source: pathlib.Path | None = None
    cyclic: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dim() != 2:
            raise ValueError(f"x must be a 2-D tensor [N, D], got shape {tuple(getattr(self.x, 'shape', ()))}")
        if not isinstance(self.y, torch.Tensor) or self.y.dim() != 2:
            raise ValueError(f"y must be a 2-D tensor [N, P], got shape {tuple(getattr(self.y, 'shape', ()))}")
        if self.y.shape[0] != self.x.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")
        self.property_names = list(self.property_names)
        if len(self.property_names) != self.y.shape[1]:
            raise ValueError(
                f"{len(self.property_names)} property names for {self.y.shape[1]} property columns in y"
            )
        if len(set(self.property_names)) != len(self.property_names):
            raise ValueError(f"duplicate property names: {self.property_names}")
        if self.cyclic is None:
            self.cyclic = cyclic_feature_mask(self.n_features).to(self.x.device)
        elif self.cyclic.shape != (self.n_features,) or self.cyclic.dtype != torch.bool:
            raise ValueError(f"cyclic must be a bool tensor [{self.n_features}], "
                             f"got {self.cyclic.dtype} {tuple(self.cyclic.shape)}")
        if self.source is not None:
            self.source = pathlib.Path(self.source)

    @property
    def n_points(self) -> int:
        """Number of points N."""
        return self.x.shape[0]

    @property
    def n_features(self) -> int:
        """Number of features D."""
        return self.x.shape[1]

    @property
    def feature_names(self) -> list[str]:
        """Feature column names f1 .. fD."""
        return [f"f{k}" for k in range(1, self.n_features + 1)]

    def __len__(self) -> int:
        """Number of points N."""
        return self.n_points

    def _column(self, name: str) -> int:
        try:
            return self.property_names.index(name)
        except ValueError:
            raise KeyError(f"no property {name!r}; available: {', '.join(self.property_names)}") from None

    def property(self, name: str) -> torch.Tensor:
        """Values [N] of one property, by name (KeyError listing the available names otherwise)."""
        return self.y[:, self._column(name)]

    def subset(self, index: torch.Tensor) -> AtomDataset:
        """Dataset restricted to the given points (index tensor or bool mask over N)."""
        index = torch.as_tensor(index, device=self.x.device)
        return replace(self, x=self.x[index], y=self.y[index])

    def select(self, properties: list[str]) -> AtomDataset:
        """Dataset keeping only the given properties, in the given order."""
        cols = [self._column(p) for p in properties]
        return replace(self, y=self.y[:, cols], property_names=list(properties))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> AtomDataset:
        """Copy with x, y (and the cyclic mask) moved to device and x, y cast to dtype."""
        cyclic = self.cyclic.to(device) if device is not None else self.cyclic
        return replace(self, x=self.x.to(device=device, dtype=dtype), y=self.y.to(device=device, dtype=dtype),
                       cyclic=cyclic)
