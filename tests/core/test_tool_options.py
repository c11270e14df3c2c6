"""Tool plugins' options: ``tools.plugins.NAME`` reaches the ``register_tools`` hook of the plugin named NAME, in every
place a run builds its tools (rollouts and their tool worker, the reference judge, ``swirl tools list/call``), and a
plugin whose hook takes no options still registers."""

from __future__ import annotations

import json
import sys
import textwrap
import warnings

import pytest

from swirl_lightning import hookimpl
from swirl_lightning.core.config import TaskConfig, ToolsConfig, parse_config
from swirl_lightning.core.plugins import PluginLoadWarning, get_plugin_manager, reset_plugin_manager
from swirl_lightning.core.tools import ToolOptionsError, collect_tools
from swirl_lightning.core.trajectory import Example
from swirl_lightning.testing import ListTask, registered


class Greeter:
    """A plugin whose one tool greets with the ``greeting`` of its options."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    @hookimpl
    def register_tools(self, register, options):
        self.seen.append(options)
        greeting = options.get("greeting", "Hello")
        if not isinstance(greeting, str):
            raise ValueError(f"greeting: expected a string, got {greeting!r}")
        options["greeting"] = "changed by the plugin"  # must change nothing outside this call

        def greet(name: str) -> str:
            """Greet someone."""
            return f"{greeting}, {name.strip()}!"

        register(greet)


class OldStyle:
    """A plugin written before the hook had options: its hook names ``register`` alone."""

    @hookimpl
    def register_tools(self, register):
        register(str.upper, name="shout")


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch):
    """A fresh process-wide manager with no entry-point plugins, then the two plugins above registered by hand under
    the names their options are given by (and unregistered at the end)."""
    monkeypatch.setenv("SWIRL_LOAD_PLUGINS", "")
    reset_plugin_manager()
    manager, greeter, old = get_plugin_manager(), Greeter(), OldStyle()
    manager.register(greeter, name="greeter")
    manager.register(old, name="old")
    yield greeter
    manager.unregister(greeter)
    manager.unregister(old)
    reset_plugin_manager()


def test_each_plugin_gets_its_own_options_and_an_old_style_plugin_still_registers(plugins) -> None:
    options = {"greeter": {"greeting": "Ahoy"}}
    tools = collect_tools(options=options)
    assert sorted(tools) == ["greet", "shout"]
    assert tools["greet"].fn("Ada") == "Ahoy, Ada!" and tools["shout"].fn("hey") == "HEY"
    assert plugins.seen == [{"greeting": "changed by the plugin"}]  # a copy: the run's options are unchanged
    assert options == {"greeter": {"greeting": "Ahoy"}}
    assert collect_tools()["greet"].fn("Ada") == "Hello, Ada!"  # no options: {}
    assert plugins.seen[-1] == {"greeting": "changed by the plugin"} and len(plugins.seen) == 2


def test_the_options_reach_a_rollouts_tools_and_the_worker_process_that_runs_them(plugins) -> None:
    from swirl_lightning.rollout.conversation import RolloutSettings

    task = ListTask("greetings", [Example("q", "Greet Ada.", "Ahoy, Ada!", "greetings")], tools=("greet",))
    with registered(tasks=[task]):
        settings = RolloutSettings.for_task(TaskConfig("greetings"),
                                            ToolsConfig(plugins={"greeter": {"greeting": "Ahoy"}}))
    with settings.executor as executor:  # a forked worker: it holds the tool built with the options
        assert executor.run("greet", "Ada").output == "Ahoy, Ada!"
    assert list(settings.tools) == ["greet"]


def test_the_reference_judge_builds_its_tools_with_the_runs_options(plugins) -> None:
    from swirl_lightning.judging.base import make_step_judge

    judge = make_step_judge("reference", tools=ToolsConfig(plugins={"greeter": {"greeting": "Ahoy"}}))
    try:
        assert judge._run("greet", "Ada") == "Ahoy, Ada!"
    finally:
        judge._executor.close()


def test_an_entry_point_plugin_is_named_by_its_entry_point(tmp_path, monkeypatch) -> None:
    (tmp_path / "swirl_test_greeter.py").write_text(textwrap.dedent('''
        from swirl_lightning import hookimpl

        @hookimpl
        def register_tools(register, options):
            def greet(name):
                """Greet someone."""
                return options["greeting"] + ", " + name
            register(greet)
    '''))
    info = tmp_path / "swirl_test_greeter-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: swirl-test-greeter\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[swirl_lightning]\ngreeter = swirl_test_greeter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SWIRL_LOAD_PLUGINS", "swirl-test-greeter")
    reset_plugin_manager()
    try:
        tool = collect_tools(options={"greeter": {"greeting": "Hi"}})["greet"]
        assert (tool.fn("Ada"), tool.distribution) == ("Hi, Ada", "swirl-test-greeter")
    finally:
        reset_plugin_manager()
        sys.modules.pop("swirl_test_greeter", None)


@pytest.mark.parametrize(("options", "message"), [
    ({"greter": {}}, "tools.plugins.greter: no loaded tool plugin is named 'greter' (a plugin's name is its entry "
                     "point's; tool plugins: greeter, old; SWIRL_LOAD_PLUGINS leaves some out)"),
    ({"old": {"x": 1}}, "tools.plugins.old: plugin 'old' (registered) takes no options (its register_tools hook has "
                        "no options argument)"),
    ({"greeter": {"greeting": 3}}, "tools.plugins.greeter (plugin 'greeter' (registered)): ValueError: greeting: "
                                   "expected a string, got 3"),
    ({"greeter": [1]}, "tools.plugins.greeter: expected a mapping of options, got list"),
])
def test_bad_options_are_an_error_naming_the_key(plugins, options, message) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an error, not a warning and a run without the plugin's tools
        with pytest.raises(ToolOptionsError) as caught:
            collect_tools(options=options)
    assert str(caught.value) == message


def test_a_plugin_given_no_options_that_raises_is_still_skipped_with_a_warning(monkeypatch) -> None:
    class Broken:
        @hookimpl
        def register_tools(self, register, options):
            raise RuntimeError("no index here")

    monkeypatch.setenv("SWIRL_LOAD_PLUGINS", "")
    reset_plugin_manager()
    try:
        get_plugin_manager().register(Broken(), name="broken")
        with pytest.warns(PluginLoadWarning, match="register_tools raised RuntimeError: no index here"):
            assert collect_tools() == {}
    finally:
        reset_plugin_manager()


def test_the_config_checks_the_plugins_field() -> None:
    assert ToolsConfig().plugins == {}
    with pytest.raises(ValueError, match="tools.plugins: expected a mapping of plugin names to mappings"):
        ToolsConfig(plugins={"mcp": [1]})


def test_the_tools_group_of_config_files_and_an_inline_value(tmp_path) -> None:
    """``swirl tools call`` reads the tools group of a run's config (its other groups left aside) and of an overlay,
    a later file's keys over an earlier one's, then the flags: as ``swirl generate`` reads it."""
    from swirl_lightning.commands.tools import ToolsCallConfig

    def tools(*argv: str) -> ToolsConfig:
        return parse_config(ToolsCallConfig, ["greet", "Ada", *argv], "swirl tools call", positional=("name", "query"),
                            only_own_groups=True).tools

    run = tmp_path / "run.yaml"
    run.write_text("policy: {name: tiny-random}\ntask: {name: gsm8k}\ntools:\n  names: [greet]\n  timeout_s: 3\n"
                   "  max_output_chars: ${sampling.max_new_tokens}\nsampling: {max_new_tokens: 77}\n")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("tools:\n  plugins:\n    greeter: {greeting: Ahoy}\n")
    config = tools("--config", str(run), "--config", str(overlay))
    assert (config.names, config.timeout_s, config.plugins) == (["greet"], 3.0, {"greeter": {"greeting": "Ahoy"}})
    assert config.max_output_chars == 77  # ${...} resolved against the group left aside
    config = tools("--config", str(overlay), "--tools.plugins", json.dumps({"greeter": {"greeting": "Hi"}}))
    assert config.plugins == {"greeter": {"greeting": "Hi"}}  # the flag after the files, as in swirl generate
    assert tools() == ToolsConfig()  # a rollout's defaults: the same cap, timeout and warm-up
    with pytest.raises(SystemExit):
        tools("--tools.plugins", "{greeter: 3}")


def test_a_resume_must_have_the_same_plugin_options() -> None:
    """The servers or indexes of a plugin decide what its tools answer: a resume with others would mix two runs. A run
    without options keeps the record it had (older records still resume)."""
    from swirl_lightning.rollout.generate import GenerateConfig
    from swirl_lightning.rollout.shards import run_identity

    assert "tools.plugins" not in run_identity(GenerateConfig())
    with_options = GenerateConfig(tools=ToolsConfig(plugins={"greeter": {"greeting": "Ahoy"}}))
    assert run_identity(with_options)["tools.plugins"] == {"greeter": {"greeting": "Ahoy"}}
