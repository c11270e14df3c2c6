"""The process-wide plugin manager: entry-point discovery, ``SWIRL_LOAD_PLUGINS``, plugin origins.

Plugins are found through entry points in the ``swirl_lightning`` group, the built-in tools
(``swirl-calculator``, ``swirl-search``) included. Loading is done here rather than with pluggy's
``load_setuptools_entrypoints`` so that a plugin that fails to import only warns (naming its
distribution) while the others still load, and so that each plugin's distribution and version are
remembered for error messages and ``swirl tools list``.

``SWIRL_LOAD_PLUGINS=a,b`` loads only those distributions (names compared after PEP 503
normalisation); an empty value loads none; unset loads all.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from swirl_lightning.core import hookspecs

PROJECT_NAME = "swirl_lightning"
ENTRY_POINT_GROUP = "swirl_lightning"
LOAD_PLUGINS_ENV = "SWIRL_LOAD_PLUGINS"


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded and was skipped; the other plugins still load."""


@dataclass(frozen=True)
class PluginOrigin:
    """Where a plugin came from: its distribution and version, or ``None`` when registered by hand."""

    distribution: str | None
    version: str = ""

    def describe(self, plugin_name: str) -> str:
        """``swirl-calculator 0.1.0``, or ``plugin 'NAME' (registered)`` for a hand-registered one."""
        if self.distribution is None:
            return f"plugin {plugin_name!r} (registered)"
        return f"{self.distribution} {self.version}".rstrip()


REGISTERED_BY_HAND = PluginOrigin(distribution=None)


class SwirlPluginManager(pluggy.PluginManager):
    """A pluggy manager for the ``swirl_lightning`` hooks that remembers each plugin's distribution."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        # Keyed by id(); the stored plugin object keeps the id from being reused while the entry lives.
        self._origins: dict[int, tuple[object, PluginOrigin]] = {}

    def register_from_distribution(self, plugin: object, name: str, origin: PluginOrigin) -> None:
        """Register ``plugin`` under ``name`` and record that it comes from ``origin``."""
        self.register(plugin, name=name)
        self._origins[id(plugin)] = (plugin, origin)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> object | None:
        """Unregister a plugin (by object or name) and forget its origin."""
        removed = super().unregister(plugin=plugin, name=name)
        if removed is not None:
            self._origins.pop(id(removed), None)
        return removed

    def origin_of(self, plugin: object) -> PluginOrigin:
        """The distribution ``plugin`` was loaded from; :data:`REGISTERED_BY_HAND` if none."""
        entry = self._origins.get(id(plugin))
        return entry[1] if entry is not None and entry[0] is plugin else REGISTERED_BY_HAND


def plugin_origin(pm: pluggy.PluginManager, plugin: object) -> PluginOrigin:
    """The origin of ``plugin`` in ``pm``; any plain pluggy manager counts as registered by hand."""
    if isinstance(pm, SwirlPluginManager):
        return pm.origin_of(plugin)
    return REGISTERED_BY_HAND


def options_key(plugin_name: str) -> str:
    """The key of a plugin's options in ``tools.plugins``: its entry point's name (``mcp`` of ``swirl-mcp:mcp``, as
    :func:`load_entry_point_plugins` names plugins), or the name a plugin registered by hand was given."""
    return plugin_name.rpartition(":")[2]


def normalize_distribution_name(name: str) -> str:
    """PEP 503 normalisation: ``My_Calc`` and ``my.calc`` both become ``my-calc``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requested_distributions() -> set[str] | None:
    """The normalised names in ``$SWIRL_LOAD_PLUGINS``; ``None`` (load all) when it is unset."""
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {normalize_distribution_name(part.strip()) for part in value.split(",") if part.strip()}


