"""One config vocabulary: a shared concept is defined in one dataclass, and every command spells it the same way."""

import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import swirl_lightning
from swirl_lightning.core.config import SHARED_GROUPS, JudgeConfig, PolicyConfig, SamplingConfig, parse_config
from swirl_lightning.judging.filter import FilterConfig
from swirl_lightning.rollout.generate import GenerateConfig

ROOT = Path(__file__).resolve().parents[2]
GENERIC = {"name", "seed", "batch_size", "dtype", "options", "split", "enabled", "dir", "overwrite"}


def config_dataclasses() -> list[type]:
    """Every dataclass named ``*Config`` in the library."""
    found = {}
    for module in pkgutil.walk_packages(swirl_lightning.__path__, "swirl_lightning."):
        if module.name.endswith(("__main__", "testing")):
            continue
        for name, obj in inspect.getmembers(importlib.import_module(module.name), dataclasses.is_dataclass):
            if name.endswith("Config") and obj.__module__ == module.name:
                found[f"{obj.__module__}.{name}"] = obj
    return list(found.values())


def test_each_shared_setting_is_defined_in_one_config_class():
    owners: dict[str, list[str]] = {}
    for cls in config_dataclasses():
        for field in dataclasses.fields(cls):
            owners.setdefault(field.name, []).append(cls.__name__)
    shared = {f.name for cls in SHARED_GROUPS.values() for f in dataclasses.fields(cls)} - GENERIC
    repeated = {name: classes for name, classes in owners.items() if name in shared and len(classes) > 1}
    assert repeated == {}, "a shared setting is spelled in more than one config class"
    assert owners["temperature"] == ["SamplingConfig"] and owners["adapter"] == ["PolicyConfig"]


