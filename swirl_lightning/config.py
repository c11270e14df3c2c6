"""Typed config dataclasses as command lines: ``--config FILE.yaml`` plus ``--field value`` overrides.

Attribute docstrings become the ``--help`` text (jsonargparse reads them); YAML files may use
OmegaConf ``${...}`` interpolation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def parse_config(cls: type[T], argv: list[str], prog: str) -> T:
    """Parse ``argv`` (``--config`` files and ``--field`` overrides) into an instance of dataclass ``cls``."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog=prog, description=(cls.__doc__ or "").strip(), parser_mode="omegaconf",
                            exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (later flags override it)")
    parser.add_class_arguments(cls, as_group=False)
    namespace = parser.parse_args(argv)
    values = {f.name: namespace[f.name] for f in dataclasses.fields(cls) if f.name in namespace}
    try:
        return cls(**values)
    except ValueError as error:  # a dataclass's own validation: report it like any bad flag
        parser.error(str(error))


def config_command(cls: type[T], run: Callable[[T], Any], prog: str) -> Callable[[list[str]], int]:
    """A ``main(argv) -> exit code`` that parses a ``cls`` config and calls ``run`` with it."""

    def main(argv: list[str]) -> int:
        run(parse_config(cls, argv, prog))
        return 0

    return main
