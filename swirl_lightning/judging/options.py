"""Judge options checked against the judge's signature before the judge is built.

``judge.options`` is a free mapping, so a missing, misspelt or wrongly typed option would surface only inside the
judge's constructor, as a ``TypeError`` with a traceback, and perhaps after a model has loaded. :func:`check_options`
turns each into a ``ValueError`` naming the option and what was expected: a one-line config error.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

_KINDS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                           dict: "a mapping", list: "a list"}


def _parameters(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool] | None:
    """The factory's named parameters, and whether it takes ``**kwargs``; ``None`` when it has no signature."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    named = {name: p for name, p in signature.parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())


def _hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]  # a class: its __init__
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - a plugin's annotation that does not resolve: its types go unchecked
        return {}


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether ``value`` fits ``hint``; ``None`` when the hint is not one of the plain kinds checked here."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(arm, value) for arm in typing.get_args(hint)]
        return None if None in verdicts else any(verdicts)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    kind = origin if origin in (dict, list) else hint
    if kind not in _KINDS:
        return None  # Any, a class, a callable: the judge checks it
    if isinstance(value, bool) and kind is not bool:
        return False  # `true` is no number
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _expected(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = [("null" if arm is type(None) else _KINDS.get(typing.get_origin(arm) or arm, str(arm))) for arm in arms]
    return " or ".join(kinds)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def check_options(name: str, factory: Callable[..., Any], options: Mapping[str, Any], where: str) -> None:
    """Raise ``ValueError`` when ``options`` cannot build judge ``name`` with ``factory``: a required option missing,
    an option it does not take, or a value of the wrong kind. ``where`` names the options in the message
    (``judge.options``)."""
    found = _parameters(factory)
    if found is None:
        return
    parameters, takes_any = found
    unknown = sorted(set(options) - set(parameters))
    if unknown and not takes_any:
        raise ValueError(f"{where}: judge {name!r} has no option {', '.join(map(repr, unknown))}; its options are "
                         f"{', '.join(parameters)}")
    hints = _hints(factory)
    missing = [n for n, p in parameters.items() if p.default is p.empty and n not in options]
    if missing:
        needed = " and ".join(f"{n} ({_expected(hints[n])})" if n in hints else n for n in missing)
        raise ValueError(f"{where}: judge {name!r} needs {needed}, missing here")
    for option, value in options.items():
        if option in hints and _accepts(hints[option], value) is False:
            raise ValueError(f"{where}.{option}: expected {_expected(hints[option])}, got {_shown(value)}")
