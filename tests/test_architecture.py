"""The import graph of the package: dependencies point one way (command line -> library), and no files import
each other in a cycle when the package loads.

Every module of ``nnunet_quantif`` is parsed with :mod:`ast` (nothing is imported), and every ``import`` and
``from ... import`` statement is resolved to the package module it names: top-level and inside functions, relative
and absolute.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "nnunet_quantif"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: The layers above the library: who may import them.
CLI = f"{PACKAGE}.cli"
NAPARI = f"{PACKAGE}.napari"
#: ``python -m nnunet_quantif``: the package's command-line entry point runs the CLI.
ENTRY_POINTS = {f"{PACKAGE}.__main__"}


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``target`` (both dotted module names of the package) at ``line``; ``top_level`` when
    the statement runs as the importer loads (not inside a function, nor under ``if TYPE_CHECKING:``)."""

    importer: str
    target: str
    line: int
    top_level: bool


def module_name(path: Path, root: Path = ROOT, package: str = PACKAGE) -> str:
    """The dotted name of a module file of the package (a package's ``__init__.py`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of ``tree`` with whether it runs when the module loads."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, top))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), top)
            else:
                visit(child, top)

    visit(tree, True)
    return found


def resolve(importer: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: set[str],
            package: str = PACKAGE) -> list[str]:
    """The package modules an import statement names (outside modules are left out).

    ``from X import name`` names ``X.name`` when that is a module of the package, else ``X``.
    """
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = importer.split(".")
            if not is_package:
                base = base[:-1]
            base = base[:len(base) - (node.level - 1)]
            base_name = ".".join([*base, *(node.module.split(".") if node.module else [])])
        else:
            base_name = node.module or ""
        names = []
        for alias in node.names:
            sub = f"{base_name}.{alias.name}"
            names.append(sub if sub in modules else base_name)
    out = []
    for name in names:
        while name and name not in modules:  # ``import a.b.c`` of a name below a module: the module
            name = name.rpartition(".")[0]
        if name == package or name.startswith(package + "."):
            out.append(name)
    return list(dict.fromkeys(out))


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> list[Edge]:
    """Every import between modules of the package."""
    files = {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    edges = []
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, top in _imports(tree):
            for target in resolve(name, path.name == "__init__.py", node, modules, package):
                if target != name:
                    edges.append(Edge(name, target, node.lineno, top))
    return edges


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted, largest first."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                strongconnect(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(out, key=lambda c: (-len(c), c))


def _inside(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_graph()


def test_the_walk_sees_every_kind_of_import(tmp_path):
    """The resolver on a small package: relative and absolute, top-level, in functions, under TYPE_CHECKING."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("import pkg.sub.b\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from .sub import c\n\ndef f():\n    from .sub.b import g\n    return g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import a\nfrom ..sub import c\nimport os\n")
    (pkg / "sub" / "c.py").write_text("def h():\n    import pkg.a\n")
    found = {(e.importer, e.target, e.top_level) for e in import_graph(pkg, "pkg")}
    assert found == {("pkg", "pkg.a", True), ("pkg.a", "pkg.sub.b", True), ("pkg.a", "pkg.sub.b", False),
                     ("pkg.a", "pkg.sub.c", False),
                     ("pkg.sub.b", "pkg.a", True), ("pkg.sub.b", "pkg.sub.c", True),
                     ("pkg.sub.c", "pkg.a", False)}
    top = [e for e in import_graph(pkg, "pkg") if e.top_level]
    assert cycles(top) == [["pkg.a", "pkg.sub.b"]]


def test_the_package_is_walked(edges):
    importers = {e.importer for e in edges}
    assert {f"{PACKAGE}.inference.pipeline", f"{CLI}.cmd_predict", f"{NAPARI}.logic",
            f"{PACKAGE}.dicom.suv"} <= importers
    # imports inside functions are seen (the package imports heavy modules lazily)
    assert any(not e.top_level for e in edges)


def test_the_library_never_imports_the_command_line(edges):
    upward = [f"{e.importer} (line {e.line}) imports {e.target}" for e in edges
              if _inside(e.target, CLI) and not _inside(e.importer, CLI) and e.importer not in ENTRY_POINTS]
    assert upward == []


def test_only_the_command_line_imports_the_napari_plugin(edges):
    upward = [f"{e.importer} (line {e.line}) imports {e.target}" for e in edges
              if _inside(e.target, NAPARI) and not (_inside(e.importer, NAPARI) or _inside(e.importer, CLI))]
    assert upward == []


def test_no_import_cycle_between_files_when_the_package_loads(edges):
    assert cycles([e for e in edges if e.top_level]) == []


def _part(module: str) -> str:
    """The first-level part of the package a module belongs to (``nnunet_quantif.inference.mirroring`` ->
    ``nnunet_quantif.inference``)."""
    return ".".join(module.split(".")[:2])


def test_no_cycle_between_the_package_parts_counting_lazy_imports(edges):
    """The package's modules and sub-packages stack in layers: with every import counted, those inside functions
    too, no part imports a part that imports it back (the package's own ``__init__`` and ``__main__`` aside)."""
    faces = {PACKAGE, *ENTRY_POINTS}
    parts = [Edge(_part(e.importer), _part(e.target), e.line, e.top_level) for e in edges
             if e.importer not in faces and e.target not in faces and _part(e.importer) != _part(e.target)]
    assert cycles(parts) == []
