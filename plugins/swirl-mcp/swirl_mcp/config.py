"""Which MCP servers to connect and which of their tools to offer: the plugin's part of the tools config.

The servers are listed in a YAML or JSON file named by ``$SWIRL_MCP_CONFIG`` (or given inline there as a JSON
object)::

    servers:
      - name: files                      # a label for errors; also the default tool-name prefix's source
        command: [python, -m, my_server] # stdio: the server's command line, `python` being the run's interpreter
                                         # (or url: http://127.0.0.1:8000/mcp, streamable HTTP)
        env: {ROOT: /data}               # extra environment of a stdio server (it does not inherit the run's)
        tools: [read_file, search]       # the allowlist: only these tools become SWiRL tools
        prefix: ""                       # prepended to each tool's name and tag, e.g. "files_"
        startup_timeout_s: 30            # connecting and listing the tools
        call_timeout_s: 8                # one call (keep it under tools.timeout_s)
        max_result_chars: 100000         # a longer result is an error observation

A file of the run's config set, passed by environment, because the ``register_tools`` hook takes no options: the
same file serves ``swirl tools list``, ``swirl tools call`` and every stage of a run.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ENV = "SWIRL_MCP_CONFIG"
_NAME = re.compile(r"[A-Za-z_][\w-]*")
_KEYS = {"name", "command", "url", "env", "tools", "prefix", "startup_timeout_s", "call_timeout_s",
         "max_result_chars", "mode"}


class McpConfigError(ValueError):
    """The MCP servers' config is malformed; the message names the file and the entry."""


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


def load_servers(value: str | None = None) -> list[ServerConfig]:
    """The servers of ``value`` (default ``$SWIRL_MCP_CONFIG``): a path to a YAML or JSON file, or inline JSON.
    No value means no servers. Raises :class:`McpConfigError` naming what is wrong."""
    value = os.environ.get(CONFIG_ENV, "") if value is None else value
    value = value.strip()
    if not value:
        return []
    where = "$" + CONFIG_ENV
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except json.JSONDecodeError as error:
            raise McpConfigError(f"{where}: not valid JSON ({error.msg} at position {error.pos})") from None
    else:
        path = Path(value).expanduser()
        where = str(path)
        if not path.is_file():
            raise McpConfigError(f"{where} (from ${CONFIG_ENV}): no such file")
        if path.stat().st_size > 1_000_000:
            raise McpConfigError(f"{where}: larger than 1 MB; expected a short list of servers")
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise McpConfigError(f"{where}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("servers"), list):
        raise McpConfigError(f"{where}: expected a mapping with a list 'servers'")
    servers = [_server(entry, f"{where}: servers[{i}]") for i, entry in enumerate(data["servers"])]
    names = [server.name for server in servers]
    if len(set(names)) != len(names):
        raise McpConfigError(f"{where}: two servers share a name ({', '.join(sorted(names))})")
    return servers


def _server(entry: Any, where: str) -> ServerConfig:
    if not isinstance(entry, dict):
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
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in env.items()):
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
