"""The plugin manager: registering and unregistering plugins, entry-point discovery, collisions,
broken plugins, and ``SWIRL_LOAD_PLUGINS``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swirl_lightning import hookimpl
from swirl_lightning.core.plugins import (
    PluginLoadWarning,
    PluginOrigin,
    SwirlPluginManager,
    get_plugin_manager,
    normalize_distribution_name,
    reset_plugin_manager,
)
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.tools import ToolConflictError, collect_tools

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def isolated_plugins(monkeypatch: pytest.MonkeyPatch):
    """A fresh process-wide manager with no entry-point plugins; reset again afterwards so other
    tests never see what this one registered."""
    monkeypatch.setenv("SWIRL_LOAD_PLUGINS", "")
    reset_plugin_manager()
    yield get_plugin_manager()
    reset_plugin_manager()


@pytest.fixture
def make_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Factory for throwaway installed distributions: a module plus a ``*.dist-info`` folder with an
    entry point in the ``swirl_lightning`` group, on ``sys.path``. Their modules leave ``sys.modules``
    at teardown."""
    monkeypatch.syspath_prepend(str(tmp_path))
    modules: list[str] = []

    def make(dist_name: str, version: str, module_name: str, source: str) -> None:
        (tmp_path / f"{module_name}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{normalize_distribution_name(dist_name).replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[swirl_lightning]\nplugin = {module_name}\n")
        modules.append(module_name)

    yield make
    for module_name in modules:
        sys.modules.pop(module_name, None)


ECHO_PLUGIN = """
    from swirl_lightning import hookimpl

    def echo(text):
        '''Repeat the input.'''
        return "echo: " + text

    @hookimpl
    def register_tools(register):
        register(echo, tag="echo_text")
"""


class ReversePlugin:
    @hookimpl
    def register_tools(self, register):
        def reverse(text: str) -> str:
            """Reverse the text.

            Longer explanation that is not part of the description.
            """
            return text[::-1]

        register(reverse)


def test_registered_plugin_is_listed_callable_then_gone_after_unregister(isolated_plugins):
    pm = isolated_plugins
    plugin = ReversePlugin()
    pm.register(plugin, name="reverse-plugin")

    tools = collect_tools()
    assert list(tools) == ["reverse"]
    tool = tools["reverse"]
    assert (tool.tag, tool.description) == ("reverse", "Reverse the text.")
    assert (tool.distribution, tool.version) == (None, "")
    assert ToolExecutor(tools).run("reverse", "abc").output == "cba"

    pm.unregister(plugin)
    assert collect_tools() == {}


def test_tools_are_attributed_to_their_own_distribution():
    pm = SwirlPluginManager()
    pm.register_from_distribution(ReversePlugin(), "rev", PluginOrigin("swirl-reverse", "2.0"))

    class Upper:
        @hookimpl
        def register_tools(self, register):
            register(str.upper, name="upper", tag="upper_case")

    pm.register(Upper(), name="upper-plugin")
    tools = collect_tools(pm)
    assert (tools["reverse"].distribution, tools["reverse"].version) == ("swirl-reverse", "2.0")
    assert (tools["upper"].distribution, tools["upper"].tag) == (None, "upper_case")


def _plugin_registering(name: str, tag: str | None = None):
    class Plugin:
        @hookimpl
        def register_tools(self, register):
            register(lambda text: text, name=name, tag=tag)

    return Plugin()


def test_name_collision_names_both_distributions():
    pm = SwirlPluginManager()
    pm.register_from_distribution(_plugin_registering("calculator", "math_exp"), "a",
                                  PluginOrigin("swirl-calculator", "0.1.0"))
    pm.register_from_distribution(_plugin_registering("calculator", "calc"), "b", PluginOrigin("my-calc", "1.2"))
    with pytest.raises(ToolConflictError) as caught:
        collect_tools(pm)
    assert str(caught.value) == (
        "tool name 'calculator' is registered by both swirl-calculator 0.1.0 and my-calc 1.2"
    )


def test_tag_collision_names_both_tools_and_distributions():
    pm = SwirlPluginManager()
    pm.register_from_distribution(_plugin_registering("calculator", "math_exp"), "a",
                                  PluginOrigin("swirl-calculator", "0.1.0"))
    pm.register_from_distribution(_plugin_registering("my_calc", "math_exp"), "b", PluginOrigin("my-calc", "1.2"))
    with pytest.raises(ToolConflictError, match="tag 'math_exp'") as caught:
        collect_tools(pm)
    message = str(caught.value)
    assert "'calculator' (swirl-calculator 0.1.0)" in message and "'my_calc' (my-calc 1.2)" in message


def test_collision_between_hand_registered_plugins_names_the_plugins():
    pm = SwirlPluginManager()
    pm.register(_plugin_registering("twin"), name="first-plugin")
    pm.register(_plugin_registering("twin", "other_tag"), name="second-plugin")
    with pytest.raises(ToolConflictError, match="'first-plugin'.*'second-plugin'"):
        collect_tools(pm)


