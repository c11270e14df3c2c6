"""The search corpus: JSONL documents ``{"id", "title", "text"}`` and the HotPotQA pool builder.

Deduplication policy of :func:`build_hotpotqa_corpus`: two paragraphs are the same document when
their titles are equal and their texts are equal up to whitespace (runs of spaces, tabs and
non-breaking spaces count as one space). The first spelling seen is kept. Paragraphs that share a
title but differ in text are kept as separate documents with distinct ids: merging them would glue
two versions of one article into a paragraph the model never saw, and a search hit should be one
real paragraph.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from swirl_lightning.core.safe_load import LoadError, loads_json
from swirl_search.atomic import atomic_output

BUILDER_VERSION = 1
"""Bumped when the builder's output changes, so cached default corpora are rebuilt."""


@dataclass(frozen=True)
class Document:
    """One searchable paragraph."""

    id: str
    title: str
    text: str
    world: str | None = None
    """The world the document belongs to, in a corpus of several generated worlds (an episode searches its own)."""

    def render(self) -> str:
        """The paragraph as the tool shows it (and as it is embedded): ``title: text``."""
        return f"{self.title}: {self.text}"


class CorpusFormatError(ValueError):
    """A corpus or HotPotQA file line that does not have the expected shape."""


def read_corpus(path: Path) -> list[Document]:
    """Read a corpus JSONL of ``{"id", "title", "text", "world"?}`` objects; blank lines are skipped.

    Raises :class:`CorpusFormatError` naming ``file:line`` for malformed JSON, missing or non-string
    fields, and duplicate ids; ``FileNotFoundError`` when the file is missing.
    """
    path = Path(path)
    documents: list[Document] = []
    first_line_of_id: dict[str, int] = {}
    for lineno, record in _read_jsonl(path):
        fields = {}
        for key in ("id", "title", "text"):
            value = record.get(key)
            if not isinstance(value, str):
                raise CorpusFormatError(
                    f"{path}:{lineno}: expected a string field {key!r} in a corpus line "
                    f'{{"id", "title", "text"}}, got {type(value).__name__}'
                )
            fields[key] = value
        world = record.get("world")
        if world is not None and not isinstance(world, str):
            raise CorpusFormatError(f"{path}:{lineno}: expected the optional field 'world' to be a string, "
                                    f"got {type(world).__name__}")
        fields["world"] = world
        if fields["id"] in first_line_of_id:
            raise CorpusFormatError(
                f"{path}:{lineno}: duplicate document id {fields['id']!r} "
                f"(first used on line {first_line_of_id[fields['id']]})"
            )
        first_line_of_id[fields["id"]] = lineno
        documents.append(Document(**fields))
    return documents


def write_corpus(documents: list[Document], out: Path) -> None:
    """Write documents as corpus JSONL, atomically (temporary file, then rename)."""
    with atomic_output(Path(out)) as tmp, tmp.open("w", encoding="utf-8") as stream:
        for doc in documents:
            record = {"id": doc.id, "title": doc.title, "text": doc.text}
            if doc.world is not None:
                record["world"] = doc.world
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def build_hotpotqa_corpus(paths: list[Path], out: Path) -> int:
    """Pool the context paragraphs of HotPotQA files (HF distractor layout) into a corpus JSONL.

    A paragraph is ``"".join(sentences)``. Duplicates are dropped as described in this module's
    docstring; ids are stable hashes of (title, text). Writes ``out`` atomically and returns the
    number of documents written. Raises :class:`CorpusFormatError` naming ``file:line`` for a line
    that is not a HotPotQA record.
    """
    documents: list[Document] = []
    seen: set[tuple[str, str]] = set()
    for path in paths:
        for title, text in _hotpotqa_paragraphs(Path(path)):
            key = (title, _squash_whitespace(text))
            if key in seen:
                continue
            seen.add(key)
            documents.append(Document(id=_document_id(*key), title=title, text=text))
    write_corpus(documents, out)
    return len(documents)


