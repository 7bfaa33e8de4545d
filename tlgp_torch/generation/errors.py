"""Errors of data generation: bad molecules and failed runs (ValueError, so the CLI reports them cleanly)."""
from __future__ import annotations

__all__ = ["GenerationError", "MoleculeError"]


class MoleculeError(ValueError):
    """The input molecule is unusable (unknown element, overlapping atoms, bad SMILES or xyz); says which atom.

    Example:
        >>> from tlgp_torch.generation import MoleculeError
        >>> issubclass(MoleculeError, ValueError)
        True
    """


class GenerationError(ValueError):
    """A generation run stopped (MD fragmented, SCF failed during MD, too few frames); names the frame.

    Example:
        >>> from tlgp_torch.generation import GenerationError
        >>> issubclass(GenerationError, ValueError)
        True
    """
