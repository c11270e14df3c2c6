"""Tools: registration checks, tag mapping, selection, and the execution wrapper (timeout, errors,
non-str output, the output cap)."""

from __future__ import annotations

import threading
import time

import pytest

from swirl_lightning import hookimpl
from swirl_lightning.core.plugins import PluginOrigin, SwirlPluginManager
from swirl_lightning.core.tools import (
    Tool,
    ToolExecutor,
    ToolRegistrationError,
    UnknownToolError,
    collect_tools,
    select_tools,
    tool_tags,
    truncation_marker,
)
from swirl_lightning.testing import make_tool
from swirl_lightning.core.trajectory import parse_action


def add(text: str) -> str:
    """Add two integers written as ``a+b``."""
    left, right = text.split("+")
    return str(int(left) + int(right))


def test_a_normal_call_returns_the_output():
    result = ToolExecutor({"add": make_tool(add)}).run("add", "2+40")
    assert (result.output, result.error, result.truncated) == ("42", None, False)
    assert 0 <= result.elapsed_s < 1


def test_an_exception_becomes_an_error_observation_and_the_next_call_still_works():
    executor = ToolExecutor({"add": make_tool(add)})
    failed = executor.run("add", "2+x")
    assert failed.error == "ValueError: invalid literal for int() with base 10: 'x'"
    assert failed.output == "Error: ValueError: invalid literal for int() with base 10: 'x'"
    assert executor.run("add", "1+1").output == "2"


def test_an_exception_without_a_message_is_named_by_its_type():
    def fail(text: str) -> str:
        raise KeyboardInterrupt

    result = ToolExecutor({"fail": make_tool(fail)}).run("fail", "")
    assert result.output == "Error: KeyboardInterrupt"


def test_a_hanging_tool_times_out_within_the_timeout_and_is_abandoned():
    release = threading.Event()

    def hang(text: str) -> str:
        release.wait(30)
        return "too late"

    executor = ToolExecutor({"hang": make_tool(hang)}, timeout_s=0.2)
    started = time.perf_counter()
    try:
        result = executor.run("hang", "x")
        waited = time.perf_counter() - started
    finally:
        release.set()  # let the abandoned thread finish instead of lingering for 30 s
    assert result.output == "Error: tool 'hang' timed out after 0.2 s"
    assert result.error == "tool 'hang' timed out after 0.2 s"
    assert 0.2 <= result.elapsed_s <= waited < 0.2 + 0.5


def test_the_worker_thread_is_a_daemon_so_a_hang_cannot_block_exit():
    seen: list[bool] = []

    def report(text: str) -> str:
        seen.append(threading.current_thread().daemon)
        return "ok"

    ToolExecutor({"report": make_tool(report)}).run("report", "")
    assert seen == [True]


def test_output_that_is_not_a_str_is_an_error():
    def number(text: str) -> int:
        return 42

    result = ToolExecutor({"number": make_tool(number)}).run("number", "")
    assert result.error == "tool 'number' returned int, expected str"
    assert result.output == "Error: tool 'number' returned int, expected str"


def test_long_output_is_capped_with_a_visible_marker():
    def long(text: str) -> str:
        return "x" * 5000

    result = ToolExecutor({"long": make_tool(long)}, max_output_chars=100).run("long", "")
    assert result.truncated and result.error is None
    assert result.output == "x" * 100 + truncation_marker(5000, 100)
    assert "[output truncated: 5000 chars, showing 100]" in result.output


def test_output_exactly_at_the_cap_is_kept_whole():
    def exact(text: str) -> str:
        return "y" * 100

    result = ToolExecutor({"exact": make_tool(exact)}, max_output_chars=100).run("exact", "")
    assert (result.output, result.truncated) == ("y" * 100, False)


def test_a_long_error_message_is_capped_too():
    def verbose_failure(text: str) -> str:
        raise RuntimeError("z" * 500)

    result = ToolExecutor({"verbose_failure": make_tool(verbose_failure)}, max_output_chars=50).run(
        "verbose_failure", "")
    assert result.truncated and result.error == "RuntimeError: " + "z" * 500
    assert result.output.startswith("Error: RuntimeError: zzz")
    assert result.output.endswith(truncation_marker(len("Error: RuntimeError: ") + 500, 50))


def test_running_an_unknown_tool_raises_with_the_known_names():
    with pytest.raises(UnknownToolError, match="unknown tool 'nope'; known tools: add"):
        ToolExecutor({"add": make_tool(add)}).run("nope", "1+1")


