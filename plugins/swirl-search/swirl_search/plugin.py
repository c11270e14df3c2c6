"""The swirl-lightning plugin: registers the ``search`` tool under the tag ``<search_query>``.

Listing tools imports only this module; the index (and torch) loads on the first search and is
then kept for the life of the process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from swirl_lightning import hookimpl

from swirl_search import settings
from swirl_search.corpus import Document

if TYPE_CHECKING:
    from swirl_search.index import SearchIndex

TOOL_TAG = "search_query"


def search(query: str) -> str:
    """Search a Wikipedia paragraph collection and return the best match as "title: text"."""
    if not query.strip():
        raise ValueError("search query is empty: write the text to search for inside the tag")
    hits = default_index().search(query.strip(), k=settings.top_k())
    return format_hits([doc for doc, _ in hits], max_chars=settings.max_chars())


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


@hookimpl
def register_tools(register: Callable[..., None]) -> None:
    """Register :func:`search` as the ``search_query`` tool; the index loads (or is built) before the first
    search, outside the call timeout."""
    register(search, tag=TOOL_TAG, warm_up=default_index)