def test_one_plugin_registering_a_name_twice_is_a_conflict():
    class Twice:
        @hookimpl
        def register_tools(self, register):
            register(str.lower, name="lower")
            register(str.upper, name="lower", tag="upper")

    pm = SwirlPluginManager()
    pm.register_from_distribution(Twice(), "twice", PluginOrigin("swirl-twice", "0.3"))
    with pytest.raises(ToolConflictError, match="'lower' is registered twice by swirl-twice 0.3"):
        collect_tools(pm)


def test_plugin_whose_hook_raises_is_skipped_with_a_warning():
    class Broken:
        @hookimpl
        def register_tools(self, register):
            register(str.lower, name="half_registered")
            raise RuntimeError("database unreachable")

    pm = SwirlPluginManager()
    pm.register_from_distribution(Broken(), "broken", PluginOrigin("swirl-broken", "0.1"))
    pm.register(ReversePlugin(), name="reverse-plugin")
    with pytest.warns(PluginLoadWarning, match="swirl-broken 0.1.*RuntimeError: database unreachable"):
        tools = collect_tools(pm)
    assert list(tools) == ["reverse"]


def test_distribution_installed_at_run_time_is_discovered(isolated_plugins, make_distribution, monkeypatch):
    make_distribution("Swirl_Test.Echo", "0.4.2", "swirl_test_echo_plugin", ECHO_PLUGIN)
    monkeypatch.setenv("SWIRL_LOAD_PLUGINS", "swirl-test-echo")  # compared after PEP 503 normalisation
    reset_plugin_manager()

    tool = collect_tools()["echo"]
    assert (tool.distribution, tool.version, tool.tag) == ("Swirl_Test.Echo", "0.4.2", "echo_text")
    assert tool.description == "Repeat the input."
    assert tool.fn("hi") == "echo: hi"


def test_plugin_failing_to_import_warns_and_the_others_still_load(make_distribution, monkeypatch):
    make_distribution("swirl-test-broken", "0.9", "swirl_test_broken_plugin",
                      "raise ImportError('needs libfoo, which is not installed')\n")
    make_distribution("swirl-test-echo", "0.4.2", "swirl_test_echo_plugin", ECHO_PLUGIN)
    monkeypatch.delenv("SWIRL_LOAD_PLUGINS", raising=False)  # unset: every installed plugin loads
    reset_plugin_manager()
    try:
        with pytest.warns(PluginLoadWarning) as caught:
            tools = collect_tools()
    finally:
        reset_plugin_manager()
    messages = [str(w.message) for w in caught if "swirl-test-broken" in str(w.message)]
    assert len(messages) == 1
    assert "swirl-test-broken 0.9" in messages[0]
    assert "ImportError: needs libfoo, which is not installed" in messages[0]
    assert tools["echo"].distribution == "swirl-test-echo"


def test_load_plugins_variable_limits_loading(isolated_plugins, make_distribution, monkeypatch):
    make_distribution("swirl-test-echo", "0.4.2", "swirl_test_echo_plugin", ECHO_PLUGIN)
    make_distribution("swirl-test-shout", "1.0", "swirl_test_shout_plugin", """
        from swirl_lightning import hookimpl

        @hookimpl
        def register_tools(register):
            register(str.upper, name="shout")
    """)

    monkeypatch.setenv("SWIRL_LOAD_PLUGINS", " swirl_test_shout , ")
    reset_plugin_manager()
    assert list(collect_tools()) == ["shout"]

    monkeypatch.setenv("SWIRL_LOAD_PLUGINS", "")
    reset_plugin_manager()
    assert collect_tools() == {}

    monkeypatch.setenv("SWIRL_LOAD_PLUGINS", "swirl-test-echo,swirl-test-missing")
    reset_plugin_manager()
    with pytest.warns(PluginLoadWarning, match="'swirl-test-missing'"):
        assert list(collect_tools()) == ["echo"]


@pytest.mark.integration
def test_pip_installed_plugin_is_listed_by_the_cli(tmp_path):
    """A real ``pip install`` of a plugin package, then ``swirl tools list --json`` in a new process."""
    source = tmp_path / "src"
    (source / "swirl_pip_echo").mkdir(parents=True)
    (source / "swirl_pip_echo" / "__init__.py").write_text(textwrap.dedent(ECHO_PLUGIN))
    (source / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "swirl-pip-echo"
        version = "3.1.4"

        [project.entry-points.swirl_lightning]
        echo = "swirl_pip_echo"
    """))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(REPO_ROOT)]),
               SWIRL_LOAD_PLUGINS="swirl-pip-echo", HF_HUB_OFFLINE="1")
    listing = subprocess.run(
        [sys.executable, "-m", "swirl_lightning.cli", "tools", "list", "--format", "json"],
        check=True, capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert json.loads(listing.stdout) == [{
        "name": "echo", "tag": "echo_text", "distribution": "swirl-pip-echo", "version": "3.1.4",
        "description": "Repeat the input.",
    }]
