"""The import graph of ``operators``, ``priors`` and ``recon``: no cycles, and data flows one way.

The graph is read from the source with :mod:`ast`, without importing anything. Every import
counts, including those inside functions (lazy imports still close a cycle once both run) and
under ``TYPE_CHECKING``. Relative imports are resolved; importing a package means importing its
``__init__``; ``from package import name`` means importing the submodule ``package.name`` when
that is a module, else the package's ``__init__``. Modules outside the three packages are
ignored.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("operators", "priors", "recon")
# Lower layers never import higher ones: operators -> priors -> recon.
FORBIDDEN = {"operators": ("priors", "recon"), "priors": ("recon",)}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the packages (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that module ``name`` (file ``path``) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif base in modules:
                    found.add(base)
    found.discard(name)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules it imports, for every module of the packages."""
    modules = module_files(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected component of more than one module
    (Tarjan's algorithm, then a shortest path back to the component's first module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_through(component, graph) for component in components]


def _cycle_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from ``component[0]`` back to itself inside ``component`` (breadth first)."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    chain = [v]
                    while chain[-1] != start:
                        chain.append(previous[chain[-1]])
                    return [*reversed(chain), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def subpackage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` with each subpackage of a top package (``recon.data``, ...) merged into one node:
    two subpackages importing each other sideways form a cycle even when no two modules do."""

    def node(name: str) -> str:
        prefix = ".".join(name.split(".")[:2])
        return prefix if any(other.startswith(prefix + ".") for other in graph) else name

    merged: dict[str, set[str]] = {}
    for name, imports in graph.items():
        merged.setdefault(node(name), set()).update(node(target) for target in imports)
    return {name: imports - {name} for name, imports in merged.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``"a imports b"`` for each import of a higher layer by a lower one."""
    bad = []
    for name, imports in sorted(graph.items()):
        banned = FORBIDDEN.get(name.partition(".")[0], ())
        bad += [f"{name} imports {target}" for target in sorted(imports) if target.partition(".")[0] in banned]
    return bad


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_no_import_cycles_between_subpackages():
    found = cycles(subpackage_graph(import_graph()))
    assert not found, "import cycles between subpackages:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_layers_import_downwards_only():
    bad = layer_violations(import_graph())
    assert not bad, "operators -> priors -> recon, never back:\n" + "\n".join(bad)


@pytest.fixture
def toy(tmp_path):
    """A throwaway tree with the three packages, each file given as ``{relative path: source}``."""

    def write(files: dict[str, str]) -> dict[str, set[str]]:
        for package in PACKAGES:
            (tmp_path / package).mkdir(exist_ok=True)
            (tmp_path / package / "__init__.py").touch()
        for relative, source in files.items():
            (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / relative).write_text(source)
        return import_graph(tmp_path)

    return write


def test_graph_resolves_every_kind_of_import(toy):
    graph = toy({
        "recon/sub/__init__.py": "from .leaf import thing\n",
        "recon/sub/leaf.py": "def f():\n    from .. import app\n    from ..sub import other, helper\n",
        "recon/sub/other.py": "import recon.sub\nimport torch\nfrom operators.ct import MU\n",
        "recon/app.py": "from recon import sub\nfrom .sub.leaf import f as g\n",
        "operators/ct.py": "MU = 1\n",
    })
    assert graph["recon.sub"] == {"recon.sub.leaf"}
    # inside a function; ``app`` a submodule of the parent package; ``helper`` a name of recon.sub
    assert graph["recon.sub.leaf"] == {"recon.app", "recon.sub.other", "recon.sub"}
    assert graph["recon.sub.other"] == {"recon.sub", "operators.ct"}  # a package import is its __init__
    assert graph["recon.app"] == {"recon.sub", "recon.sub.leaf"}


def test_cycles_and_layers_are_reported(toy):
    graph = toy({
        "recon/a.py": "from . import b\n",
        "recon/b.py": "def f():\n    import recon.c\n",
        "recon/c.py": "from .a import x\n",
        "recon/d.py": "from recon import a\n",
        "operators/x.py": "from priors import y\n",
        "priors/y.py": "import operators.x\n",
        "priors/z.py": "from recon.d import q\n",
    })
    assert cycles(graph) == [["operators.x", "priors.y", "operators.x"], ["recon.a", "recon.b", "recon.c", "recon.a"]]
    assert layer_violations(graph) == ["operators.x imports priors.y", "priors.z imports recon.d"]
    assert cycles({"a": {"b"}, "b": set()}) == [] and layer_violations({"operators": {"operators.ct"}}) == []


def test_sideways_subpackage_imports_are_a_cycle(toy):
    graph = toy({"recon/io/files.py": "from ..data.tables import K\n", "recon/data/tables.py": "K = 1\n",
                 "recon/data/sources.py": "from ..io import files\n", "recon/run.py": "import recon.io.files\n"})
    assert cycles(graph) == []
    merged = subpackage_graph(graph)
    assert merged["recon.run"] == {"recon.io"} and merged["recon.io"] == {"recon.data"}
    assert cycles(merged) == [["recon.data", "recon.io", "recon.data"]]
