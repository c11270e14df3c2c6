"""Tools that take their episode: registration (``takes_episode``), the executor passing the episode through the
worker, rollouts and the ``reference`` judge passing each example's episode, and ``swirl tools call --episode``."""

from __future__ import annotations

import os
import pickle

import pytest

from swirl_lightning import cli, hookimpl
from swirl_lightning.core.config import ToolsConfig
from swirl_lightning.core.plugins import PluginOrigin, SwirlPluginManager, get_plugin_manager, reset_plugin_manager
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.tools import Episode, ToolRegistrationError, collect_tools
from swirl_lightning.core.trajectory import Example, State, Step, parse_action
from swirl_lightning.judging.reference import ReferenceJudge
from swirl_lightning.rollout.conversation import RolloutConversation, RolloutSettings
from swirl_lightning.testing import ScriptedPolicy, episode, make_tool, plugged_in_alone, registered, rollout_once


def lookup(key: str, episode: Episode | None) -> str:
    """Look a key up in this episode's own store (``metadata["store"]``)."""
    if episode is None:
        return "no episode"
    return str(episode.metadata["store"].get(key, f"{key!r} is not in {episode.example_id}'s store"))


def shout(text: str) -> str:
    """Upper-case the input."""
    return text.upper()


class StorePlugin:
    """A third-party plugin: one tool that reads its episode, one that does not."""

    @hookimpl
    def register_tools(self, register):
        register(lookup, tag="kv", takes_episode=True)
        register(shout)


@pytest.fixture
def store_plugin():
    """Only :class:`StorePlugin`, registered by hand in a fresh process-wide manager."""
    with plugged_in_alone(StorePlugin(), name="store-plugin") as plugin:
        yield plugin


def store_example(example_id: str, store: dict[str, str]) -> Example:
    return Example(example_id, "What colour is the sky here?", store.get("sky", ""), "worlds", {"store": store})


# ----------------------------------------------------------------------------------------------------
# (a) registration


def test_a_plugin_registers_a_tool_that_takes_its_episode(store_plugin):
    tools = collect_tools()
    assert list(tools) == ["lookup", "shout"]
    assert (tools["lookup"].tag, tools["lookup"].takes_episode) == ("kv", True)
    assert tools["shout"].takes_episode is False
    assert tools["lookup"].description == "Look a key up in this episode's own store (``metadata[\"store\"]``)."
    get_plugin_manager().unregister(store_plugin)
    assert collect_tools() == {}
    get_plugin_manager().register(store_plugin, name="store-plugin")  # the fixture unregisters it


@pytest.mark.parametrize("flag, kind", [("yes", "str"), (1, "int"), (None, "NoneType")])
def test_takes_episode_must_be_a_bool(flag, kind):
    class Plugin:
        @hookimpl
        def register_tools(self, register):
            register(lookup, takes_episode=flag)

    pm = SwirlPluginManager()
    pm.register_from_distribution(Plugin(), "plugin", PluginOrigin("swirl-example", "0.2"))
    with pytest.raises(ToolRegistrationError,
                       match=f"^swirl-example 0.2: register\\(takes_episode=...\\) expects a bool, got {kind}$"):
        collect_tools(pm)


