"""The import graph of our own packages follows DESIGN.md's layout.

Every .py under charflow/, scrapers/, cleaners/, training/ and flows/ is parsed (not
imported, so a broken module cannot hide its imports), including imports inside functions
(a lazy import still runs sooner or later) and imports under `if TYPE_CHECKING:` (they never
run, but a module that names another's types depends on it all the same). Checked: no
import cycles; library code never imports flows/ or Prefect; each package imports only the
packages its row of the layout table allows.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("charflow", "scrapers", "cleaners", "training", "flows")
LIBRARY = ("charflow", "scrapers", "cleaners", "training")
# Which of our packages each package may import (its own included); flows/ may import all.
ALLOWED = {
    "charflow": {"charflow"},
    "cleaners": {"cleaners", "charflow"},
    "scrapers": {"scrapers", "cleaners", "charflow"},
    "training": {"training", "charflow"},
    "flows": set(PACKAGES),
}


@dataclass(frozen=True)
class Import:
    """One import: `importer` imports `module` at file:line (file relative to the root)."""

    importer: str
    module: str  # ours when it names a module of the tree, else as written
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """{dotted module name: file} for every .py of the packages under root."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def import_nodes(tree: ast.AST):
    """Every Import/ImportFrom in the tree, at any depth."""
    return (node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom))


def imports_of(module: str, path: Path, modules: dict[str, Path], root: Path) -> list[Import]:
    """What `module` (in file `path`) imports, resolved to the deepest module each names.

    `from x import y` means module x.y when y is a submodule, else x itself; relative
    imports are resolved against the module's package. Names outside our tree are kept as
    written (their first part is enough to tell Prefect from the rest).
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    file = path.relative_to(root).as_posix()
    found = []
    for node in import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in modules else base for t in targets]
        for target in dict.fromkeys(targets):  # `from x import a, b` names x once
            found.append(Import(module, deepest_module(target, modules), file, node.lineno))
    return found


def deepest_module(name: str, modules: dict[str, Path]) -> str:
    """`training.loop.train` -> `training.loop`: the longest prefix that is one of ours."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return name


def project_imports(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    modules = module_names(root, packages)
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules, root)]


def graph_of(imports: list[Import], modules: set[str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for imp in imports:
        # `from . import name` in a package's __init__ names the package itself: no cycle
        if imp.module in modules and imp.module != imp.importer:
            graph[imp.importer].add(imp.module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component, as [a, b, ..., a].

    Tarjan's algorithm finds the components (iteratively: no recursion limit); a
    breadth-first search inside each names one concrete cycle through its smallest node.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(sorted(component))
    return sorted(shortest_cycle(graph, set(c)) for c in components)


def shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    return paths[node] + [start]
                if child in component and child not in paths:
                    paths[child] = paths[node] + [child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in its component")  # cannot happen


def describe(cycle: list[str], imports: list[Import]) -> str:
    """`a -> b -> a (a.py:3, b.py:9)`: the cycle and the line of each of its imports."""
    lines = []
    for importer, module in zip(cycle, cycle[1:], strict=False):
        first = min(
            (i for i in imports if i.importer == importer and i.module == module),
            key=lambda i: i.line,
        )
        lines.append(first.where)
    return f"{' -> '.join(cycle)} ({', '.join(lines)})"


# --- the checks on this repository ---------------------------------------------------------


def test_no_import_cycles():
    imports = project_imports()
    cycles = find_cycles(graph_of(imports, set(module_names(REPO, PACKAGES))))
    assert not cycles, "import cycles:\n" + "\n".join(describe(c, imports) for c in cycles)


def test_library_never_imports_flows_or_prefect():
    bad = [
        f"{imp.where} {imp.importer} imports {imp.module}"
        for imp in project_imports()
        if imp.importer.split(".")[0] in LIBRARY
        and imp.module.split(".")[0] in ("flows", "prefect")
    ]
    assert not bad, "library code imports flows/Prefect:\n" + "\n".join(bad)


def test_each_package_imports_only_what_the_layout_allows():
    bad = [
        f"{imp.where} {imp.importer} imports {imp.module}"
        for imp in project_imports()
        if imp.module.split(".")[0] in PACKAGES
        and imp.module.split(".")[0] not in ALLOWED[imp.importer.split(".")[0]]
    ]
    assert not bad, "imports against DESIGN.md's layout:\n" + "\n".join(bad)


# --- the checks can fail: the same code on made-up graphs and trees -------------------------


def test_cycle_finder_on_synthetic_graph():
    graph = {
        "a": {"b"},
        "b": {"c", "d"},
        "c": {"a"},  # a -> b -> c -> a
        "d": set(),
        "e": {"a", "f"},  # reaches the cycle, is not on it
        "f": {"f"},  # a module importing itself
        "g": {"h"},
        "h": {"g", "a"},  # a second cycle, joined to the first only one way
    }
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["f", "f"], ["g", "h", "g"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []
    # the shortest way round a component, not whichever the search met first
    long_and_short = {"a": {"b", "x"}, "b": {"c"}, "c": {"a"}, "x": {"a"}}
    assert find_cycles(long_and_short) == [["a", "x", "a"]]


def test_resolver_on_a_tiny_tree(tmp_path):
    """Lazy, relative, `from package import submodule` and TYPE_CHECKING imports."""
    files = {
        "pkg/__init__.py": "from pkg.sub import thing\n",
        "pkg/sub.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from pkg import other\n"
            "def f():\n"
            "    from . import other, missing_name\n"
            "    import prefect.flows\n"
            "thing = 1\n"
        ),
        "pkg/other.py": "from pkg import sub\nfrom .inner.deep import x\n",
        "pkg/inner/__init__.py": "from .. import other\n",
        "pkg/inner/deep.py": "x = 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    imports = project_imports(tmp_path, ("pkg",))
    edges = {(i.importer, i.module, i.line) for i in imports}
    assert edges == {
        ("pkg", "pkg.sub", 1),
        ("pkg.sub", "typing", 1),
        ("pkg.sub", "pkg.other", 3),  # under TYPE_CHECKING
        ("pkg.sub", "pkg.other", 5),  # the lazy one
        ("pkg.sub", "pkg", 5),  # `missing_name` is no submodule: it comes from pkg itself
        ("pkg.sub", "prefect.flows", 6),
        ("pkg.other", "pkg.sub", 1),
        ("pkg.other", "pkg.inner.deep", 2),
        ("pkg.inner", "pkg.other", 1),
    }
    graph = graph_of(imports, set(module_names(tmp_path, ("pkg",))))
    assert graph["pkg.other"] == {"pkg.sub", "pkg.inner.deep"}  # no edge to the parent pkg.inner
    (cycle,) = find_cycles(graph)  # pkg, pkg.sub and pkg.other form one component
    assert describe(cycle, imports) == "pkg -> pkg.sub -> pkg (pkg/__init__.py:1, pkg/sub.py:5)"
    # the same tree as library code: the lazy Prefect import is reported
    assert [i.where for i in imports if i.module.split(".")[0] == "prefect"] == ["pkg/sub.py:6"]
