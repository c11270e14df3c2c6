"""Tools: registration checks, tag mapping, selection, and the execution wrapper (a worker process: timeout,
errors, exits, non-str and unencodable output, the output cap, host paths)."""

from __future__ import annotations

import os
import time

import pytest

from swirl_lightning import hookimpl
from swirl_lightning.core.config import ToolsConfig
from swirl_lightning.core.plugins import PluginOrigin, SwirlPluginManager
from swirl_lightning.core.tool_executor import ToolExecutor, truncation_marker, without_host_paths
from swirl_lightning.core.tools import (
    Tool,
    ToolRegistrationError,
    UnknownToolError,
    collect_tools,
    select_tools,
    tool_tags,
)
from swirl_lightning.core.trajectory import parse_action
from swirl_lightning.testing import make_tool


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


def test_a_hanging_tool_is_stopped_at_the_timeout_and_the_next_call_gets_a_fresh_worker():
    def hang(text: str) -> str:
        if text == "hang":
            time.sleep(60)
        return f"ok from {os.readlink('/proc/self')}"  # the host's pid: in a PID namespace os.getpid() is always 2

    executor = ToolExecutor({"hang": make_tool(hang)}, ToolsConfig(timeout_s=0.3))
    first_worker = executor.run("hang", "x").output
    started = time.perf_counter()
    result = executor.run("hang", "hang")
    waited = time.perf_counter() - started
    assert result.error == "tool 'hang' timed out after 0.3 s (the call was stopped)"
    assert result.output == f"Error: {result.error}"
    assert 0.3 <= result.elapsed_s <= waited < 0.3 + 2
    after = executor.run("hang", "x").output
    assert after.startswith("ok from") and after != first_worker  # the stopped worker was replaced
    executor.close()


def test_tools_run_in_a_worker_process_that_keeps_the_working_folder(tmp_path):
    def where(text: str) -> str:
        if text == "move":
            os.chdir(tmp_path)
        return f"{os.getpid()} {os.getcwd()}"

    with ToolExecutor({"where": make_tool(where)}) as executor:
        pid, folder = executor.run("where", "move").output.split(" ", 1)
        assert int(pid) != os.getpid() and folder == str(tmp_path)
        again = executor.run("where", "stay").output
        assert again == f"{pid} {os.getcwd()}"  # the same worker, back in the caller's folder
    assert os.getcwd() != str(tmp_path)


def test_the_worker_drops_the_callers_signal_handlers():
    """A fork inherits handlers: Lightning's SIGTERM handler printed "[rank: 0] Received SIGTERM" in the quickstart when
    multiprocessing terminated the worker at exit. The worker ignores Ctrl-C (the caller's) and dies on SIGTERM."""
    import signal

    def dispositions(text: str) -> str:
        return f"{signal.getsignal(signal.SIGINT) == signal.SIG_IGN} {signal.getsignal(signal.SIGTERM) == signal.SIG_DFL}"

    previous = signal.signal(signal.SIGTERM, lambda *_: print("Received SIGTERM"))
    try:
        with ToolExecutor({"dispositions": make_tool(dispositions)}) as executor:
            assert executor.run("dispositions", "").output == "True True"
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.integration
def test_a_caller_that_keeps_running_on_sigterm_still_exits_with_a_worker_left_open():
    """The hang the real quickstart hit: Lightning's SIGTERM handler logs and carries on. A worker that inherited it
    ignored multiprocessing's terminate() at the caller's exit, and the caller waited for it forever."""
    import subprocess
    import sys

    script = "\n".join([
        "import signal",
        "from swirl_lightning.core.tool_executor import ToolExecutor",
        "from swirl_lightning.testing import make_tool",
        "signal.signal(signal.SIGTERM, lambda *_: print('Received SIGTERM', flush=True))",
        "def echo(text: str) -> str:",
        "    'Echo.'",
        "    return text",
        "executor = ToolExecutor({'echo': make_tool(echo)})",
        "print(executor.run('echo', 'hi').output, flush=True)",  # the worker is left open: atexit must end it
    ])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["hi"], done.stdout + done.stderr


@pytest.mark.parametrize("ending, expected", [
    ("sys.exit", "SystemExit: 3"),
    ("os._exit", "tool 'leave' exited during the call (exit code 7)"),
    ("signal", "tool 'leave' exited during the call (exit code -9)"),
])
def test_a_tool_that_exits_or_dies_is_an_error_and_the_next_call_works(ending, expected):
    import signal
    import sys

    def leave(text: str) -> str:
        if text == "leave":
            {"sys.exit": lambda: sys.exit(3), "os._exit": lambda: os._exit(7),
             "signal": lambda: os.kill(os.getpid(), signal.SIGKILL)}[ending]()
        return "still here"

    with ToolExecutor({"leave": make_tool(leave)}) as executor:
        assert executor.run("leave", "leave").error == expected
        assert executor.run("leave", "x").output == "still here"


