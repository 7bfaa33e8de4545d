"""The public API's docstrings: every example runs (doctest) and every public name has an Example section.

"Public" here means a function or class defined in one of MODULES and named in the `__all__` of its module
or of its package, or imported by the CLI (tlgp_torch/cli/main.py). Other top-level names without a leading
underscore still need some docstring. Exceptions count as classes. Modules whose examples need an optional
extra are skipped, with the reason, when it is missing.
"""
from __future__ import annotations

import ast
import doctest
import functools
import importlib
import importlib.util
import inspect
import pathlib

import pytest

MODULES = [
    "tlgp_torch.units",
    "tlgp_torch.kernels.formula",
    "tlgp_torch.kernels.cyclic_rbf",
    "tlgp_torch.kernels.lean",
    "tlgp_torch.kernels.blocked",
    "tlgp_torch.likelihoods.exact",
    "tlgp_torch.likelihoods.gls",
    "tlgp_torch.likelihoods.iterative",
    "tlgp_torch.models.anisotropic_gp",
    "tlgp_torch.models.posterior",
    "tlgp_torch.io.atomic",
    "tlgp_torch.io.errors",
    "tlgp_torch.io.ichor_csv",
    "tlgp_torch.io.ferebus_model",
    "tlgp_torch.io.checkpoint",
    "tlgp_torch.io.toy",
    "tlgp_torch.optim.lbfgs",
    "tlgp_torch.optim.adam",
    "tlgp_torch.optim.stopping",
    "tlgp_torch.features.elements",
    "tlgp_torch.features.connectivity",
    "tlgp_torch.features.alf",
    "tlgp_torch.features.alf_features",
    "tlgp_torch.data.dataset",
    "tlgp_torch.data.subsets",
    "tlgp_torch.evaluation.metrics",
    "tlgp_torch.runtime.device",
    "tlgp_torch.runtime.sharding",
    "tlgp_torch.runtime.submit",
    "tlgp_torch.kernels.keops",
    "tlgp_torch.config.toml",
    "tlgp_torch.config.experiment",
    "tlgp_torch.export.ferebus",
    "tlgp_torch.export.saving",
    "tlgp_torch.export.molecule",
    "tlgp_torch.evaluation.compare",
    "tlgp_torch.generation.config",
    "tlgp_torch.generation.errors",
    "tlgp_torch.generation.report",
    "tlgp_torch.generation.molecules",
    "tlgp_torch.generation.xtb",
    "tlgp_torch.generation.pipeline",
    "tlgp_torch.likelihoods.memory",
    "tlgp_torch.likelihoods.landmarks",
    "tlgp_torch.kernels.evaluation",
    "tlgp_torch.export.precision",
    "tlgp_torch.export.potential",
    "tlgp_torch.export.ase_calculator",
    "tlgp_torch.training.settings",
    "tlgp_torch.training.result",
    "tlgp_torch.training.direct",
    "tlgp_torch.training.transfer",
    "tlgp_torch.training.mll_fit",
    "tlgp_torch.training.user_fit",
    "tlgp_torch.training.user_model",
    "tlgp_torch.training.generic",
    "tlgp_torch.training.final",
    "tlgp_torch.training.prepare",
    "tlgp_torch.training.starts",
    "tlgp_torch.training.multistart",
    "tlgp_torch.training.iterative",
]

# modules whose examples need an optional extra: module -> the packages it needs (skipped without them)
OPTIONAL = {"tlgp_torch.kernels.keops": ("pykeops",), "tlgp_torch.evaluation.metrics": ("matplotlib",),
            "tlgp_torch.runtime.submit": ("submitit",), "tlgp_torch.generation.xtb": ("tblite", "ase"),
            "tlgp_torch.generation.pipeline": ("tblite", "ase"),
            "tlgp_torch.export.ase_calculator": ("ase",)}

# modules that export no function or class (only constants, or helpers that other modules use: the trainers'
# internals in training/ are reached through DirectTrainer / TransferTrainer; their module docstrings hold examples)
NOT_EXPORTED = {"tlgp_torch.units", "tlgp_torch.likelihoods.gls", "tlgp_torch.training.user_fit",
                "tlgp_torch.training.user_model", "tlgp_torch.training.generic", "tlgp_torch.training.final",
                "tlgp_torch.training.prepare", "tlgp_torch.training.starts"}

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _package_exports(module) -> set[str]:
    package = importlib.import_module(module.__name__.rpartition(".")[0])
    if package.__name__ == "tlgp_torch" or module.__name__.count(".") < 2:
        return set()
    return set(getattr(package, "__all__", ()))


@functools.cache
def _cli_imports() -> dict[str, set[str]]:
    """module -> names that the CLI imports from it (also inside functions: lazy imports)."""
    source = pathlib.Path(importlib.util.find_spec("tlgp_torch.cli.main").origin).read_text(encoding="utf-8")
    out: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.setdefault(node.module, set()).update(alias.name for alias in node.names)
    return out


def public_objects(name: str) -> tuple[list[tuple[str, object]], list[tuple[str, object]]]:
    """(names needing an Example, other top-level public names) of functions and classes defined in `name`."""
    module = _import(name)
    exported = set(getattr(module, "__all__", ())) | _package_exports(module) | _cli_imports().get(name, set())
    example, other = [], []
    for attr, obj in vars(module).items():
        if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) != name:
            continue  # imported from elsewhere
        (example if attr in exported else other).append((attr, obj))
    return example, other


def _available(name: str) -> bool:
    return all(importlib.util.find_spec(pkg) is not None for pkg in OPTIONAL.get(name, ()))


def _import(name: str):
    """The module, or a pytest skip naming the optional packages it needs."""
    for pkg in OPTIONAL.get(name, ()):
        pytest.importorskip(pkg, reason=f"{name}'s examples need {pkg}")
    return importlib.import_module(name)


@pytest.mark.parametrize("name", MODULES)
def test_public_names_have_examples(name):
    example, other = public_objects(name)
    missing = [attr for attr, obj in example if "\nExample" not in (inspect.getdoc(obj) or "")]
    assert not missing, f"{name}: public names without an 'Example:' section in their docstring: {missing}"
    bare = [attr for attr, obj in other if not inspect.getdoc(obj)]
    assert not bare, f"{name}: top-level names without a docstring: {bare}"
    methods = [f"{attr}.{key}" for attr, obj in example + other if inspect.isclass(obj)
               for key, value in vars(obj).items() if not key.startswith("_") and _undocumented(value)]
    assert not methods, f"{name}: public methods or properties without a docstring: {methods}"


def _undocumented(value) -> bool:
    """True for a function, classmethod, staticmethod or property defined without a docstring of its own."""
    func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
    return (inspect.isfunction(func) or isinstance(value, property)) and not (func.__doc__ or "").strip()


def test_every_module_has_some_public_name():
    # guards the check above against passing vacuously (e.g. a module whose __all__ was emptied by mistake)
    empty = [name for name in MODULES if _available(name) and not public_objects(name)[0] and name not in NOT_EXPORTED]
    assert not empty, f"modules with no exported function or class: {empty}"


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = _import(name)
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False, report=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} doctest examples failed (run " \
                               f"`python -m doctest -v {module.__file__}` to see them)"
    assert result.attempted > 0, f"{name}: no doctest examples found"
