"""Every dotted path the docs, the docstrings and the pyproject files name resolves, and every repository file they,
the configs, the Makefile and the scripts name exists, so that none goes stale in a move.

A *dotted path* is a module, or an object in one: ``swirl_lightning.judging.base``,
``swirl_lightning.judging.base.StepJudge``, ``swirl_lightning.cli:entry`` (an entry point's ``module:attribute``),
or in a docstring a Sphinx reference relative to the module's package (``:mod:`.options``` in
``judging/base.py`` is ``swirl_lightning.judging.options``). Looked for in the README, ``docs/``,
``benchmarks/README.md``, the plugins' and adapters' READMEs, the configs, the Makefile and the scripts, the
docstrings of the library, the plugins, the benchmarks, the scripts and the tests, and every ``pyproject.toml``,
whose package-data globs must each match a file too. A bare name in a reference
(``:meth:`load```) is not a path: it is left to the reader's context.
"""

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("swirl_lightning", "swirl_calculator", "swirl_search", "swirl_python", "swirl_mcp", "swirl_tensorboard")
# An absolute path: a package of ours, then .names, then an optional :attribute (not inside a file path or a URL).
ABSOLUTE = re.compile(rf"(?<![\w./-])((?:{'|'.join(PACKAGES)})(?:\.\w+)*(?::\w+(?:\.\w+)*)?)")
RELATIVE = re.compile(r":(?:mod|class|func|meth|attr|data|exc|obj):`~?(\.[\w.]+)`")
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
        *sorted(ROOT.glob("plugins/*/README.md")), *sorted(ROOT.glob("plugins/*/docs/**/*.md")),
        *sorted(ROOT.glob("adapters/*/README.md"))]
PYPROJECTS = [ROOT / "pyproject.toml", *sorted(ROOT.glob("plugins/*/pyproject.toml"))]
SOURCES = sorted([*(ROOT / "swirl_lightning").rglob("*.py"), *ROOT.glob("plugins/*/swirl_*/**/*.py")])
CONFIGS_AND_SCRIPTS = [ROOT / "Makefile", *sorted((ROOT / "scripts").glob("*.sh")), *sorted((ROOT / "conf").rglob("*.yaml"))]
SCRIPTS = sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "tests").rglob("*.py")])
"""Python files outside the packages: their docstrings are read for absolute paths (they have no package to be
relative to)."""


def module_of(path: Path) -> tuple[str, str]:
    """(module name, its package) of a source file."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts = parts[2:] if parts[0] == "plugins" else parts  # plugins/<distribution>/<package>/...
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def docstrings(path: Path) -> list[str]:
    """Every docstring of a module: its own, its classes' and functions', and the attribute docstrings."""
    return [node.value.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]


def named_paths() -> dict[str, set[str]]:
    """Dotted path -> the files that name it."""
    found: dict[str, set[str]] = {}

    def add(name: str, where: Path) -> None:
        found.setdefault(name.rstrip("."), set()).add(str(where.relative_to(ROOT)))

    for path in [*DOCS, *PYPROJECTS, *CONFIGS_AND_SCRIPTS]:
        for match in ABSOLUTE.finditer(path.read_text()):
            add(match.group(1), path)
    for path in SCRIPTS:
        for text in docstrings(path):
            for match in ABSOLUTE.finditer(text):
                add(match.group(1), path)
    for path in SOURCES:
        module, package = module_of(path)
        for text in docstrings(path):
            for match in ABSOLUTE.finditer(text):
                add(match.group(1), path)
            for match in RELATIVE.finditer(text):
                add(package + match.group(1), path)
    return found


def has_member(obj: object, name: str) -> bool:
    """``obj.name`` exists, or is declared without a value: a dataclass field with a factory, a protocol's
    annotated attribute."""
    if hasattr(obj, name):
        return True
    if dataclasses.is_dataclass(obj) and name in {field.name for field in dataclasses.fields(obj)}:
        return True
    return isinstance(obj, type) and any(name in vars(cls).get("__annotations__", {}) for cls in obj.__mro__)


def resolve(path: str) -> None:
    """Import ``path``'s module and walk its attributes; an ``AssertionError`` naming the part that is missing."""
    module_path, colon, attributes = path.partition(":")
    parts = module_path.split(".")
    for end in range(len(parts), 0, -1):  # the longest prefix that is a module
        name = ".".join(parts[:end])
        try:
            obj = importlib.import_module(name)
            break
        except ModuleNotFoundError as error:
            if error.name is None or not name.startswith(error.name):
                raise  # the module exists and imports something missing: a real failure, not a stale name
    else:
        raise AssertionError(f"{path}: no module {parts[0]}")
    rest = parts[end:]
    assert not (colon and rest), f"{path}: no module {module_path} (module:attribute needs a module before the colon)"
    for name in rest + (attributes.split(".") if colon else []):
        assert has_member(obj, name), f"{path}: {getattr(obj, '__name__', obj)} has no {name}"
        obj = getattr(obj, name, None)


