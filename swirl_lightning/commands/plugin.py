"""``swirl plugin new NAME``: write a ready tool-plugin package."""

from __future__ import annotations

from dataclasses import dataclass

from swirl_lightning.core.config import parse_config


@dataclass
class PluginNewConfig:
    """A ready tool-plugin package: pyproject with the entry point, one tool, tests with swirl_lightning.testing, a
    README."""

    name: str
    """The distribution name, e.g. ``swirl-dice`` (also its folder)."""
    output: str = "."
    """The folder to write NAME/ in."""
    tool: str | None = None
    """The tool's name; NAME without ``swirl-``, ``-`` as ``_`` when null."""
    tag: str | None = None
    """The tag the model writes; the tool's name when null."""


def new_main(argv: list[str]) -> int:
    """``swirl plugin new``: write the plugin package and say how to install and try it."""
    from swirl_lightning.scaffold import PluginNames, new_plugin

    config = parse_config(PluginNewConfig, argv, "swirl plugin new", positional=("name",))
    names = PluginNames.of(config.name, config.tool, config.tag)
    folder = new_plugin(names, config.output)
    print(f"wrote {folder}: the tool {names.tool!r} (<{names.tag}>) in {names.module}/__init__.py, tests in tests/\n"
          f"  pip install -e {folder}\n  swirl tools list\n  swirl tools call {names.tool} \"to be or not\"\n"
          f"  python -m pytest {folder / 'tests'} -q")
    return 0
