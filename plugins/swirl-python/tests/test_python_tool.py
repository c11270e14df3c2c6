"""The Python tool: what the model sees, the limits from the environment, the hook and the entry point."""

from __future__ import annotations

from importlib import metadata

import pluggy
import pytest

import swirl_lightning.core.hookspecs
import swirl_python
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.testing import make_tool, rollout_once
from swirl_python import NO_OUTPUT, Limits, PythonError, limits_from_environment, python, run_snippet


@pytest.mark.parametrize(("code", "expected"), [
    ("print(48 / 2 + 48)", "72.0"),
    ("48 // 2 + 48", "72"),  # a last bare expression is shown, as in a notebook
    ("x = 3\ny = 4\nx * y", "12"),
    ("import math\nmath.sqrt(16)", "4.0"),
    ("from fractions import Fraction\nFraction(1, 3) + Fraction(1, 6)", "Fraction(1, 2)"),
    ("print('a')\nprint('b')", "a\nb"),
    ("print('héllo ✓')", "héllo ✓"),
    ("x = 1", NO_OUTPUT),
    ("None", NO_OUTPUT),
])
def test_the_result_is_what_the_snippet_prints(code: str, expected: str) -> None:
    assert python(code) == expected


@pytest.mark.parametrize(("code", "message"), [
    ("1 / 0", "ZeroDivisionError: division by zero"),
    ("undefined_name + 1", "NameError: name 'undefined_name' is not defined"),
    ("print(", "SyntaxError: '(' was never closed (line 1)"),
    ("raise ValueError('bad input')", "ValueError: bad input"),
    ("import sys\nsys.exit(3)", "exited with code 3"),
    ("import numpy_that_does_not_exist", "ModuleNotFoundError"),
])
def test_an_error_is_its_last_line(code: str, message: str) -> None:
    with pytest.raises(PythonError) as caught:
        python(code)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_snippet_that_is_not_text_or_too_long_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="expected the Python code as text"):
        python(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="code too long"):
        run_snippet("1" * 30000)


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWIRL_PYTHON_TIMEOUT_S", "2.5")
    monkeypatch.setenv("SWIRL_PYTHON_MEMORY_MB", "256")
    assert limits_from_environment() == Limits(timeout_s=2.5, memory_mb=256)
    monkeypatch.setenv("SWIRL_PYTHON_CPU_S", "lots")
    with pytest.raises(ValueError, match=r"\$SWIRL_PYTHON_CPU_S: expected a int > 0, got 'lots'"):
        limits_from_environment()
    monkeypatch.setenv("SWIRL_PYTHON_CPU_S", "0")
    with pytest.raises(ValueError, match="Limits.cpu_s: expected a number > 0"):
        limits_from_environment()


def test_a_timeout_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWIRL_PYTHON_TIMEOUT_S", "1")
    with pytest.raises(PythonError, match="timed out after 1 s"):
        python("import time\ntime.sleep(60)")


def test_each_call_starts_fresh() -> None:
    python("import builtins\nbuiltins.leak = 1\nopen('kept.txt', 'w').write('x')")
    assert python("import builtins, os\nprint(hasattr(builtins, 'leak'), os.path.exists('kept.txt'))") == "False False"


def test_through_the_executor_an_error_is_an_observation_and_the_rollout_goes_on() -> None:
    tools = {"python": make_tool(python, name="python", tag="python")}
    trajectory = rollout_once("What is 48/2 + 48?",
                              ["<python>1/0</python>", "<python>48 // 2 + 48</python>", "<answer>72</answer>"], tools)
    observations = [step.observation for step in trajectory.steps[:2]]
    assert observations == ["1/0 -> Error: PythonError: ZeroDivisionError: division by zero", "48 // 2 + 48 -> 72"]
    assert trajectory.final_answer == "72"


def test_the_hook_registers_python_with_tag_python() -> None:
    manager = pluggy.PluginManager("swirl_lightning")
    manager.add_hookspecs(swirl_lightning.core.hookspecs)
    manager.register(swirl_python)  # validates the hookimpl's signature against the spec
    calls = []
    manager.hook.register_tools(register=lambda fn, **options: calls.append((fn, options)), options={})
    assert calls == [(python, {"tag": "python"})]
    assert python.__doc__ and "\n" not in python.__doc__.strip()


def test_the_entry_point_names_the_plugin_module() -> None:
    try:
        metadata.distribution("swirl-python")
    except metadata.PackageNotFoundError:
        pytest.skip("swirl-python is not installed (pip install -e plugins/swirl-python)")
    points = metadata.entry_points(group="swirl_lightning")
    assert any(point.name == "python" and point.load() is swirl_python for point in points)


def test_executor_runs_a_call_in_well_under_a_second() -> None:
    with ToolExecutor({"python": make_tool(python, name="python", tag="python")}) as executor:
        result = executor.run("python", "sum(range(10))")
    assert result.output == "45" and result.elapsed_s < 5


def test_without_root_the_limits_still_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    from swirl_python import sandbox

    monkeypatch.setattr(sandbox, "isolation", lambda: "limits")  # the mode of a run without root
    assert python("import os\nprint(len(os.environ) <= 1, os.getcwd() != '/')") == "True True"
    with pytest.raises(PythonError, match="MemoryError"):
        python("x = bytearray(10**10)")


@pytest.mark.integration
def test_the_readme_commands() -> None:
    import os
    import subprocess
    import sys

    try:
        metadata.distribution("swirl-python")
    except metadata.PackageNotFoundError:
        pytest.skip("swirl-python is not installed (pip install -e plugins/swirl-python)")
    env = {**os.environ, "SWIRL_LOAD_PLUGINS": "swirl-python"}

    def swirl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "swirl_lightning", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    answered = swirl("tools", "call", "python", "48 // 2 + 48")
    assert (answered.returncode, answered.stdout.strip()) == (0, "72"), answered.stderr
    failed = swirl("tools", "call", "python", "1 / 0")
    assert failed.returncode == 1
    assert "python: PythonError: ZeroDivisionError: division by zero" in failed.stderr
