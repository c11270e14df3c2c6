"""Judge options: each judge declares them as a dataclass, checked before the judge is built.

A judge declares its options as simonw/llm's models do: a class attribute ``Options``, a dataclass deriving from
:class:`JudgeOptions` whose fields are the options (typed, with defaults; a field without one is required) and whose
attribute docstrings say what each does (:func:`describe_options` shows them). ``judge.options`` is a free mapping in
a config, so :func:`check_options` checks it against those fields before anything is built: a missing, misspelt or
wrongly typed option, or a value the dataclass refuses (its ``__post_init__``), is a ``ValueError`` naming the option
and what was expected, a one-line config error found before a model loads or a client is made. The judge is then
built as ``factory(**options)``.

A factory without ``Options`` (a plain function or class a third party registers) is checked against its signature
instead: the same errors, from its parameters and their annotations.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, cast

_KINDS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                           dict: "a mapping", list: "a list"}


@dataclasses.dataclass(frozen=True)
class JudgeOptions:
    """The base of a judge's ``Options`` dataclass: subclass it with one field per option."""

    def judge_id(self) -> str | None:
        """The id of the judge these options build, when it is known without building the judge (a served judge's
        needs no client, a local one's no model); ``None``: build the judge to learn it."""
        return None


def options_class(factory: Callable[..., Any]) -> type[JudgeOptions] | None:
    """The ``Options`` dataclass a judge factory declares, or ``None`` for a plain factory."""
    declared = getattr(factory, "Options", None) if isinstance(factory, type) else None
    if isinstance(declared, type) and dataclasses.is_dataclass(declared):
        return cast("type[JudgeOptions]", declared)
    return None


def _parameters(factory: Callable[..., Any]) -> tuple[dict[str, bool], bool] | None:
    """Option name -> whether it is required, and whether any name goes (``**kwargs``); ``None`` without a
    signature. The ``Options`` dataclass's fields when the factory declares one, else the factory's parameters."""
    declared = options_class(factory)
    if declared is not None:
        return {f.name: f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                for f in dataclasses.fields(declared) if f.init}, False
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    named = {name: p.default is p.empty for name, p in signature.parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())


def _hints(factory: Callable[..., Any]) -> dict[str, Any]:
    declared = options_class(factory)
    target = declared if declared is not None else factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]  # a class: its __init__
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
    an option it does not take, a value of the wrong kind, or one its ``Options`` refuse. ``where`` names the options
    in the message (``judge.options``)."""
    found = _parameters(factory)
    if found is None:
        return
    parameters, takes_any = found
    unknown = sorted(set(options) - set(parameters))
    if unknown and not takes_any:
        raise ValueError(f"{where}: judge {name!r} has no option {', '.join(map(repr, unknown))}; its options are "
                         f"{', '.join(parameters)}")
    hints = _hints(factory)
    missing = [n for n, required in parameters.items() if required and n not in options]
    if missing:
        needed = " and ".join(f"{n} ({_expected(hints[n])})" if n in hints else n for n in missing)
        raise ValueError(f"{where}: judge {name!r} needs {needed}, missing here")
    for option, value in options.items():
        if option in hints and _accepts(hints[option], value) is False:
            raise ValueError(f"{where}.{option}: expected {_expected(hints[option])}, got {_shown(value)}")
    declared = options_class(factory)
    if declared is not None:
        declared(**options)  # its __post_init__: a value out of range, a URL that is none


def known_judge_id(factory: Callable[..., Any], options: Mapping[str, Any]) -> str | None:
    """The id of the judge ``factory(**options)`` builds, when its ``Options`` know it without building the judge."""
    declared = options_class(factory)
    return None if declared is None or not issubclass(declared, JudgeOptions) else declared(**options).judge_id()


def field_docs(declared: type) -> dict[str, str]:
    """Field name -> its attribute docstring (the string right after the field), for ``--help`` and the docs."""
    docs: dict[str, str] = {}
    for klass in reversed(declared.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe_options(name: str, factory: Callable[..., Any]) -> str:
    """A judge's options, one line each: name, kind, default (or required) and what it does."""
    declared = options_class(factory)
    if declared is None:
        return f"{name}: options are the parameters of {getattr(factory, '__qualname__', factory)!r}"
    hints, docs = _hints(factory), field_docs(declared)
    lines = [f"{name}:"]
    for f in dataclasses.fields(declared):
        default = ("required" if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   else f"default {f.default!r}" if f.default is not dataclasses.MISSING else "default {}")
        kind = _expected(hints[f.name]) if f.name in hints else "any"
        lines.append(f"  {f.name} ({kind}; {default}){': ' + docs[f.name] if f.name in docs else ''}")
    return "\n".join(lines)
