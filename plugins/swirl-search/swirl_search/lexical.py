"""Lexical (BM25) retrieval over a list of documents, with the ``bm25s`` library.

For corpora of invented names (generated worlds) a word-overlap ranking finds the entity's own article where a
sentence embedding of an unknown name does not (``benchmarks/worlds_retrieval_bench.py`` measures both). Building an
index of a few dozen articles takes milliseconds, so one is built per world on first use.
"""

from __future__ import annotations

from collections.abc import Sequence

from swirl_search.corpus import Document


class LexicalIndex:
    """Top-k BM25 retrieval over ``documents``, each indexed as its text with its title ``title_weight`` times.

    The title weighs more than a mention in another article's text (a simple form of BM25F's field weights): an
    article about a person says "she" after its first sentence, while a short article that names her twice would
    otherwise outrank her own.
    """

    def __init__(self, documents: Sequence[Document], title_weight: int = 3) -> None:
        import bm25s

        if not documents:
            raise ValueError("a search index needs at least one document")
        if title_weight < 1:
            raise ValueError(f"title_weight: expected a positive integer, got {title_weight}")
        self.documents = list(documents)
        self._bm25s = bm25s
        self._retriever = bm25s.BM25()
        texts = [" ".join([doc.title] * title_weight + [doc.text]) for doc in self.documents]
        self._retriever.index(self._tokenize(texts), show_progress=False)

    def _tokenize(self, texts: Sequence[str]):
        return self._bm25s.tokenize(list(texts), stopwords="en", show_progress=False)

    def search(self, query: str, k: int = 1) -> list[tuple[Document, float]]:
        """The ``k`` best documents for ``query``, best first, with their BM25 scores (fewer in a smaller corpus;
        none when no query word is in the corpus)."""
        if not query.strip():
            raise ValueError("search query is empty: expected some text to search for")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        tokens = self._tokenize([query])
        if not any(len(ids) for ids in tokens.ids):
            return []  # only stop words, or words the corpus never uses
        found, scores = self._retriever.retrieve(tokens, k=min(k, len(self.documents)), show_progress=False)
        return [(self.documents[int(i)], float(s)) for i, s in zip(found[0], scores[0]) if s > 0]
