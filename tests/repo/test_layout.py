"""The layout is the architecture: packages import downwards only (training -> rollout -> judging -> core), no import
circle inside a package or between packages, the core never imports a plugin nor names a plugin's tag, and no module
outgrows one sitting."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "swirl_lightning"
LAYERS = ["core", "judging", "rollout", "training"]  # each may import the ones before it
PLUGIN_MODULES = ("swirl_calculator", "swirl_search", "swirl_tensorboard", "swirl_python", "swirl_mcp")
PLUGIN_TAGS = ("math_exp", "search_query")
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def layer(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 and parts[0] in LAYERS else None


@pytest.mark.parametrize("path", [p for p in MODULES if layer(p)], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downwards_only(path):
    allowed = set(LAYERS[: LAYERS.index(layer(path)) + 1])
    upward = sorted(name for name in imported_modules(path)
                    if name.startswith("swirl_lightning.") and name.split(".")[1] in LAYERS
                    and name.split(".")[1] not in allowed)
    assert not upward, f"{path.name} imports a later stage: {upward}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    """The stage package a module belongs to (``swirl_lightning.core``, ...), its subpackages included: circles among
    those are circles inside the package, which :func:`test_no_import_circle_inside_a_package` catches module by
    module. The top-level modules (``cli``, ``testing``, ...) stand each for itself: they sit above every stage, while
    ``swirl_lightning/__init__`` (the hook marker) sits below every one."""
    parts = path.relative_to(PACKAGE).parts
    return module_name(PACKAGE / parts[0] / "__init__.py" if len(parts) > 1 else path)


NAMES = {module_name(p): p for p in MODULES}


def import_graph() -> dict[str, set[str]]:
    """Module -> the library's modules it imports. Every import statement counts, wherever it stands: at the top,
    under ``if TYPE_CHECKING:`` (an annotation names the other module as much as a call does), and inside a function
    (deferring an import hides a circle from the interpreter, not from a reader: the modules still need each other).
    A module loaded by its name as a string (the built-ins' plugins, entry points) is no import: that is how a
    registry finds what registers into it without depending on it. ``from pkg import mod`` imports ``pkg.mod``."""
    graph = {}
    for name, path in NAMES.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = set()
        for target in targets:
            while target and target not in NAMES:  # a name inside a module stands for that module
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                    break
                if target in stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
    return found


def test_circles_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_inside_a_package():
    found = [sorted(c) for c in circles(import_graph())]
    assert not found, f"import circles: {found} (move what both need into a module of its own, or register by name)"


def test_the_objectives_see_neither_the_lightning_module_nor_the_callbacks():
    """An objective gets ObjectiveParts (issue 24): nothing under training/objectives/ may name the module or the
    callbacks, not even for a type annotation."""
    graph = import_graph()
    objectives = [name for name in graph if name.startswith("swirl_lightning.training.objectives")]
    assert len(objectives) >= 4
    for name in objectives:
        assert not graph[name] & {"swirl_lightning.training.module", "swirl_lightning.training.callbacks"}, name


def test_no_import_circle_between_packages():
    packages: dict[str, set[str]] = {}
    for name, targets in import_graph().items():
        source = package_of(NAMES[name])
        packages.setdefault(source, set()).update(package_of(NAMES[t]) for t in targets)
        packages[source].discard(source)
    assert not circles(packages), f"packages that import each other: {circles(packages)}"


def test_the_built_ins_register_from_a_module_of_their_own():
    """The registries name their built-ins' plugin by module path; nothing in the registry imports it."""
    from swirl_lightning.core.tasks import DEFAULT_PLUGIN as TASKS
    from swirl_lightning.core.tasks import available_tasks
    from swirl_lightning.judging.base import DEFAULT_PLUGIN as JUDGES
    from swirl_lightning.judging.base import available_judges
    from swirl_lightning.training.objectives.base import DEFAULT_PLUGIN as OBJECTIVES
    from swirl_lightning.training.objectives.base import available_objectives

    graph = import_graph()
    assert TASKS in NAMES and TASKS not in graph["swirl_lightning.core.tasks"]
    assert JUDGES in NAMES and JUDGES not in graph["swirl_lightning.judging.base"]
    assert OBJECTIVES in NAMES and OBJECTIVES not in graph["swirl_lightning.training.objectives.base"]
    assert OBJECTIVES not in graph["swirl_lightning.training.objectives"]
    assert set(available_objectives()) >= {"sft", "offline", "swirl"}
    assert {"gsm8k", "hotpotqa", "jsonl", "worlds"} <= set(available_tasks())
    assert {"process", "reference", "served", "qa_em"} <= set(available_judges())


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_library_imports_no_plugin_and_names_no_plugin_tag(path):
    if path.name == "testing.py":
        return  # fakes for tests may build a calculator-like tool with any tag
    assert not {name for name in imported_modules(path) if name.split(".")[0] in PLUGIN_MODULES}
    source = path.read_text()
    assert not [tag for tag in PLUGIN_TAGS if tag in source], f"{path.name} names a plugin's tag"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_500_lines(path):
    assert len(path.read_text().splitlines()) <= 500


def test_the_lightning_module_reads_in_one_sitting():
    import inspect

    from swirl_lightning.training.module import SwirlModule

    assert len(inspect.getsource(SwirlModule).splitlines()) < 250