@pytest.mark.parametrize("options, field", [
    ({"timeout_s": 0}, "timeout_s"), ({"timeout_s": -1.0}, "timeout_s"),
    ({"max_output_chars": 0}, "max_output_chars"), ({"max_output_chars": 2.5}, "max_output_chars"),
])
def test_executor_rejects_bad_limits(options, field):
    with pytest.raises(ValueError, match=field):
        ToolExecutor({}, **options)


def _collect_one(fn, **kwargs) -> dict[str, Tool]:
    class Plugin:
        @hookimpl
        def register_tools(self, register):
            register(fn, **kwargs)

    pm = SwirlPluginManager()
    pm.register_from_distribution(Plugin(), "plugin", PluginOrigin("swirl-example", "0.2"))
    return collect_tools(pm)


def test_registration_defaults_name_description_and_tag():
    def lookup(text: str) -> str:
        """Look a word up   in the
        dictionary.

        Not part of the description.
        """
        return text

    tool = _collect_one(lookup)["lookup"]
    assert (tool.name, tool.tag, tool.description) == ("lookup", "lookup", "Look a word up in the dictionary.")
    assert _collect_one(lambda text: text, name="plain")["plain"].description == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"tag": "1st"}, "invalid tag '1st'"),
    ({"tag": "has space"}, "invalid tag 'has space'"),
    ({"tag": "a<b"}, "invalid tag 'a<b'"),
    ({"tag": ""}, "invalid tag ''"),
    ({"tag": "answer"}, "tag 'answer' for tool 'echo' is reserved"),
    ({"tag": "think"}, "tag 'think' for tool 'echo' is reserved"),
    ({"name": "two words"}, "invalid tool name 'two words'"),
])
def test_invalid_names_and_tags_are_rejected_naming_the_distribution(kwargs, message):
    def echo(text: str) -> str:
        return text

    with pytest.raises(ToolRegistrationError, match="^swirl-example 0.2: ") as caught:
        _collect_one(echo, **kwargs)
    assert message in str(caught.value)


def test_a_lambda_needs_a_name_and_fn_must_be_callable():
    with pytest.raises(ToolRegistrationError, match="invalid tool name '<lambda>'.*name="):
        _collect_one(lambda text: text)
    with pytest.raises(ToolRegistrationError, match="expects a callable, got str"):
        _collect_one("not a function", name="text")


def test_tool_tags_map_tags_to_names_for_action_parsing():
    tools = _collect_one(add, tag="math_exp")
    assert tool_tags(tools) == {"math_exp": "add"}
    action = parse_action("<math_exp>2+3</math_exp>", tool_tags(tools))
    assert (action.kind, action.tool, action.query) == ("tool", "add", "2+3")


def test_select_tools_keeps_the_named_ones_and_rejects_unknown_names():
    tools = {"add": make_tool(add), "upper": make_tool(str.upper, name="upper")}
    assert list(select_tools(tools, ["upper"])) == ["upper"]
    assert select_tools(tools, None) == tools
    with pytest.raises(UnknownToolError, match="unknown tools 'x', 'y'; known tools: add, upper") as caught:
        select_tools(tools, ["add", "x", "y"])
    assert caught.value.known == ["add", "upper"]


def test_warm_up_runs_once_before_the_first_call_outside_the_timeout():
    events = []

    def slow_start() -> None:
        time.sleep(0.3)  # longer than the call timeout: it must not count against the call
        events.append("warm")

    def echo(text: str) -> str:
        events.append(text)
        return text

    executor = ToolExecutor({"echo": make_tool(echo, warm_up=slow_start)}, timeout_s=0.1)
    assert executor.run("echo", "a").output == "a"
    assert executor.run("echo", "b").error is None
    assert events == ["warm", "a", "b"]
    assert _collect_one(echo, warm_up=slow_start)["echo"].warm_up is slow_start


def test_a_failing_warm_up_is_the_calls_error_and_is_retried():
    attempts = []

    def broken_start() -> None:
        attempts.append(1)
        raise FileNotFoundError("no index at /nowhere")

    executor = ToolExecutor({"echo": make_tool(lambda text: text, name="echo", warm_up=broken_start)})
    first = executor.run("echo", "a")
    assert first.output == "Error: tool 'echo' failed to start: FileNotFoundError: no index at /nowhere"
    assert executor.run("echo", "b").error.startswith("tool 'echo' failed to start")
    assert len(attempts) == 2
    with pytest.raises(ToolRegistrationError, match="warm_up=...\\) expects a callable, got int"):
        _collect_one(lambda text: text, name="echo", warm_up=3)
