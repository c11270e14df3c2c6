"""Tools: what a tool is, and collecting them from plugins.

:func:`collect_tools` asks every plugin's ``register_tools`` hook for its tools, one plugin at a time,
so that each tool is attributed to its distribution and a clash names both sides, and hands each plugin its own options
(the run's ``tools.plugins``). Calls run through
:class:`~swirl_lightning.core.tool_executor.ToolExecutor` (a worker process that can be stopped). A tool registered
with ``takes_episode=True`` also gets the :class:`Episode` (example id, task, metadata) its call belongs to.
"""

from __future__ import annotations

import copy
import inspect
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from swirl_lightning.core.plugins import (
    LOAD_PLUGINS_ENV,
    PluginLoadWarning,
    PluginOrigin,
    get_plugin_manager,
    options_key,
    plugin_origin,
    requested_distributions,
)
from swirl_lightning.core.trajectory import ANSWER_TAG, THINKING_TAGS, Example

TAG_PATTERN = re.compile(r"[A-Za-z_][\w-]*")
"""What a tool name or tag must match in full: the model writes ``<TAG>..</TAG>``."""

RESERVED_TAGS = frozenset({ANSWER_TAG, *THINKING_TAGS})
"""Tags the action parser already gives a meaning: the final answer and thinking."""


class ToolRegistrationError(ValueError):
    """A plugin registered an invalid tool: bad name or tag, or ``fn`` not callable."""


class ToolConflictError(ToolRegistrationError):
    """Two registrations claim one tool name or one tag."""


class ToolOptionsError(ValueError):
    """The run's ``tools.plugins`` options name no tool plugin, or a plugin that takes none, or one rejected them."""


class UnknownToolError(LookupError):
    """A tool name that no plugin registered; ``known`` holds the registered names."""

    def __init__(self, names: Iterable[str], known: Iterable[str]) -> None:
        self.names = list(names)
        self.known = sorted(known)
        label = "unknown tool" if len(self.names) == 1 else "unknown tools"
        super().__init__(
            f"{label} {', '.join(map(repr, self.names))}; known tools: {', '.join(self.known) or 'none'}"
        )


@dataclass(frozen=True)
class Episode:
    """The rollout a tool call belongs to, as a tool that takes its episode sees it."""

    example_id: str
    """The example's id (``Example.id``)."""
    source: str
    """The task the question comes from (``Example.source``)."""
    metadata: Mapping[str, Any]
    """The example's metadata, e.g. ``{"corpus": "/abs/path/corpus.jsonl"}``. A shallow ``dict`` copy, not a
    read-only view: the episode is pickled to the tool's worker process, and ``types.MappingProxyType`` does not
    pickle. Changing it changes neither the example nor another call's episode."""

    @classmethod
    def of(cls, example: Example) -> Episode:
        """The episode of a rollout on ``example``."""
        return cls(example_id=example.id, source=example.source, metadata=dict(example.metadata))


@dataclass(frozen=True)
class Tool:
    """One registered tool: the model calls it by writing ``<tag>input</tag>``."""

    name: str
    tag: str
    description: str
    fn: Callable[..., str]
    """``fn(query)``, or ``fn(query, episode)`` when :attr:`takes_episode`; returns the text the model sees."""
    distribution: str | None
    """The distribution that registered the tool; ``None`` for a plugin registered by hand."""
    version: str
    """The distribution's version; ``""`` for a plugin registered by hand."""
    warm_up: Callable[..., Any] | None = None
    """Called once, without the call timeout, before the first call (e.g. to load an index); with the first call's
    episode when :attr:`takes_episode`."""
    takes_episode: bool = False
    """Whether the executor calls ``fn(query, episode)`` with the call's :class:`Episode`, instead of ``fn(query)``.
    The episode is ``None`` when a call has none (e.g. ``swirl tools call`` without ``--episode``)."""

    @property
    def source(self) -> str:
        """``swirl-calculator 0.1.0``, or ``(registered)`` for a plugin registered by hand."""
        return f"{self.distribution} {self.version}".rstrip() if self.distribution else "(registered)"


