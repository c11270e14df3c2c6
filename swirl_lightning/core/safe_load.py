"""Bounded reading of the YAML and JSON a user hands over: configs, command-line values, data files.

Whatever the input, reading it takes bounded time and memory, and a bad input is a :class:`LoadError` (a
``ValueError``: one line at the command line) saying what is wrong; the caller names the file and line. Bounds:

- nesting depth, :data:`MAX_DEPTH` (deeper input would end in a ``RecursionError`` inside a parser);
- a YAML document's size with every alias expanded, :data:`MAX_YAML_NODES`: aliases of aliases grow exponentially
  (an alias bomb, "billion laughs"), and a loader that copies them would run out of memory;
- a config file's size, :data:`MAX_CONFIG_BYTES`;
- a config's OmegaConf interpolations (``${a.b}``): the size of what they expand to, :data:`MAX_INTERPOLATED_CHARS`
  (a value that repeats another twice, over and over, doubles at each step: an interpolation bomb), how long a chain
  of them may be, :data:`MAX_INTERPOLATION_CHAIN`, and no value may refer to itself.

Keys are unique: JSON and YAML allow a repeated key, and the later one would silently win. JSON's ``NaN`` and
``Infinity`` are refused.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_DEPTH = 100
"""Most levels of nested lists and objects (trajectories, questions and configs need fewer than ten)."""
MAX_YAML_NODES = 100_000
"""Most values a YAML document may hold with its aliases expanded (a config holds a few hundred)."""
MAX_CONFIG_BYTES = 4 * 2**20
"""Largest config file read."""
MAX_INTERPOLATED_CHARS = MAX_CONFIG_BYTES
"""Most characters a config may hold with its ``${...}`` interpolations expanded."""
MAX_INTERPOLATION_CHAIN = 32
"""Most interpolations one after another (``a: ${b}``, ``b: ${c}``, ...; configs use one or two, OmegaConf fails
with a recursion error below 100)."""
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
                keys: set[str] | None = set() if isinstance(event, yaml.MappingStartEvent) else None
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
    if "${" in text:
        try:
            document = yaml.load(text, Loader=loader)  # within the bounds just checked
        except yaml.YAMLError:
            return
        check_interpolations(document, where)


# ----------------------------------------------------------------------------------------------------
# OmegaConf interpolations

# A reference's path: leading dots for a relative one, then keys and [indices] (OmegaConf's own spelling).
_REFERENCE = re.compile(r"(\.*)([^.\s:${}\[\]]+(?:(?:\.|\[)[^.\s:${}\[\]]+\]?)*)?")
# An interpolation without braces inside, after any backslashes (an odd number escapes it).
_PLAIN_INTERPOLATION = re.compile(r"(\\*)\$\{([^{}]*)\}")
_BRACE = re.compile(r"[{}]")


def _interpolations(text: str) -> list[str]:
    """The bodies of the outermost ``${...}`` in ``text`` (an escaped ``\\${`` is text); an unclosed one is left to
    OmegaConf, which reports it."""
    if text.count("{") == text.count("}") == text.count("${"):  # no braces but those of plain ${...}: fast
        return [m.group(2) for m in _PLAIN_INTERPOLATION.finditer(text) if len(m.group(1)) % 2 == 0]
    bodies, start = [], 0
    while (start := text.find("${", start)) >= 0:
        backslashes = 0
        while start - backslashes > 0 and text[start - backslashes - 1] == "\\":
            backslashes += 1
        if backslashes % 2:
            start += 2
            continue
        depth, end = 1, start + 2
        while depth and (brace := _BRACE.search(text, end)) is not None:
            depth += 1 if brace.group() == "{" else -1
            end = brace.end()
        if depth:
            break
        bodies.append(text[start + 2:end - 1])
        start = end
    return bodies


def _with_text_keys(node: Any) -> Any:
    """``node`` with every mapping's keys as text, as OmegaConf (and a path in ``${...}``) spells them."""
    if isinstance(node, dict):
        return {str(key): _with_text_keys(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_text_keys(value) for value in node]
    return node


def _path_tokens(path: str) -> list[str]:
    return [t for t in path.replace("]", "").replace("[", ".").split(".") if t]


def check_interpolations(document: Any, where: str) -> None:
    """Check the OmegaConf interpolations (``${path}``, ``${.relative}``, ``${resolver:args}``) of a loaded config
    ``document`` before OmegaConf resolves them; ``where`` names the config in the error.

    Resolving copies each referenced value, so values that repeat a reference twice, each referring to the one before,
    double at every step: 30 of them hold gigabytes (an interpolation bomb). This computes, without expanding
    anything, the size each value expands to, and raises :class:`LoadError` when a value would expand past
    :data:`MAX_INTERPOLATED_CHARS`, when interpolations chain more than :data:`MAX_INTERPOLATION_CHAIN` deep, when a
    value refers to itself (through any chain), or when a path is itself built by an interpolation (``${a.${b}}``:
    its target cannot be known before resolving). A reference to a key the document does not hold (set by another
    file or a flag) counts as its own text.
    """
    document = _with_text_keys(document)
    sized: dict[tuple, tuple[int, int]] = {}  # a node's path -> (its size expanded, the longest chain below it)
    active: list[tuple] = []  # the nodes being sized, outermost first: a node met again refers to itself

    def shown(path: tuple) -> str:
        return ".".join(map(str, path)) or "the document"

    def node_at(path: tuple) -> tuple[bool, Any]:
        node = document
        for key in path:
            if isinstance(node, dict):
                if key not in node:
                    return False, None
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return False, None
        return True, node

    def reference(text: str, path: tuple) -> tuple | None:
        """The path of the document's node that ``${text}`` in the value at ``path`` names; None if none."""
        match = _REFERENCE.fullmatch(text.strip())
        if match is None or not match.group(2):
            return None
        dots = len(match.group(1))
        found = path[:-dots] if dots else ()  # ${.a}: beside this value; ${..a}: beside its parent
        found += tuple(_path_tokens(match.group(2)))
        return found if node_at(found)[0] else None

    def followed(path: tuple) -> tuple[int, int]:
        size, chain = size_of(path)
        return size, chain + 1

    def expanded(body: str, path: tuple) -> tuple[int, int]:
        """The size of ``${body}`` in the value at ``path``, and the longest chain of interpolations it starts."""
        inner = _interpolations(body)
        head = body.split(":", 1)[0] if ":" in body else None
        if inner and (head is None or "${" in head):
            raise LoadError(f"{where}: {shown(path)}: a path built by an interpolation (${{{body[:40]}}}) cannot be "
                            "checked before it is resolved; write the path out")
        if head is not None:
            # A resolver (oc.env, oc.select, oc.decode, ...): its own text, its interpolated arguments, and any
            # argument naming a key of the document (oc.select:a.b) expand; oc.dict.keys reads only the keys.
            keys_only = head.strip() == "oc.dict.keys"
            references = [reference(argument, path) for argument in body.split(":", 1)[1].split(",")
                          if "${" not in argument]
            parts = [(sum(map(len, node_at(f)[1])), 0) if keys_only and isinstance(node_at(f)[1], dict) else followed(f)
                     for f in references if f is not None]
            parts += [expanded(b, path) for b in inner]
            return len(body) + sum(s for s, _ in parts), max((c for _, c in parts), default=0)
        found = reference(body, path)
        return (len(body) + 3, 0) if found is None else followed(found)

    def size_of(path: tuple) -> tuple[int, int]:
        if path in sized:
            return sized[path]
        if path in active:
            cycle = " -> ".join(shown(p) for p in active[active.index(path):] + [path])
            raise LoadError(f"{where}: {shown(path)} refers to itself through its interpolations ({cycle})")
        if len(active) > MAX_DEPTH + MAX_INTERPOLATION_CHAIN:  # deeper than nesting and a chain allow
            raise LoadError(f"{where}: {shown(path)}: interpolations chained more than {MAX_INTERPOLATION_CHAIN} deep "
                            "(a: ${b}, b: ${c}, ...); write the values out instead")
        _, node = node_at(path)
        active.append(path)
        if isinstance(node, dict):
            parts = [(len(k), 0) for k in node] + [size_of(path + (k,)) for k in node]
        elif isinstance(node, list):
            parts = [(1, 0)] * len(node) + [size_of(path + (str(i),)) for i in range(len(node))]
        elif isinstance(node, str) and "${" in node:
            bodies = Counter(_interpolations(node))  # a value may repeat one reference many times
            parts = [(len(node) - sum((len(b) + 3) * n for b, n in bodies.items()), 0)]
            parts += [(size * n, chain) for b, n in bodies.items() for size, chain in [expanded(b, path)]]
        else:
            parts = [(len(str(node)), 0)]
        active.pop()
        size, chain = sum(s for s, _ in parts), max(c for _, c in parts)
        if chain > MAX_INTERPOLATION_CHAIN:
            raise LoadError(f"{where}: {shown(path)}: interpolations chained more than {MAX_INTERPOLATION_CHAIN} deep "
                            "(a: ${b}, b: ${c}, ...); write the values out instead")
        if size > MAX_INTERPOLATED_CHARS:
            raise LoadError(f"{where}: {shown(path)} expands to more than {MAX_INTERPOLATED_CHARS} characters with its "
                            "interpolations (${...}) resolved (an interpolation bomb?); write the values out instead")
        sized[path] = size, chain
        return size, chain

    size_of(())


def check_yaml_file(path: str | os.PathLike, *, empty_ok: bool = False) -> None:
    """:func:`check_yaml` of a config file, after checking its size."""
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise LoadError(f"{path}: {size} bytes, over the {MAX_CONFIG_BYTES} bytes a config file may have")
    check_yaml(Path(path).read_text(encoding="utf-8", errors="replace"), str(path), empty_ok=empty_ok)


def check_config_arguments(argv: Sequence[str]) -> None:
    """Check every config a command line names or holds before a parser loads it: each ``--config FILE`` (which may
    not be empty), any other YAML or JSON file of a config's size (a group given as a file: ``--judge FILE``), and
    each inline value (``--judge.options '{...}'``). Once within the bounds, none may use a renamed key
    (:mod:`.renamed`): an old option or key is an error naming the new one."""
    from swirl_lightning.core.renamed import check_renamed_keys, check_renamed_option

    option = ""
    for token in argv:
        if token.startswith("--"):
            option, given, value = token.partition("=")
            check_renamed_option(option)
            if not given:
                continue
        else:
            value = token
        group = "" if option in ("", "--config") else option.removeprefix("--")  # what the value is the value of
        if (option == "--config" or value.endswith(CONFIG_SUFFIXES)) and os.path.isfile(value):
            if option == "--config":  # whatever its name
                check_yaml_file(value)
            elif os.path.getsize(value) <= MAX_CONFIG_BYTES:  # a larger one is data (``--input``): its reader checks it
                check_yaml_file(value, empty_ok=True)
            else:
                option = ""
                continue
            check_renamed_keys(_yaml_document(Path(value).read_text(encoding="utf-8", errors="replace")), value, group)
        elif any(mark in value for mark in "&*[{\n"):  # what aliases and nesting need
            check_yaml(value, option or "a command-line value", numbered="\n" in value)
            check_renamed_keys(_yaml_document(value), option or "a command-line value", group)
        option = ""


def _yaml_document(text: str) -> Any:
    """YAML ``text`` loaded (after :func:`check_yaml`), or ``None`` when it is not YAML: the parser reports that."""
    import yaml

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return None
