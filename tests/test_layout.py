"""The package's shape: no import cycles, no private names imported across modules, the public face works."""
from __future__ import annotations

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "tlgp_torch"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> list[tuple[str, list[str], int]]:
    """(imported tlgp_torch module, names, line) for every import in the file, at any depth (lazy ones too)."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "tlgp_torch"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "tlgp_torch":
                out.append((target, [a.name for a in node.names], node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for target, names, _ in _imports(path):
            # "from package import submodule" depends on the submodule, "from module import name" on the module
            deps = [f"{target}.{n}" if f"{target}.{n}" in modules else target for n in names] or [target]
            graph[mod].update(d for d in deps if d in modules and d != mod)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_between_modules():
    """Data flows one way: a module never imports, directly or through others, a module that imports it.
    Package __init__ files only re-export, so they are left out of the module graph."""
    graph = {m: {d for d in deps if not (PKG.parent / d.replace(".", "/") / "__init__.py").exists()}
             for m, deps in _graph().items() if not (PKG.parent / m.replace(".", "/") / "__init__.py").exists()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_private_name_imported_from_another_module():
    bad = []
    for path in PKG.rglob("*.py"):
        for target, names, line in _imports(path):
            bad += [f"{path.relative_to(PKG.parent)}:{line}: {target}.{n}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
    assert not bad, bad


def test_package_face_reexports_what_users_touch():
    import tlgp_torch
    from tlgp_torch import AnisotropicGP, DirectTrainer, TrainResult, TransferTrainer, load_config  # noqa: F401
    assert set(tlgp_torch.__all__) >= {"AnisotropicGP", "DirectTrainer", "TrainResult", "TransferTrainer"}


def test_unit_constants_are_defined_once():
    """HARTREE_TO_KJMOL, HARTREE_TO_EV and ANGSTROM_TO_BOHR are assigned in tlgp_torch/units.py only."""
    owners = {}
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id in ("HARTREE_TO_KJMOL", "HARTREE_TO_EV", "ANGSTROM_TO_BOHR"):
                        owners.setdefault(t.id, []).append(str(path.relative_to(PKG)))
    assert owners and all(v == ["units.py"] for v in owners.values()), owners


def test_no_submodule_shadows_a_name_its_package_exports():
    """A lazily exported function named like a submodule is rebound to the submodule once that is imported
    (generation.generate did this to the CLI's `data generate`). After importing every submodule, each exported
    name must still be what the package meant, not a module."""
    import importlib
    import types

    for init in PKG.rglob("__init__.py"):
        package = importlib.import_module(_module_name(init))
        for sub in init.parent.glob("*.py"):
            if sub.name not in ("__init__.py", "__main__.py"):
                try:
                    importlib.import_module(_module_name(sub))
                except ImportError:  # an optional extra is missing
                    continue
        modules = [n for n in getattr(package, "__all__", ()) if isinstance(getattr(package, n), types.ModuleType)]
        assert not modules, f"{package.__name__}: {modules}"
