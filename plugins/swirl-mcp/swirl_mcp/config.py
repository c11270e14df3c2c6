"""Which MCP servers to connect and which of their tools to offer: the plugin's part of the tools config.

The servers are the plugin's options, ``tools.plugins.mcp`` of the run's config (the ``register_tools`` hook gets
them), in YAML (``conf/mcp/example.yaml``, given with ``--config``) or inline (``--tools.plugins '{mcp: ...}'``)::

    tools:
      plugins:
        mcp:
          servers:
            - name: files                      # a label for errors
              command: [python, -m, my_server] # stdio: the server's command line, `python` being the run's interpreter
                                               # (or url: http://127.0.0.1:8000/mcp, streamable HTTP)
              env: {ROOT: /data}               # extra environment of a stdio server (it does not inherit the run's)
              tools: [read_file, search]       # the allowlist: only these tools become SWiRL tools
              prefix: ""                       # prepended to each tool's name and tag, e.g. "files_"
              startup_timeout_s: 30            # connecting and listing the tools
              call_timeout_s: 8                # one call (keep it under tools.timeout_s)
              max_result_chars: 100000         # a longer result is an error observation

One place for the whole run: ``swirl generate`` (its ``--processes N`` workers too), ``swirl fit``/``validate``, the
tool workers and ``swirl tools list/call`` all read the run's config, and the config saved beside a run records the
servers it used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_NAME = re.compile(r"[A-Za-z_][\w-]*")
_KEYS = {"name", "command", "url", "env", "tools", "prefix", "startup_timeout_s", "call_timeout_s",
         "max_result_chars", "mode"}


class McpConfigError(ValueError):
    """The plugin's options are malformed; the message names the key (``servers[0] (files): 'tools' ...``)."""


@dataclass(frozen=True)
class ServerConfig:
    """One MCP server: how to reach it and which of its tools to offer."""

    name: str
    tools: tuple[str, ...]
    """The allowlist of MCP tool names."""
    command: tuple[str, ...] = ()
    """A stdio server's command line."""
    url: str | None = None
    """A streamable-HTTP server's address (``http://127.0.0.1:8000/mcp``)."""
    env: tuple[tuple[str, str], ...] = ()
    prefix: str = ""
    startup_timeout_s: float = 30.0
    call_timeout_s: float = 8.0
    max_result_chars: int = 100_000
    mode: str = "auto"
    """The MCP client's protocol negotiation: ``auto`` or ``legacy`` (the initialize handshake)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def transport(self) -> str:
        """``stdio`` or ``http``."""
        return "stdio" if self.command else "http"


def load_servers(options: Mapping[str, Any] | None) -> list[ServerConfig]:
    """The servers of the plugin's options (``tools.plugins.mcp``); none for no options. Raises
    :class:`McpConfigError` naming the key that is wrong and what was expected."""
    if not options:
        return []
    if not isinstance(options, Mapping):
        raise McpConfigError(f"expected a mapping {{servers: [...]}}, got {type(options).__name__}")
    unknown = sorted(set(options) - {"servers"})
    if unknown:
        raise McpConfigError(f"unknown key(s) {', '.join(map(str, unknown))}; expected servers (a list of servers)")
    entries = options.get("servers")
    if not isinstance(entries, list):
        raise McpConfigError(f"servers: expected a list of servers ({{name, command or url, tools}}), got "
                             f"{type(entries).__name__}")
    servers = [_server(entry, f"servers[{i}]") for i, entry in enumerate(entries)]
    names = [server.name for server in servers]
    if len(set(names)) != len(names):
        raise McpConfigError(f"servers: two servers share a name ({', '.join(sorted(names))})")
    return servers


def _server(entry: Any, where: str) -> ServerConfig:
    if not isinstance(entry, Mapping):
        raise McpConfigError(f"{where}: expected a mapping, got {type(entry).__name__}")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise McpConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(_KEYS))}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise McpConfigError(f"{where}: 'name' must be letters, digits, '_' or '-', got {name!r}")
    command, url = entry.get("command"), entry.get("url")
    if (command is None) == (url is None):
        raise McpConfigError(f"{where} ({name}): give exactly one of 'command' (stdio) and 'url' (streamable HTTP)")
    if command is not None and (not isinstance(command, list) or not command
                                or not all(isinstance(part, str) and part for part in command)):
        raise McpConfigError(f"{where} ({name}): 'command' must be a non-empty list of strings, e.g. [python, server.py]")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise McpConfigError(f"{where} ({name}): 'url' must be an http(s):// address, got {url!r}")
    tools = entry.get("tools")
    if not isinstance(tools, list) or not tools or not all(isinstance(tool, str) and tool for tool in tools):
        raise McpConfigError(f"{where} ({name}): 'tools' must be a non-empty list of the MCP tool names to offer "
                             "(the allowlist)")
    env = entry.get("env") or {}
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, (str, int, float))
                                               for k, v in env.items()):
        raise McpConfigError(f"{where} ({name}): 'env' must map names to strings")
    prefix = entry.get("prefix", "")
    if not isinstance(prefix, str) or (prefix and not _NAME.fullmatch(prefix)):
        raise McpConfigError(f"{where} ({name}): 'prefix' must be letters, digits, '_' or '-', got {prefix!r}")
    numbers = {}
    for key, kind in (("startup_timeout_s", float), ("call_timeout_s", float), ("max_result_chars", int)):
        if key in entry:
            number = entry[key]
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not number > 0:
                raise McpConfigError(f"{where} ({name}): '{key}' must be a number > 0, got {number!r}")
            numbers[key] = kind(number)
    mode = entry.get("mode", "auto")
    if mode not in ("auto", "legacy"):
        raise McpConfigError(f"{where} ({name}): 'mode' must be auto or legacy, got {mode!r}")
    return ServerConfig(name=name, tools=tuple(tools), command=tuple(command or ()), url=url,
                        env=tuple(sorted((k, str(v)) for k, v in env.items())), prefix=prefix, mode=mode, **numbers)
