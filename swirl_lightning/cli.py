"""The ``swirl`` command line.

Every command is a function that takes the rest of the command line and returns the exit code (:data:`COMMANDS`). Each
parses it with the same machinery: jsonargparse over a dataclass config whose groups are the shared ones
(:func:`~swirl_lightning.core.config.parse_config`: generate, filter, tools, data, plugin), or LightningCLI,
jsonargparse over the same groups (fit, validate, test, predict). The argparse parser here only lists the commands (``swirl
--help``) and reports an unknown one. Heavy modules (torch, transformers) are imported inside the commands, so ``swirl
tools list`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from swirl_lightning.core.memory import set_up_heap
from swirl_lightning.core.quiet import quiet_dependencies

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("swirl_lightning.rollout.generate:cli_main", "sample multi-step trajectories with live tools"),
    "filter": ("swirl_lightning.judging.filter:cli_main", "judge every step and keep trajectories by mode"),
    "fit": ("swirl_lightning.training.cli:fit_main", "train the policy (sft, offline or swirl) from a config"),
    "validate": ("swirl_lightning.training.cli:validate_main", "live evaluation on the validation questions"),
    "test": ("swirl_lightning.training.cli:test_main", "live evaluation on the test split"),
    "predict": ("swirl_lightning.training.cli:predict_main", "roll out the policy and write trajectories"),
    "tools list": ("swirl_lightning.commands.tools:list_main", "list every tool: name, tag, distribution, description"),
    "tools call": ("swirl_lightning.commands.tools:call_main", "run one tool through the rollout's execution wrapper"),
    "data reference": ("swirl_lightning.commands.data:reference_main",
                       "a task's gold reference trajectories (GSM8K: worked solutions as calculator steps + answer)"),
    "data worlds": ("swirl_lightning.commands.data:worlds_main",
                    "write generated worlds to a folder: questions.jsonl, corpus.jsonl, world.json (task worlds)"),
    "data show": ("swirl_lightning.commands.data:show_main", "print trajectories from a JSONL file, step by step"),
    "data stats": ("swirl_lightning.commands.data:stats_main",
                   "summary figures of a trajectory JSONL (accuracy, steps, invalid actions, ...)"),
    "plugin new": ("swirl_lightning.commands.plugin:new_main", "write a new tool-plugin package"),
    "judges list": ("swirl_lightning.commands.judges:list_main",
                    "list the registered judges and their options (what judge.options takes)"),
}
"""Command (one word, or a group and a word) -> (``module:function`` taking the rest of the command line and returning
the exit code, help)."""

COMMAND_GROUPS = {"tools": "list the registered tools, or call one", "data": "convert and inspect data",
                  "plugin": "write a new tool-plugin package", "judges": "list the registered judges and their options"}
"""The two-word commands' first words, with their help."""


def build_parser() -> argparse.ArgumentParser:
    """The ``swirl`` parser that lists :data:`COMMANDS` (each parses its own arguments: ``main`` hands them over)."""
    parser = argparse.ArgumentParser(
        prog="swirl", description="Step-Wise Reinforcement Learning (SWiRL) on PyTorch Lightning.",
        epilog="A mistake in a command's input is one line and exit code 2; `swirl --debug COMMAND ...` (or "
               "SWIRL_DEBUG=1) shows the traceback instead.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups = {name: subparsers.add_parser(name, help=text).add_subparsers(dest="subcommand", metavar="COMMAND",
                                                                          required=True)
              for name, text in COMMAND_GROUPS.items()}
    for name, (_, help_text) in COMMANDS.items():
        group, _, word = name.rpartition(" ")
        (groups[group] if group else subparsers).add_parser(word, help=help_text, add_help=False)
    return parser


def find_command(argv: list[str]) -> tuple[str, list[str]] | None:
    """The command ``argv`` names (one word, or a group and a word) and the rest of it, or ``None``."""
    for words in (2, 1):
        name = " ".join(argv[:words])
        if len(argv) >= words and name in COMMANDS:
            return name, argv[words:]
    return None


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
    set_up_heap()  # before any tensor: PyTorch reads its huge-pages switch at the first one
    quiet_dependencies()
    found = find_command(argv)
    command = found[0] if found else (argv[0] if argv else "")
    try:
        if found is None:
            build_parser().parse_args(argv)  # --help, or an unknown or incomplete command: argparse says so, exit 2
            return EXIT_USAGE
        from swirl_lightning.core.safe_load import check_config_arguments

        command, rest = found
        check_config_arguments(rest)  # the parsers check too, but only after importing torch: seconds
        module_name, _, function_name = COMMANDS[command][0].partition(":")
        with warnings.catch_warnings():
            if " " in command:  # a plugin's warning in `swirl tools ...`: one line; fit keeps Lightning's own form
                warnings.showwarning = _show_warning
            return getattr(importlib.import_module(module_name), function_name)(rest)
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
