"""The package's layers, read statically from the source: no module imports from a layer above
its own, and no two packages import each other (directly or round a longer cycle).

Layers, top to bottom (a package may import its own layer's packages, or any layer below):

    cli
    pipeline
    stages, store, training, evaluation, datasets
    models
    core

Every ``import`` counts, at module level or inside a function, absolute (``l2l.x``) or relative
(``..x``); so does ``from l2l import x`` (``x`` names a package).  Nothing is imported to build
the graph (the ast of each file is read), so the test is fast and sees code that is never run.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]          # the `l2l` package (setup.cfg: l2l = .)
LAYERS = [["cli"], ["pipeline"], ["stages", "store", "training", "evaluation", "datasets"],
          ["models"], ["core"]]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _modules() -> dict[str, Path]:
    """Dotted module name inside ``l2l`` (``store.base``, ``stages``) -> file."""
    out = {}
    for pkg in RANK:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = f.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """The ``l2l`` modules ``name`` imports, as dotted names inside l2l, with line numbers."""
    parts = name.split(".") if name else []
    here = parts if path.name == "__init__.py" else parts[:-1]      # the module's package
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "l2l" or a.name.startswith("l2l."):
                    found.append((a.name[4:], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                if node.level - 1 > len(here):
                    raise AssertionError(f"{path}:{node.lineno}: relative import above the l2l package")
                if node.module is None:                  # `from . import x`: x is a module
                    found.extend((".".join(base + [a.name]), node.lineno) for a in node.names)
                    continue
                target = ".".join(base + [node.module])
            elif node.module == "l2l" or (node.module or "").startswith("l2l."):
                target = node.module[4:]
            else:
                continue
            if target:
                found.append((target, node.lineno))
            else:                                        # `from l2l import x` / `from .. import x`
                found.extend((a.name, node.lineno) for a in node.names)
    return found


def _package(dotted: str) -> str:
    return dotted.split(".")[0]


def import_graph():
    """[(importer module, imported module, file, line)] between top-level packages of l2l."""
    edges = []
    for name, path in _modules().items():
        for target, line in _imports(name, path):
            if _package(target) in RANK:
                edges.append((name, target, path, line))
    return edges


def layer_violations(edges) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line}: {_package(src)} (layer {RANK[_package(src)]}) imports "
            f"{dst} (layer {RANK[_package(dst)]}, above it)"
            for src, dst, path, line in edges if RANK[_package(dst)] < RANK[_package(src)]]


def package_cycles(edges) -> list[str]:
    """Each cycle in the package-level graph, as 'a -> b -> a' with one witness import per hop."""
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for src, dst, path, line in edges:
        a, b = _package(src), _package(dst)
        if a != b:
            graph[a].setdefault(b, f"{path.relative_to(ROOT)}:{line}")
    cycles, seen = [], set()

    def walk(node, stack):
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cyc = stack[stack.index(nxt):] + [nxt]
                key = frozenset(cyc)
                if key not in seen:
                    seen.add(key)
                    hops = ", ".join(f"{a}->{b} ({graph[a][b]})" for a, b in zip(cyc, cyc[1:]))
                    cycles.append(" -> ".join(cyc) + f": {hops}")
            elif len(stack) < len(RANK):
                walk(nxt, stack + [nxt])

    for start in sorted(graph):
        walk(start, [start])
    return cycles


def module_cycles(edges) -> list[str]:
    """Each set of modules that import each other round a loop (a strongly connected component
    of the module graph with more than one module), with the imports that close it."""
    mods = set(_modules())
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for src, dst, path, line in edges:
        while dst not in mods and "." in dst:         # `from ..x.y import attr` -> module x.y
            dst = dst.rsplit(".", 1)[0]
        if dst in mods and dst != src:
            graph[src].setdefault(dst, f"{path.relative_to(ROOT)}:{line}")
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def strong(v):                                      # Tarjan
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                hops = ", ".join(f"{a}->{b} ({graph[a][b]})" for a in sorted(comp)
                                 for b in sorted(graph[a]) if b in comp)
                out.append(f"{{{', '.join(sorted(comp))}}}: {hops}")

    for v in sorted(mods):
        if v not in index:
            strong(v)
    return out


def test_the_graph_is_read():
    """The reader finds imports of every kind (guards against a test that passes on nothing)."""
    edges = import_graph()
    pairs = {(s, d) for s, d, _, _ in edges}
    assert len(_modules()) > 40
    assert ("cli.main", "core.errors") in pairs                     # relative, module level
    assert any(s.startswith("cli.") and d.startswith("pipeline") for s, d in pairs)  # in a function
    assert {_package(s) for s, _ in pairs} >= {"cli", "pipeline", "stages", "store", "models"}


def test_the_reader_on_every_kind_of_import(tmp_path, monkeypatch):
    pkg = tmp_path / "store"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .x import y\nfrom .. import core\n")
    (pkg / "x.py").write_text("import l2l.models.a\nfrom l2l.core import hashing\n"
                              "def f():\n    from ..cli import main\n    from . import z\n")
    got = {(n, t) for n, p in [("store", pkg / "__init__.py"), ("store.x", pkg / "x.py")]
           for t, _ in _imports(n, p)}
    assert got == {("store", "store.x"), ("store", "core"), ("store.x", "models.a"),
                   ("store.x", "core"), ("store.x", "cli"), ("store.x", "store.z")}
    edges = [("store.x", "cli.main", ROOT / "store" / "x.py", 4),
             ("cli.main", "store", ROOT / "cli" / "main.py", 1),
             ("training.a", "evaluation.b", ROOT / "training" / "a.py", 1),
             ("evaluation.b", "training.c", ROOT / "evaluation" / "b.py", 2)]
    assert len(layer_violations(edges)) == 1
    cycles = package_cycles(edges)
    assert module_cycles(edges) == []               # made-up modules are not in the tree
    assert len(cycles) == 2 and any("evaluation -> training -> evaluation" in c or
                                    "training -> evaluation -> training" in c for c in cycles)


def test_no_module_imports_from_a_layer_above_it():
    problems = layer_violations(import_graph())
    assert not problems, "\n".join(problems)


def test_no_import_cycles_between_packages():
    problems = package_cycles(import_graph())
    assert not problems, "\n".join(problems)


def test_no_import_cycles_between_modules():
    """Also inside one package: two modules that import each other (even in a function) are one
    module in two files, or a missing lower module."""
    problems = module_cycles(import_graph())
    assert not problems, "\n".join(problems)


def test_the_package_root_imports_nothing_above_core():
    """``l2l/__init__.py`` (imported by everything) must stay light and below every layer."""
    path = ROOT / "__init__.py"
    pkgs = {_package(t) for t, _ in _imports("", path)} if path.exists() else set()
    assert pkgs <= {"core"}, pkgs


@pytest.mark.parametrize("pkg", sorted(RANK))
def test_every_package_folder_exists(pkg):
    assert (ROOT / pkg / "__init__.py").is_file()


def test_every_slow_test_exists():
    """Each entry of conftest's SLOW list names a test function that is in that file."""
    from conftest import SLOW
    tests = ROOT / "tests"
    missing = []
    for entry in SLOW:
        fname, func = entry.split("::")
        tree = ast.parse((tests / fname).read_text()) if (tests / fname).exists() else None
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)} if tree else set()
        if func not in names:
            missing.append(entry)
    assert not missing, missing


