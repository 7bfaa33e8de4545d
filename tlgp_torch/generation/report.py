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
    """What a run did: counts, dropped frames (with reasons), timings and the files it wrote."""

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
    """Versions of the packages that shape the data (for provenance.json and the cache key)."""
    out = {"tlgp_torch": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "torch": torch.__version__}
    from importlib import metadata
    for pkg in ("tblite", "ase", "rdkit"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
