"""A real MCP server for the tests, written with the ``mcp`` SDK, and helpers to run it over stdio or HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVER_SOURCE = '''
import os, sys, time
from mcp.server.mcpserver import MCPServer

server = MCPServer("swirl-test")


@server.tool()
def echo(text: str) -> str:
    """Repeat the text.

    A second paragraph that the tool list leaves out."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(name="lookup.word")
def lookup(word: str, language: str = "en") -> str:
    """Look a word up."""
    return f"{word} ({language})"


@server.tool()
def fail(text: str) -> str:
    """Always fails."""
    raise ValueError("it failed on purpose")


@server.tool()
def crash(text: str) -> str:
    """Kills the server."""
    os._exit(3)


@server.tool()
def hang(text: str) -> str:
    """Never answers."""
    time.sleep(3600)
    return "late"


@server.tool()
def huge(text: str) -> str:
    """A very long answer."""
    return "x" * 300_000


@server.tool()
def whoami(text: str) -> str:
    """The server's process id and whether it sees a secret of the run."""
    return f"{os.getpid()} {'OPENAI_API_KEY' in os.environ}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
'''

ALL_TOOLS = ["echo", "add", "lookup.word", "fail", "crash", "hang", "huge", "whoami"]


def write_server(folder: Path) -> Path:
    """The server's script in ``folder``."""
    path = folder / "swirl_test_mcp_server.py"
    path.write_text(SERVER_SOURCE)
    return path


def stdio_config(script: Path, name: str = "local", tools: list[str] = ALL_TOOLS, **options: object) -> dict:
    """The plugin's options (``tools.plugins.mcp``) for the script over stdio."""
    server = {"name": name, "command": [sys.executable, str(script)], "tools": tools, "startup_timeout_s": 30,
              "call_timeout_s": 5, **options}
    return {"servers": [server]}


def http_config(name: str, port: int, tools: list[str], **options: object) -> dict:
    """The plugin's options for a streamable-HTTP server on 127.0.0.1:``port``."""
    return {"servers": [{"name": name, "url": f"http://127.0.0.1:{port}/mcp", "tools": tools, **options}]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_http_server(script: Path, port: int, timeout_s: float = 30.0) -> subprocess.Popen:
    """The script as a streamable-HTTP server on 127.0.0.1:``port``, once it accepts connections."""
    process = subprocess.Popen([sys.executable, str(script), "http", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the test MCP server exited with code {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the test MCP server did not listen on port {port} within {timeout_s} s")


def server_processes(script: Path) -> list[int]:
    """Pids of live (not zombie) processes running ``script``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(script).encode() in command and state != "Z":
            pids.append(int(entry))
    return pids
