"""The ``swirl`` command line.

Each command group lives in one small function that adds its subparsers and sets a ``handler``
returning the exit code; :data:`COMMAND_GROUPS` lists them. Commands that parse their own arguments
(LightningCLI's ``fit``/``validate``/``test``/``predict``) go in :data:`DELEGATED_COMMANDS` instead:
``main`` hands them the rest of the command line untouched. Heavy modules (torch, transformers) are
imported inside handlers, so ``swirl tools list`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from swirl_lightning.core.memory import return_freed_memory_to_os
from swirl_lightning.core.quiet import quiet_dependencies

if TYPE_CHECKING:
    from swirl_lightning.core.tools import Episode

SubParsers = argparse._SubParsersAction  # what add_subparsers() returns; argparse has no public name

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def positive_float(text: str) -> float:
    """argparse type: a number greater than zero."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer greater than zero."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return value


# ----------------------------------------------------------------------------------------------------
# swirl tools


def add_tools_commands(subparsers: SubParsers) -> None:
    """``swirl tools list [--json]`` and ``swirl tools call NAME INPUT [--episode JSON]``, each with the run's tools
    group (``--config FILE``, ``--tools.plugins``)."""
    from swirl_lightning.core.config import ToolsConfig

    tools = subparsers.add_parser("tools", help="list the registered tools, or call one")
    commands = tools.add_subparsers(dest="tools_command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="list every tool: name, tag, distribution, description")
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    add_tools_group_arguments(listing)
    listing.set_defaults(handler=tools_list)

    call = commands.add_parser("call", help="run one tool through the rollout's execution wrapper")
    call.add_argument("name", metavar="NAME", help="tool name, as shown by `swirl tools list`")
    call.add_argument("input", metavar="INPUT", help="the text the model would write inside the tag")
    # The limits default to None: unset, a --config's tools group decides, else the defaults shown.
    call.add_argument("--timeout", type=positive_float, default=None, metavar="SECONDS",
                      help="seconds before the call is stopped as a timeout, as tools.timeout_s (default: 10)")
    call.add_argument("--max-chars", type=positive_int, default=None, metavar="N",
                      help="cap on the output length; longer output is cut with a marker, as tools.max_output_chars "
                           "(default: 2000)")
    call.add_argument("--warm-up-timeout", type=positive_float, default=None, metavar="SECONDS",
                      help="seconds the tool's warm-up (loading, building an index) may take before the call fails, "
                           f"as tools.warm_up_timeout_s (default: {ToolsConfig().warm_up_timeout_s:g})")
    call.add_argument("--no-pid-namespace", dest="pid_namespace", action="store_false", default=None,
                      help="run the tool without a PID namespace of its own, as tools.pid_namespace: false (for a "
                           "tool that must see the host's process ids; by default it gets one where the OS allows: "
                           "root)")
    add_tools_group_arguments(call)
    call.add_argument("--episode", default=None, metavar="JSON",
                      help='the episode a tool that takes its episode gets: a JSON object {"example_id": ..., '
                           '"source": ..., "metadata": {...}}, each key optional (example_id and source '
                           'default to "cli"); without it such a tool gets None')
    call.set_defaults(handler=tools_call)


def add_tools_group_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--tools.plugins``: the run's tools group, as ``swirl generate`` takes it."""
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="a YAML config whose tools group applies (its plugins' options, e.g. "
                             "conf/mcp/example.yaml; a run's config, whose other groups are left aside); may repeat, "
                             "later files winning")
    parser.add_argument("--tools.plugins", dest="tools_plugins", default=None, metavar="YAML",
                        help="options of tool plugins by plugin name, as tools.plugins, e.g. '{mcp: {servers: "
                             "[{name: local, command: [python, server.py], tools: [echo]}]}}'")


def tools_list(args: argparse.Namespace) -> int:
    """Print the registered tools as an aligned table, or as JSON with ``--json``."""
    from swirl_lightning.core.config import tools_group
    from swirl_lightning.core.tools import ToolRegistrationError, collect_tools

    config, _ = tools_group(args.config, args.tools_plugins)
    try:
        tools = list(collect_tools(options=config.plugins).values())
    except ToolRegistrationError as error:
        print(f"swirl tools list: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        rows = [{"name": t.name, "tag": t.tag, "distribution": t.distribution, "version": t.version,
                 "description": t.description} for t in tools]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not tools:
        print("no tools registered (is SWIRL_LOAD_PLUGINS limiting the plugins loaded?)", file=sys.stderr)
        return EXIT_OK
    table = [("NAME", "TAG", "DISTRIBUTION", "DESCRIPTION")]
    table += [(t.name, f"<{t.tag}>", t.source, t.description) for t in tools]
    widths = [max(len(row[column]) for row in table) for column in range(3)]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    return EXIT_OK


