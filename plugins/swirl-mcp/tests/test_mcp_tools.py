"""swirl-mcp against a real MCP server process (the ``mcp`` SDK's own server), over stdio and over HTTP on 127.0.0.1:
names, tags and descriptions from the schema, both input forms, and every failure as an error observation."""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

import pytest

import swirl_mcp
from mcp_servers import (
    ALL_TOOLS,
    free_port,
    http_config,
    server_processes,
    start_http_server,
    stdio_config,
    write_server,
)
from swirl_lightning.core.config import ToolsConfig
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.tools import ToolOptionsError, collect_tools
from swirl_lightning.testing import plugged_in_alone, rollout_once
from swirl_mcp import McpConfigError, McpToolError, load_servers

pytestmark = pytest.mark.integration  # starts server processes


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_server(tmp_path_factory.mktemp("mcp"))


@pytest.fixture(scope="module", autouse=True)
def closed_at_the_end():
    yield
    swirl_mcp.close_all()


def tools_of(monkeypatch: pytest.MonkeyPatch, config: dict) -> dict:
    """The tools of a run whose tools config has ``plugins: {mcp: config}`` (the plugin alone, named as installed)."""
    with plugged_in_alone(swirl_mcp, name="mcp"):
        return collect_tools(options={"mcp": config})


def call(tools: dict, name: str, text: str) -> str:
    return tools[name].fn(text)


def test_tools_get_their_name_tag_and_description_from_the_schema(monkeypatch, script) -> None:
    tools = tools_of(monkeypatch, stdio_config(script))
    assert list(tools) == sorted(["echo", "add", "lookup_word", "fail", "crash", "hang", "huge", "whoami"])
    assert tools["echo"].tag == "echo" and tools["echo"].description == "Repeat the text."
    assert tools["add"].description == 'Add two integers. Input: a JSON object {"a": integer, "b": integer}.'
    assert tools["lookup_word"].description == 'Look a word up. Input: a JSON object {"word": string, "language"?: string}.'
    assert tools["echo"].distribution is None  # registered by hand here; `swirl tools list` shows swirl-mcp


def test_a_one_string_tool_takes_the_text_as_it_is_and_others_a_json_object(monkeypatch, script) -> None:
    tools = tools_of(monkeypatch, stdio_config(script))
    assert call(tools, "echo", '  {"not": "json"} as is ') == '  {"not": "json"} as is '
    assert call(tools, "add", '{"a": 40, "b": 2}') == "42"
    assert call(tools, "lookup_word", '{"word": "moon"}') == "moon (en)"


@pytest.mark.parametrize(("text", "message"), [
    ("40 + 2", 'add: expected a JSON object {"a": integer, "b": integer}; the input is not valid JSON'),
    ("[40, 2]", 'add: expected a JSON object {"a": integer, "b": integer}, got a JSON list'),
    ('{"a": 40}', "missing b"),
    ('{"a": 1, "b": 2, "c": 3}', "unknown c"),
])
def test_a_malformed_json_input_is_an_error_naming_the_fields(monkeypatch, script, text, message) -> None:
    tools = tools_of(monkeypatch, stdio_config(script))
    with pytest.raises(McpToolError) as caught:
        call(tools, "add", text)
    assert message in str(caught.value)


def test_wrong_types_come_back_from_the_server_as_an_error(monkeypatch, script) -> None:
    tools = tools_of(monkeypatch, stdio_config(script))
    with pytest.raises(McpToolError, match="add: the MCP tool reported an error"):
        call(tools, "add", '{"a": "forty", "b": 2}')


def test_an_mcp_error_result_and_a_huge_result_are_errors(monkeypatch, script) -> None:
    tools = tools_of(monkeypatch, stdio_config(script, max_result_chars=100_000))
    with pytest.raises(McpToolError, match="fail: the MCP tool reported an error: Error executing tool fail"):
        call(tools, "fail", "x")
    with pytest.raises(McpToolError, match=r"huge: result too large \(300000 chars, max 100000\)"):
        call(tools, "huge", "x")
    assert call(tools, "echo", "still connected") == "still connected"


def test_a_hang_and_a_crash_are_errors_and_the_next_call_reconnects(monkeypatch, script) -> None:
    tools = tools_of(monkeypatch, stdio_config(script, name="fragile", call_timeout_s=1))
    started = time.monotonic()
    with pytest.raises(McpToolError, match="MCP server 'fragile' did not answer within 1 s"):
        call(tools, "hang", "x")
    assert time.monotonic() - started < 15
    assert call(tools, "echo", "back") == "back"
    with pytest.raises(McpToolError, match="MCP server 'fragile' stopped"):
        call(tools, "crash", "x")
    assert call(tools, "echo", "back again") == "back again"


