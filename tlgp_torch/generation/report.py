"""GenerationReport: what a data-generation run did; package versions for provenance."""
from __future__ import annotations

import pathlib
import platform
from dataclasses import dataclass, field

import numpy as np
import torch

from tlgp_torch.version import __version__

__all__ = ["GenerationReport", "package_versions"]


@dataclass
class GenerationReport:
    """What a run did: counts, dropped frames (with reasons), timings and the files it wrote.

    Attributes:
        system: the system name.
        out_dir: the output folder.
        n_train: training frames written.
        n_validation: validation frames written.
        n_sampled: frames sampled.
        n_duplicates: near-duplicate frames removed.
        drops: one line per dropped frame, with the reason.
        tasks_computed: work units computed in this run.
        tasks_cached: work units taken from the cache.
        up_to_date: True when nothing had to be computed or written.
        wall_s: wall seconds of the run.
        compute_s: seconds spent in the work units.
        alf: atom -> 1-based (C, X, P) used for its features.
        files: the files written (names, in out_dir).

    Example:
        >>> import pathlib
        >>> from tlgp_torch.generation import GenerationReport
        >>> GenerationReport(system="WATER", out_dir=pathlib.Path("data/WATER")).drops
        []
    """

    system: str
    out_dir: pathlib.Path
    n_train: int = 0
    n_validation: int = 0
    n_sampled: int = 0
    n_duplicates: int = 0
    drops: list[str] = field(default_factory=list)
    tasks_computed: int = 0
    tasks_cached: int = 0
    up_to_date: bool = False
    wall_s: float = 0.0
    compute_s: float = 0.0
    alf: dict[str, list[int]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the data (for provenance.json and the cache key).

    Example:
        >>> versions = package_versions()
        >>> {"tlgp_torch", "python", "numpy", "torch"} <= set(versions)
        True
    """
    out = {"tlgp_torch": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "torch": torch.__version__}
    from importlib import metadata
    for pkg in ("tblite", "ase", "rdkit"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
