"""A tool can neither kill nor stop its caller, leaves no process behind, and cannot kill `swirl generate` forever.

Every case runs the caller in a forked child, so that a tool that did reach its caller would fail the test, not stop
the test session. Cases run with and without a PID namespace (the latter where the OS allows one: root).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from swirl_lightning.core.config import PolicyConfig, TaskConfig, ToolsConfig
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.tool_process import pid_namespaces_allowed
from swirl_lightning.core.trajectory import Example, read_trajectories
from swirl_lightning.testing import ListTask, make_tool, registered

pytestmark = [pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="follows processes through /proc"),
              pytest.mark.integration]  # starts, stops and kills process trees: not in make test-fast

MODES = [pytest.param(False, id="session"),
         pytest.param(True, id="pid-namespace", marks=pytest.mark.skipif(not pid_namespaces_allowed(),
                                                                         reason="PID namespaces need root"))]


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie waiting for its reaper counts: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _pids_of(token: str) -> list[int]:
    """The processes whose command line holds ``token``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and token.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def _started(token: str, count: int, within_s: float = 5.0) -> list[int]:
    """The processes of ``token``, once ``count`` of them run (a fork may not have reached its ``exec`` yet)."""
    deadline = time.time() + within_s
    while len(found := _pids_of(token)) < count and time.time() < deadline:
        time.sleep(0.05)
    return found


def _all_gone(pids: list[int], within_s: float = 5.0) -> bool:
    deadline = time.time() + within_s
    while time.time() < deadline and not all(_gone(pid) for pid in pids):
        time.sleep(0.05)
    return all(_gone(pid) for pid in pids)


def _in_child(fn, timeout_s: float = 60.0):
    """``fn()`` in a forked child: its return value, or a failure when the child dies, stops or hangs."""
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def main() -> None:
        writer.send(fn())

    child = context.Process(target=main)
    child.start()
    writer.close()
    try:
        assert reader.poll(timeout_s), "the caller did not answer: stopped or hung"
        return reader.recv()
    except EOFError:
        child.join(5)
        raise AssertionError(f"the caller died (exit code {child.exitcode})") from None
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
        child.join(5)


@pytest.mark.parametrize("pid_namespace", MODES)
def test_a_tool_that_signals_its_parent_or_group_reaches_neither_caller_nor_its_run(pid_namespace):
    """SIGKILL and SIGSTOP to the parent and to the process group: each call comes back (the worker's loss as an error
    observation), the caller is neither killed nor stopped, and the next call gets a working worker. In a PID
    namespace even the caller's own pid cannot be signalled."""
    caller = {}

    def hostile(text: str) -> str:
        action, _, target = text.partition(" ")
        if action == "probe":
            return "sent"
        pid = {"parent": os.getppid(), "caller": caller.get("pid", 0)}.get(target, 0)
        sig = signal.SIGKILL if action == "kill" else signal.SIGSTOP
        os.killpg(0, sig) if target == "group" else os.kill(pid, sig)
        return "sent"

    def calls() -> dict[str, tuple[str | None, str]]:
        caller["pid"] = os.getpid()
        tried = ["kill parent", "stop parent", "kill group", "stop group"] + (["kill caller", "stop caller"] * pid_namespace)
        results = {}
        with ToolExecutor({"hostile": make_tool(hostile)}, ToolsConfig(timeout_s=1.0, pid_namespace=pid_namespace)) as executor:
            for text in tried:
                result = executor.run("hostile", text)
                # A worker that lost its keeper may answer once more before it dies: the run goes on either way.
                after = [executor.run("hostile", "probe").output for _ in range(2)][-1]
                results[text] = (result.error, after)
            results["namespace"] = (None, str(executor._worker.process.in_pid_namespace))
        return results

    results = _in_child(calls)
    assert results.pop("namespace") == (None, str(pid_namespace))
    assert all(after == "sent" for _, after in results.values()), results  # every next call had a live worker
    # Without a namespace the keeper may be the one the last call stopped: then no exit code is known.
    assert "exited during the call" in results["kill group"][0]
    assert "timed out" in results["stop group"][0]  # a stopped worker is a hung call: stopped at the time-out
    if pid_namespace:
        assert results["kill caller"][0].startswith("ProcessLookupError")  # no pid outside the namespace exists
        assert results["stop caller"][0].startswith("ProcessLookupError")