def test_testing_registered_keeps_the_flag(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SWIRL_LOAD_PLUGINS", "")
    reset_plugin_manager()
    try:
        with registered(tools=[make_tool(lookup, tag="kv", takes_episode=True)]):
            assert collect_tools()["lookup"].takes_episode is True
    finally:
        reset_plugin_manager()


def test_an_episode_is_a_copy_of_the_examples_id_task_and_metadata():
    example = store_example("w1-q0", {"sky": "green"})
    seen = Episode.of(example)
    assert (seen.example_id, seen.source, dict(seen.metadata)) == ("w1-q0", "worlds", {"store": {"sky": "green"}})
    example.metadata["corpus"] = "elsewhere.jsonl"
    assert "corpus" not in seen.metadata  # a copy: later changes to the example do not reach it
    assert pickle.loads(pickle.dumps(seen)) == seen  # it crosses the pipe to the worker
    assert episode({"a": 1}) == Episode("test-0", "test", {"a": 1})


# ----------------------------------------------------------------------------------------------------
# (b) the executor


def test_the_executor_passes_the_episode_through_the_worker(store_plugin):
    def where(text: str, episode: Episode | None) -> str:
        return f"{os.getpid()} {episode.example_id if episode else None}"

    tools = {**collect_tools(), "where": make_tool(where, takes_episode=True)}
    with ToolExecutor(tools) as executor:
        assert executor.run("lookup", "sky", episode({"store": {"sky": "green"}})).output == "green"
        assert executor.run("lookup", "sky", episode({"store": {"sky": "red"}}, example_id="w2")).output == "red"
        assert executor.run("lookup", "sea", episode({"store": {}}, example_id="w2")).output == (
            "'sea' is not in w2's store")
        pid, example_id = executor.run("where", "", episode(example_id="w3")).output.split()
    assert (int(pid) != os.getpid(), example_id) == (True, "w3")  # the call ran in the worker, with the episode


def test_a_call_without_an_episode_gives_the_tool_none(store_plugin):
    with ToolExecutor(collect_tools()) as executor:
        assert executor.run("lookup", "sky").output == "no episode"
        assert executor.run("lookup", "sky", None).output == "no episode"


def test_a_plain_tool_ignores_the_episode(store_plugin):
    with ToolExecutor(collect_tools()) as executor:
        assert executor.run("shout", "hi", episode({"store": {}})).output == "HI"
        assert executor.run("shout", "hi").output == "HI"


def test_a_tool_that_takes_its_episode_keeps_the_error_observations(store_plugin):
    with ToolExecutor(collect_tools(), ToolsConfig(timeout_s=5)) as executor:
        failed = executor.run("lookup", "sky", episode({}))  # no "store" key: the tool raises
        assert (failed.error, failed.output) == ("KeyError: 'store'", "Error: KeyError: 'store'")
        assert executor.run("lookup", "sky", episode({"store": {"sky": "blue"}})).output == "blue"


# ----------------------------------------------------------------------------------------------------
# (c) rollouts


def test_each_rollout_passes_its_own_examples_episode(store_plugin):
    tools = collect_tools()
    settings = RolloutSettings(tools=tools, executor=ToolExecutor(tools, ToolsConfig(timeout_s=5.0)), max_actions=3,
                               policy_name="scripted")
    examples = [store_example("w1-q0", {"sky": "green"}), store_example("w2-q0", {"sky": "violet"})]
    conversations = [RolloutConversation(example, 0, settings, seed=0) for example in examples]
    with settings.executor:
        ScriptedPolicy(["<kv>sky</kv>", "<answer>?</answer>"]).run(conversations, lambda c: None)
    observations = [c.trajectory.steps[0].observation for c in conversations]
    assert observations == ["sky -> green", "sky -> violet"]
    assert [c.trajectory.steps[0].tool_error for c in conversations] == [False, False]


def test_rollout_once_gives_the_example_its_metadata():
    tool = make_tool(lookup, tag="kv", takes_episode=True)
    trajectory = rollout_once("Sky?", ["<kv>sky</kv>", "<answer>blue</answer>"], {"lookup": tool},
                              metadata={"store": {"sky": "blue"}})
    assert trajectory.steps[0].observation == "sky -> blue"


# ----------------------------------------------------------------------------------------------------
# (d) the reference judge runs a sampled call in the state's episode


def test_the_reference_judge_runs_a_sampled_call_in_the_given_episode(store_plugin):
    judge = ReferenceJudge(timeout_s=5.0)  # every registered tool: the plugin's
    assert judge._run("lookup", "sky", Episode.of(store_example("w1-q0", {"sky": "green"}))) == "green"
    assert judge._run("lookup", "sky", Episode.of(store_example("w2-q0", {"sky": "violet"}))) == "violet"
    assert judge._run("lookup", "sky") == "no episode"
    assert judge._run("nowhere", "sky", episode()) is None


def test_the_reference_judge_takes_the_episode_from_the_states_example():
    """A sampled tool step is scored on the result of the call in the state's own episode."""
    solution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    examples = {key: Example(f"gsm8k-{key}", "How many clips?", "72", "gsm8k", {"solution": solution, "key": key})
                for key in ("right", "wrong")}

    def half(expression: str, episode: Episode | None) -> str:
        """24 in the episode whose example says so, 0 elsewhere."""
        return "24" if episode is not None and episode.metadata["key"] == "right" else "0"

    judge = ReferenceJudge(tools={"calculator": make_tool(half, name="calculator", tag="math_exp",
                                                          takes_episode=True)}, timeout_s=5.0)
    step = Step("<math_exp>48/2</math_exp>", parse_action("<math_exp>48/2</math_exp>", {"math_exp": "calculator"}))
    scores = [judge.score_step(State(example.id, 0, [], example=example), step) for example in examples.values()]
    assert scores == [1.0, 0.0]


# ----------------------------------------------------------------------------------------------------
# (e) swirl tools call --episode


def test_tools_call_passes_the_episode_option(store_plugin, capsys):
    assert cli.main(["tools", "call", "lookup", "sky", "--episode", '{"metadata": {"store": {"sky": "teal"}}}']) == 0
    assert capsys.readouterr().out == "teal\n"
    assert cli.main(["tools", "call", "lookup", "sea", "--episode",
                     '{"example_id": "w9-q3", "source": "worlds", "metadata": {"store": {}}}']) == 0
    assert capsys.readouterr().out == "'sea' is not in w9-q3's store\n"
    assert cli.main(["tools", "call", "lookup", "sea", "--episode", '{"metadata": {"store": {}}}']) == 0
    assert capsys.readouterr().out == "'sea' is not in cli's store\n"  # example_id defaults to "cli"


def test_tools_call_without_an_episode_gives_the_tool_none(store_plugin, capsys):
    assert cli.main(["tools", "call", "lookup", "sky"]) == 0
    assert capsys.readouterr().out == "no episode\n"


@pytest.mark.parametrize("value, message", [
    ("{bad", "not valid JSON: Expecting property name enclosed in double quotes at position 1"),
    ("[1, 2]", 'expected a JSON object like {"metadata": {...}}, got list'),
    ('{"metadata": [1]}', "'metadata' must be a JSON object, got list"),
    ('{"example_id": 7}', "'example_id' must be a JSON string, got int"),
    ('{"meta": {}}', "unknown key 'meta'; expected some of example_id, source, metadata"),
])
def test_tools_call_rejects_a_malformed_episode_in_one_line(store_plugin, capsys, value, message):
    assert cli.main(["tools", "call", "lookup", "sky", "--episode", value]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"swirl tools call: --episode: {message}\n"


def test_the_warm_up_of_a_tool_that_takes_its_episode_gets_the_first_calls_episode():
    seen = []

    def lookup(query: str, episode: Episode | None) -> str:
        return f"{query}: {seen}"

    def warm_up(episode: Episode | None) -> None:
        seen.append(episode.metadata["world"] if episode is not None else None)

    tool = make_tool(lookup, name="lookup", warm_up=warm_up, takes_episode=True)
    with ToolExecutor({"lookup": tool}) as executor:
        assert executor.run("lookup", "q", episode({"world": "w1"})).output == "q: ['w1']"
        assert executor.run("lookup", "q", episode({"world": "w2"})).output == "q: ['w1']"  # warmed once
