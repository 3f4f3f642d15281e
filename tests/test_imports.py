"""The package's import graph, built from the source with ``ast``, and the rules it must keep.

* **Layers** (:data:`LAYERS`, the one list of them; README "Architecture" draws it): a module may import,
  at module level or inside a function, only its own package or a package of a lower layer; packages
  side by side in one layer do not import each other. A new package is added here, or the test fails.
* **No Ray in analysis** (:data:`RAY_FREE`): no module of the analysis layer imports Ray, in a function
  either, nor loads a package module that imports it; the summaries and ``counterarg compare`` run
  where Ray is not installed.
* **No circle**: no module imports a module that imports it back (directly or through others). A
  circle makes every module on it depend on all the others, so none can be read, tested or moved alone.
* **No stale name**: every ``counterarg.*`` module the package, the tests, the sweep scripts and the
  mutants import or name in a string exists in this tree. The project may also be installed in
  editable mode from another checkout, whose import finder answers for a module this tree lacks: a
  module moved here would otherwise load, silently, from there.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import counterarg

PACKAGE = Path(counterarg.__file__).parent
REPO = PACKAGE.parent

#: The layers, bottom first; each names the packages (or top-level modules) in it. The root package's
#: ``__init__`` imports nothing and sits below them all.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core", "ray_internals"),  # io, paths, fieldvalues; Ray's private API: import nothing of the package
    ("data",),  # corpus, demo corpus, input files, feature cache
    ("nn", "retrieval", "sampling"),  # config-free parts and the registries Config validates through
    ("config",),  # Config: every default, field roles, validation through the registries below
    ("model",),  # checkpoint format, feature modes, BiEncoder
    ("evaluation",),  # the eight tasks' ranks under a scorer, the zero-shot baseline, model selection
    ("serving", "training"),  # rank/embed/export; the Trainer and the epoch loop
    ("analysis",),  # trial records, the seed-aware tests, verdicts, summaries, plots, compare: no Ray
    ("bench", "sweep"),  # benchmarks; Ray Tune sweeps
    ("cli",),  # counterarg COMMAND: parse, build, run
    ("__main__",),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_nodes(path: Path, on_import: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """The import statements in ``path`` (``TYPE_CHECKING`` blocks excluded: they never run); with
    ``on_import``, only those that run when the module is imported (none inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = {
        id(n)
        for node in ast.walk(tree)
        if (isinstance(node, ast.If) and _is_type_checking(node.test))
        or (on_import and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))
        for n in ast.walk(node)
    }
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skip]


def imports_of(path: Path, on_import: bool = False) -> set[str]:
    """The package modules ``path`` imports anywhere in its body (``on_import``: only as it is imported)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in import_nodes(path, on_import):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        else:
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # ``from . import schedules``
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(on_import: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports (a package's ``__init__`` counts as the package)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path, on_import) if m in paths and m != name} for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def unit_of(module: str) -> str:
    """The package (or top-level module) a module belongs to: ``counterarg.model.biencoder`` -> ``model``;
    the root package -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def layer_of(unit: str) -> int:
    if unit == "":
        return -1
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(
        f"counterarg.{unit} is in no layer: add it to LAYERS in tests/test_imports.py "
        "(and to the README's Architecture drawing)"
    )


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a package above the importer's, or of a package beside it in the same layer."""
    out = []
    for module in sorted(graph):
        unit = unit_of(module)
        for target in sorted(graph[module]):
            other = unit_of(target)
            if other != unit and layer_of(other) >= layer_of(unit):
                where = "above" if layer_of(other) > layer_of(unit) else "beside"
                out.append(f"{module} imports {target} ({other} is {where} {unit})")
    return out


def test_every_module_imports_only_its_own_package_or_a_lower_layer():
    found = layer_violations(import_graph())
    assert not found, "layer rule broken:\n" + "\n".join(found)


