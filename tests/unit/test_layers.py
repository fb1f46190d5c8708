"""The package's shape, as docs/architecture.md promises it.

Layers, bottom to top: core < supply < machine < lab < the entry points (cli,
plugin, doctor). Inside lab/, by job: scenario (what a run is asked) < run (the
run as it happens, and its record) < judge (the verdict) < report (presented),
with the drivers on top (runner, matrix, selftests). A module imports only from
its own layer or below, lazy imports inside functions and importlib's imports by
name included, and no two modules import each other, even through others. No
module grows past 400 lines.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import livepatch_lab

PKG = Path(livepatch_lab.__file__).resolve().parent   # the source tree's harness/
ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("core", "supply", "machine", "lab")
LAB_LAYERS = ("scenario", "run", "judge", "report")   # then lab's drivers: runner, matrix, selftests
MAX_LINES = 400


def module_name(path: Path) -> str:
    """The installed name: the source tree's harness/ is the package livepatch_lab (package-dir)."""
    rel = path.relative_to(PKG).with_suffix("")
    parts = ["livepatch_lab", *rel.parts]
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
        if isinstance(node, ast.Call) and _imports_by_name(node):
            names = [node.args[0].value]    # importlib.import_module("livepatch_lab...") / __import__
        elif isinstance(node, ast.Import):
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


def _imports_by_name(call: ast.Call) -> bool:
    """``importlib.import_module("livepatch_lab.x")``, ``import_module(...)`` or ``__import__(...)``
    with a literal name: an import the statements above would not see."""
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return (name in ("import_module", "__import__") and bool(call.args)
            and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)
            and call.args[0].value.startswith("livepatch_lab"))


def lab_layer(mod: str) -> int:
    """A lab module's place inside lab/ (None outside lab): its subpackage's, the drivers on top."""
    parts = mod.split(".")
    if len(parts) > 2 and parts[2] in LAB_LAYERS:
        return LAB_LAYERS.index(parts[2])
    return len(LAB_LAYERS)


@functools.lru_cache(maxsize=1)   # one parse of the package per session: the tests only read it
def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # importing a.b.c runs a/__init__ and a/b/__init__ too, but that is not a dependency
    # this test polices: packages' __init__ modules are checked like any other module.
    # (the root package is the top layer: importing it from below is importing upward)
    return {m: {d for d in imports(m, p, known) if d == "livepatch_lab" or not m.startswith(d + ".")}
            for m, p in mods.items()}


def test_the_four_layers_exist_as_subpackages():
    for name in LAYERS:
        assert (PKG / name / "__init__.py").is_file(), name


def test_every_import_points_down_or_sideways():
    upward = [f"{m} ({LAYERS[layer(m)] if layer(m) < len(LAYERS) else 'top'}) imports {d}"
              for m, deps in graph().items() for d in deps if layer(d) > layer(m)]
    assert upward == []


def test_inside_lab_every_import_points_down_or_sideways_by_job():
    def where(m: str) -> str:
        return LAB_LAYERS[lab_layer(m)] if lab_layer(m) < len(LAB_LAYERS) else "lab's drivers"
    lab = [m for m in graph() if m.startswith("livepatch_lab.lab.")]
    upward = [f"{m} ({where(m)}) imports {d} ({where(d)})"
              for m in lab for d in graph()[m] if d.startswith("livepatch_lab.lab.") and lab_layer(d) > lab_layer(m)]
    assert upward == []


def test_lab_is_in_subpackages_by_job():
    for name in LAB_LAYERS:
        assert (PKG / "lab" / name / "__init__.py").is_file(), name
    flat = sorted(p.stem for p in (PKG / "lab").glob("*.py") if p.stem != "__init__")
    assert flat == ["matrix", "runner"]


def test_an_import_by_name_counts_as_an_import():
    tree = ast.parse('import importlib\nimportlib.import_module("livepatch_lab.cli")\n__import__("livepatch_lab.plugin")\n')
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _imports_by_name(n)]
    assert [c.args[0].value for c in calls] == ["livepatch_lab.cli", "livepatch_lab.plugin"]


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
    for top in ("livepatch_lab.cli", "livepatch_lab.plugin"):
        assert top in g
        assert [m for m, deps in g.items() if top in deps and m not in ("livepatch_lab.cli", "livepatch_lab.plugin")] == []


