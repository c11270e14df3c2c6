"""A small MCP server to try swirl-mcp with (``conf/mcp/example.yaml``): ``python -m swirl_mcp.example_server``
serves ``echo`` and ``add`` over stdio, ``... http PORT`` over streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("swirl-mcp-example")


@server.tool()
def echo(text: str) -> str:
    """Repeat the text."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def main(argv: list[str] | None = None) -> None:
    """Serve over stdio, or over streamable HTTP with ``http PORT``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["http"] and len(argv) == 2:
        server.run("streamable-http", host="127.0.0.1", port=int(argv[1]))
    elif not argv:
        server.run()
    else:
        raise SystemExit("usage: python -m swirl_mcp.example_server [http PORT]")


if __name__ == "__main__":
    main()
