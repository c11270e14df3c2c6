"""swirl-mcp: the tools of MCP servers (Model Context Protocol) as swirl-lightning tools.

Name the servers in the run's tools config, ``tools.plugins.mcp`` (:mod:`swirl_mcp.config`); each allowlisted tool of
each server is registered under its own name and tag, with the description of its schema (:mod:`swirl_mcp.tools`).
The servers are asked for their tools once per process; the tool worker keeps one session per server open between
calls (:mod:`swirl_mcp.connection`), and a stdio server dies with it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

from swirl_lightning import hookimpl
from swirl_mcp.config import McpConfigError, ServerConfig, load_servers
from swirl_mcp.connection import Connection, McpUnavailable, describe
from swirl_mcp.tools import McpTool, McpToolError, ToolSpec, close_all

__all__ = ["McpConfigError", "McpTool", "McpToolError", "ServerConfig", "ToolSpec", "close_all",
           "list_specs", "load_servers", "register_tools"]


class McpServerWarning(UserWarning):
    """A configured MCP server could not be listed, or lacks an allowlisted tool; shown once per process."""


_listings: dict[ServerConfig, list[ToolSpec]] = {}
_listings_lock = threading.Lock()


def list_specs(server: ServerConfig) -> list[ToolSpec]:
    """The allowlisted tools of ``server``, in allowlist order, asked of the server once per process.

    A server that cannot be reached gets one placeholder per allowlisted name (a call reconnects and fails with the
    reason, or finds the tool then), and one :class:`McpServerWarning`.
    """
    with _listings_lock:
        if server not in _listings:
            _listings[server] = _list(server)
        return _listings[server]


def _list(server: ServerConfig) -> list[ToolSpec]:
    try:
        connection = Connection(server).open()
        try:
            listed = connection.call(lambda client: client.list_tools(), server.startup_timeout_s).tools
        finally:
            connection.close()
    except (McpUnavailable, Exception) as error:  # noqa: BLE001 - any failure: the run goes on without the listing
        warnings.warn(f"swirl-mcp: server {server.name!r} could not be listed ({describe(error)}); its tools "
                      f"{', '.join(server.tools)} will answer with an error until it starts", McpServerWarning,
                      stacklevel=2)
        return [ToolSpec(server, name, "", {}) for name in server.tools]
    by_name = {tool.name: tool for tool in listed}
    missing = [name for name in server.tools if name not in by_name]
    if missing:
        warnings.warn(f"swirl-mcp: server {server.name!r} has no tool {', '.join(missing)} (it has "
                      f"{', '.join(sorted(by_name)) or 'none'}); left out", McpServerWarning, stacklevel=2)
    return [ToolSpec(server, name, by_name[name].description or "", dict(by_name[name].input_schema or {}))
            for name in server.tools if name in by_name]


@hookimpl
def register_tools(register: Callable[..., None], options: dict[str, Any]) -> None:
    """Register every allowlisted tool of every server of ``options`` (the run's ``tools.plugins.mcp``; none
    without). Malformed options raise :class:`McpConfigError`, which stops the run with its message."""
    for server in load_servers(options):
        for spec in list_specs(server):
            tool = McpTool(spec)
            register(tool, name=spec.name, tag=spec.name, warm_up=tool.warm_up)