def test_a_server_that_does_not_start_is_a_warning_and_error_observations(monkeypatch, tmp_path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import sys\nsys.exit(5)\n")
    config = stdio_config(broken, name="broken", tools=["echo"], startup_timeout_s=10)
    with pytest.warns(swirl_mcp.McpServerWarning, match="server 'broken' could not be listed"):
        tools = tools_of(monkeypatch, config)
    assert list(tools) == ["echo"]
    with ToolExecutor(tools, ToolsConfig(timeout_s=20)) as executor:
        result = executor.run("echo", "hello")
    assert result.error is not None and "MCP server 'broken' failed to start" in result.output


def test_an_allowlisted_tool_the_server_lacks_is_left_out_with_one_warning(monkeypatch, script) -> None:
    with pytest.warns(swirl_mcp.McpServerWarning, match="has no tool nope"):
        tools = tools_of(monkeypatch, stdio_config(script, name="partial", tools=["echo", "nope"]))
    assert list(tools) == ["echo"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # listed once per process: no warning the second time
        assert list(tools_of(monkeypatch, stdio_config(script, name="partial", tools=["echo", "nope"]))) == ["echo"]


def test_only_allowlisted_tools_are_offered_and_the_server_gets_no_secret(monkeypatch, script) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    tools = tools_of(monkeypatch, stdio_config(script, name="narrow", tools=["whoami"], prefix="srv_"))
    assert list(tools) == ["srv_whoami"]
    assert call(tools, "srv_whoami", "").endswith(" False")


def test_in_a_rollout_every_failure_is_an_observation_and_the_rollout_goes_on(monkeypatch, script) -> None:
    tools = tools_of(monkeypatch, stdio_config(script, name="rollout", call_timeout_s=2))
    script_turns = ["<add>not json</add>", "<fail>x</fail>", "<hang>x</hang>", "<crash>x</crash>", "<huge>x</huge>",
                    '<add>{"a": 40, "b": 2}</add>', "<answer>42</answer>"]
    trajectory = rollout_once("What is 40 + 2?", script_turns, tools, max_actions=8, timeout_s=20)
    results = [step.observation.split(" -> ", 1)[1] for step in trajectory.steps[:-1]]
    assert [result.startswith("Error: ") for result in results] == [True] * 5 + [False]
    assert "did not answer within 2 s" in results[2] and "stopped" in results[3] and "too large" in results[4]
    assert results[5] == "42" and trajectory.final_answer == "42"


def test_stdio_servers_die_with_the_tool_worker(monkeypatch, tmp_path) -> None:
    script = write_server(tmp_path)  # a path of its own: its processes are this test's alone
    tools = tools_of(monkeypatch, stdio_config(script, name="mortal", tools=["echo", "whoami"]))
    executor = ToolExecutor(tools, ToolsConfig(timeout_s=20))
    assert executor.run("echo", "hi").output == "hi"
    assert len(server_processes(script)) == 1
    executor.close()
    _wait_until(lambda: not server_processes(script))
    # A worker killed outright (SIGKILL, as at a timeout) takes its server along too.
    executor = ToolExecutor(tools, ToolsConfig(timeout_s=20))
    assert executor.run("echo", "hi").output == "hi"
    (pid,) = server_processes(script)
    os.kill(pid, 0)
    group = executor._worker.process._shared[0]
    os.killpg(group, signal.SIGKILL)
    _wait_until(lambda: not server_processes(script))
    executor.close()


def test_over_streamable_http_on_localhost(monkeypatch, script) -> None:
    port = free_port()
    server = start_http_server(script, port)
    try:
        tools = tools_of(monkeypatch, http_config("web", port, ["echo", "add", "fail"], call_timeout_s=5))
        assert list(tools) == ["add", "echo", "fail"]
        with ToolExecutor(tools, ToolsConfig(timeout_s=20)) as executor:
            assert executor.run("echo", "over http").output == "over http"
            assert executor.run("add", '{"a": 2, "b": 3}').output == "5"
            assert "reported an error" in executor.run("fail", "x").output
            server.kill()
            server.wait()
            lost = executor.run("echo", "anyone?")
            assert lost.error is not None and "web" in lost.output
    finally:
        server.kill()
        server.wait()


def test_an_unreachable_http_server_is_an_error_observation(monkeypatch) -> None:
    config = http_config("nowhere", free_port(), ["echo"], startup_timeout_s=5)
    with pytest.warns(swirl_mcp.McpServerWarning, match="'nowhere' could not be listed"):
        tools = tools_of(monkeypatch, config)
    with ToolExecutor(tools, ToolsConfig(timeout_s=20)) as executor:
        result = executor.run("echo", "hello")
    assert result.error is not None and "nowhere" in result.output


@pytest.mark.parametrize(("config", "message"), [
    ({"servers": 3}, "servers: expected a list of servers"),
    ({"server": []}, "unknown key(s) server; expected servers"),
    ({"servers": [{"name": "a", "tools": ["x"]}]}, "servers[0] (a): give exactly one of 'command' (stdio) and 'url'"),
    ({"servers": [{"name": "a", "url": "ftp://x", "tools": ["x"]}]}, "'url' must be an http(s):// address"),
    ({"servers": [{"name": "a", "url": "http://x", "tools": []}]}, "'tools' must be a non-empty list"),
    ({"servers": [{"name": "a", "url": "http://x", "tools": ["x"], "port": 1}]}, "servers[0]: unknown key(s) port"),
    ({"servers": [{"name": "a b", "url": "http://x", "tools": ["x"]}]}, "'name' must be letters"),
    ({"servers": [{"name": "a", "url": "http://x", "tools": ["x"]}] * 2}, "two servers share a name"),
    ({"servers": ["a"]}, "servers[0]: expected a mapping, got str"),
])
def test_malformed_options_are_a_clear_error(config, message) -> None:
    with pytest.raises(McpConfigError) as caught:
        load_servers(config)
    assert message in str(caught.value)


def test_the_options_as_yaml_and_none(tmp_path) -> None:
    import yaml

    options = yaml.safe_load("servers:\n  - name: files\n    command: [python, server.py]\n    tools: [read]\n"
                             "    env: {ROOT: /data}\n")
    (server,) = load_servers(options)
    assert server.command == ("python", "server.py") and server.env == (("ROOT", "/data"),)
    assert server.transport == "stdio" and load_servers({}) == load_servers(None) == []


def _wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_the_test_server_offers_every_tool_the_tests_name() -> None:
    assert len(ALL_TOOLS) == 8


def test_the_readme_commands_with_the_shipped_example_server() -> None:
    """`swirl tools list/call --config conf/mcp/example.yaml`: the tools config names the servers, in new processes
    (the tool worker of `call` starts the stdio server)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "SWIRL_LOAD_PLUGINS": "swirl-mcp"}
    overlay = ["--config", "conf/mcp/example.yaml"]

    def swirl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "swirl_lightning", *args], env=env, capture_output=True,
                              text=True, timeout=120, cwd=root)

    listing = swirl("tools", "list", *overlay)
    assert listing.returncode == 0, listing.stderr
    assert "<echo>" in listing.stdout and "swirl-mcp 0.1.0" in listing.stdout and "Repeat the text." in listing.stdout
    called = swirl("tools", "call", "add", '{"a": 40, "b": 2}', *overlay)
    assert (called.returncode, called.stdout.strip()) == (0, "42"), called.stderr
    refused = swirl("tools", "call", "add", "40 + 2", *overlay)
    assert refused.returncode == 1 and 'expected a JSON object {"a": integer, "b": integer}' in refused.stderr
    inline = swirl("tools", "call", "echo", "inline", "--tools.plugins",
                   "{mcp: {servers: [{name: example, command: [python, -m, swirl_mcp.example_server], tools: [echo]}]}}")
    assert (inline.returncode, inline.stdout.strip()) == (0, "inline"), inline.stderr
    assert swirl("tools", "call", "add", "{}").returncode == 2  # no servers configured: no MCP tools
    bad = swirl("tools", "list", "--tools.plugins", "{mcp: {servers: [{name: example, url: ftp://x, tools: [add]}]}}")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "swirl tools list: error: tools.plugins.mcp (swirl-mcp 0.1.0): McpConfigError: servers[0] (example): 'url' must be "
        "an http(s):// address, got 'ftp://x' (--debug shows where)")


def test_a_server_that_prints_stray_lines_works_without_tracebacks(monkeypatch, tmp_path, capfd) -> None:
    from mcp_servers import SERVER_SOURCE

    chatty = tmp_path / "chatty_server.py"
    chatty.write_text(SERVER_SOURCE.replace('server = MCPServer("swirl-test")',
                                            'print("starting up...")\nserver = MCPServer("swirl-test")'))
    tools = tools_of(monkeypatch, stdio_config(chatty, name="chatty", tools=["echo"]))
    with ToolExecutor(tools, ToolsConfig(timeout_s=20)) as executor:
        assert executor.run("echo", "hi").output == "hi"
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out


def test_malformed_options_in_a_run_are_an_error_naming_the_key(monkeypatch) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a warning and a run without the MCP tools
        with pytest.raises(ToolOptionsError, match=r"^tools\.plugins\.mcp \(plugin 'mcp' \(registered\)\): "
                                                   r"McpConfigError: servers\[0\] \(a\): 'tools' must be a non-empty"):
            tools_of(monkeypatch, {"servers": [{"name": "a", "url": "http://x", "tools": []}]})
