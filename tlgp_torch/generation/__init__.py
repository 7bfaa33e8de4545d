"""GFN2-xTB data sets made on the spot (optional extra `qm`: tblite, ase, rdkit): sample, label, write ICHOR CSVs.

The labels are GFN2-xTB atom-resolved energies (Hartree) and Mulliken charges, NOT IQA energies / QTAIM charges.
Names load lazily, so worker processes that import a submodule do not pay for the config / training imports.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "GenerationConfig": "config", "MoleculeSpec": "config", "SamplingSpec": "config", "SplitSpec": "config",
    "load_generation_config": "config",
    "GenerationError": "errors", "MoleculeError": "errors",
    "GenerationReport": "report", "generate": "generate", "plan_tasks": "generate",
    "Molecule": "molecules", "check_geometry": "molecules", "load_molecule": "molecules", "read_xyz": "molecules",
    "GFN2": "xtb", "QMSettings": "xtb", "SCFError": "xtb",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import the submodule that defines `name` on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    sub = _EXPORTS[name]
    module = importlib.import_module(f".{sub}", __name__)
    value = getattr(module, name)
    globals()[name] = value
    if _EXPORTS.get(sub) == sub:  # importing submodule `generate` bound the module to that name: the function wins
        globals()[sub] = getattr(module, sub)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
