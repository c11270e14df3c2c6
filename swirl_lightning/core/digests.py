"""Content digests: what run identities and journal names hold so that edited data or new weights are never taken for
the old ones.

A name or a path says where something is, not what it holds: a questions file corrected in place, an adapter folder a
new ``swirl fit`` exported into, or gold answers fixed upstream keep their names. Each digest here is a SHA-256 of the
bytes (reading a file once, in chunks), shortened to 16 hex digits: enough to tell two contents apart, short enough for
a file name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from swirl_lightning.core.trajectory import Example

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "swirl_export.json")
"""The files of a PEFT adapter folder that decide the policy (the tokenizer files beside them do not change it)."""

_CHUNK = 1 << 20


def _short(digest: hashlib._Hash) -> str:
    return digest.hexdigest()[:16]


def _update_with_file(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def file_digest(path: str | os.PathLike) -> str:
    """The digest of one file's bytes."""
    digest = hashlib.sha256()
    _update_with_file(digest, Path(path))
    return _short(digest)


def path_digest(path: str | os.PathLike | None) -> str | None:
    """The digest of a file, or of a folder's files (their paths below it and their bytes, recursively, links
    followed); ``None`` when ``path`` is not given or does not exist (the command that reads it reports that)."""
    if path is None or not os.path.exists(path):
        return None
    root = Path(path)
    if root.is_file():
        return file_digest(root)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        _update_with_file(digest, file)
        digest.update(b"\0")
    return _short(digest)


def adapter_digest(folder: str | os.PathLike | None, _depth: int = 0) -> str | None:
    """The digest of a PEFT adapter's weights and settings (:data:`ADAPTER_FILES`), and of the warm start it was trained
    on, when its ``swirl_export.json`` names one (it is merged first, so it is part of the policy); ``None`` for no
    adapter."""
    from swirl_lightning.core.models import merged_adapter_of

    if folder is None or not Path(folder).is_dir():
        return None
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        if (Path(folder) / name).is_file():
            digest.update(name.encode() + b"\0")
            _update_with_file(digest, Path(folder) / name)
    warm_start = merged_adapter_of(Path(folder)) if _depth < 8 else None  # merge_adapter refuses deeper stacks
    if warm_start is not None:
        digest.update(f"warm start {adapter_digest(warm_start, _depth + 1)}".encode())
    return _short(digest)


def examples_digest(examples: Iterable[Example]) -> str:
    """The digest of questions with their gold answers (id, question, answer of each, in order)."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.id, example.question, example.answer]).encode() + b"\n")
    return _short(digest)