def test_the_layer_check_finds_an_upward_and_a_sideways_import():
    """The checker itself: a model module importing training (up) and a retrieval module importing
    sampling (beside it) are found; imports within a package and downward ones are not."""
    graph = {
        "counterarg.model.biencoder": {
            "counterarg.training.trainer",
            "counterarg.model.features",
            "counterarg.config",
            "counterarg.core.io",
            "counterarg",
        },
        "counterarg.retrieval.pools": {"counterarg.sampling.mining", "counterarg.data.corpus"},
        "counterarg.config": {"counterarg.retrieval.tasks"},
    }
    assert layer_violations(graph) == [
        "counterarg.model.biencoder imports counterarg.training.trainer (training is above model)",
        "counterarg.retrieval.pools imports counterarg.sampling.mining (sampling is beside retrieval)",
    ]
    with pytest.raises(AssertionError, match="counterarg.newpkg is in no layer"):
        layer_violations({"counterarg.cli": {"counterarg.newpkg.x"}})


#: what the analysis layer never imports: it reads trials and runs where Ray is not installed
RAY_FREE = {"analysis": ("ray",)}


def foreign_imports(path: Path, on_import: bool = False) -> set[str]:
    """The top-level names of the packages outside counterarg that ``path`` imports anywhere in its body
    (``on_import``: only as it is imported), e.g. ``{"numpy", "ray"}``."""
    found: set[str] = set()
    for node in import_nodes(path, on_import):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"counterarg"}


def forbidden_imports(starts: list[str], banned: tuple[str, ...]) -> list[str]:
    """Where running ``starts`` would import one of ``banned``: a start module that imports it anywhere
    (in a function too), or a package module loaded on the way (through the starts' imports, then
    through the imports that run when each module is imported) that imports it on import. Each as
    ``"counterarg.x.y imports ray"``."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    anywhere, on_import = import_graph(), import_graph(on_import=True)
    loaded = reached_from(on_import, sorted({m for s in starts for m in anywhere[s]} | set(starts)))
    return [
        f"{module} imports {name}"
        for module in loaded
        for name in sorted(foreign_imports(paths[module], on_import=module not in starts))
        if name in banned
    ]


def reached_from(graph: dict[str, set[str]], starts: list[str]) -> list[str]:
    """The modules ``starts`` import, directly or through others, ``starts`` included, sorted."""
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        if (m := stack.pop()) not in seen:
            seen.add(m)
            stack += graph[m]
    return sorted(seen)


def test_no_module_of_the_analysis_layer_imports_ray():
    """Directly or through the package modules it loads; tests/analysis/test_run_compare.py also runs
    ``counterarg compare`` where Ray cannot be imported. (Config validation reaches
    ``retrieval.shards`` only inside the function that builds a sharded index.)"""
    graph = import_graph()
    for unit, banned in RAY_FREE.items():
        found = forbidden_imports([m for m in graph if unit_of(m) == unit], banned)
        assert not found, f"the {unit} layer imports {banned}:\n" + "\n".join(found)


@pytest.mark.slow
def test_the_ray_check_finds_ray_imported_in_a_function_or_on_the_way(tmp_path):
    """The checker itself: ``from ray.tune import X`` inside a function is found, a TYPE_CHECKING one is
    not; a module whose imports load a module that imports Ray is found, one that imports it only
    inside a function is not."""
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nimport numpy as np\nif TYPE_CHECKING:\n    import pyarrow\n"
        "def f():\n    from ray.tune import Callback\n    from . import x\n"
    )
    assert foreign_imports(src) == {"typing", "numpy", "ray"}
    assert foreign_imports(src, on_import=True) == {"typing", "numpy"}
    assert reached_from({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}, ["a"]) == ["a", "b", "c"]
    assert forbidden_imports(["counterarg.sweep.runner"], ("ray",))[:2] == [
        "counterarg.retrieval.shards imports ray",
        "counterarg.sweep.console imports ray",
    ]
    assert forbidden_imports(["counterarg.config"], ("ray",)) == []  # retrieval.index imports shards in a function


def test_the_package_has_no_import_circle():
    found = cycles(import_graph())
    assert not found, "import circle(s): " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_circle_and_reads_every_kind_of_import(tmp_path):
    """The checker itself: a three-module circle is found, a chain is not; relative, absolute and
    function-level imports all count, TYPE_CHECKING ones do not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    src = PACKAGE / "config.py"
    found = imports_of(src)
    assert "counterarg.core.io" in found  # a function-level ``from .io import atomic_write_text``
    graph = import_graph()
    assert "counterarg.sweep.runner" in graph and "counterarg.config" in graph["counterarg.sweep.runner"]