def test_text_that_cannot_be_encoded_is_an_error():
    with ToolExecutor({"surrogate": make_tool(lambda text: "a\ud800b", name="surrogate")}) as executor:
        result = executor.run("surrogate", "")
    assert result.error == "tool 'surrogate' returned text that is not valid Unicode (surrogates not allowed at position 1)"


def test_error_messages_carry_no_absolute_host_paths():
    def missing(text: str) -> str:
        raise FileNotFoundError("[Errno 2] No such file or directory: '/home/someone/data/corpus.jsonl'")

    with ToolExecutor({"missing": make_tool(missing)}) as executor:
        result = executor.run("missing", "")
    assert result.error == "FileNotFoundError: [Errno 2] No such file or directory: 'corpus.jsonl'"
    assert without_host_paths("see /a/b/c.txt and ./rel/x and https://x.org/a/b") == "see c.txt and ./rel/x and https://x.org/a/b"


def test_output_that_is_not_a_str_is_an_error():
    def number(text: str) -> int:
        return 42

    result = ToolExecutor({"number": make_tool(number)}).run("number", "")
    assert result.error == "tool 'number' returned int, expected str"
    assert result.output == "Error: tool 'number' returned int, expected str"


def test_long_output_is_capped_with_a_visible_marker():
    def long(text: str) -> str:
        return "x" * 5000

    result = ToolExecutor({"long": make_tool(long)}, ToolsConfig(max_output_chars=100)).run("long", "")
    assert result.truncated and result.error is None
    assert result.output == "x" * 100 + truncation_marker(5000, 100)
    assert "[output truncated: 5000 chars, showing 100]" in result.output


def test_output_exactly_at_the_cap_is_kept_whole():
    def exact(text: str) -> str:
        return "y" * 100

    result = ToolExecutor({"exact": make_tool(exact)}, ToolsConfig(max_output_chars=100)).run("exact", "")
    assert (result.output, result.truncated) == ("y" * 100, False)


def test_a_long_error_message_is_capped_too():
    def verbose_failure(text: str) -> str:
        raise RuntimeError("z" * 500)

    result = ToolExecutor({"verbose_failure": make_tool(verbose_failure)}, ToolsConfig(max_output_chars=50)).run(
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
        ToolExecutor({}, ToolsConfig(**options))


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


def test_warm_up_runs_once_before_the_first_call_outside_the_timeout(tmp_path):
    log = tmp_path / "events"

    def slow_start() -> None:
        time.sleep(0.5)  # longer than the call timeout: it must not count against the call
        with log.open("a") as fh:
            fh.write("warm\n")

    def echo(text: str) -> str:
        with log.open("a") as fh:
            fh.write(text + "\n")
        return text

    with ToolExecutor({"echo": make_tool(echo, warm_up=slow_start)}, ToolsConfig(timeout_s=0.3)) as executor:
        assert executor.run("echo", "a").output == "a"
        assert executor.run("echo", "b").error is None
    assert log.read_text().split() == ["warm", "a", "b"]
    assert _collect_one(echo, warm_up=slow_start)["echo"].warm_up is slow_start


def test_a_warm_up_that_never_returns_is_stopped_at_its_own_timeout():
    def never_ready() -> None:
        time.sleep(60)

    with ToolExecutor({"echo": make_tool(lambda text: text, name="echo", warm_up=never_ready)},
                      ToolsConfig(warm_up_timeout_s=0.5)) as executor:
        started = time.perf_counter()
        result = executor.run("echo", "a")
    assert result.error == "tool 'echo' failed to start: tool 'echo' timed out after 0.5 s (its warm-up was stopped)"
    assert time.perf_counter() - started < 5


def test_a_failing_warm_up_is_the_calls_error_and_is_retried(tmp_path):
    attempts = tmp_path / "attempts"

    def broken_start() -> None:
        with attempts.open("a") as fh:
            fh.write("1")
        raise FileNotFoundError("no index at /nowhere/index.bin")

    with ToolExecutor({"echo": make_tool(lambda text: text, name="echo", warm_up=broken_start)}) as executor:
        first = executor.run("echo", "a")
        assert first.output == "Error: tool 'echo' failed to start: FileNotFoundError: no index at index.bin"
        assert executor.run("echo", "b").error.startswith("tool 'echo' failed to start")
    assert attempts.read_text() == "11"
    with pytest.raises(ToolRegistrationError, match="warm_up=...\\) expects a callable, got int"):
        _collect_one(lambda text: text, name="echo", warm_up=3)
