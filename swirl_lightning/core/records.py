"""Records as JSON objects and back: dataclass <-> dict conversion with errors that name the offending field.

:func:`from_dict` checks every field against the dataclass's type hints (unions, literals, lists, nested dataclasses,
finite floats, 64-bit integers) and raises :class:`FormatError` naming the path of the first bad field; the trajectory
format (:mod:`swirl_lightning.core.trajectory`) reads every record through it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union


class FormatError(ValueError):
    """A record that does not match the schema; the message names the file, line and field."""


if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass record (``None`` fields are kept, so the schema is explicit)."""
    return dataclasses.asdict(obj)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise FormatError(f"{where}: expected {_type_name(tp)}, got null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except FormatError as err:
                errors.append(str(err))
        raise FormatError(errors[0] if len(errors) == 1 else f"{where}: expected {_type_name(tp)}, got {value!r:.60}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise FormatError(f"{where}: expected one of {allowed}, got {value!r:.60}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise FormatError(f"{where}: expected a list, got {type(value).__name__}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise FormatError(f"{where}: expected an object, got {type(value).__name__}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FormatError(f"{where}: expected a number, got {value!r:.60}")
        if isinstance(value, int) and value.bit_length() > 1000:  # past the largest float: OverflowError
            raise FormatError(f"{where}: expected a finite number, got an integer of {len(str(abs(value)))} digits")
        if not math.isfinite(value):
            raise FormatError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FormatError(f"{where}: expected an integer, got {value!r:.60}")
        if not -(2**63) <= value < 2**63:  # token ids, indices and counts end up in tensors and SQLite
            raise FormatError(f"{where}: expected an integer that fits in 64 bits, got one of {len(str(abs(value)))} digits")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise FormatError(f"{where}: expected {tp.__name__}, got {value!r:.60}")
        return value
    return value


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a parsed JSON object, naming the offending field on error."""
    label = where or cls.__name__
    if not isinstance(data, dict):
        raise FormatError(f"{label}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise FormatError(f"{label}: unknown field(s) {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FormatError(f"{path}: missing required field")
            continue
        kwargs[name] = _convert(data[name], hints[name], path)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise FormatError(f"{label}.{err}") from None
