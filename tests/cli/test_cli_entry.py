"""The `swirl` console entry: a tool call that times out is stopped (its worker killed) and the command leaves at
once with exit code 1; `python -m swirl_lightning` is the same command."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.integration  # starts processes or runs whole stages: not in make test-fast


def test_a_timed_out_tool_call_is_stopped_and_exits_1_at_once(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent('''
        import time, swirl_lightning
        from swirl_lightning.core.plugins import get_plugin_manager

        class Stalling:
            @swirl_lightning.hookimpl
            def register_tools(self, register):
                def stall(query: str) -> str:
                    """Never answers in time."""
                    time.sleep(60)
                    return query
                register(stall)

        get_plugin_manager().register(Stalling(), name="stalling")
    '''))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "swirl_lightning", "tools", "call", "stall", "x", "--tools.timeout_s", "0.3"],
                            env=env, capture_output=True, text=True, timeout=50)
    assert result.returncode == 1, result.stderr
    assert "tool 'stall' timed out after 0.3 s" in result.stderr
    assert time.perf_counter() - started < 30


def test_python_dash_m_swirl_lightning_is_the_swirl_command():
    result = subprocess.run([sys.executable, "-m", "swirl_lightning", "tools", "call", "calculator", "2 * 21"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("42")