def test_generate_filter_and_fit_spell_the_shared_groups_alike(tmp_path):
    from swirl_lightning.training.cli import make_cli

    policy = ["--policy.name", "tiny-random", "--policy.adapter", "null"]
    sampling = ["--sampling.temperature", "0.5", "--sampling.max_new_tokens", "7"]
    judge = ["--judge.name", "reference", "--judge.batch_size", "3"]
    generate = parse_config(GenerateConfig, [*policy, *sampling, "--task.limit", "2"], "swirl generate")
    filtering = parse_config(FilterConfig, ["--input", "a", "--output", "b", *judge], "swirl filter")
    fit = make_cli(["--config", str(ROOT / "conf" / "quickstart.yaml"), *policy, *sampling, *judge,
                    "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert generate.policy == fit.model.policy == PolicyConfig("tiny-random", None)
    assert generate.sampling.temperature == fit.model.sampling.temperature == 0.5
    assert generate.sampling.max_new_tokens == fit.model.sampling.max_new_tokens == 7
    assert filtering.judge == fit.model.judge == fit.datamodule.judge == JudgeConfig("reference", batch_size=3)
    assert isinstance(fit.model.sampling, SamplingConfig)


def test_config_docstrings_spell_boolean_flags_as_the_commands_take_them():
    """jsonargparse spells a boolean ``--cache false``; FilterConfig.cache's help said ``--no-cache``, a flag
    `swirl filter` does not have (issue 27). No config class may name a ``--no-...`` flag."""
    wrong = {cls.__qualname__: line.strip() for cls in config_dataclasses()
             for line in inspect.getsource(cls).splitlines() if "--no-" in line}
    assert not wrong, wrong


def test_the_readme_lists_every_option_of_swirl_tools_call():
    """The README's row for `swirl tools call` lacked --warm-up-timeout (issue 27)."""
    import argparse

    from swirl_lightning.cli import build_parser

    parser = build_parser()
    tools = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["tools"]
    call = next(a for a in tools._actions if isinstance(a, argparse._SubParsersAction)).choices["call"]
    options = {s for action in call._actions for s in action.option_strings if s.startswith("--") and s != "--help"}
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith("| `swirl tools call"))
    assert options >= {"--warm-up-timeout", "--no-pid-namespace"}
    assert not [option for option in sorted(options) if f"`{option}" not in row], row


def test_tool_plugin_options_are_spelled_tools_plugins_by_every_command_that_builds_tools(tmp_path):
    """``tools.plugins`` (issue 25: MCP servers in the tools config): one spelling in generate, fit and the swirl tools
    commands, on the command line and in a config file."""
    import argparse

    from swirl_lightning import hookimpl
    from swirl_lightning.cli import build_parser
    from swirl_lightning.core.config import ToolsConfig, tools_group
    from swirl_lightning.core.plugins import get_plugin_manager
    from swirl_lightning.training.cli import make_cli

    class Greeter:  # fit builds its tools: a plugin of that name, which starts nothing
        @hookimpl
        def register_tools(self, register, options):
            register(lambda name: f"{options['greeting']}, {name}", name="greet")

    options = "{greeter: {greeting: Ahoy, names: [Ada, Bob]}}"
    expected = {"greeter": {"greeting": "Ahoy", "names": ["Ada", "Bob"]}}
    overlay = tmp_path / "tools.yaml"
    overlay.write_text(f"tools:\n  plugins: {options}\n")
    generate = parse_config(GenerateConfig, ["--tools.plugins", options], "swirl generate")
    from_file = parse_config(GenerateConfig, ["--config", str(overlay)], "swirl generate")
    plugin = Greeter()
    get_plugin_manager().register(plugin, name="greeter")
    try:
        fit = make_cli(["--config", str(ROOT / "conf" / "quickstart.yaml"), "--tools.plugins", options,
                        "--trainer.default_root_dir", str(tmp_path)], run=False)
    finally:
        get_plugin_manager().unregister(plugin)
    assert generate.tools.plugins == from_file.tools.plugins == fit.model.tools.plugins == expected
    assert fit.datamodule.tools == fit.model.tools and isinstance(fit.model.tools, ToolsConfig)
    assert tools_group([str(overlay)])[0].plugins == tools_group([], options)[0].plugins == expected
    tools = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["tools"]
    for command in ("list", "call"):
        parser = next(a for a in tools._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        assert {"--config", "--tools.plugins"} <= {s for action in parser._actions for s in action.option_strings}


# ----------------------------------------------------------------------------------------------------
# task.max_actions: the one name of the action cap (issue 24); trainer.max_steps counts optimizer steps


OLD_CAP = [["--task.max_steps", "3"], ["--task.max_steps=3"], ["--task", "{max_steps: 3}"], "yaml"]


@pytest.mark.parametrize("command", ["generate", "filter", "fit", "validate"])
@pytest.mark.parametrize("old", OLD_CAP, ids=["flag", "flag=", "inline group", "yaml"])
def test_the_old_name_of_the_action_cap_is_a_one_line_error_naming_the_new(tmp_path, capsys, command, old):
    from swirl_lightning.cli import main

    if old == "yaml":
        config = tmp_path / "old.yaml"
        config.write_text("task:\n  name: gsm8k\n  max_steps: 3\n")
        old = ["--config", str(config)]
    assert main([command, *old]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "task.max_steps" in lines[0] and "renamed" in lines[0], lines
    assert "task.max_actions" in lines[0], lines


@pytest.mark.parametrize("old", OLD_CAP, ids=["flag", "flag=", "inline group", "yaml"])
def test_both_parsers_refuse_the_old_name_when_called_from_python(tmp_path, old):
    """``parse_config`` (generate, filter) and LightningCLI (fit, validate) check it themselves, not only ``swirl``."""
    from swirl_lightning.core.renamed import RenamedKeyError
    from swirl_lightning.training.cli import make_cli

    if old == "yaml":
        config = tmp_path / "old.yaml"
        config.write_text("trainer:\n  max_steps: 2\ntask:\n  max_steps: 3\n")  # the first stays: optimizer steps
        old = ["--config", str(config)]
    with pytest.raises(RenamedKeyError, match=r"task\.max_steps.* renamed .*task\.max_actions"):
        parse_config(GenerateConfig, old, "swirl generate")
    with pytest.raises(RenamedKeyError, match=r"task\.max_steps.* renamed .*task\.max_actions"):
        make_cli(["--config", str(ROOT / "conf" / "quickstart.yaml"), *old], run=False)


def test_the_action_cap_reaches_generate_and_fit_as_task_max_actions(tmp_path):
    from swirl_lightning.training.cli import make_cli

    assert parse_config(GenerateConfig, ["--task.max_actions", "3"], "swirl generate").task.max_actions == 3
    fit = make_cli(["--config", str(ROOT / "conf" / "quickstart.yaml"), "--policy.name", "tiny-random",
                    "--policy.adapter", "null", "--task.max_actions", "3", "--trainer.max_steps", "2",
                    "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert fit.model.task.max_actions == fit.datamodule.task.max_actions == 3 and fit.trainer.max_steps == 2


def test_a_task_with_the_old_class_attribute_is_refused():
    from swirl_lightning.core.tasks import Task

    with pytest.raises(TypeError, match="OldTask.max_steps: renamed max_actions"):
        type("OldTask", (Task,), {"name": "old", "max_steps": 3})


def test_task_max_actions_is_the_only_name_of_the_action_cap():
    """Outside :mod:`~swirl_lightning.core.renamed` (and the guard on Task subclasses), ``max_steps`` is only the
    trainer's: in the library, the configs, the docs, the scripts and the benchmarks."""
    import yaml

    from swirl_lightning.core.renamed import check_renamed_keys

    for config in (ROOT / "conf").rglob("*.yaml"):  # nested keys: trainer.max_steps is a fit's optimizer steps
        check_renamed_keys(yaml.safe_load(config.read_text()), str(config))
    places = [*(ROOT / "swirl_lightning").rglob("*.py"), ROOT / "README.md",
              *(ROOT / "docs").rglob("*.md"), *(ROOT / "scripts").iterdir(), *(ROOT / "benchmarks").glob("*.py")]
    allowed = ("Trainer(", "max_steps=args.steps", "``max_steps`` reached",  # Lightning's and TRL's optimizer steps
               '"max_steps" in vars(cls)', ".max_steps: renamed",  # the guard on Task subclasses
               "it was `task.max_steps`")  # the README, saying what the old name does now
    stray = []
    for path in places:
        if path.name == "renamed.py" or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if "max_steps" in line.replace("trainer.max_steps", "") and not any(a in line for a in allowed):
                stray.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not stray, stray