@pytest.mark.parametrize("pid_namespace", MODES)
def test_swirl_tools_call_survives_a_tool_that_kills_or_stops_its_parent_or_group(pid_namespace):
    """`swirl tools call` died with a tool that sent SIGKILL to its parent or its process group, and hung with one that
    sent SIGSTOP (issue 27). Each call now ends, a lost worker as the tool's error (exit 1), and the command lives."""
    import contextlib
    import io

    def hostile(text: str) -> str:
        sig = signal.SIGKILL if text.startswith("kill") else signal.SIGSTOP
        os.killpg(0, sig) if text.endswith("group") else os.kill(os.getppid(), sig)
        return "sent"

    def calls() -> dict[str, tuple[int, str]]:
        from swirl_lightning.cli import main

        flags = ["--tools.timeout_s", "1"] + ([] if pid_namespace else ["--tools.pid_namespace", "false"])
        results = {}
        with registered(tools=[make_tool(hostile)]):
            for text in ("kill parent", "stop parent", "kill group", "stop group"):
                with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
                    code = main(["tools", "call", "hostile", text, *flags])
                results[text] = (code, err.getvalue())
        return results

    results = _in_child(calls)
    # A worker whose keeper (or init) it signalled may still answer first: exit 0; the group's signals always end it.
    assert all(code in (0, 1) for code, _ in results.values()), results
    assert results["kill group"][0] == 1 and "exited during the call" in results["kill group"][1]
    assert results["stop group"][0] == 1 and "timed out after 1 s" in results["stop group"][1]


@pytest.mark.parametrize("pid_namespace", MODES)
def test_a_tools_processes_die_with_its_time_out_and_with_its_caller(pid_namespace, tmp_path):
    """A tool that starts `sleep` (subprocess) and forks a child, then hangs: after its time-out none of them is
    left. A tool that leaves them running when it returns: they die with its caller's `close` and when the caller is
    SIGKILLed. In a PID namespace even a child in a session of its own dies."""
    token = str(uuid.uuid4().int)[:15]  # in `sleep`'s argument: digits only

    def spawn(text: str) -> str:
        subprocess.Popen(["sleep", f"60.{token}{text}"], stdout=subprocess.DEVNULL)
        if pid_namespace:  # escapes the process group: only the namespace can take it down
            subprocess.Popen(["sleep", f"61.{token}{text}"], start_new_session=True, stdout=subprocess.DEVNULL)
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", f"62.{token}{text}"])
        if text == "0":
            time.sleep(60)
        return "started"

    spawned = 3 if pid_namespace else 2

    def timed_out_then_closed() -> list[int]:
        with ToolExecutor({"spawn": make_tool(spawn)}, ToolsConfig(timeout_s=1.0, pid_namespace=pid_namespace)) as executor:
            assert "timed out" in executor.run("spawn", "0").output
            assert _all_gone(_pids_of(f"{token}0"), 2.0)
            assert executor.run("spawn", "1").output == "started"
            running = _started(f"{token}1", spawned)
        return running

    running = _in_child(timed_out_then_closed)
    assert len(running) == spawned and _all_gone(running)

    def killed_caller() -> int:
        executor = ToolExecutor({"spawn": make_tool(spawn)}, ToolsConfig(pid_namespace=pid_namespace))
        assert executor.run("spawn", "2").output == "started"
        assert len(_started(f"{token}2", spawned)) == spawned
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(AssertionError, match=r"the caller died \(exit code -9\)"):
        _in_child(killed_caller)
    assert _all_gone(_pids_of(f"{token}2"))


