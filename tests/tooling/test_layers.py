"""The packages of i2vd are layers: a module imports only from its own layer or lower ones, and no modules import
each other round in a cycle, not even from inside a function.

Every module under i2vd/ is parsed (nothing is imported). i2vd/__init__.py and i2vd/__main__.py are outside the
layers: the first holds only the version, the second starts the command line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import i2vd

# Lowest first. `cluster` is on its way (executors across machines); an absent package is no failure.
LAYERS = ("core", "config", "store", "render", "ingest", "jobs", "cluster", "web", "service", "cli")
PACKAGE = Path(i2vd.__file__).resolve().parent
OUTSIDE = {"i2vd", "i2vd.__main__"}


@dataclass(frozen=True)
class Import:
    importer: str  # the module's dotted name
    target: str  # the i2vd module it reaches (a package's __init__ by the package's name)
    line: int
    in_function: bool

    def describe(self) -> str:
        where = " (inside a function)" if self.in_function else ""
        return f"{self.importer} -> {self.target} (line {self.line}){where}"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The most specific module of i2vd that `name` (a module, or a name inside one) is."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    found: list[Import] = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            deeper = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                source = _absolute(child, name, path.name == "__init__.py")
                targets = [f"{source}.{alias.name}" for alias in child.names]
            for target in targets:
                if target.split(".")[0] != "i2vd":
                    continue
                module = _resolve(target, known)
                if module is not None and module != name:
                    found.append(Import(name, module, child.lineno, in_function))
            visit(child, deeper)

    visit(tree, False)
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and module not in OUTSIDE else None


def every_import(root: Path = PACKAGE) -> list[Import]:
    known = modules(root)
    return [found for name, path in known.items() for found in imports_of(name, path, known)]


def upward_imports(found: list[Import]) -> list[str]:
    """Imports from a higher layer, and modules in no layer at all."""
    problems = []
    for each in found:
        own, other = layer_of(each.importer), layer_of(each.target)
        if own is None or other is None:
            continue  # i2vd/__init__.py and __main__.py: outside the layers
        for layer in (own, other):
            if layer not in LAYERS:
                problems.append(f"{each.describe()}: package {layer!r} is in no layer (add it to LAYERS)")
        if own in LAYERS and other in LAYERS and LAYERS.index(other) > LAYERS.index(own):
            problems.append(f"{each.describe()}: {own} is below {other}")
    return sorted(set(problems))


def cycles(found: list[Import]) -> list[list[Import]]:
    """Each group of modules that import each other round (Tarjan's strongly connected components), as the
    imports between its members."""
    graph: dict[str, list[Import]] = {}
    for each in found:
        graph.setdefault(each.importer, []).append(each)
        graph.setdefault(each.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # the import graph of i2vd is shallow enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                connect(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [
        sorted((edge for member in group for edge in graph[member] if edge.target in group), key=Import.describe)
        for group in groups
    ]


def describe_cycle(edges: list[Import]) -> str:
    at_import = [edge.describe() for edge in edges if not edge.in_function]
    in_functions = [edge.describe() for edge in edges if edge.in_function]
    lines = ["a cycle between " + ", ".join(sorted({edge.importer for edge in edges})) + ":"]
    lines += [f"  at import time: {line}" for line in at_import]
    lines += [f"  inside functions: {line}" for line in in_functions]
    return "\n".join(lines)


def test_no_module_imports_from_a_higher_layer() -> None:
    found = every_import()
    assert found, "no imports found: is PACKAGE right?"
    problems = upward_imports(found)
    assert problems == [], "imports from a higher layer:\n" + "\n".join(problems)


def test_no_import_cycle_between_modules() -> None:
    found = cycles(every_import())
    assert found == [], "\n".join(describe_cycle(edges) for edges in found)


def test_every_package_of_i2vd_is_a_layer() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages - set(LAYERS) == set()
    assert packages >= set(LAYERS) - {"cluster"}


# -- the checks themselves, on a small tree written here ------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    package = root / "i2vd"
    for relative, text in {"__init__.py": "", **files}.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def test_an_upward_import_and_a_cycle_are_found(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/a.py": "from i2vd.store import b\n",
            "store/__init__.py": "",
            "store/b.py": "def later():\n    from i2vd.store.c import x\n",
            "store/c.py": "from . import b\nx = 1\n",
            "cli/__init__.py": "from i2vd.cli.main import run\n",
            "cli/main.py": "import i2vd.core.a\nrun = 1\n",
        },
    )
    found = every_import(package)
    assert upward_imports(found) == ["i2vd.core.a -> i2vd.store.b (line 1): core is below store"]
    (cycle,) = cycles(found)
    assert {(edge.importer, edge.target, edge.in_function) for edge in cycle} == {
        ("i2vd.store.b", "i2vd.store.c", True),
        ("i2vd.store.c", "i2vd.store.b", False),
    }
    message = describe_cycle(cycle)
    assert "at import time: i2vd.store.c -> i2vd.store.b" in message
    assert "inside functions: i2vd.store.b -> i2vd.store.c" in message


def test_a_package_in_no_layer_is_named(tmp_path: Path) -> None:
    package = _tree(tmp_path, {"gadgets/__init__.py": "", "gadgets/g.py": "from i2vd.core import clock\n"})
    (tmp_path / "i2vd" / "core").mkdir()
    (tmp_path / "i2vd" / "core" / "clock.py").write_text("", encoding="utf-8")
    problems = upward_imports(every_import(package))
    assert problems == [
        "i2vd.gadgets.g -> i2vd.core.clock (line 1): package 'gadgets' is in no layer (add it to LAYERS)"
    ]