def describe(fn: Callable[..., Any]) -> str:
    """The first paragraph of ``fn``'s docstring on one line; ``""`` without a docstring."""
    doc = inspect.getdoc(fn) or ""
    first_paragraph = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    return " ".join(first_paragraph.split())


def collect_tools(pm: pluggy.PluginManager | None = None,
                  options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Tool]:
    """All tools registered through ``register_tools``, keyed and sorted by name.

    Each plugin's hook is called on its own, so every tool is attributed to its distribution, with its own options:
    ``options[name]`` (a copy; ``{}`` when absent), ``name`` being the plugin's entry-point name (the run's
    ``tools.plugins``; :func:`~swirl_lightning.core.plugins.options_key`). Raises :class:`ToolRegistrationError` for
    an invalid registration and :class:`ToolConflictError` when two registrations share a name or a tag; both name
    the distributions involved. Raises :class:`ToolOptionsError` for options naming no plugin, or a plugin whose hook
    takes none, and when a plugin given options raises (a bad option). A plugin given none whose hook raises is
    skipped with a :class:`PluginLoadWarning`, like one that fails to import. Nothing is cached, so plugins
    registered or unregistered since the last call are seen.
    """
    pm = pm if pm is not None else get_plugin_manager()
    options = dict(options or {})
    # A wrapper surrounds other implementations and registers nothing itself.
    impls = [impl for impl in pm.hook.register_tools.get_hookimpls() if not (impl.hookwrapper or impl.wrapper)]
    _check_options(options, {options_key(impl.plugin_name): impl for impl in impls}, pm)
    by_name: dict[str, tuple[Tool, str]] = {}
    by_tag: dict[str, tuple[Tool, str]] = {}
    for impl in impls:
        origin = plugin_origin(pm, impl.plugin)
        source = origin.describe(impl.plugin_name)
        plugin_key = options_key(impl.plugin_name)
        registered: list[Tool] = []
        # A deep copy: a plugin that changes its options changes neither the run's config nor another call's.
        arguments = {"register": _registrar(registered, source, origin),
                     "options": copy.deepcopy(dict(options.get(plugin_key, {})))}
        try:
            impl.function(**{arg: arguments[arg] for arg in impl.argnames})
        except ToolRegistrationError:
            raise
        except Exception as error:  # noqa: BLE001 - a broken plugin must not take the others down
            if plugin_key in options:  # the run configured this plugin: going on without its tools would hide why
                raise ToolOptionsError(f"tools.plugins.{plugin_key} ({source}): {type(error).__name__}: {error}") \
                    from error
            warnings.warn(
                f"{source}: register_tools raised {type(error).__name__}: {error}; "
                "its tools were skipped",
                PluginLoadWarning,
                stacklevel=2,
            )
            continue
        for tool in registered:
            for seen, key, what in ((by_name, tool.name, "tool name"), (by_tag, tool.tag, "tag")):
                if key in seen:
                    raise ToolConflictError(_conflict_message(what, key, seen[key], (tool, source)))
            by_name[tool.name] = by_tag[tool.tag] = (tool, source)
    return {name: by_name[name][0] for name in sorted(by_name)}


def _check_options(options: Mapping[str, Any], impls: Mapping[str, Any], pm: pluggy.PluginManager) -> None:
    """:class:`ToolOptionsError` for options that no plugin would read: a name no plugin with tools has, a plugin
    whose hook takes no ``options``, or options that are not a mapping."""
    for key, value in options.items():
        if key not in impls:
            limited = f"; {LOAD_PLUGINS_ENV} leaves some out" if requested_distributions() is not None else ""
            raise ToolOptionsError(f"tools.plugins.{key}: no loaded tool plugin is named {key!r} (a plugin's name is "
                                   f"its entry point's; tool plugins: {', '.join(sorted(impls)) or 'none'}{limited})")
        source = plugin_origin(pm, impls[key].plugin).describe(impls[key].plugin_name)
        if "options" not in impls[key].argnames:
            raise ToolOptionsError(f"tools.plugins.{key}: {source} takes no options (its register_tools hook has no "
                                   "options argument)")
        if not isinstance(value, Mapping):
            raise ToolOptionsError(f"tools.plugins.{key}: expected a mapping of options, got {type(value).__name__}")