def stale_names(path: Path, modules: set[str], exported: dict[str, set[str]]) -> list[str]:
    """The ``counterarg.*`` names ``path`` imports, or names in a string, that this tree does not hold:
    a module that is not here, or ``from PACKAGE import NAME`` where NAME is neither a module of the
    package nor defined in its ``__init__``. A string that is Python code (run in a subprocess) is read
    as code too."""
    package = module_name(path).rpartition(".")[0] if path.is_relative_to(PACKAGE) else None
    return _stale_in(path.read_text(encoding="utf-8"), package, modules, exported, strings=path != Path(__file__))


def _stale_in(
    source: str, package: str | None, modules: set[str], exported: dict[str, set[str]], strings: bool = True
) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "counterarg" and a.name not in modules]
        elif isinstance(node, ast.ImportFrom):
            if node.level and package is None:
                continue  # a test package's own ``from .conftest import``
            if node.level:
                base = package.split(".")
                target = ".".join([*base[: len(base) - (node.level - 1)], *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "counterarg":
                continue
            if target not in modules:
                found.append(target)
                continue
            found += [
                f"{target}.{a.name}"
                for a in node.names
                if target in exported and f"{target}.{a.name}" not in modules and a.name not in exported[target]
            ]
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [
                m.group(0)
                for m in re.finditer(r"\bcounterarg\.([A-Za-z_]\w*)", node.value)
                if f"counterarg.{m.group(1)}" not in modules
            ]
            if re.search(r"^\s*from counterarg\b", node.value, re.M):
                try:
                    found += _stale_in(node.value, None, modules, exported, strings=False)
                except SyntaxError:
                    pass
    return found


def _defined_names(init: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_every_counterarg_name_in_the_tree_exists_in_the_tree():
    paths = list(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    exported = {module_name(p): _defined_names(p) for p in paths if p.name == "__init__.py"}
    files = [*paths, *REPO.glob("tests/**/*.py"), *REPO.glob("sweeps/*.py"), REPO / ".ci" / "mutants.py"]
    found = {str(f.relative_to(REPO)): names for f in files if (names := stale_names(f, modules, exported))}
    assert not found, f"names of modules this tree does not hold: {found}"


def test_a_moved_module_is_a_stale_name(tmp_path):
    """The checker itself: a module that is not here, by every kind of import and in a string, is found;
    the modules and package names that are here are not."""
    src = tmp_path / "t.py"
    src.write_text(
        "import counterarg.io\nfrom counterarg import io, __version__, sweep\nfrom counterarg.train import train\n"
        "from counterarg.core.io import atomic_write\nX = 'counterarg.run.Trainer'\n"
        'Y = \'counterarg.training.trainer.Trainer\'\nZ = """\nfrom counterarg import run\n"""\n'
    )
    modules = {
        "counterarg",
        "counterarg.core",
        "counterarg.core.io",
        "counterarg.sweep",
        "counterarg.training",
        "counterarg.training.trainer",
    }
    assert stale_names(src, modules, {"counterarg": {"__version__"}}) == [
        "counterarg.io",
        "counterarg.io",
        "counterarg.train",
        "counterarg.run",
        "counterarg.run",
    ]
