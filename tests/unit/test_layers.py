"""The package's shape, as the README's Architecture section promises it.

Layers, bottom to top: core < supply < machine < lab < the entry points (cli,
plugin, doctor). A module imports only from its own layer or below, lazy
imports inside functions included, and no two modules import each other, even
through others. No module grows past 600 lines.
"""
from __future__ import annotations

import ast
from pathlib import Path

import harness

PKG = Path(harness.__file__).resolve().parent
LAYERS = ("core", "supply", "machine", "lab")
MAX_LINES = 600


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def layer(mod: str) -> int:
    parts = mod.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return len(LAYERS)   # the entry points, and harness/__init__ (re-exports core)


def imports(mod: str, path: Path, known: set[str]) -> set[str]:
    """Every harness module ``mod`` imports, wherever the import statement is."""
    is_pkg = path.name == "__init__.py"
    package = mod.split(".") if is_pkg else mod.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            # the longest known module that the name is, or is inside
            parts = name.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != mod:
                found.add(".".join(parts))
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # importing a.b.c runs a/__init__ and a/b/__init__ too, but that is not a dependency
    # this test polices: packages' __init__ modules are checked like any other module.
    # (the root package is the top layer: importing it from below is importing upward)
    return {m: {d for d in imports(m, p, known) if d == "harness" or not m.startswith(d + ".")}
            for m, p in mods.items()}


def test_the_four_layers_exist_as_subpackages():
    for name in LAYERS:
        assert (PKG / name / "__init__.py").is_file(), name


def test_every_import_points_down_or_sideways():
    upward = [f"{m} ({LAYERS[layer(m)] if layer(m) < len(LAYERS) else 'top'}) imports {d}"
              for m, deps in graph().items() for d in deps if layer(d) > layer(m)]
    assert upward == []


def test_no_import_cycle_lazy_imports_included():
    g = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_entry_points_sit_on_top_and_nothing_imports_them():
    g = graph()
    for top in ("harness.cli", "harness.plugin"):
        assert top in g
        assert [m for m, deps in g.items() if top in deps and m not in ("harness.cli", "harness.plugin")] == []


def test_no_module_passes_600_lines():
    sizes = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