def tools_call(args: argparse.Namespace) -> int:
    """Run one tool as a rollout would; exit 1 on a tool error, 2 for an unknown tool name or a bad ``--episode``."""
    from swirl_lightning.core.config import ToolsConfig, tools_group
    from swirl_lightning.core.tool_executor import ToolExecutor
    from swirl_lightning.core.tools import ToolRegistrationError, UnknownToolError, collect_tools, select_tools

    try:
        episode = parse_episode(args.episode) if args.episode is not None else None
    except ValueError as error:
        print(f"swirl tools call: --episode: {error}", file=sys.stderr)
        return EXIT_USAGE
    config, given = tools_group(args.config, args.tools_plugins)
    # A flag wins; else a limit the config files set; else the command's default (its output cap is the larger).
    defaults = {"timeout_s": 10.0, "max_output_chars": 2000, "warm_up_timeout_s": ToolsConfig().warm_up_timeout_s,
                "pid_namespace": True}
    flags = {"timeout_s": args.timeout, "max_output_chars": args.max_chars,
             "warm_up_timeout_s": args.warm_up_timeout, "pid_namespace": args.pid_namespace}
    limits: dict[str, Any] = {key: flags[key] if flags[key] is not None else getattr(config, key) if key in given else default
              for key, default in defaults.items()}
    try:
        tools = select_tools(collect_tools(options=config.plugins), [args.name])
    except UnknownToolError as error:
        print(f"swirl tools call: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ToolRegistrationError as error:
        print(f"swirl tools call: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
    with ToolExecutor(tools, **limits) as executor:
        result = executor.run(args.name, args.input, episode)
    if result.error is not None:
        print(f"swirl tools call: {args.name}: {result.error}", file=sys.stderr)
        return EXIT_ERROR
    print(result.output)
    return EXIT_OK


EPISODE_KEYS = {"example_id": str, "source": str, "metadata": dict}
"""The keys ``swirl tools call --episode`` accepts, with the JSON type each must have."""


def parse_episode(text: str) -> Episode:
    """The :class:`~swirl_lightning.core.tools.Episode` of a ``--episode`` JSON object; ``example_id`` and ``source``
    default to ``"cli"``, ``metadata`` to ``{}``. Raises :class:`ValueError` with a one-line reason."""
    from swirl_lightning.core.safe_load import loads_json
    from swirl_lightning.core.tools import Episode

    try:
        value = loads_json(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error.msg} at position {error.pos}") from None
    if not isinstance(value, dict):
        raise ValueError(f'expected a JSON object like {{"metadata": {{...}}}}, got {type(value).__name__}')
    unknown = sorted(set(value) - set(EPISODE_KEYS))
    if unknown:
        label = "unknown key" if len(unknown) == 1 else "unknown keys"
        raise ValueError(f"{label} {', '.join(map(repr, unknown))}; expected some of "
                         f"{', '.join(EPISODE_KEYS)}")
    for key, kind in EPISODE_KEYS.items():
        if key in value and not isinstance(value[key], kind):
            raise ValueError(f"{key!r} must be a JSON {'object' if kind is dict else 'string'}, "
                             f"got {type(value[key]).__name__}")
    return Episode(example_id=value.get("example_id", "cli"), source=value.get("source", "cli"),
                   metadata=value.get("metadata", {}))


# ----------------------------------------------------------------------------------------------------
# swirl data


def add_data_commands(subparsers: SubParsers) -> None:
    """``swirl data reference`` (GSM8K solutions -> reference trajectories), ``swirl data show`` and ``stats``."""
    data = subparsers.add_parser("data", help="convert and inspect data")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    reference = commands.add_parser(
        "reference", help="a task's gold reference trajectories (GSM8K: worked solutions as calculator steps + answer)")
    reference.add_argument("--task", default="gsm8k", help="a task with reference trajectories (default: gsm8k)")
    reference.add_argument("--split", default="train", help="split: for gsm8k train, validation or full (default: train)")
    reference.add_argument("--limit", type=positive_int, default=None, help="first N examples of the split")
    reference.add_argument("--data-path", default=None,
                           help="the task's data instead of its packaged or default data (task.data_path)")
    reference.add_argument("--out", required=True, help="output trajectory JSONL")
    reference.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    reference.add_argument("--no-few-shot", dest="few_shot", action="store_false",
                           help="leave the few-shot example out of the prompt")
    reference.set_defaults(handler=data_reference)

    worlds = commands.add_parser(
        "worlds", help="write generated worlds to a folder: questions.jsonl, corpus.jsonl, world.json (task worlds)")
    worlds.add_argument("--split", default="validation", choices=("train", "validation", "test"),
                        help="the split whose seed range the worlds come from (default: validation)")
    worlds.add_argument("--worlds", type=positive_int, default=50, help="how many worlds (default: 50)")
    worlds.add_argument("--first", type=int, default=0, help="index of the first world in the split's range (default: 0)")
    worlds.add_argument("--output", required=True, help="the folder to write")
    worlds.add_argument("--overwrite", action="store_true", help="replace the files of an existing world folder")
    from swirl_lightning.core.tasks.worlds.generator import WorldSettings

    defaults = WorldSettings()
    for name, kind, help_text in (("people", positive_int, "people per world"),
                                  ("organisations", positive_int, "organisations per world"),
                                  ("places", positive_int, "places per world"),
                                  ("questions", positive_int, "questions per world"),
                                  ("distractors", int, "distractor sentences per article"),
                                  ("similar-names", float, "chance that a person shares another's family name")):
        worlds.add_argument(f"--{name}", type=kind, default=getattr(defaults, name.replace("-", "_")),
                            help=f"{help_text} (default: %(default)s)")
    worlds.add_argument("--hops", type=positive_int, nargs="+", default=list(defaults.hops),
                        help="hop counts, drawn evenly (default: %(default)s)")
    worlds.set_defaults(handler=data_worlds)

    show = commands.add_parser("show", help="print trajectories from a JSONL file, step by step")
    show.add_argument("path", help="trajectory JSONL")
    show.add_argument("--limit", type=positive_int, default=3, help="how many to print (default: 3)")
    show.set_defaults(handler=data_show)

    stats = commands.add_parser("stats", help="summary figures of a trajectory JSONL (accuracy, steps, invalid actions, ...)")
    stats.add_argument("path", help="trajectory JSONL")
    stats.add_argument("--step-judge", default=None, help="judge id whose verdicts count for the GOOD rate (default: any)")
    stats.set_defaults(handler=data_stats)


def data_reference(args: argparse.Namespace) -> int:
    """Write a task's reference trajectories with the rollout's prompt; for GSM8K, report the calculator check."""
    from swirl_lightning.core import prompts
    from swirl_lightning.core.config import TaskConfig, ToolsConfig
    from swirl_lightning.core.tasks import get_task, load_task
    from swirl_lightning.core.tasks.gsm8k import verify_reference_steps
    from swirl_lightning.core.trajectory import write_jsonl
    from swirl_lightning.rollout.conversation import RolloutSettings

    if os.path.lexists(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} exists: pass --overwrite to replace it, or choose another --out")
    task = get_task(args.task)
    settings = RolloutSettings.for_task(TaskConfig(name=args.task, few_shot=args.few_shot), ToolsConfig())
    tags = {tool.name: tool.tag for tool in settings.tools.values()}
    trajectories = []
    for example in load_task(args.task, args.split, args.limit, path=args.data_path):
        trajectory = task.reference_trajectory(example, settings.prompt(example.question), tags)
        if trajectory is None:
            print(f"swirl data reference: task {args.task!r} has no reference trajectories", file=sys.stderr)
            return EXIT_USAGE
        trajectory.metadata["prompt_version"] = prompts.PROMPT_VERSION
        trajectories.append(trajectory)
    write_jsonl(args.out, trajectories)
    steps = sum(len(t.steps) for t in trajectories)
    print(f"wrote {len(trajectories)} reference trajectories ({steps} steps) to {args.out}")
    if "calculator" in settings.tools:
        def calculate(expression: str) -> str:
            return settings.executor.run("calculator", expression).output

        check = verify_reference_steps(trajectories, calculate)
        print(f"calculator reproduces {check['reproduced']} of {check['steps']} annotated results "
              f"({100 * check['rate']:.2f}%)")
    return EXIT_OK


def data_worlds(args: argparse.Namespace) -> int:
    """Write generated worlds of one split to a folder that ``--task.name worlds --task.data_path`` reads."""
    from swirl_lightning.core.tasks.worlds import CORPUS_FILE, QUESTIONS_FILE, SETTINGS_FILE, write_worlds
    from swirl_lightning.core.tasks.worlds.generator import WorldSettings

    existing = [name for name in (QUESTIONS_FILE, CORPUS_FILE, SETTINGS_FILE) if os.path.lexists(os.path.join(args.output, name))]
    if existing and not args.overwrite:
        raise FileExistsError(f"{args.output} holds {', '.join(existing)}: pass --overwrite to replace them, or choose "
                              "another --output")
    settings = WorldSettings(people=args.people, organisations=args.organisations, places=args.places,
                             questions=args.questions, hops=tuple(args.hops), distractors=args.distractors,
                             similar_names=args.similar_names)
    record = write_worlds(args.output, args.split, args.worlds, settings, first=args.first)
    worlds = f"{record['worlds']} {args.split} world" + ("s" if record["worlds"] != 1 else "")
    print(f"wrote {worlds} (seeds {record['seeds'][0]}..{record['seeds'][1] - 1}): "
          f"{record['questions']} questions, {record['articles']} articles in {args.output}")
    return EXIT_OK


def data_show(args: argparse.Namespace) -> int:
    """Print trajectories as a reader would want them: the question and gold answer, then each step's thinking,
    action, tool result and verdicts (the view the TensorBoard dashboard draws, as text)."""
    from swirl_lightning.core.trajectory import Trajectory, read_jsonl
    from swirl_lightning.rollout.view import trajectory_view, view_text

    for i, trajectory in enumerate(read_jsonl(args.path, Trajectory)):
        if i >= args.limit:
            break
        print(view_text(trajectory_view(trajectory)) + "\n")
    return EXIT_OK


def data_stats(args: argparse.Namespace) -> int:
    """Print :func:`swirl_lightning.rollout.evaluation.summarize` of a trajectory file as JSON."""
    from swirl_lightning.core.trajectory import read_trajectories
    from swirl_lightning.rollout.evaluation import summarize

    print(json.dumps(summarize(read_trajectories(args.path), args.step_judge), indent=2, allow_nan=False))
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# swirl plugin


def add_plugin_commands(subparsers: SubParsers) -> None:
    """``swirl plugin new NAME [--output DIR] [--tool NAME] [--tag TAG]``."""
    plugin = subparsers.add_parser("plugin", help="write a new tool-plugin package")
    commands = plugin.add_subparsers(dest="plugin_command", metavar="COMMAND", required=True)
    new = commands.add_parser("new", help="a ready tool-plugin package: pyproject with the entry point, one tool, "
                                          "tests with swirl_lightning.testing, a README")
    new.add_argument("name", metavar="NAME", help="the distribution name, e.g. swirl-dice (also its folder)")
    new.add_argument("--output", default=".", help="the folder to write NAME/ in (default: the current folder)")
    new.add_argument("--tool", default=None, help="the tool's name (default: NAME without swirl-, '-' as '_')")
    new.add_argument("--tag", default=None, help="the tag the model writes (default: the tool's name)")
    new.set_defaults(handler=plugin_new)


def plugin_new(args: argparse.Namespace) -> int:
    """Write the plugin package and say how to install and try it."""
    from swirl_lightning.scaffold import PluginNames, new_plugin

    names = PluginNames.of(args.name, args.tool, args.tag)
    folder = new_plugin(names, args.output)
    print(f"wrote {folder}: the tool {names.tool!r} (<{names.tag}>) in {names.module}/__init__.py, tests in tests/\n"
          f"  pip install -e {folder}\n  swirl tools list\n  swirl tools call {names.tool} \"to be or not\"\n"
          f"  python -m pytest {folder / 'tests'} -q")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# swirl judges


def add_judges_commands(subparsers: SubParsers) -> None:
    """``swirl judges list [NAME ...]``: every registered judge with its options (what ``judge.options`` takes)."""
    judges = subparsers.add_parser("judges", help="list the registered judges and their options")
    commands = judges.add_subparsers(dest="judges_command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="each judge's options: kind, default and what each does")
    listing.add_argument("names", nargs="*", metavar="NAME", help="only these judges (default: all)")
    listing.set_defaults(handler=judges_list)


def judges_list(args: argparse.Namespace) -> int:
    """Print each registered judge's options (from its ``Options`` dataclass, or its factory's signature)."""
    from swirl_lightning.judging.base import available_judges
    from swirl_lightning.judging.options import describe_options

    factories = available_judges()
    unknown = sorted(set(args.names) - set(factories))
    if unknown:
        raise ValueError(f"judge: expected one of {', '.join(sorted(factories))}, got {', '.join(unknown)}")
    for name in args.names or factories:
        print(describe_options(name, factories[name]))
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# Dispatch

COMMAND_GROUPS: dict[str, Callable[[SubParsers], None]] = {
    "tools": add_tools_commands,
    "data": add_data_commands,
    "plugin": add_plugin_commands,
    "judges": add_judges_commands,
}
"""Command name -> function adding its argparse subparsers (each sets ``handler``)."""

DELEGATED_COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("swirl_lightning.rollout.generate:cli_main", "sample multi-step trajectories with live tools"),
    "filter": ("swirl_lightning.judging.filter:cli_main", "judge every step and keep trajectories by mode"),
    "fit": ("swirl_lightning.training.cli:fit_main", "train the policy (sft, offline or swirl) from a config"),
    "validate": ("swirl_lightning.training.cli:validate_main", "live evaluation on the validation questions"),
    "test": ("swirl_lightning.training.cli:test_main", "live evaluation on the test split"),
    "predict": ("swirl_lightning.training.cli:predict_main", "roll out the policy and write trajectories"),
}
"""Command name -> (``module:function`` taking the remaining argv and returning an exit code, help).
For commands with their own parser, e.g. ``"fit": ("swirl_lightning.training.cli:fit_main", "train")``."""


def build_parser() -> argparse.ArgumentParser:
    """The ``swirl`` parser with every command group of :data:`COMMAND_GROUPS`."""
    parser = argparse.ArgumentParser(
        prog="swirl", description="Step-Wise Reinforcement Learning (SWiRL) on PyTorch Lightning.",
        epilog="A mistake in a command's input is one line and exit code 2; `swirl --debug COMMAND ...` (or "
               "SWIRL_DEBUG=1) shows the traceback instead.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_commands in COMMAND_GROUPS.values():
        add_commands(subparsers)
    for name, (_, help_text) in DELEGATED_COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)  # listed in --help; main() intercepts
    return parser


USER_ERRORS = (ValueError, LookupError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError)
"""What a user can act on (a bad value, a missing or existing file, an unknown name): one line and exit code 2.
``--debug`` (or ``SWIRL_DEBUG=1``) shows the traceback instead."""


def _is_user_error(error: BaseException) -> bool:
    if isinstance(error, USER_ERRORS):
        return True
    # Lightning's own configuration errors (a bad accelerator, devices, ...) are the user's to fix too.
    return type(error).__name__ == "MisconfigurationException"


def main(argv: list[str] | None = None) -> int:
    """Run the ``swirl`` command line and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SWIRL_DEBUG", "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        argv, debug = argv[1:], True
    quiet_dependencies()
    return_freed_memory_to_os()
    command = argv[0] if argv else ""
    try:
        if command in DELEGATED_COMMANDS:
            from swirl_lightning.core.safe_load import check_config_arguments

            check_config_arguments(argv[1:])  # the parsers check too, but only after importing torch: seconds
            module_name, _, function_name = DELEGATED_COMMANDS[command][0].partition(":")
            return getattr(importlib.import_module(module_name), function_name)(argv[1:])
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args = build_parser().parse_args(argv)
            return args.handler(args)
    except KeyboardInterrupt:
        print(f"swirl {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - sorted into the user's errors and ours right here
        if debug or not _is_user_error(error):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"swirl {command}: error: {message} (--debug shows where)", file=sys.stderr)
        return EXIT_USAGE


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    # A user needs the message (it names the plugin), not the line inside swirl_lightning that warned.
    print(f"swirl: warning: {message}", file=sys.stderr if file is None else file)


def entry() -> None:
    """The ``swirl`` console script: :func:`main`, then exit with its code."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
