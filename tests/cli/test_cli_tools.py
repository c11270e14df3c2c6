"""``swirl tools list`` and ``swirl tools call``, and the command dispatch of ``swirl``."""

from __future__ import annotations

import json
import sys
import threading
from importlib.metadata import PackageNotFoundError, distribution

import pytest

from swirl_lightning import cli, hookimpl
from swirl_lightning.core.plugins import get_plugin_manager, reset_plugin_manager
from swirl_lightning.testing import plugged_in_alone

RELEASE_HANG = threading.Event()


class ExamplePlugin:
    @hookimpl
    def register_tools(self, register):
        def shout(text: str) -> str:
            """Upper-case the input.

            Second paragraph, not shown.
            """
            return text.upper()

        def explode(text: str) -> str:
            """Always fails."""
            raise RuntimeError(f"cannot handle {text!r}")

        def stall(text: str) -> str:
            """Never answers in time."""
            RELEASE_HANG.wait(30)
            return "late"

        register(shout, tag="loud")
        register(explode)
        register(stall)


@pytest.fixture
def example_plugin():
    """Only :class:`ExamplePlugin`, registered by hand in a fresh process-wide manager."""
    with plugged_in_alone(ExamplePlugin(), name="example") as plugin:
        yield plugin


def test_tools_list_json_has_exactly_the_documented_keys(example_plugin, capsys):
    assert cli.main(["tools", "list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == ["explode", "shout", "stall"]
    assert rows[1] == {"name": "shout", "tag": "loud", "distribution": None, "version": "",
                       "description": "Upper-case the input."}


def test_tools_list_prints_an_aligned_table(example_plugin, capsys):
    assert cli.main(["tools", "list"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "TAG", "DISTRIBUTION", "DESCRIPTION"]
    shout = next(line for line in lines if line.startswith("shout "))
    assert shout.split(maxsplit=3) == ["shout", "<loud>", "(registered)", "Upper-case the input."]
    for column in ("TAG", "DISTRIBUTION", "DESCRIPTION"):
        offset = header.index(column)
        assert all(line[offset - 1] == " " and line[offset] != " " for line in lines), column


def test_tools_call_prints_the_output(example_plugin, capsys):
    assert cli.main(["tools", "call", "shout", "hello"]) == 0
    assert capsys.readouterr().out == "HELLO\n"


def test_tools_call_exits_1_with_the_error_on_stderr(example_plugin, capsys):
    assert cli.main(["tools", "call", "explode", "x"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "explode: RuntimeError: cannot handle 'x'" in captured.err


def test_tools_call_timeout_is_a_tool_error(example_plugin, capsys):
    try:
        assert cli.main(["tools", "call", "stall", "x", "--tools.timeout_s", "0.2"]) == 1
    finally:
        RELEASE_HANG.set()
    assert "tool 'stall' timed out after 0.2 s" in capsys.readouterr().err


def test_tools_call_caps_the_output(example_plugin, capsys):
    assert cli.main(["tools", "call", "shout", "abcdefghij", "--tools.max_output_chars", "4"]) == 0
    assert capsys.readouterr().out.startswith("ABCD\n… [output truncated: 10 chars, showing 4]")


def test_tools_call_can_turn_off_the_pid_namespace(capsys, monkeypatch):
    """`swirl tools call` had no way to run a tool as ``tools.pid_namespace: false`` does in generate (issue 27)."""
    import os

    from swirl_lightning.core import tool_executor
    from swirl_lightning.core.tool_process import pid_namespaces_allowed
    from swirl_lightning.testing import make_tool, registered

    def whoami(text: str) -> str:
        """The tool's pid: 2 in a PID namespace of its own (its init is 1)."""
        return str(os.getpid())

    asked = []  # what the command asked for, where the OS gives no namespace (not root) to tell them apart

    class Recording(tool_executor.ToolExecutor):
        def __init__(self, tools, config):
            asked.append(config.pid_namespace)
            super().__init__(tools, config)

    monkeypatch.setattr(tool_executor, "ToolExecutor", Recording)
    with registered(tools=[make_tool(whoami)]):
        assert cli.main(["tools", "call", "whoami", "x", "--tools.pid_namespace", "false"]) == 0
        assert capsys.readouterr().out.strip() != "2"
        assert cli.main(["tools", "call", "whoami", "x"]) == 0
        if pid_namespaces_allowed():
            assert capsys.readouterr().out.strip() == "2"
    assert asked == [False, True]


def test_tools_call_unknown_name_exits_2_listing_the_known_tools(example_plugin, capsys):
    assert cli.main(["tools", "call", "whisper", "x"]) == 2
    assert "unknown tool 'whisper'; known tools: explode, shout, stall" in capsys.readouterr().err


def test_tools_call_rejects_a_non_positive_timeout(example_plugin, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["tools", "call", "shout", "x", "--tools.timeout_s", "0"])
    assert caught.value.code == 2
    assert "tools.timeout_s: expected a number > 0" in capsys.readouterr().err


def test_a_tool_conflict_is_reported_without_a_traceback(example_plugin, capsys):
    class Copycat:
        @hookimpl
        def register_tools(self, register):
            register(str.lower, name="shout", tag="quiet")

    get_plugin_manager().register(Copycat(), name="copycat")
    assert cli.main(["tools", "list"]) == 1
    assert "ToolConflictError: tool name 'shout' is registered by both" in capsys.readouterr().err


def test_a_broken_plugin_is_a_one_line_warning_and_the_rest_is_listed(example_plugin, capsys):
    class Broken:
        @hookimpl
        def register_tools(self, register):
            raise OSError("model file missing")

    get_plugin_manager().register(Broken(), name="broken")
    assert cli.main(["tools", "list", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ("swirl: warning: plugin 'broken' (registered): register_tools raised "
                            "OSError: model file missing; its tools were skipped\n")
    assert len(json.loads(captured.out)) == 3


def test_delegated_commands_get_the_rest_of_the_command_line(monkeypatch, tmp_path):
    (tmp_path / "swirl_test_delegate.py").write_text(
        "received = []\ndef run(argv):\n    received.append(argv)\n    return 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "fit", ("swirl_test_delegate:run", "train"))
    try:
        assert cli.main(["fit", "--config", "conf/x.yaml"]) == 7
        assert sys.modules["swirl_test_delegate"].received == [["--config", "conf/x.yaml"]]
    finally:
        sys.modules.pop("swirl_test_delegate", None)


def _installed(name: str) -> bool:
    try:
        distribution(name)
    except PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not (_installed("swirl-calculator") and _installed("swirl-search")),
                    reason="the built-in tool plugins are not installed")
def test_built_in_tools_are_listed_with_their_distributions(monkeypatch, capsys):
    monkeypatch.delenv("SWIRL_LOAD_PLUGINS", raising=False)
    reset_plugin_manager()
    try:
        assert cli.main(["tools", "list", "--format", "json"]) == 0
    finally:
        reset_plugin_manager()
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert (rows["calculator"]["distribution"], rows["calculator"]["tag"]) == ("swirl-calculator", "math_exp")
    assert (rows["search"]["distribution"], rows["search"]["tag"]) == ("swirl-search", "search_query")


class GreeterPlugin:
    """A plugin whose tool greets with the ``greeting`` of its options (``tools.plugins.greeter``)."""

    @hookimpl
    def register_tools(self, register, options):
        greeting = options.get("greeting", "Hello")

        def greet(name: str) -> str:
            """Greet someone."""
            return f"{greeting}, {name}!"

        register(greet)


def test_tools_list_and_call_take_the_tools_group_from_a_config_or_the_flag(tmp_path, capsys, monkeypatch):
    from swirl_lightning.core import tool_executor

    limits = []

    class Recording(tool_executor.ToolExecutor):
        def __init__(self, tools, config):
            limits.append(config)
            super().__init__(tools, config)

    monkeypatch.setattr(tool_executor, "ToolExecutor", Recording)
    overlay = tmp_path / "greeter.yaml"
    overlay.write_text("tools:\n  timeout_s: 7\n  plugins:\n    greeter: {greeting: Ahoy}\n")
    with plugged_in_alone(GreeterPlugin(), name="greeter"):
        assert cli.main(["tools", "call", "greet", "Ada", "--config", str(overlay)]) == 0
        assert capsys.readouterr().out == "Ahoy, Ada!\n"
        assert cli.main(["tools", "call", "greet", "Ada", "--config", str(overlay), "--tools.plugins",
                         "{greeter: {greeting: Hi}}", "--tools.timeout_s", "3"]) == 0
        assert capsys.readouterr().out == "Hi, Ada!\n"
        assert cli.main(["tools", "call", "greet", "Ada"]) == 0
        assert capsys.readouterr().out == "Hello, Ada!\n"
        assert cli.main(["tools", "list", "--format", "json", "--tools.plugins", "{greeter: {greeting: Hi}}"]) == 0
        assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["greet"]
    # A limit the config sets applies unless a flag says otherwise; the others are a rollout's (tools.*'s defaults).
    assert [(config.timeout_s, config.max_output_chars) for config in limits] == [(7, 1000), (3, 1000), (10, 1000)]


def test_bad_tool_plugin_options_are_one_line_and_exit_2(capsys):
    with plugged_in_alone(GreeterPlugin(), name="greeter"):
        assert cli.main(["tools", "list", "--tools.plugins", "{greter: {}}"]) == 2
        err = capsys.readouterr().err
        assert "tools.plugins.greter: no loaded tool plugin is named" in err and len(err.strip().splitlines()) == 1
        # A value of the wrong type is the parser's error, as in swirl generate: usage, then the error; exit 2.
        with pytest.raises(SystemExit) as caught:
            cli.main(["tools", "call", "greet", "x", "--tools.plugins", "{greeter: 3}"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert 'Parser key "tools.plugins"' in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "new"), [
    (["tools", "list", "--json"], "--format json"),
    (["tools", "call", "shout", "x", "--timeout", "3"], "--tools.timeout_s"),
    (["tools", "call", "shout", "x", "--max-chars=4"], "--tools.max_output_chars"),
    (["tools", "call", "shout", "x", "--warm-up-timeout", "3"], "--tools.warm_up_timeout_s"),
    (["tools", "call", "shout", "x", "--no-pid-namespace"], "--tools.pid_namespace false"),
])
def test_an_old_flag_is_a_one_line_error_naming_the_shared_spelling(example_plugin, capsys, argv, new):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is renamed {new}" in err[0], err
