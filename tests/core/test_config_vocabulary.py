"""One config vocabulary: a shared concept is defined in one dataclass, and every command spells it the same way."""

import dataclasses
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import pytest

import swirl_lightning
from swirl_lightning.core.config import (
    SHARED_GROUPS,
    JudgeConfig,
    PolicyConfig,
    SamplingConfig,
    config_parser,
    parse_config,
)
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
    """The README's row for `swirl tools call` lacked --warm-up-timeout (issue 27); its limits are now the tools
    group's keys, spelled as every command spells them."""
    from swirl_lightning.commands.tools import ToolsCallConfig

    parser = config_parser(ToolsCallConfig, "swirl tools call", positional=("name", "query"))
    options = {s for action in parser._actions for s in action.option_strings
               if s.startswith("--") and s not in ("--help", "--print_config", "--tools")}
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith("| `swirl tools call"))
    limits = {"--tools.timeout_s", "--tools.max_output_chars", "--tools.warm_up_timeout_s", "--tools.pid_namespace",
              "--tools.plugins"}
    assert options >= limits
    named = limits | {option for option in options if not option.startswith("--tools.")}  # --config, --episode
    assert not [option for option in sorted(named) if f"`{option}" not in row], row


# ----------------------------------------------------------------------------------------------------
# swirl tools and swirl data take the shared groups (issue 24): one parser, one spelling


def _swirl_config(command: str, argv: list[str]):
    """The config ``swirl COMMAND argv`` runs with: parsed as the command parses it, nothing run."""
    from swirl_lightning.commands import data, plugin, tools

    configs = {"tools list": (tools.ToolsListConfig, ()), "tools call": (tools.ToolsCallConfig, ("name", "query")),
               "data reference": (data.DataReferenceConfig, ()), "data worlds": (data.DataWorldsConfig, ()),
               "data show": (data.DataShowConfig, ("input",)), "data stats": (data.DataStatsConfig, ("input",)),
               "plugin new": (plugin.PluginNewConfig, ("name",)), "generate": (GenerateConfig, ()),
               "filter": (FilterConfig, ())}
    cls, positional = configs[command]
    return parse_config(cls, argv, f"swirl {command}", positional=positional,
                        only_own_groups=command.startswith(("tools", "data")))


def test_every_swirl_command_is_parsed_by_parse_config_or_lightning_cli():
    """One parser machinery: each command's function reads its argv with parse_config (jsonargparse over a dataclass
    of the shared groups) or LightningCLI (jsonargparse over the same groups); none has an argparse parser of its
    own."""
    from swirl_lightning.cli import COMMANDS

    for command, (target, _) in COMMANDS.items():
        module_name, _, function_name = target.partition(":")
        source = inspect.getsource(getattr(importlib.import_module(module_name), function_name))
        assert "parse_config(" in source or "make_cli(" in source or "_main(" in source, command
        assert "import argparse" not in inspect.getsource(importlib.import_module(module_name)), module_name


def test_tools_and_data_commands_spell_the_shared_groups_as_generate_does(tmp_path):
    from swirl_lightning.core.config import TaskConfig, ToolsConfig

    tools = ["--tools.timeout_s", "3", "--tools.max_output_chars", "7", "--tools.warm_up_timeout_s", "5",
             "--tools.pid_namespace", "false", "--tools.plugins", "{greeter: {greeting: Hi}}"]
    task = ["--task.name", "gsm8k", "--task.split", "validation", "--task.limit", "2", "--task.offset", "1",
            "--task.data_path", "q.jsonl", "--task.few_shot", "false", "--task.max_actions", "4"]
    generate = _swirl_config("generate", [*tools, *task, "--output", "o.jsonl"])
    assert isinstance(generate.tools, ToolsConfig) and isinstance(generate.task, TaskConfig)
    assert _swirl_config("tools list", tools).tools == generate.tools
    assert _swirl_config("tools call", ["greet", "Ada", *tools]).tools == generate.tools
    reference = _swirl_config("data reference", [*tools, *task, "--output", "o.jsonl"])
    assert (reference.tools, reference.task, reference.output) == (generate.tools, generate.task, generate.output)
    # the file a command writes is --output, the file it reads --input, as generate and filter spell them
    filtering = _swirl_config("filter", ["--input", "i.jsonl", "--output", "o.jsonl"])
    worlds, plugin = _swirl_config("data worlds", ["--output", "o"]), _swirl_config("plugin new", ["x", "--output", "o"])
    assert worlds.output == plugin.output == "o"
    show, stats = _swirl_config("data show", ["i.jsonl"]), _swirl_config("data stats", ["i.jsonl"])
    assert show.input == stats.input == filtering.input
    # and a rollout's defaults: `swirl tools call` is the wrapper a rollout uses, cap and timeout included
    assert _swirl_config("tools call", ["greet", "Ada"]).tools == ToolsConfig() == _swirl_config("generate", []).tools
    # a run's config gives them its groups; the groups they do not take are left aside
    run = tmp_path / "run.yaml"
    run.write_text("policy: {name: tiny-random}\nsampling: {temperature: 0.5}\ntools: {timeout_s: 3}\n"
                   "task: {name: gsm8k, limit: 2}\n")
    assert _swirl_config("tools call", ["greet", "Ada", "--config", str(run)]).tools.timeout_s == 3
    assert _swirl_config("data reference", ["--config", str(run), "--output", "o"]).task.limit == 2


def test_no_tools_or_data_command_keeps_a_spelling_of_its_own():
    """Their flags are the config's fields: no ``--out``, ``--timeout``, ``--max-chars``, ``--data-path`` beside the
    shared ``--output``, ``--tools.timeout_s``, ``--tools.max_output_chars``, ``--task.data_path``."""
    from swirl_lightning.commands import data, plugin, tools
    from swirl_lightning.core.renamed import RENAMED_FLAGS

    own = {"format", "name", "query", "episode", "output", "overwrite", "split", "worlds", "first", "world", "input",
           "count", "step_judge", "tool", "tag"}
    for cls in (tools.ToolsListConfig, tools.ToolsCallConfig, data.DataReferenceConfig, data.DataWorldsConfig,
                data.DataShowConfig, data.DataStatsConfig, plugin.PluginNewConfig):
        for field in dataclasses.fields(cls):
            if field.name in SHARED_GROUPS:
                assert field.default_factory is SHARED_GROUPS[field.name], (cls.__name__, field.name)
            else:
                assert field.name in own, (cls.__name__, field.name)
    for command, renamed in RENAMED_FLAGS.items():  # each old flag names a flag the command has now
        config_class = {"swirl tools list": tools.ToolsListConfig, "swirl tools call": tools.ToolsCallConfig,
                        "swirl data reference": data.DataReferenceConfig, "swirl data worlds": data.DataWorldsConfig,
                        "swirl data show": data.DataShowConfig, "swirl data stats": data.DataStatsConfig}[command]
        parser = config_parser(config_class, command)
        options = {s for action in parser._actions for s in action.option_strings}
        assert {new.split()[0] for new in renamed.values()} <= options, command


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


def test_no_benchmark_spells_a_shared_setting_its_own_way():
    """Every benchmark takes the library's settings as the shared groups (``--policy.name``, ``--task.limit``,
    ``--sampling.max_new_tokens``, ...): none declares a flag of its own that a shared group's flag replaced."""
    import ast

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from common import SHARED_SPELLINGS
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    offenders = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in SHARED_SPELLINGS):
                offenders.append(f"{path.name}: {node.args[0].value} (use {SHARED_SPELLINGS[node.args[0].value]})")
    assert offenders == []
