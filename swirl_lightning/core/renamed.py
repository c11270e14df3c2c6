"""Config keys a release renamed: an old config file or flag stops with one line that names the new key.

Without this, an old key is an "unexpected key" from the parser at best; a key that moved to a group where the old
name still means something else (``task.max_steps`` beside ``trainer.max_steps``) would be worse.
:func:`~swirl_lightning.core.safe_load.check_config_arguments` calls :func:`check_renamed_option` and
:func:`check_renamed_keys` for every command line, before any parser (``swirl generate`` and ``swirl filter``'s
dataclass parsing, ``swirl fit``'s LightningCLI) reads it.
"""

from __future__ import annotations

from typing import Any

RENAMED_KEYS: dict[str, str] = {
    "task.max_steps": "task.max_actions",  # actions per rollout; trainer.max_steps (optimizer steps) stays
}
"""Old dotted key -> its new name. A key matches at any depth (``model.task.max_steps`` too)."""


RENAMED_FLAGS: dict[str, dict[str, str]] = {
    "swirl tools list": {"--json": "--format json"},
    "swirl tools call": {"--timeout": "--tools.timeout_s", "--max-chars": "--tools.max_output_chars",
                         "--warm-up-timeout": "--tools.warm_up_timeout_s",
                         "--no-pid-namespace": "--tools.pid_namespace false"},
    "swirl data reference": {"--out": "--output", "--split": "--task.split", "--limit": "--task.limit",
                             "--data-path": "--task.data_path", "--no-few-shot": "--task.few_shot false"},
    "swirl data worlds": {f"--{knob}": f"--world.{knob.replace('-', '_')}" for knob in (
        "people", "organisations", "places", "questions", "distractors", "similar-names", "hops")},
    "swirl data show": {"--limit": "--count"},
    "swirl data stats": {"--step-judge": "--step_judge"},
}
"""Command -> its flags of an earlier release (their own argparse spellings, before every command took the shared
groups) -> the flag that replaced each."""


class RenamedKeyError(ValueError):
    """A config or flag uses a key under its old name."""


def _renamed(path: str) -> str | None:
    """The new name of dotted ``path`` when its last parts are a renamed key, else ``None``."""
    for old, new in RENAMED_KEYS.items():
        if path == old or path.endswith("." + old):
            return path[: len(path) - len(old)] + new
    return None


def check_renamed_option(option: str) -> None:
    """Raise :class:`RenamedKeyError` for a command-line option spelled the old way (``--task.max_steps``)."""
    new = _renamed(option.removeprefix("--"))
    if option.startswith("--") and new is not None:
        raise RenamedKeyError(f"{option} is renamed --{new}")


def check_renamed_flags(command: str, argv: list[str]) -> None:
    """Raise :class:`RenamedKeyError` for a flag of ``command`` spelled as an earlier release did (``--out``)."""
    renamed = RENAMED_FLAGS.get(command, {})
    for token in argv:
        option = token.partition("=")[0]
        if option in renamed:
            raise RenamedKeyError(f"{option} is renamed {renamed[option]}")


def check_renamed_keys(document: Any, where: str, prefix: str = "") -> None:
    """Raise :class:`RenamedKeyError` for an old key in a loaded config ``document`` (``where`` names the file or
    option in the error); ``prefix`` is the dotted group the document is the value of (``task`` for ``--task FILE``)."""
    if not isinstance(document, dict):
        return
    for key, value in document.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        new = _renamed(path)
        if new is not None:
            raise RenamedKeyError(f"{where}: {path} is renamed {new}")
        check_renamed_keys(value, where, path)
