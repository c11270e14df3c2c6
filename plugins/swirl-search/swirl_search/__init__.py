"""swirl-search: the ``search`` tool (tag ``<search_query>``) for swirl-lightning agents.

Dense retrieval over a JSONL corpus of ``{"id", "title", "text"}`` paragraphs with the packaged
all-MiniLM-L6-v2 sentence-transformers model. Importing this package is cheap (``swirl tools list``
imports it): the index module, numpy, torch and sentence-transformers load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"Document": "swirl_search.corpus", "build_hotpotqa_corpus": "swirl_search.corpus",
         "read_corpus": "swirl_search.corpus", "SearchIndex": "swirl_search.index"}

__all__ = ["Document", "SearchIndex", "__version__", "build_hotpotqa_corpus", "read_corpus"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'swirl_search' has no attribute {name!r}")