def load_entry_point_plugins(pm: SwirlPluginManager) -> None:
    """Register every plugin of the ``swirl_lightning`` entry-point group allowed by the environment.

    A plugin that raises while importing or registering is skipped with a :class:`PluginLoadWarning`
    naming its distribution and the exception.
    """
    wanted = requested_distributions()
    found: set[str] = set()
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        dist_name = dist.metadata["Name"] if dist is not None else entry_point.module
        origin = PluginOrigin(dist_name, dist.version if dist is not None else "")
        found.add(normalize_distribution_name(dist_name))
        if wanted is not None and normalize_distribution_name(dist_name) not in wanted:
            continue
        try:
            plugin = entry_point.load()
            # Qualified by distribution so that two distributions may reuse one entry-point name.
            pm.register_from_distribution(plugin, f"{dist_name}:{entry_point.name}", origin)
        except Exception as error:  # noqa: BLE001 - any failure of a third-party plugin is contained
            warnings.warn(
                f"plugin {origin.describe(entry_point.name)} (entry point {entry_point.name} = "
                f"{entry_point.value}) failed to load and was skipped: {type(error).__name__}: {error}",
                PluginLoadWarning,
                stacklevel=2,
            )
    for missing in sorted((wanted or set()) - found):
        warnings.warn(
            f"{LOAD_PLUGINS_ENV} names {missing!r}, but no installed distribution by that name has a "
            f"{ENTRY_POINT_GROUP!r} entry point (installed plugins: {', '.join(sorted(found)) or 'none'})",
            PluginLoadWarning,
            stacklevel=2,
        )


_manager: SwirlPluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> SwirlPluginManager:
    """The process-wide plugin manager, created (and its entry-point plugins loaded) on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            manager = SwirlPluginManager()
            load_entry_point_plugins(manager)
            _manager = manager
        return _manager


def reset_plugin_manager() -> None:
    """Forget the process-wide manager; the next :func:`get_plugin_manager` rediscovers plugins."""
    global _manager
    with _manager_lock:
        _manager = None


class RegistrationError(ValueError):
    """A plugin registered something invalid, or two plugins registered one name."""


def collect_registrations(hook_name: str, make_entry: Callable[[Any, str | None, str], tuple[str, Any]], *,
                          builtin: str | None = None, pm: pluggy.PluginManager | None = None) -> dict[str, Any]:
    """Call each implementation of the ``hook_name`` hook on its own, with a ``register(obj, name=None)`` callback,
    and return what they registered by name.

    ``make_entry(obj, name, owner)`` checks one registration and returns its (name, value); a ``ValueError`` there
    becomes a :class:`RegistrationError` naming the plugin. ``builtin`` (the module path of the built-ins' plugin,
    imported here by name so that a registry need not import what it registers) is called first unless the manager
    already holds it. A hook that raises is skipped with a :class:`PluginLoadWarning` naming
    its distribution, and the others still load. Two registrations of one name are a :class:`RegistrationError`
    naming both plugins.
    """
    pm = pm if pm is not None else get_plugin_manager()
    hooks = [(plugin_origin(pm, impl.plugin).describe(impl.plugin_name), impl.function)
             for impl in getattr(pm.hook, hook_name).get_hookimpls() if not (impl.hookwrapper or impl.wrapper)]
    if builtin is not None and not pm.is_registered(module := importlib.import_module(builtin)):
        hooks.insert(0, (f"{builtin} (built-in)", getattr(module, hook_name)))
    entries: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for owner, hook in hooks:
        found: list[tuple[str, Any]] = []

        def register(obj: Any, name: str | None = None, _owner: str = owner, _found: list = found) -> None:
            try:
                _found.append(make_entry(obj, name, _owner))
            except ValueError as error:
                raise RegistrationError(str(error)) from None

        try:
            hook(register=register)
        except RegistrationError:
            raise
        except Exception as error:  # noqa: BLE001 - a broken plugin must not take the others down
            warnings.warn(f"{owner}: {hook_name} raised {type(error).__name__}: {error}; what it registers was skipped",
                          PluginLoadWarning, stacklevel=2)
            continue
        for name, value in found:
            if name in entries:
                raise RegistrationError(f"{name!r} is registered by both {owners[name]} and {owner}")
            entries[name], owners[name] = value, owner
    return entries
