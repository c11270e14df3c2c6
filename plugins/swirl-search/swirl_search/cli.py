"""``swirl-search``: build the HotPotQA corpus, build (cache) an index, run queries."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from swirl_search import settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``swirl-search`` command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"swirl-search: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swirl-search", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    corpus = commands.add_parser(
        "build-corpus", help="pool HotPotQA context paragraphs into a corpus JSONL"
    )
    corpus.add_argument(
        "inputs", nargs="*", type=Path,
        help="HotPotQA JSONL files (default: the train and dev files shipped with swirl-lightning)",
    )
    corpus.add_argument("--out", type=Path, required=True, help="corpus JSONL to write")
    corpus.set_defaults(run=_build_corpus)

    index = commands.add_parser("build-index", help="embed a corpus into the on-disk cache")
    _add_index_options(index)
    index.set_defaults(run=_build_index)

    query = commands.add_parser("query", help="print the top documents for a query")
    query.add_argument("query", help="the search text")
    query.add_argument(
        "-k", type=int, default=None, help=f"documents to show (default ${settings.TOP_K_ENV} or 1)"
    )
    query.add_argument("--json", action="store_true", help="print JSON lines with scores")
    _add_index_options(query)
    query.set_defaults(run=_query)
    return parser


def _add_index_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus", type=Path, default=None,
        help=f"corpus JSONL (default ${settings.CORPUS_ENV}, else the packaged HotPotQA pool)",
    )
    parser.add_argument(
        "--model", type=Path, default=None,
        help=f"sentence-transformers model folder (default ${settings.MODEL_ENV}, else MiniLM)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help=f"cache root (default ${settings.CACHE_DIR_ENV} or ~/.cache/swirl_lightning)",
    )


def _build_corpus(args: argparse.Namespace) -> int:
    from swirl_search.corpus import build_hotpotqa_corpus, packaged_hotpotqa_files

    inputs = list(args.inputs) or packaged_hotpotqa_files()
    count = build_hotpotqa_corpus(inputs, args.out)
    print(f"wrote {count} documents from {len(inputs)} file(s) to {args.out}")
    return 0


def _open_index(args: argparse.Namespace):  # -> SearchIndex, imported lazily
    from swirl_search.corpus import default_corpus_path
    from swirl_search.index import SearchIndex

    cache_dir = args.cache_dir or settings.cache_dir()
    corpus = args.corpus or settings.corpus_path() or default_corpus_path(cache_dir)
    return SearchIndex(corpus, model_path=args.model, cache_dir=cache_dir)


def _build_index(args: argparse.Namespace) -> int:
    index = _open_index(args)
    start = time.perf_counter()
    index.build()
    seconds = time.perf_counter() - start
    source = "loaded from cache" if index.loaded_from_cache else "encoded"
    print(
        f"{len(index.documents)} documents from {index.corpus_path}: {source} in {seconds:.1f}s "
        f"({index.cache_file})"
    )
    return 0


def _query(args: argparse.Namespace) -> int:
    from swirl_search.plugin import format_hits

    index = _open_index(args)
    k = args.k if args.k is not None else settings.top_k()
    hits = index.search(args.query, k=k)
    if args.json:
        for doc, score in hits:
            record = {"id": doc.id, "title": doc.title, "score": round(score, 6), "text": doc.text}
            print(json.dumps(record, ensure_ascii=False))
    else:
        print(format_hits([doc for doc, _ in hits], max_chars=settings.max_chars()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
