"""swirl-search: the ``search`` tool (tag ``<search_query>``) for swirl-lightning agents.

Dense retrieval over a JSONL corpus of ``{"id", "title", "text"}`` paragraphs with the packaged
all-MiniLM-L6-v2 sentence-transformers model. Importing this package is cheap: torch and
sentence-transformers are imported only when an index is first built.
"""

from swirl_search.corpus import Document, build_hotpotqa_corpus, read_corpus
from swirl_search.index import SearchIndex

__version__ = "0.1.0"

__all__ = ["Document", "SearchIndex", "__version__", "build_hotpotqa_corpus", "read_corpus"]
