"""``swirl plugin new NAME``: a ready tool-plugin package from the templates in ``swirl_lightning/templates/plugin``.

The templates are Jinja2 files shipped in the package. Jinja2 rather than copier or cookiecutter: it is already
installed (torch and transformers need it), the template is five files with three values derived from one name, so
neither prompts nor template updates (copier's strength) are needed, and the templates stay plain files a reader can
open. The result: ``pyproject.toml`` with the entry point, the module with one tool and its hook, tests that use
:mod:`swirl_lightning.testing`, and a README with the install and try commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates" / "plugin"
_DISTRIBUTION = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


@dataclass(frozen=True)
class PluginNames:
    """The names of a new plugin, all derived from its distribution name unless given."""

    distribution: str
    """``swirl-dice``: the package's name on the index, and its folder."""
    module: str
    """``swirl_dice``: the import name."""
    tool: str
    """``dice``: the tool's name (and the function's)."""
    tag: str
    """``dice``: what the model writes, ``<dice>..</dice>``."""

    @classmethod
    def of(cls, distribution: str, tool: str | None = None, tag: str | None = None) -> PluginNames:
        """Derive and check the names; :class:`ValueError` says which one is wrong and how to write it."""
        from swirl_lightning.core.tools import RESERVED_TAGS, TAG_PATTERN

        if not _DISTRIBUTION.fullmatch(distribution or ""):
            raise ValueError(f"plugin name {distribution!r}: expected lower-case letters and digits in words joined by "
                             "'-', starting with a letter, e.g. swirl-dice")
        module = distribution.replace("-", "_")
        tool = tool if tool is not None else module.removeprefix("swirl_") or module
        if not re.fullmatch(r"[A-Za-z_]\w*", tool) or tool in ("register_tools",):
            raise ValueError(f"tool name {tool!r}: expected a Python identifier (letters, digits, '_'), e.g. dice")
        tag = tag if tag is not None else tool
        if not TAG_PATTERN.fullmatch(tag) or tag in RESERVED_TAGS:
            raise ValueError(f"tag {tag!r}: expected letters, digits, '_' or '-', not starting with a digit, and none "
                             f"of the reserved tags {', '.join(sorted(RESERVED_TAGS))}")
        return cls(distribution, module, tool, tag)


def new_plugin(names: PluginNames, output: str | Path = ".") -> Path:
    """Write the plugin package ``output/<distribution>`` and return its folder; :class:`FileExistsError` when the
    folder exists (nothing is overwritten)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    folder = Path(output) / names.distribution
    if folder.exists():
        raise FileExistsError(f"{folder} exists: choose another name or --output folder")
    environment = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)
    values = vars(names)
    targets = {"pyproject.toml.j2": "pyproject.toml", "README.md.j2": "README.md",
               "package/__init__.py.j2": f"{names.module}/__init__.py",
               "tests/test_tool.py.j2": f"tests/test_{names.tool}.py"}
    for template, target in targets.items():
        path = folder / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(environment.get_template(template).render(**values), encoding="utf-8")
    return folder
