"""The layout is the architecture: packages import downwards only (training -> rollout -> judging -> core), the core
never imports a plugin nor names a plugin's tag, and no module outgrows one sitting."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "swirl_lightning"
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
    from swirl_lightning.training.module import SwirlModule
    import inspect

    assert len(inspect.getsource(SwirlModule).splitlines()) < 250
