"""The import structure stays as docs/architecture.md describes it (read with ``ast``, nothing
is imported):

* fnl-detector's layers point down: commands, then running (Predictor, training, ``fnl eval
  --model``), results, export, getting a model, the model itself; a module never imports from a
  layer above its own, also not inside a function;
* no package imports itself in a circle (fnl-core's registry and spec once did);
* zoo packages import no other zoo package, only fnl-core (fnl-eval finds ``fnl eval --model``
  through the registry); fnl-detector imports a zoo package only as one of its extras;
* an installed third-party package a package imports is one of its dependencies (direct or
  through another FnL package) or one of its extras, unless the import is guarded by ``except
  ImportError`` (a nicety with a fallback, or an error naming what to install).
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())

#: fnl_detector's layers (docs/architecture.md, "Inside fnl-detector"); a module may import
#: from its own layer and the ones below. Every module must be listed (the longest prefix wins).
DETECTOR_LAYERS = {
    "fnl_detector.commands": 6,  # one module per fnl subcommand; the only place for argparse
    "fnl_detector.predictor": 5,  # running a model for users
    "fnl_detector.onnx_backend": 5,
    "fnl_detector.stages": 5,  # per-stage timing of fnl bench --stages (runs a Predictor)
    "fnl_detector.train": 5,  # training and its evaluation
    "fnl_detector.model_eval": 5,  # fnl eval --model (the fnl.model_evaluation entry)
    "fnl_detector.results": 4,  # predictions as DensePose-COCO results
    "fnl_detector.export": 3,  # deployment graphs
    "fnl_detector.loading": 2,  # getting a model
    "fnl_detector.weights": 2,
    "fnl_detector.convert": 2,
    "fnl_detector.optimize": 2,
    "fnl_detector.build": 2,
    "fnl_detector.analysis": 2,
    "fnl_detector.model_zoo": 2,
    "fnl_detector.modeling": 1,  # the model and its description
    "fnl_detector.spec": 1,
    "fnl_detector.presets": 1,
    "fnl_detector.postprocess": 1,
    "fnl_detector.threads": 1,
    "fnl_detector.video": 1,
}


def _modules(package: Path) -> dict[str, Path]:
    src = package / "src"
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module or ``module.name``, line) of every import, also inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ``modules`` that an imported ``name`` designates (None: not one of them)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _facade_names(package: str, modules: dict[str, Path]) -> dict[str, str]:
    """``package.Name`` -> the module the package's ``__init__`` re-exports ``Name`` from."""
    out = {}
    for imported, _ in _imports(package, modules[package]):
        source, _, name = imported.rpartition(".")
        if source != package and source in modules:
            out[f"{package}.{name}"] = source
    return out


def _graph(package: Path) -> dict[str, dict[str, int]]:
    """module -> {module of the same package it imports: line}, package facades resolved."""
    modules = _modules(package)
    top = next(iter(modules)).split(".")[0]
    facades = _facade_names(top, modules)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for imported, line in _imports(module, path):
            target = facades.get(imported) or _target(imported, modules)
            if target is not None and target != module:
                edges.setdefault(target, line)
    return graph


def _layer(module: str) -> int:
    matches = [p for p in DETECTOR_LAYERS if module == p or module.startswith(p + ".")]
    assert matches, (
        f"{module} is in no layer: add it to DETECTOR_LAYERS here and to the table in "
        "docs/architecture.md"
    )
    return DETECTOR_LAYERS[max(matches, key=len)]


def test_fnl_detector_imports_point_down():
    graph = _graph(ROOT / "packages" / "fnl-detector")
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)}), line {line}"
        for module, edges in graph.items()
        if module != "fnl_detector"  # the package's lazy facade
        for target, line in edges.items()
        if target != "fnl_detector" and _layer(target) > _layer(module)
    ]
    assert not upward, "\n".join(upward)


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_no_import_cycles(package):
    graph = _graph(package)
    facade = next(iter(_modules(package))).split(".")[0]
    graph.pop(facade, None)  # a package's __init__ re-exports from below, lazily
    cycles = _cycles(graph)
    assert not cycles, f"{package.name}: modules that import each other: {cycles}"


def _requirements(package: Path) -> tuple[set[str], set[str]]:
    """(required, optional) distribution names of an installed package, from its metadata."""
    requires = metadata.requires(package.name) or []
    return (
        _names([r for r in requires if "extra ==" not in r]),
        _names([r for r in requires if "extra ==" in r]),
    )


def _names(requirements: list[str]) -> set[str]:
    return {_normalize(re.match(r"[A-Za-z0-9_.\-]+", r).group(0)) for r in requirements}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _guarded_lines(path: Path) -> set[int]:
    """Lines of the imports inside ``try`` blocks that catch ImportError."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Try):
            continue
        caught = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
        if "ImportError" in caught or "ModuleNotFoundError" in caught:
            lines |= {
                sub.lineno
                for stmt in node.body
                for sub in ast.walk(stmt)
                if isinstance(sub, (ast.Import, ast.ImportFrom))
            }
    return lines


def _top_level_imports(package: Path, *, guarded: bool = True) -> dict[str, str]:
    """Top-level module -> first place it is imported, for imports of other packages (without
    the guarded ones unless ``guarded``)."""
    own = package.name.replace("-", "_")
    out: dict[str, str] = {}
    for module, path in _modules(package).items():
        skip = set() if guarded else _guarded_lines(path)
        for imported, line in _imports(module, path):
            top = imported.split(".")[0]
            if top in (own, "__future__", "") or top in sys.stdlib_module_names or line in skip:
                continue
            out.setdefault(top, f"{path.relative_to(ROOT)}:{line}")
    return out


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_fnl_packages_import_only_fnl_core_or_their_extras(package):
    _, extras = _requirements(package)
    wrong = [
        f"{top} ({where})"
        for top, where in _top_level_imports(package).items()
        if top.startswith("fnl_") and top != "fnl_core" and _normalize(top) not in extras
    ]
    assert not wrong, f"{package.name} imports other FnL packages by name: {wrong}"


def _closure(names: set[str]) -> set[str]:
    """``names`` and, for those installed, everything they require (extras left out)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [r for r in _names([r for r in requires if "extra ==" not in r]) if r not in seen]
    return seen


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_third_party_imports_are_declared(package):
    required, extras = _requirements(package)
    declared = _closure(required) | _closure(extras)
    providers = metadata.packages_distributions()
    undeclared = []
    for top, where in _top_level_imports(package, guarded=False).items():
        dists = {_normalize(d) for d in providers.get(top, [])}
        if dists and not dists & declared:
            undeclared.append(f"{top} from {', '.join(sorted(dists))} ({where})")
    assert not undeclared, f"{package.name} imports undeclared packages: {undeclared}"
