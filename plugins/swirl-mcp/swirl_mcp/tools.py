"""MCP tools as SWiRL tools: names, descriptions and inputs from each tool's schema; results and failures as text.

A tool whose input schema has one property, a string, takes the action text as it is (``<search>moon</search>``
calls ``search(query="moon")``). Any other tool takes a JSON object (``<add>{"a": 1, "b": 2}</add>``); a malformed
one is an error observation that names the expected fields. Every failure (the server would not start, crashed, hung,
returned an MCP error or a result over ``max_result_chars``) is raised as :class:`McpToolError`, which the tool
executor shows the model as ``Error: ...``; the rollout goes on, and the next call reconnects.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

from swirl_mcp.config import ServerConfig
from swirl_mcp.connection import Connection, McpUnavailable, describe

_INVALID = re.compile(r"[^\w-]")


class McpToolError(Exception):
    """A call of an MCP tool failed; the message is what the model sees."""


@dataclass(frozen=True)
class ToolSpec:
    """What SWiRL needs of one MCP tool, read from the server's listing."""

    server: ServerConfig
    mcp_name: str
    description: str
    schema: dict[str, Any]

    @property
    def name(self) -> str:
        """The SWiRL tool name and tag: the prefix and the MCP name, with characters a tag cannot hold as ``_``."""
        name = _INVALID.sub("_", self.server.prefix + self.mcp_name)
        return name if not name[0].isdigit() else "_" + name

    @property
    def string_field(self) -> str | None:
        """The one string property that takes the action text as it is, or ``None`` for a JSON-object tool."""
        properties = self.schema.get("properties") or {}
        if len(properties) == 1:
            (field, spec), = properties.items()
            if isinstance(spec, dict) and spec.get("type") == "string":
                return field
        return None

    def summary(self) -> str:
        """One line: the MCP description's first paragraph, and for a JSON-object tool the fields it expects."""
        first = re.split(r"\n\s*\n", (self.description or "").strip(), maxsplit=1)[0]
        text = " ".join(first.split()) or f"The MCP tool {self.mcp_name} of server {self.server.name}."
        if self.string_field is None:
            text += f" Input: a JSON object {self.fields()}."
        return text

    def fields(self) -> str:
        """The expected fields as ``{"a": integer, "b"?: string}`` (``?`` marks an optional one)."""
        properties = self.schema.get("properties") or {}
        required = set(self.schema.get("required") or ())
        parts = [f'"{name}"{"" if name in required else "?"}: {_type_name(spec)}' for name, spec in properties.items()]
        return "{" + ", ".join(parts) + "}"

    def arguments(self, text: str) -> dict[str, Any]:
        """The ``arguments`` of a call from the action text; :class:`McpToolError` naming the fields when malformed."""
        field = self.string_field
        if field is not None:
            return {field: text}
        expected = f"expected a JSON object {self.fields()}"
        try:
            value = json.loads(text) if text.strip() else {}
        except (json.JSONDecodeError, RecursionError):
            raise McpToolError(f"{self.name}: {expected}; the input is not valid JSON") from None
        if not isinstance(value, dict):
            raise McpToolError(f"{self.name}: {expected}, got a JSON {type(value).__name__}")
        properties = self.schema.get("properties") or {}
        missing = [name for name in self.schema.get("required") or () if name not in value]
        unknown = [name for name in value if properties and name not in properties]
        if missing or unknown:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
                       ([f"unknown {', '.join(unknown)}"] if unknown else [])
            raise McpToolError(f"{self.name}: {expected}; {'; '.join(problems)}")
        return value


def _type_name(spec: Any) -> str:
    if not isinstance(spec, dict):
        return "any"
    kind = spec.get("type")
    if isinstance(kind, list):
        return "|".join(map(str, kind))
    if kind is None and isinstance(spec.get("anyOf"), list):
        return "|".join(_type_name(option) for option in spec["anyOf"])
    return str(kind or "any")


def result_text(result: Any, limit: int, name: str) -> str:
    """The text of a ``CallToolResult``: its text parts (other parts as ``[image: image/png]``), or its structured
    content as JSON. An MCP error result or a text over ``limit`` characters raises :class:`McpToolError`."""
    parts = []
    for item in getattr(result, "content", None) or ():
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(item.text)
        elif kind == "resource" and hasattr(getattr(item, "resource", None), "text"):
            parts.append(item.resource.text)
        else:
            parts.append(f"[{kind}: {getattr(item, 'mime_type', None) or getattr(item, 'uri', '') or 'no text'}]")
    text = "\n".join(parts)
    if not text and getattr(result, "structured_content", None) is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False)
    if getattr(result, "is_error", False):
        first = text.strip().splitlines()[0] if text.strip() else "no message"
        raise McpToolError(f"{name}: the MCP tool reported an error: {first}")
    if len(text) > limit:
        raise McpToolError(f"{name}: result too large ({len(text)} chars, max {limit}); ask for less")
    return text


# One connection per server and process: the tool worker keeps its sessions open between calls.
_connections: dict[tuple[int, ServerConfig], Connection] = {}
_connections_lock = threading.Lock()


def connection(server: ServerConfig) -> Connection:
    """This process's open connection to ``server``, opened (or reopened after a failure) on demand."""
    key = (os.getpid(), server)
    with _connections_lock:
        current = _connections.get(key)
        if current is None or not current.alive:
            if current is not None:
                current.close(wait=False)  # a hung server takes seconds to stop: not this call's time
            _connections.pop(key, None)
            current = _connections[key] = Connection(server).open()
        return current


def close_all() -> None:
    """Close every connection of this process (a stdio server ends with its connection)."""
    with _connections_lock:
        for key in [key for key in _connections if key[0] == os.getpid()]:
            _connections.pop(key).close()


class McpTool:
    """The callable registered for one MCP tool: ``tool(text) -> str``, raising :class:`McpToolError`."""

    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec
        self.__name__ = spec.name
        self.__doc__ = spec.summary()

    def warm_up(self) -> None:
        """Connect before the first call, outside its timeout (a server's start-up takes a second or more)."""
        try:
            connection(self.spec.server)
        except McpUnavailable as error:
            raise McpToolError(str(error)) from None

    def __call__(self, text: str) -> str:
        """Call the MCP tool with the arguments ``text`` stands for; its text, or :class:`McpToolError`."""
        spec = self.spec
        arguments = spec.arguments(text)
        try:
            result = connection(spec.server).call(
                lambda client: client.call_tool(spec.mcp_name, arguments), spec.server.call_timeout_s)
        except McpUnavailable as error:
            raise McpToolError(str(error)) from None
        except McpToolError:
            raise
        except Exception as error:  # noqa: BLE001 - an MCP protocol error (e.g. the server refused the arguments)
            raise McpToolError(f"{spec.name}: {describe(error)}") from None
        return result_text(result, spec.server.max_result_chars, spec.name)
