"""``swirl tools list`` and ``swirl tools call``: the registered tools, and one call through the rollout's wrapper.

Both take the run's ``tools`` group (:class:`~swirl_lightning.core.config.ToolsConfig`), from ``--config`` files (a
run's config, whose other groups are left aside, or an overlay such as ``conf/mcp/example.yaml``) and ``--tools.*``
flags, with the defaults a rollout has: ``swirl tools call`` is a rollout's tool call, cap and timeout included.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from swirl_lightning.core.config import ToolsConfig, parse_config

if TYPE_CHECKING:
    from swirl_lightning.core.tools import Episode

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


@dataclass
class ToolsListConfig:
    """List every registered tool: name, tag, distribution, description."""

    format: Literal["table", "json"] = "table"
    """``table`` (aligned columns) or ``json`` (a list of objects: name, tag, distribution, version, description)."""
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    """The run's tools group: ``tools.plugins`` gives plugins their options."""


@dataclass
class ToolsCallConfig:
    """Run one tool through the rollout's execution wrapper: worker process, timeout, output cap."""

    name: str
    """Tool name, as ``swirl tools list`` shows it."""
    query: str
    """The text the model would write inside the tool's tag."""
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    """The run's tools group: its limits (``tools.timeout_s``, ``tools.max_output_chars``, ``tools.warm_up_timeout_s``,
    ``tools.pid_namespace``) and its plugins' options (``tools.plugins``), as a rollout has them."""
    episode: str | None = None
    """The episode a tool that takes its episode gets: a JSON object ``{"example_id": ..., "source": ..., "metadata":
    {...}}``, each key optional (``example_id`` and ``source`` default to ``cli``); without it such a tool gets None."""


def list_main(argv: list[str]) -> int:
    """``swirl tools list``: print the registered tools as an aligned table, or as JSON with ``--format json``."""
    from swirl_lightning.core.tools import ToolRegistrationError, collect_tools

    config = parse_config(ToolsListConfig, argv, "swirl tools list", only_own_groups=True)
    try:
        tools = list(collect_tools(options=config.tools.plugins).values())
    except ToolRegistrationError as error:
        print(f"swirl tools list: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
    if config.format == "json":
        rows = [{"name": t.name, "tag": t.tag, "distribution": t.distribution, "version": t.version,
                 "description": t.description} for t in tools]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not tools:
        print("no tools registered (is SWIRL_LOAD_PLUGINS limiting the plugins loaded?)", file=sys.stderr)
        return EXIT_OK
    table = [("NAME", "TAG", "DISTRIBUTION", "DESCRIPTION")]
    table += [(t.name, f"<{t.tag}>", t.source, t.description) for t in tools]
    widths = [max(len(row[column]) for row in table) for column in range(3)]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    return EXIT_OK


def call_main(argv: list[str]) -> int:
    """``swirl tools call NAME QUERY``: run one tool as a rollout would; exit 1 on a tool error, 2 for an unknown tool
    name or a bad ``--episode``."""
    from swirl_lightning.core import tool_executor
    from swirl_lightning.core.tools import ToolRegistrationError, UnknownToolError, collect_tools, select_tools

    config = parse_config(ToolsCallConfig, argv, "swirl tools call", positional=("name", "query"), only_own_groups=True)
    try:
        episode = parse_episode(config.episode) if config.episode is not None else None
    except ValueError as error:
        print(f"swirl tools call: --episode: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        tools = select_tools(collect_tools(options=config.tools.plugins), [config.name])
    except UnknownToolError as error:
        print(f"swirl tools call: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ToolRegistrationError as error:
        print(f"swirl tools call: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
    with tool_executor.ToolExecutor(tools, config.tools) as executor:
        result = executor.run(config.name, config.query, episode)
    if result.error is not None:
        print(f"swirl tools call: {config.name}: {result.error}", file=sys.stderr)
        return EXIT_ERROR
    print(result.output)
    return EXIT_OK


EPISODE_KEYS = {"example_id": str, "source": str, "metadata": dict}
"""The keys ``swirl tools call --episode`` accepts, with the JSON type each must have."""


def parse_episode(text: str) -> Episode:
    """The :class:`~swirl_lightning.core.tools.Episode` of a ``--episode`` JSON object; ``example_id`` and ``source``
    default to ``"cli"``, ``metadata`` to ``{}``. Raises :class:`ValueError` with a one-line reason."""
    from swirl_lightning.core.safe_load import loads_json
    from swirl_lightning.core.tools import Episode

    try:
        value = loads_json(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error.msg} at position {error.pos}") from None
    if not isinstance(value, dict):
        raise ValueError(f'expected a JSON object like {{"metadata": {{...}}}}, got {type(value).__name__}')
    unknown = sorted(set(value) - set(EPISODE_KEYS))
    if unknown:
        label = "unknown key" if len(unknown) == 1 else "unknown keys"
        raise ValueError(f"{label} {', '.join(map(repr, unknown))}; expected some of "
                         f"{', '.join(EPISODE_KEYS)}")
    for key, kind in EPISODE_KEYS.items():
        if key in value and not isinstance(value[key], kind):
            raise ValueError(f"{key!r} must be a JSON {'object' if kind is dict else 'string'}, "
                             f"got {type(value[key]).__name__}")
    return Episode(example_id=value.get("example_id", "cli"), source=value.get("source", "cli"),
                   metadata=value.get("metadata", {}))