def _generate(tmp_path: Path, tools: list, questions: int = 3, samples: int = 2, pid_namespace: bool = True) -> None:
    """`swirl generate` of a scripted policy that calls every tool, then answers (no model is loaded)."""
    import swirl_lightning.rollout.conversation as conversation
    import swirl_lightning.rollout.engine as engine
    import swirl_lightning.rollout.generate as generate
    from swirl_lightning.testing import ScriptedPolicy

    script = [f"<{tool.tag}>go</{tool.tag}>" for tool in tools] + ["<answer>1</answer>"]
    engine.GenerationEngine = lambda *args, **kwargs: ScriptedPolicy(script)
    generate.load_policy = lambda *args, **kwargs: (None, None)
    conversation.ChatRenderer = lambda tokenizer: None
    task = ListTask("isolation", [Example(f"q{i}", f"question {i}", "1", "isolation") for i in range(questions)],
                    tools=tuple(tool.name for tool in tools), max_actions=len(script))
    with registered(tasks=[task], tools=tools):
        generate.run_generate(generate.GenerateConfig(
            output=str(tmp_path / "t.jsonl"), policy=PolicyConfig("tiny-random"), task=TaskConfig("isolation"),
            samples=samples, progress=False, tools=ToolsConfig(timeout_s=2.0, pid_namespace=pid_namespace)))


def test_generate_goes_on_when_a_tool_kills_its_worker_and_leaves_no_process_behind(tmp_path):
    """A tool that kills its process group and one that kills its parent cost their call an error observation, not
    the run; a tool's child processes die when generate ends."""
    token = str(uuid.uuid4().int)[:15]  # in `sleep`'s argument: digits only

    def kill_group(text: str) -> str:
        os.killpg(0, signal.SIGKILL)
        return "survived"

    def kill_parent(text: str) -> str:
        os.kill(os.getppid(), signal.SIGKILL)
        return "survived"

    def spawn(text: str) -> str:
        subprocess.Popen(["sleep", f"60.{token}"], stdout=subprocess.DEVNULL)
        with open(tmp_path / "spawned", "a") as log:
            log.write("sleep\n")
        return "started"

    tools = [make_tool(kill_group), make_tool(kill_parent), make_tool(spawn)]
    _in_child(lambda: _generate(tmp_path, tools))
    trajectories = read_trajectories(tmp_path / "t.jsonl")
    assert len(trajectories) == 6 and {t.metadata["finish_reason"] for t in trajectories} == {"answer"}
    for trajectory in trajectories:
        by_tool = {step.action.tool: step for step in trajectory.steps if step.action.kind == "tool"}
        assert by_tool["kill_group"].tool_error and "exited during the call" in by_tool["kill_group"].observation
        assert by_tool["spawn"].observation.endswith("started")
    assert (tmp_path / "spawned").read_text().count("sleep") == 6 and _all_gone(_pids_of(token))


def test_a_tool_that_kills_generate_fails_its_question_after_one_restart(tmp_path):
    """The acceptance case: a tool that finds and kills its caller on one question. The restart records every sample
    of that question as failed (the failure says why) and finishes all the others."""
    caller = {}

    def killer(text: str, episode) -> str:
        if episode.example_id == "q1":
            os.kill(caller["pid"], signal.SIGKILL)
            time.sleep(60)
        return "fine"

    tools = [make_tool(killer, takes_episode=True)]

    def run() -> None:
        caller["pid"] = os.getpid()
        _generate(tmp_path, tools, pid_namespace=False)  # in a namespace the tool could not reach its caller

    with pytest.raises(AssertionError, match=r"the caller died \(exit code -9\)"):
        _in_child(run)
    _in_child(run)  # the one restart
    trajectories = read_trajectories(tmp_path / "t.jsonl")
    assert [t.key for t in trajectories] == [(f"q{i}", k) for i in range(3) for k in range(2)]
    reasons = {t.key: t.metadata["finish_reason"] for t in trajectories}
    assert reasons == {key: "failed" if key[0] == "q1" else "answer" for key in reasons}
    assert "the run died during a call of tool 'killer' by sample 0" in trajectories[2].metadata["failure"]
    assert not list(tmp_path.glob("**/*.inflight"))