PATHS = named_paths()


def test_the_docs_name_paths():
    """The scan finds what it should (a broken pattern would pass every path by finding none)."""
    assert {"swirl_lightning.cli:entry", "swirl_lightning.judging.base.StepJudge",
            "swirl_lightning.judging.options"} <= set(PATHS)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_named_path_resolves(path):
    try:
        resolve(path)
    except AssertionError as error:
        raise AssertionError(f"{error} (named in {', '.join(sorted(PATHS[path]))})") from None


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_package_data_glob_matches_a_file(pyproject):
    package_data = tomllib.loads(pyproject.read_text()).get("tool", {}).get("setuptools", {}).get("package-data", {})
    for package, globs in package_data.items():
        folder = pyproject.parent / package.replace(".", "/")
        empty = [glob for glob in globs if not any(p.is_file() for p in folder.glob(glob))]
        assert not empty, f"{pyproject.relative_to(ROOT)}: package-data of {package} matches no file: {empty}"


FILE_PATH = re.compile(r"(?<![\w./-])((?:conf|benchmarks|scripts|adapters|tests|docs|plugins|swirl_lightning)/[\w./-]*\w"
                       r"\.(?:py|yaml|yml|md|sh|json|txt|png|toml))(?![\w/-])")
"""A file of the repository by its path from the root: ``conf/quickstart.yaml``, ``tests/repo/test_conf.py``."""
TEXTS = [*DOCS, *PYPROJECTS, *CONFIGS_AND_SCRIPTS]


def named_files() -> dict[str, set[str]]:
    """Repository file path -> the files that name it: the docs, the configs, the Makefile and scripts, and the
    docstrings of the library, the plugins, the benchmarks, the scripts and the tests."""
    found: dict[str, set[str]] = {}
    texts = [(path, path.read_text()) for path in TEXTS]
    texts += [(path, text) for path in [*SOURCES, *SCRIPTS] for text in docstrings(path)]
    for path, text in texts:
        for match in FILE_PATH.finditer(text):
            if "*" not in match.group(1) and "..." not in match.group(1):  # a pattern or an elision: no one file
                found.setdefault(match.group(1), set()).add(str(path.relative_to(ROOT)))
    return found


FILES = named_files()


def test_the_docs_name_files():
    assert {"conf/quickstart.yaml", "benchmarks/README.md"} <= set(FILES)


@pytest.mark.parametrize("path", sorted(FILES))
def test_a_named_file_exists(path):
    namers = sorted(FILES[path])
    # A plugin's README names its own files from the plugin's folder; a benchmark names the result file it writes.
    folders = [ROOT, *(ROOT / Path(namer).parents[-3] for namer in namers if namer.startswith("plugins/"))]
    writes = path.startswith("benchmarks/results/") and all(n.startswith("benchmarks/") and n.endswith(".py")
                                                           for n in namers)
    assert writes or any((folder / path).exists() for folder in folders), \
        f"{path} does not exist (named in {', '.join(namers)})"
