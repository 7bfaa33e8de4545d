"""Optional quantum-chemistry dependencies (the `qm` extra: tblite, ase, rdkit), imported on demand."""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["QM_EXTRA_HINT", "require"]

QM_EXTRA_HINT = 'pip install "tlgp_torch[qm]"  (from a clone: pip install -e ".[qm]")'


def require(module: str, purpose: str = "generating GFN2-xTB data") -> ModuleType:
    """Import `module` or raise ImportError saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise ImportError(f"{purpose} needs the optional package {top!r} ({err}): {QM_EXTRA_HINT}") from err
