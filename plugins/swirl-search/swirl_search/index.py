"""Dense retrieval index: corpus embeddings from a sentence-transformers model, cached on disk.

Embeddings are stored in ``<cache_dir>/search-index/<key>.npy`` where the key hashes the exact
texts embedded, the model's file contents and the normalisation flag, so a second start with the
same corpus and model loads the matrix instead of re-encoding. torch and sentence-transformers are
imported only when a model is first needed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from swirl_search import settings
from swirl_search.atomic import atomic_output
from swirl_search.corpus import Document, read_corpus

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

CACHE_FORMAT_VERSION = 1
"""Bumped when the cache file layout or the embedded text changes."""


class SearchIndex:
    """Top-k dense retrieval over one corpus JSONL.

    ``normalize=True`` stores unit-length embeddings, so scores are cosine similarities; with
    ``False`` they are raw dot products. ``show_progress=None`` shows the encoding progress bar only
    when stderr is a terminal. The index builds itself on the first :meth:`search`; building is
    thread-safe, and one model is loaded per process and path however many indexes use it.
    """

    def __init__(
        self,
        corpus_path: Path,
        model_path: Path | None = None,
        cache_dir: Path | None = None,
        *,
        normalize: bool = True,
        batch_size: int = 64,
        show_progress: bool | None = None,
        world: str | None = None,
    ) -> None:
        self.corpus_path = Path(corpus_path)
        self.world = world
        """Search only the documents of this world (``None``: all of them)."""
        self.model_path = Path(model_path) if model_path is not None else settings.model_path()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else settings.cache_dir()
        self.normalize = normalize
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.loaded_from_cache: bool | None = None
        """After :meth:`build`: True when the embeddings came from the disk cache."""
        self._documents: list[Document] | None = None
        self._embeddings: np.ndarray | None = None
        self._cache_file: Path | None = None
        self._lock = threading.Lock()

    @property
    def documents(self) -> list[Document]:
        """The corpus documents, in file order (builds the index if needed)."""
        self.build()
        assert self._documents is not None
        return self._documents

    @property
    def cache_file(self) -> Path:
        """The embedding cache file of this corpus, model and normalisation (builds if needed)."""
        self.build()
        assert self._cache_file is not None
        return self._cache_file

    @property
    def embedding_dim(self) -> int:
        """The length of one embedding vector (builds if needed)."""
        self.build()
        assert self._embeddings is not None
        return int(self._embeddings.shape[1])

    def build(self) -> SearchIndex:
        """Load the corpus and its embeddings: from the disk cache, else by encoding (then cached).

        Does nothing once built. Raises ``ValueError`` for an empty corpus, ``FileNotFoundError``
        for a missing corpus or model folder, and the corpus reader's errors for bad lines.
        """
        if self._embeddings is not None:
            return self
        with self._lock:
            if self._embeddings is None:
                self._build_locked()
        return self

    def search(self, query: str, k: int = 1) -> list[tuple[Document, float]]:
        """The ``k`` documents most similar to ``query``, best first, with their scores.

        Returns fewer than ``k`` pairs when the corpus is smaller. Raises ``ValueError`` for an
        empty query or ``k < 1``.
        """
        if not query.strip():
            raise ValueError("search query is empty: expected some text to search for")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.build()
        assert self._embeddings is not None and self._documents is not None
        query_vector = self.encode_queries([query])[0]
        scores = self._embeddings @ query_vector
        count = min(k, len(scores))
        best = np.argpartition(-scores, count - 1)[:count]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(self._documents[i], float(scores[i])) for i in best]

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed corpus texts (float32, one row per text); the slow step the cache avoids."""
        show = sys.stderr.isatty() if self.show_progress is None else self.show_progress
        return self._encode(texts, show_progress_bar=show)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Embed queries the same way as the corpus (float32, one row per query)."""
        return self._encode(queries, show_progress_bar=False)

    def _encode(self, texts: Sequence[str], show_progress_bar: bool) -> np.ndarray:
        model = load_model(self.model_path)
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            show_progress_bar=show_progress_bar,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _build_locked(self) -> None:
        documents = [doc for doc in read_corpus(self.corpus_path) if self.world is None or doc.world == self.world]
        if not documents:
            where = f" of world {self.world!r}" if self.world is not None else ""
            raise ValueError(f"corpus {self.corpus_path} has no documents{where}")
        texts = [doc.render() for doc in documents]
        cache_file = self.cache_dir / "search-index" / f"{self._cache_key(texts)}.npy"
        embeddings = _load_cached(cache_file, rows=len(texts))
        self.loaded_from_cache = embeddings is not None
        if embeddings is None:
            embeddings = self.encode_documents(texts)
            with atomic_output(cache_file) as tmp, tmp.open("wb") as stream:
                np.save(stream, embeddings, allow_pickle=False)
        self._documents, self._cache_file = documents, cache_file
        self._embeddings = embeddings

    def _cache_key(self, texts: Sequence[str]) -> str:
        corpus_digest = hashlib.sha256()
        for text in texts:
            encoded = text.encode("utf-8")
            corpus_digest.update(len(encoded).to_bytes(8, "little") + encoded)
        identity = {
            "format": CACHE_FORMAT_VERSION,
            "corpus": corpus_digest.hexdigest(),
            "model": model_fingerprint(self.model_path),
            "normalize": self.normalize,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def model_fingerprint(model_path: Path) -> str:
    """A hash of the model folder's file names and contents: equal models share a cache.

    Content rather than path, so the same model installed in two environments shares embeddings,
    and a changed model at the same path does not reuse stale ones.
    """
    model_path = Path(model_path)
    if not model_path.is_dir():
        raise FileNotFoundError(f"sentence-transformers model folder not found: {model_path}")
    files = sorted(path for path in model_path.rglob("*") if path.is_file())
    stamp = tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    return _fingerprint_files(model_path, stamp)


@functools.lru_cache(maxsize=8)
def _fingerprint_files(model_path: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    # Keyed by (path, size, mtime) of every file so the ~90 MB read happens once per process.
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        path = Path(name)
        digest.update(path.relative_to(model_path).as_posix().encode() + b"\0")
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


_models: dict[Path, SentenceTransformer] = {}
_models_lock = threading.Lock()


def load_model(model_path: Path) -> SentenceTransformer:
    """The sentence-transformers model at ``model_path``, on CPU and offline, loaded once."""
    key = Path(model_path).resolve()
    with _models_lock:
        if key not in _models:
            if not key.is_dir():
                raise FileNotFoundError(f"sentence-transformers model folder not found: {key}")
            from sentence_transformers import SentenceTransformer

            _models[key] = SentenceTransformer(str(key), device="cpu", local_files_only=True)
        return _models[key]


def _load_cached(cache_file: Path, rows: int) -> np.ndarray | None:
    if not cache_file.exists():
        return None
    try:
        embeddings = np.load(cache_file, allow_pickle=False)
    except (OSError, ValueError) as error:
        warnings.warn(f"ignoring unreadable search cache {cache_file}: {error}", stacklevel=3)
        return None
    if embeddings.ndim != 2 or embeddings.shape[0] != rows or embeddings.dtype != np.float32:
        warnings.warn(
            f"ignoring search cache {cache_file}: expected float32 ({rows}, dim), "
            f"found {embeddings.dtype} {embeddings.shape}",
            stacklevel=3,
        )
        return None
    return embeddings