def packaged_hotpotqa_files() -> list[Path]:
    """The HotPotQA files shipped in ``swirl_lightning/data/hotpotqa`` (train and dev), sorted.

    Raises ``FileNotFoundError`` when the installed swirl-lightning ships no HotPotQA data.
    """
    folder = resources.files("swirl_lightning") / "data" / "hotpotqa"
    files = []
    if folder.is_dir():
        files = sorted(
            (entry for entry in folder.iterdir() if entry.name.endswith(".jsonl")),
            key=lambda entry: entry.name,
        )
    if not files:
        raise FileNotFoundError(
            f"no HotPotQA *.jsonl files in {folder}: set $SWIRL_SEARCH_CORPUS to a corpus JSONL "
            "or install a swirl-lightning that ships data/hotpotqa"
        )
    # An installed (unzipped) package holds real files; a zipped one would need copying out.
    paths = [Path(str(entry)) for entry in files]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"packaged HotPotQA file {missing[0]} is not readable as a file")
    return paths


def default_corpus_path(cache_root: Path) -> Path:
    """The pooled corpus of the packaged HotPotQA data, built into ``cache_root`` on first use.

    The file name hashes the input files and the builder version, so new data gives a new corpus.
    """
    inputs = packaged_hotpotqa_files()
    digest = hashlib.sha256(f"builder={BUILDER_VERSION}\n".encode())
    for path in inputs:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    out = Path(cache_root) / "search-corpus" / f"hotpotqa-{digest.hexdigest()[:16]}.jsonl"
    if not out.exists():
        build_hotpotqa_corpus(inputs, out)
    return out


def _hotpotqa_paragraphs(path: Path) -> Iterator[tuple[str, str]]:
    for lineno, record in _read_jsonl(path):
        context = record.get("context")
        where = f"{path}:{lineno}"
        if not isinstance(context, dict):
            raise CorpusFormatError(
                f'{where}: expected a HotPotQA record with "context": '
                '{"title": [...], "sentences": [[...], ...]}'
            )
        titles, sentences = context.get("title"), context.get("sentences")
        if not isinstance(titles, list) or not isinstance(sentences, list):
            raise CorpusFormatError(
                f'{where}: expected lists "context.title" and "context.sentences"'
            )
        if len(titles) != len(sentences):
            raise CorpusFormatError(
                f"{where}: context has {len(titles)} titles but {len(sentences)} sentence lists"
            )
        for title, paragraph in zip(titles, sentences):
            if not isinstance(title, str) or not (
                isinstance(paragraph, list) and all(isinstance(s, str) for s in paragraph)
            ):
                raise CorpusFormatError(
                    f"{where}: expected each context title to be a string and each paragraph "
                    "a list of sentence strings"
                )
            text = "".join(paragraph).strip()
            if text:
                yield title, text


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each object line of ``path``, read within swirl-lightning's bounds (:func:`loads_json`: nesting depth, no
    repeated key, no NaN, no integer too large to read), and its line number."""
    with path.open("rb") as stream:
        for lineno, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = loads_json(line)
            except json.JSONDecodeError as error:
                raise CorpusFormatError(f"{path}:{lineno}: invalid JSON ({error.msg})") from None
            except LoadError as error:
                raise CorpusFormatError(f"{path}:{lineno}: {error}") from None
            except UnicodeDecodeError:
                raise CorpusFormatError(f"{path}:{lineno}: not UTF-8 text") from None
            if not isinstance(record, dict):
                raise CorpusFormatError(
                    f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}"
                )
            yield lineno, record


def _squash_whitespace(text: str) -> str:
    # str.split() splits on every Unicode space, so "1915\xa0– 2011" equals "1915 – 2011".
    return " ".join(text.split())


def _document_id(title: str, text: str) -> str:
    return hashlib.sha1(f"{title}\0{text}".encode()).hexdigest()[:16]
