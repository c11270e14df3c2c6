"""The swirl-lightning plugin: registers the ``search`` tool under the tag ``<search_query>``.

The tool sees its episode: a question whose metadata names a ``corpus`` file is searched there, restricted to the
documents of its ``world`` when it names one (generated worlds: every question has its own small world); any other
call searches the process-wide corpus of the environment settings. Listing tools imports only this module; an index
(and torch, for dense retrieval) loads on first use and is then kept for the life of the process.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swirl_lightning import hookimpl
from swirl_search import settings
from swirl_search.corpus import Document

if TYPE_CHECKING:
    from swirl_lightning.core.tools import Episode
    from swirl_search.index import SearchIndex
    from swirl_search.lexical import LexicalIndex

TOOL_TAG = "search_query"
NO_MATCH = "No article matches the query."
EPISODE_INDEXES_KEPT = 64
"""Episode indexes kept per process (one per world: a few dozen articles each)."""


def search(query: str, episode: Episode | None = None) -> str:
    """Search a collection of articles and return the best match as "title: text"."""
    if not query.strip():
        raise ValueError("search query is empty: write the text to search for inside the tag")
    corpus = episode.metadata.get("corpus") if episode is not None else None
    index = episode_index(corpus, episode.metadata.get("world")) if corpus is not None else default_index()
    hits = index.search(query.strip(), k=settings.top_k())
    return format_hits([doc for doc, _ in hits], max_chars=settings.max_chars()) if hits else NO_MATCH


def format_hits(documents: list[Document], max_chars: int) -> str:
    """Render documents as ``title: text`` separated by blank lines, capped at ``max_chars``.

    A capped result ends with the visible marker ``…[truncated]`` and is at most ``max_chars`` long.
    """
    text = "\n\n".join(doc.render() for doc in documents)
    if len(text) <= max_chars:
        return text
    marker = settings.TRUNCATION_MARKER
    keep = max_chars - len(marker)
    if keep < 1:
        raise ValueError(f"max_chars must exceed the marker's {len(marker)} chars, got {max_chars}")
    return text[:keep].rstrip() + marker


_indexes: dict[tuple[Path | None, Path, Path], SearchIndex] = {}
_indexes_lock = threading.Lock()


def default_index() -> SearchIndex:
    """The process-wide index for the current environment settings, created on first use.

    Keyed by (corpus, model, cache dir) as read from the environment, so changing
    ``$SWIRL_SEARCH_CORPUS`` gives a fresh index; without it, the pooled HotPotQA corpus of the
    packaged data is built into the cache dir once.
    """
    from swirl_search.index import SearchIndex

    corpus, model, cache = settings.corpus_path(), settings.model_path(), settings.cache_dir()
    key = (corpus, model, cache)
    with _indexes_lock:
        if key not in _indexes:
            if corpus is None:
                from swirl_search.corpus import default_corpus_path

                corpus_file = default_corpus_path(cache)
            else:
                corpus_file = corpus
            _indexes[key] = SearchIndex(corpus_file, model_path=model, cache_dir=cache)
        index = _indexes[key]
    return index.build()


_episode_indexes: OrderedDict[tuple[Any, ...], LexicalIndex | SearchIndex] = OrderedDict()


def episode_index(corpus: Any, world: Any = None) -> LexicalIndex | SearchIndex:
    """The index of an episode's ``corpus`` file, restricted to ``world`` when given, with the retriever of
    ``$SWIRL_SEARCH_EPISODE_RETRIEVER``; built on first use and kept (the last :data:`EPISODE_INDEXES_KEPT`)."""
    if not isinstance(corpus, (str, os.PathLike)) or (world is not None and not isinstance(world, str)):
        raise ValueError(f"the episode's metadata: expected 'corpus' a file path and 'world' a name or absent, "
                         f"got {corpus!r:.80} and {world!r:.40}")
    path, retriever = Path(corpus).expanduser().resolve(), settings.episode_retriever()
    key = (path, path.stat().st_mtime_ns, world, retriever)
    with _indexes_lock:
        if key in _episode_indexes:
            _episode_indexes.move_to_end(key)
            return _episode_indexes[key]
    if retriever == "dense":
        from swirl_search.index import SearchIndex

        index: LexicalIndex | SearchIndex = SearchIndex(path, settings.model_path(), settings.cache_dir(), world=world).build()
    else:
        from swirl_search.lexical import LexicalIndex

        documents = _documents_by_world(path, key[1]).get(world, [])
        if not documents:
            raise ValueError(f"corpus {path.name} has no documents" + (f" of world {world!r}" if world else ""))
        index = LexicalIndex(documents)
    with _indexes_lock:
        _episode_indexes[key] = index
        while len(_episode_indexes) > EPISODE_INDEXES_KEPT:
            _episode_indexes.popitem(last=False)
    return index


@functools.lru_cache(maxsize=4)
def _documents_by_world(path: Path, stamp: int) -> dict[str | None, list[Document]]:
    """A corpus file's documents by world, all of them under ``None`` (``stamp``: the file's modification time)."""
    from swirl_search.corpus import read_corpus

    groups: dict[str | None, list[Document]] = {None: []}
    for doc in read_corpus(path):
        groups[None].append(doc)
        if doc.world is not None:
            groups.setdefault(doc.world, []).append(doc)
    return groups


def warm_up(episode: Episode | None = None) -> None:
    """Build what the first search needs, outside the call timeout: the index of the first call's episode, or the
    process-wide one (loading a dense model and embedding a corpus may take minutes)."""
    corpus = episode.metadata.get("corpus") if episode is not None else None
    episode_index(corpus, episode.metadata.get("world")) if corpus is not None else default_index()


@hookimpl
def register_tools(register: Callable[..., None]) -> None:
    """Register :func:`search` as the ``search_query`` tool; it sees its episode (a question's own corpus)."""
    register(search, tag=TOOL_TAG, warm_up=warm_up, takes_episode=True)