def test_no_module_passes_400_lines():
    sizes = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_every_harness_import_the_tests_write_resolves_code_in_strings_included():
    """A script a test hands to a subprocess or a pytester conftest imports harness modules in a
    string, where neither the interpreter nor a refactoring sees it until the test runs."""
    import re
    import subprocess
    import sys
    root = ROOT
    found = set()
    for d in ("tests", "bench"):
        for path in (root / d).rglob("*.py"):
            for m in re.finditer(r"^[ \t]*(from livepatch_lab[\w.]* import [\w, ]+|import livepatch_lab[\w.]*)[ \t]*$",
                                 path.read_text(), re.M):
                found.add(m.group(1).rstrip(", "))
    script = "\n".join(f"try:\n    {s}\nexcept ImportError as e:\n    print({s!r}, '->', e)" for s in sorted(found))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=120)
    assert len(found) > 100 and out.returncode == 0 and out.stdout == "", out.stdout + out.stderr


def test_no_test_asserts_a_value_against_itself():
    """``assert f(x) == f(x)`` reads as a tautology whatever it means: compute once, then compare
    (a determinism or freshness check names both values)."""
    same = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare):
                sides = [ast.dump(x) for x in [node.test.left, *node.test.comparators]]
                if len(set(sides)) < len(sides):
                    same.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert same == []


# Where a test may still sleep, and why: path -> (how many sleeps, the reason).
SLEEPS_ALLOWED = {
    "tests/waiting.py": (1, "wait_until's poll: the one loop that looks at a state until it holds, "
                            "within a deadline"),
    "tests/integration/test_workload.py": (2, "the load runs 7 s, then on to 15 s, of wall-clock time in a real "
                                              "guest: that span is what its schedule and counts are measured "
                                              "against, not a wait for something to happen"),
}


def sleeps(source: str) -> int:
    """The sleeps in ``source``: calls of time's sleep through the module anywhere, code a test
    hands a child process in a string included, and calls of a ``sleep`` imported from time."""
    import re
    found = len(re.findall(r"\btime\s*\.\s*sleep\s*\(", source))
    tree = ast.parse(source)
    names = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and node.module == "time" for a in node.names if a.name == "sleep"}
    return found + sum(isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names
                       for node in ast.walk(tree))


def test_every_form_of_a_sleep_counts():
    call = "time.sleep" "(0.1)"   # split, so that this file holds no sleep of its own
    assert [sleeps(src) for src in (
        f"import time\n{call}\n",
        f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import time; {call}'])\n",
        "from time import monotonic, sleep as nap\nnap(1)\nnap(2)\n",
        "import asyncio, threading\nthreading.Event().wait(0.1)\nasyncio.sleep(1)\n")] == [1, 1, 2, 0]


def test_tests_wait_on_events_not_sleeps():
    """A test waits for what it needs to have happened (an Event, a line read, ``proc.wait``, a
    socket that accepts, tests/waiting.py's ``wait_until``), never for a time guessed to be
    long enough: a sleep is slow where the guess is generous and flaky where the host is busy.
    A fake that must take time blocks on an Event its test sets at teardown."""
    root = ROOT
    found = {str(p.relative_to(root)): n for p in (root / "tests").rglob("*.py") if (n := sleeps(p.read_text()))}
    assert found == {path: n for path, (n, _why) in SLEEPS_ALLOWED.items()}


def test_nothing_imports_the_source_directorys_name():
    """The package installs as livepatch_lab; ``harness`` is only the source tree's directory (and
    an unrelated project on PyPI). An import of it works in a checkout, by accident of sys.path,
    and breaks once installed, or loads every module twice."""
    import re
    stale = [f"{p.relative_to(ROOT)}:{n}" for d in ("harness", "tests", "bench", "scenarios")
             for p in (ROOT / d).rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"^\s*(from|import) harness\b|[\"']harness\.[a-z]", line)]
    assert stale == []
