"""Bounded reading of the YAML and JSON a user hands over: configs, command-line values, data files.

Whatever the input, reading it takes bounded time and memory, and a bad input is a :class:`LoadError` (a
``ValueError``: one line at the command line) saying what is wrong; the caller names the file and line. Bounds:

- nesting depth, :data:`MAX_DEPTH` (deeper input would end in a ``RecursionError`` inside a parser);
- a YAML document's size with every alias expanded, :data:`MAX_YAML_NODES`: aliases of aliases grow exponentially
  (an alias bomb, "billion laughs"), and a loader that copies them would run out of memory;
- a config file's size, :data:`MAX_CONFIG_BYTES`.

Keys are unique: JSON and YAML allow a repeated key, and the later one would silently win. JSON's ``NaN`` and
``Infinity`` are refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_DEPTH = 100
"""Most levels of nested lists and objects (trajectories, questions and configs need fewer than ten)."""
MAX_YAML_NODES = 100_000
"""Most values a YAML document may hold with its aliases expanded (a config holds a few hundred)."""
MAX_CONFIG_BYTES = 4 * 2**20
"""Largest config file read."""
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class LoadError(ValueError):
    """Input over a bound, with a repeated key, or empty where data is expected; the message says which."""


# ----------------------------------------------------------------------------------------------------
# JSON

# A JSON string, escapes included: removed before the brackets are counted, so a bracket inside text is not one.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deeply the lists and objects of JSON ``text`` nest, counted without parsing (so without recursion)."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise LoadError(f"{name} is not a number JSON allows (numbers must be finite)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise LoadError(f"key {key!r:.60} appears twice in one object (the later value would silently win)")
            seen.add(key)
    return result


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` within the bounds: at most :data:`MAX_DEPTH` levels, no repeated key, no NaN or Infinity (a
    number past the largest float, such as ``1e999``, reads as infinity: the schema checks a number's field).

    Raises :class:`LoadError` for those, ``json.JSONDecodeError`` for text that is not JSON and
    ``UnicodeDecodeError`` for bytes that are not UTF-8.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if text.count("[") + text.count("{") > MAX_DEPTH and json_depth(text) > MAX_DEPTH:  # counting first is cheap
        raise LoadError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except (LoadError, json.JSONDecodeError):
        raise
    except ValueError as error:  # Python converts no integer of over 4300 digits
        raise LoadError(f"a number too large to read ({str(error).split(':')[0]})") from None


# ----------------------------------------------------------------------------------------------------
# YAML


def check_yaml(text: str, where: str, *, empty_ok: bool = True, numbered: bool = True) -> None:
    """Check YAML ``text`` against the bounds before a loader expands it; ``where`` names it in the error, followed by
    the line with ``numbered``.

    Reads the parser's events (no document is built, so nothing is expanded): the nesting depth, the size with
    aliases expanded, and repeated keys in one mapping. Text that is not YAML passes: the loader reports it better.
    With ``empty_ok=False`` a document without a value is an error.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    sizes: dict[str, int] = {}  # anchor -> the size of its value, aliases inside it expanded
    open_nodes: list[tuple[str | None, int, set[str] | None]] = []  # (anchor, size before it, keys of a mapping)
    expect_key: list[bool] = []  # per open node: whether a mapping's next value is a key
    expanded = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            line = f"{where}:{event.start_mark.line + 1}" if numbered and event.start_mark else where
            if isinstance(event, yaml.NodeEvent) and open_nodes and open_nodes[-1][2] is not None:
                if expect_key[-1] and isinstance(event, yaml.ScalarEvent) and event.value != "<<":  # << merges
                    if event.value in open_nodes[-1][2]:
                        raise LoadError(f"{line}: key {event.value!r:.60} appears twice in one mapping (the later "
                                        "value would silently replace the earlier)")
                    open_nodes[-1][2].add(event.value)
                expect_key[-1] = not expect_key[-1]
            if isinstance(event, yaml.CollectionStartEvent):
                keys = set() if isinstance(event, yaml.MappingStartEvent) else None
                open_nodes.append((event.anchor, expanded, keys))
                expect_key.append(True)
                expanded += 1
                if len(open_nodes) > MAX_DEPTH:
                    raise LoadError(f"{line}: nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, before, _ = open_nodes.pop()
                expect_key.pop()
                if anchor is not None:
                    sizes[anchor] = expanded - before
            elif isinstance(event, yaml.ScalarEvent):
                expanded += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                expanded += sizes.get(event.anchor, 1)
            if expanded > MAX_YAML_NODES:
                raise LoadError(f"{line}: more than {MAX_YAML_NODES} values with its aliases expanded (an alias "
                                "bomb?); write the values out instead")
    except yaml.YAMLError:
        return
    if expanded == 0 and not empty_ok:
        raise LoadError(f"{where}: the file is empty; expected settings (key: value)")


def check_yaml_file(path: str | os.PathLike, *, empty_ok: bool = False) -> None:
    """:func:`check_yaml` of a config file, after checking its size."""
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise LoadError(f"{path}: {size} bytes, over the {MAX_CONFIG_BYTES} bytes a config file may have")
    check_yaml(Path(path).read_text(encoding="utf-8", errors="replace"), str(path), empty_ok=empty_ok)


def check_config_arguments(argv: Sequence[str]) -> None:
    """Check every config a command line names or holds before a parser loads it: each ``--config FILE`` (which may
    not be empty), any other YAML or JSON file of a config's size (a group given as a file: ``--judge FILE``), and
    each inline value (``--judge.options '{...}'``)."""
    option = ""
    for token in argv:
        if token.startswith("--"):
            option, given, value = token.partition("=")
            if not given:
                continue
        else:
            value = token
        if value.endswith(CONFIG_SUFFIXES) and os.path.isfile(value):
            if option == "--config":
                check_yaml_file(value)
            elif os.path.getsize(value) <= MAX_CONFIG_BYTES:  # a larger one is data (``--input``): its reader checks it
                check_yaml_file(value, empty_ok=True)
        elif any(mark in value for mark in "&*[{\n"):  # what aliases and nesting need
            check_yaml(value, option or "a command-line value", numbered="\n" in value)
        option = ""
