"""Red-team cases: what a hostile or careless snippet may try. None may harm the host, leak a secret or stop a rollout.

The cases that rely on namespaces (network, other users' processes and files) are skipped without root, where the
sandbox says in its documentation that it cannot provide them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from swirl_lightning.core.config import ToolsConfig
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.testing import make_tool, rollout_once
from swirl_python import PythonError, python
from swirl_python.sandbox import Limits, isolation, run_snippet, sandbox_uid

pytestmark = pytest.mark.integration  # each case runs hostile code in a sandbox process: not in make test-fast

SECRET = "sk-test-4f1c9e2b7a0d-do-not-leak"
namespaces = pytest.mark.skipif(isolation() != "namespaces",
                                reason="needs root with unshare and setpriv (the sandbox's 'limits' mode is documented)")


def _error(code: str) -> str:
    with pytest.raises(PythonError) as caught:
        python(code)
    return str(caught.value)


def _sandbox_processes() -> list[str]:
    """Live processes of the uid this test process's snippets run as."""
    listing = subprocess.run(["ps", "-eo", "pid,uid,stat,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines()[1:] if line.split()[1] == str(sandbox_uid()) and " Z" not in line]


@pytest.fixture(autouse=True)
def secret_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where a served judge's key lives (judge.options.api_key_env names it); the tool worker inherits it.
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def test_a_fork_bomb_is_stopped_and_leaves_no_process() -> None:
    started = time.monotonic()
    message = _error("import os\nwhile True:\n    os.fork()")
    assert time.monotonic() - started < 15
    assert "BlockingIOError" in message or "timed out" in message or "Resource temporarily unavailable" in message
    time.sleep(0.2)
    if isolation() == "namespaces":
        assert _sandbox_processes() == []
    assert python("print('still here')") == "still here"


@namespaces
def test_a_process_that_leaves_its_session_still_dies_with_the_run() -> None:
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(300)\nprint('parent done')")
    assert python(code) == "parent done"
    time.sleep(0.2)
    assert _sandbox_processes() == []


@pytest.mark.parametrize("code", [
    "x = bytearray(10**10)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))",
    "'x' * (10**10)",
])
def test_a_memory_bomb_is_a_memory_error(code: str) -> None:
    started = time.monotonic()
    assert "MemoryError" in _error(code)
    assert time.monotonic() - started < 10


def test_infinite_output_is_cut_at_the_cap_quickly() -> None:
    started = time.monotonic()
    message = _error("while True:\n    print('x' * 1000)")
    assert "output too long" in message
    assert time.monotonic() - started < 10


def test_a_huge_file_is_refused() -> None:
    assert "File too large" in _error("open('big', 'wb').write(b'x' * 10**7)")


def test_a_cpu_loop_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWIRL_PYTHON_CPU_S", "1")
    started = time.monotonic()
    message = _error("while True:\n    pass")
    assert "timed out" in message or "CPU time limit" in message
    assert time.monotonic() - started < 10


def test_the_environment_is_empty() -> None:
    shown = python("import os\nprint(sorted(os.environ))")
    assert SECRET not in shown and "OPENAI_API_KEY" not in shown
    assert set(eval(shown)) <= {"LC_CTYPE"}  # set by the interpreter itself in its UTF-8 mode


@namespaces
def test_snippets_run_as_a_uid_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    assert python("import os\nprint(os.getuid(), os.getgid(), os.getgroups())") == \
        f"{sandbox_uid()} {sandbox_uid()} []"
    assert 65000 <= sandbox_uid() <= 65533
    monkeypatch.setenv("SWIRL_PYTHON_UID", "65534")  # nobody
    assert python("import os\nos.getuid()") == "65534"
    monkeypatch.setenv("SWIRL_PYTHON_UID", "0")
    with pytest.raises(ValueError, match="expected a uid other than 0"):
        python("1")


@namespaces
def test_no_process_environment_on_the_host_is_readable() -> None:
    code = """
import os
found = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            if b'sk-test-' in open(f'/proc/{pid}/environ', 'rb').read():
                found.append(pid)
        except OSError:
            pass
print(found)
"""
    assert python(code) == "[]"


@namespaces
def test_files_of_the_host_readable_only_by_their_owner_stay_closed(tmp_path) -> None:
    secret_file = tmp_path / "key.txt"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    os.chmod(tmp_path, 0o755)  # the folder is open: only the file's own mode protects it
    assert "PermissionError" in _error(f"print(open({str(secret_file)!r}).read())")
    assert "PermissionError" in _error("print(open('/root/.bashrc').read())") or os.path.exists("/root/.bashrc") is False


def test_the_working_folder_is_temporary_and_removed() -> None:
    folder = python("import os\nopen('note.txt', 'w').write('x')\nprint(os.getcwd())")
    assert os.path.basename(folder).startswith("swirl-python-")
    assert not os.path.exists(folder)


@namespaces
def test_no_socket_reaches_the_host_or_the_network() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        code = f"""
import socket
results = []
for host in ('127.0.0.1', '10.0.0.1', '1.1.1.1'):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect((host, {port}))
        results.append('connected')
    except OSError as error:
        results.append(type(error).__name__)
print(results)
"""
        shown = python(code)
        assert "connected" not in shown
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing ever knocked
    finally:
        listener.close()
    assert "gaierror" in _error("import socket\nsocket.getaddrinfo('example.com', 80)")


@namespaces
@pytest.mark.parametrize("code", [
    "import os, signal\nos.kill({caller}, signal.SIGKILL)",
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "import os, signal\nos.kill(-1, signal.SIGKILL)",
    "import os, signal\nos.killpg(0, signal.SIGKILL)",
])
def test_signals_reach_no_process_of_the_host(code: str) -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        try:
            python(code.format(caller=os.getpid()))
        except PythonError:
            pass  # PermissionError or the snippet's own death: either is fine, the host is what matters
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_hostile_snippets_in_a_rollout_do_not_stop_it() -> None:
    tools = {"python": make_tool(python, name="python", tag="python")}
    script = ["<python>import os\nwhile True:\n    os.fork()</python>",
              "<python>import os, signal\nos.kill(-1, signal.SIGKILL)</python>",
              "<python>x = bytearray(10**10)</python>",
              "<python>48 // 2 + 48</python>",
              "<answer>72</answer>"]
    trajectory = rollout_once("What is 48/2 + 48?", script, tools, max_actions=6, timeout_s=20)
    assert [step.observation.split(" -> ")[-1] for step in trajectory.steps[3:4]] == ["72"]
    assert trajectory.final_answer == "72"


def test_limits_are_per_run_and_tight_ones_hold() -> None:
    result = run_snippet("print('x' * 5000)", Limits(output_bytes=1000))
    assert len(result.stdout) <= 1000 and not result.ok


def test_the_executor_survives_a_snippet_that_kills_everything_it_can() -> None:
    with ToolExecutor({"python": make_tool(python, name="python", tag="python")}, ToolsConfig(timeout_s=20)) as executor:
        executor.run("python", "import os, signal\nos.kill(-1, signal.SIGKILL)")
        assert executor.run("python", "print(6 * 7)").output == "42"
    assert os.getpid() > 0 and signal.getsignal(signal.SIGTERM) is not None
