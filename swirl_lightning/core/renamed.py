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