def _registrar(registered: list[Tool], source: str, origin: PluginOrigin) -> Callable[..., None]:
    """The ``register`` callback handed to one plugin: it validates and collects that plugin's tools."""

    def register(fn: Callable[..., str], name: str | None = None, tag: str | None = None,
                 warm_up: Callable[..., Any] | None = None, takes_episode: bool = False) -> None:
        registered.append(_make_tool(fn, name, tag, source, origin, warm_up, takes_episode))

    return register


def _make_tool(fn: Any, name: str | None, tag: str | None, source: str, origin: PluginOrigin,
               warm_up: Any = None, takes_episode: Any = False) -> Tool:
    if not callable(fn):
        raise ToolRegistrationError(f"{source}: register() expects a callable, got {type(fn).__name__}")
    if warm_up is not None and not callable(warm_up):
        raise ToolRegistrationError(f"{source}: register(warm_up=...) expects a callable, got {type(warm_up).__name__}")
    if not isinstance(takes_episode, bool):  # a truthy string or 1 would be a silent guess at the call signature
        raise ToolRegistrationError(
            f"{source}: register(takes_episode=...) expects a bool, got {type(takes_episode).__name__}")
    name = getattr(fn, "__name__", None) if name is None else name
    if not isinstance(name, str) or not TAG_PATTERN.fullmatch(name):
        raise ToolRegistrationError(
            f"{source}: invalid tool name {name!r}: expected letters, digits, '_' or '-', not starting "
            "with a digit (pass register(fn, name=...) for a lambda or a callable object)"
        )
    tag = name if tag is None else tag
    if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
        raise ToolRegistrationError(
            f"{source}: invalid tag {tag!r} for tool {name!r}: expected letters, digits, '_' or '-', "
            "not starting with a digit"
        )
    if tag in RESERVED_TAGS:
        raise ToolRegistrationError(
            f"{source}: tag {tag!r} for tool {name!r} is reserved "
            f"(reserved: {', '.join(sorted(RESERVED_TAGS))})"
        )
    return Tool(name=name, tag=tag, description=describe(fn), fn=fn,
                distribution=origin.distribution, version=origin.version, warm_up=warm_up,
                takes_episode=takes_episode)


def _conflict_message(what: str, key: str, first: tuple[Tool, str], second: tuple[Tool, str]) -> str:
    (first_tool, first_source), (second_tool, second_source) = first, second
    if first_source == second_source:
        return f"{what} {key!r} is registered twice by {first_source}"
    if what == "tag":
        return (f"tag {key!r} is claimed by both tool {first_tool.name!r} ({first_source}) "
                f"and tool {second_tool.name!r} ({second_source})")
    return f"{what} {key!r} is registered by both {first_source} and {second_source}"


def tool_tags(tools: Mapping[str, Tool]) -> dict[str, str]:
    """Map each tool's tag to its name, as :func:`swirl_lightning.core.trajectory.parse_action` expects."""
    return {tool.tag: tool.name for tool in tools.values()}


def select_tools(tools: Mapping[str, Tool], names: Iterable[str] | None) -> dict[str, Tool]:
    """The tools named in ``names`` (all of them for ``None``); :class:`UnknownToolError` otherwise."""
    if names is None:
        return dict(tools)
    names = list(names)
    unknown = [name for name in names if name not in tools]
    if unknown:
        raise UnknownToolError(unknown, tools)
    return {name: tools[name] for name in names}