INDEX_WORDS = ("l2l_index", "index.sqlite", "sqlite3")      # the index's names on disk
STORE_NAMES = ("store", "st", "src", "dst", "reader", "writer")


def index_readers() -> list[str]:
    """Places outside ``store/`` that read the store's index themselves: ``store.index`` (a
    store object's, not called: ``list.index(x)`` is fine), a private member of a store object
    (``store._entry``), or the index's names on disk.  The pipeline asks the store's query methods instead (``has``,
    ``stored``, ``moments``, ``failure``, ``failed``, ``summary``)."""
    found = []
    for name, path in _modules().items():
        if _package(name) == "store":
            continue
        tree = ast.parse(path.read_text(), str(path))
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        where = f"{path.relative_to(ROOT)}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                base = node.value.attr if isinstance(node.value, ast.Attribute) else \
                    node.value.id if isinstance(node.value, ast.Name) else ""
                if node.attr == "index" and id(node) not in called and base in STORE_NAMES:
                    found.append(f"{where}:{node.lineno}: {base}.index")
                if node.attr.startswith("_") and not node.attr.startswith("__") and base in STORE_NAMES:
                    found.append(f"{where}:{node.lineno}: {base}.{node.attr}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if any(w in node.value for w in INDEX_WORDS):
                    found.append(f"{where}:{node.lineno}: {node.value[:40]!r}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(m == "sqlite3" or m.endswith("sqlindex") for m in mods):
                    found.append(f"{where}:{node.lineno}: imports the index module")
    return found


def test_nothing_outside_the_store_reads_its_index():
    problems = index_readers()
    assert not problems, "\n".join(problems)


def test_the_index_check_finds_what_it_looks_for(tmp_path, monkeypatch):
    bad = tmp_path / "pipeline"
    bad.mkdir()
    (bad / "x.py").write_text("def f(store, classes, out):\n    classes.index('a'), out.index\n"
                              "    v = store.index['videos']\n    e = store._entry('a')\n"
                              "    k = 'l2l_index'\n    import sqlite3\n")
    import sys
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "_modules", lambda: {"pipeline.x": bad / "x.py"})
    monkeypatch.setattr(here, "ROOT", tmp_path)
    got = index_readers()
    assert len(got) == 4 and not any(":2:" in g for g in got), got
