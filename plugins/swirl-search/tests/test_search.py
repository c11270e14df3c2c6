"""Tests of the swirl-search tool: index, cache, formatting, corpus builder and plugin hook.

Uses the real packaged MiniLM model on a 5-document corpus (the model loads once per process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

from swirl_search import plugin, settings
from swirl_search.corpus import (
    CorpusFormatError,
    Document,
    build_hotpotqa_corpus,
    default_corpus_path,
    packaged_hotpotqa_files,
    read_corpus,
    write_corpus,
)
from swirl_search.index import SearchIndex

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_DOCS = [
    Document("mars", "Mars", "Mars is the fourth planet from the Sun. It is called the Red Planet "
             "because iron oxide on its surface gives it a reddish look."),
    Document("eiffel", "Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower on the "
             "Champ de Mars in Paris, France, completed in 1889."),
    Document("photosynthesis", "Photosynthesis", "Photosynthesis is the process by which green "
             "plants use sunlight, water and carbon dioxide to make glucose and release oxygen."),
    Document("python", "Python (programming language)", "Python is a high-level programming "
             "language created by Guido van Rossum and first released in 1991."),
    Document("kilimanjaro", "Mount Kilimanjaro", "Mount Kilimanjaro is a dormant volcano in "
             "Tanzania and the highest mountain in Africa."),
]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.jsonl"
    write_corpus(TINY_DOCS, path)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def index(tiny_corpus: Path, cache_dir: Path) -> SearchIndex:
    return SearchIndex(tiny_corpus, cache_dir=cache_dir).build()


def _forbid_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: SearchIndex, texts: list[str]) -> None:
        raise AssertionError(f"corpus was re-encoded ({len(texts)} texts) despite a cached index")

    monkeypatch.setattr(SearchIndex, "encode_documents", fail)


# --- retrieval -------------------------------------------------------------------------------

@pytest.mark.integration  # the real MiniLM encoder: not in make test-fast
@pytest.mark.parametrize(
    ("query", "expected_id"),
    [
        ("Which planet is known as the red planet?", "mars"),
        ("Who created the Python programming language?", "python"),
        ("What is the tallest mountain in Africa?", "kilimanjaro"),
        ("How do plants turn sunlight into sugar?", "photosynthesis"),
    ],
)
def test_obvious_query_ranks_the_right_document_first(
    index: SearchIndex, query: str, expected_id: str
) -> None:
    (best, score), = index.search(query, k=1)
    assert best.id == expected_id
    assert -1.0 <= score <= 1.0 + 1e-5


@pytest.mark.integration  # the real MiniLM encoder: not in make test-fast
def test_k_results_are_distinct_and_sorted_by_score(index: SearchIndex) -> None:
    hits = index.search("a famous tower in Paris", k=3)
    assert len(hits) == 3
    assert hits[0][0].id == "eiffel"
    assert len({doc.id for doc, _ in hits}) == 3
    scores = [score for _, score in hits]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.integration  # the real MiniLM encoder: not in make test-fast
def test_k_beyond_corpus_size_returns_every_document(index: SearchIndex) -> None:
    hits = index.search("anything at all", k=50)
    assert sorted(doc.id for doc, _ in hits) == sorted(doc.id for doc in TINY_DOCS)


@pytest.mark.integration  # the real MiniLM encoder: not in make test-fast
@pytest.mark.parametrize("query", ["", "   \n"])
def test_empty_query_is_rejected(index: SearchIndex, query: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        index.search(query)


@pytest.mark.integration  # the real MiniLM encoder: not in make test-fast
def test_k_below_one_is_rejected(index: SearchIndex) -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search("mars", k=0)


# --- the embedding cache -----------------------------------------------------------------------

@pytest.mark.integration  # the real MiniLM encoder: not in make test-fast
def test_second_build_loads_embeddings_without_encoding(
    index: SearchIndex, tiny_corpus: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert index.cache_file.is_file()
    assert index.cache_file.parent == cache_dir / "search-index"
    _forbid_encoding(monkeypatch)
    again = SearchIndex(tiny_corpus, cache_dir=cache_dir).build()
    assert again.loaded_from_cache is True
    assert again.cache_file == index.cache_file
    query = "Which planet is known as the red planet?"
    assert [doc.id for doc, _ in again.search(query, k=5)] == [
        doc.id for doc, _ in index.search(query, k=5)
    ]


@pytest.mark.integration  # the real MiniLM encoder: not in make test-fast
def test_changed_corpus_or_normalisation_misses_the_cache(
    index: SearchIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edited = tmp_path / "edited.jsonl"
    write_corpus([*TINY_DOCS[:-1], Document("kilimanjaro", "Mount Kilimanjaro", "Changed.")], edited)
    _forbid_encoding(monkeypatch)
    with pytest.raises(AssertionError, match="re-encoded"):
        SearchIndex(edited, cache_dir=index.cache_dir).build()
    with pytest.raises(AssertionError, match="re-encoded"):
        SearchIndex(index.corpus_path, cache_dir=index.cache_dir, normalize=False).build()


@pytest.mark.integration  # the real MiniLM encoder: not in make test-fast
def test_unreadable_cache_file_is_rebuilt_with_a_warning(
    index: SearchIndex, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    first = SearchIndex(index.corpus_path, cache_dir=cache_dir).build()
    first.cache_file.write_bytes(b"not a numpy file")
    with pytest.warns(UserWarning, match="ignoring unreadable search cache"):
        rebuilt = SearchIndex(index.corpus_path, cache_dir=cache_dir).build()
    assert rebuilt.loaded_from_cache is False
    assert rebuilt.search("red planet")[0][0].id == "mars"
    assert SearchIndex(index.corpus_path, cache_dir=cache_dir).build().loaded_from_cache is True


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no documents"):
        SearchIndex(empty, cache_dir=tmp_path).build()


# --- the tool function and its formatting --------------------------------------------------------

def test_format_hits_joins_documents_with_blank_lines() -> None:
    text = plugin.format_hits(TINY_DOCS[:2], max_chars=10_000)
    assert text == f"{TINY_DOCS[0].title}: {TINY_DOCS[0].text}\n\n{TINY_DOCS[1].title}: {TINY_DOCS[1].text}"


def test_format_hits_caps_length_with_a_visible_marker() -> None:
    text = plugin.format_hits(TINY_DOCS, max_chars=60)
    assert len(text) <= 60
    assert text.endswith(settings.TRUNCATION_MARKER)
    assert text.startswith("Mars: Mars is the fourth planet")
    with pytest.raises(ValueError, match="max_chars must exceed"):
        plugin.format_hits(TINY_DOCS, max_chars=len(settings.TRUNCATION_MARKER))


@pytest.mark.integration  # the real MiniLM encoder: not in make test-fast
def test_search_tool_uses_environment_settings(
    index: SearchIndex, tiny_corpus: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CORPUS_ENV, str(tiny_corpus))
    monkeypatch.setenv(settings.CACHE_DIR_ENV, str(cache_dir))
    monkeypatch.setenv(settings.TOP_K_ENV, "2")
    monkeypatch.setenv(settings.MAX_CHARS_ENV, "100000")
    _forbid_encoding(monkeypatch)  # the tool must reuse the cache the fixture built
    result = plugin.search("  Which planet is known as the red planet?  ")
    first, second = result.split("\n\n")
    assert first == TINY_DOCS[0].render()
    assert second in {doc.render() for doc in TINY_DOCS[1:]}

    monkeypatch.setenv(settings.MAX_CHARS_ENV, "80")
    capped = plugin.search("Which planet is known as the red planet?")
    assert len(capped) <= 80 and capped.endswith(settings.TRUNCATION_MARKER)
    assert plugin.default_index() is plugin.default_index()


def test_search_tool_rejects_empty_query() -> None:
    with pytest.raises(ValueError, match="empty"):
        plugin.search("   ")


@pytest.mark.parametrize(
    ("name", "value"),
    [(settings.TOP_K_ENV, "0"), (settings.TOP_K_ENV, "two"), (settings.MAX_CHARS_ENV, "5")],
)
def test_bad_environment_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"\\${name}"):
        settings.top_k() if name == settings.TOP_K_ENV else settings.max_chars()


# --- the corpus ------------------------------------------------------------------------------------

def _hotpot_record(titles: list[str], sentences: list[list[str]]) -> dict:
    return {
        "id": "q", "question": "?", "answer": "a", "type": "bridge", "level": "easy",
        "supporting_facts": {"title": titles[:1], "sent_id": [0]},
        "context": {"title": titles, "sentences": sentences},
    }


def test_build_hotpotqa_corpus_joins_sentences_and_dedupes(tmp_path: Path) -> None:
    first = tmp_path / "train.jsonl"
    second = tmp_path / "dev.jsonl"
    first.write_text(json.dumps(_hotpot_record(
        ["Alpha", "Beta"],
        [["Alpha is a letter.", " It comes first."], ["Beta is second."]],
    )) + "\n", encoding="utf-8")
    second.write_text("\n".join([
        # Same paragraph as in train, spelled with a non-breaking space: a duplicate.
        json.dumps(_hotpot_record(["Alpha"], [["Alpha is a\u00a0letter.", " It comes first."]])),
        # Same title, different text: kept as its own document.
        json.dumps(_hotpot_record(["Beta", "Gamma"], [["Beta was revised."], ["Gamma."]])),
    ]) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "corpus.jsonl"

    count = build_hotpotqa_corpus([first, second], out)

    documents = read_corpus(out)
    assert count == len(documents) == 4
    assert [(doc.title, doc.text) for doc in documents] == [
        ("Alpha", "Alpha is a letter. It comes first."),
        ("Beta", "Beta is second."),
        ("Beta", "Beta was revised."),
        ("Gamma", "Gamma."),
    ]
    assert len({doc.id for doc in documents}) == 4
    assert sorted(path.name for path in out.parent.iterdir()) == ["corpus.jsonl"]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"question": "no context"}', "expected a HotPotQA record"),
        ('{"context": {"title": ["A", "B"], "sentences": [["a"]]}}', "2 titles but 1"),
        ('{"context": {"title": ["A"], "sentences": ["not a list"]}}', "list of sentence strings"),
    ],
)
def test_bad_hotpotqa_line_names_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    source = tmp_path / "bad.jsonl"
    good = json.dumps(_hotpot_record(["A"], [["a."]]))
    source.write_text(f"{good}\n\n{bad_line}\n", encoding="utf-8")
    out = tmp_path / "corpus.jsonl"
    with pytest.raises(CorpusFormatError, match=message) as error:
        build_hotpotqa_corpus([source], out)
    assert str(error.value).startswith(f"{source}:3:")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [source]


@pytest.mark.parametrize(
    ("lines", "message", "lineno"),
    [
        (['{"id": "a", "title": "A", "text": "a"}', '{"id": "b", "title": "B"}'], "'text'", 2),
        (['{"id": "a", "title": "A", "text": "a"}', '{"id": "a", "title": "B", "text": "b"}'],
         "duplicate document id 'a' \\(first used on line 1\\)", 2),
        (['{"id": 7, "title": "A", "text": "a"}'], "'id'", 1),
    ],
)
def test_bad_corpus_line_names_file_and_line(
    tmp_path: Path, lines: list[str], message: str, lineno: int
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=message) as error:
        read_corpus(corpus)
    assert str(error.value).startswith(f"{corpus}:{lineno}:")


_GOOD_DOC = '{"id": "a", "title": "A", "text": "a"'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (_GOOD_DOC + ', "note": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than 100 levels"),
        (_GOOD_DOC + ', "text": "b"}', "key 'text' appears twice"),
        (_GOOD_DOC + ', "score": NaN}', "NaN is not a number JSON allows"),
        (_GOOD_DOC + ', "n": 1' + "0" * 5000 + "}", "a number too large to read"),
    ],
    ids=["deep", "repeated key", "NaN", "huge integer"],
)
def test_a_deep_repeated_key_or_unreadable_number_corpus_line_names_file_and_line(
    tmp_path: Path, line: str, message: str
) -> None:
    """The corpus reader used plain json.loads: deep nesting was a RecursionError, a repeated key silently kept its
    last value, NaN passed, and a 5,000-digit integer was a ValueError naming no file (issue 27)."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(_GOOD_DOC + "}\n" + line + "\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=message) as error:
        read_corpus(corpus)
    assert str(error.value).startswith(f"{corpus}:2: ") and "\n" not in str(error.value)
    source = tmp_path / "hotpot.jsonl"
    source.write_text('{"context": {"title": ["A"], "sentences": [["a."]]}, "context": {}}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=f"^{source}:1: key 'context' appears twice"):
        build_hotpotqa_corpus([source], tmp_path / "pool.jsonl")


def test_a_corpus_line_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(_GOOD_DOC.encode() + b"}\n" + b'{"id": "b", "title": "\xff", "text": "b"}\n')
    with pytest.raises(CorpusFormatError, match=f"^{corpus}:2: not UTF-8 text"):
        read_corpus(corpus)


def test_default_corpus_pools_the_packaged_hotpotqa_data(tmp_path: Path) -> None:
    try:
        inputs = packaged_hotpotqa_files()
    except FileNotFoundError:
        pytest.skip("this swirl-lightning ships no data/hotpotqa")
    corpus = default_corpus_path(tmp_path)
    assert corpus.parent == tmp_path / "search-corpus"
    documents = read_corpus(corpus)
    titles = {doc.title for doc in documents}
    first_record = json.loads(inputs[0].read_text(encoding="utf-8").splitlines()[0])
    assert set(first_record["context"]["title"]) <= titles
    mtime = corpus.stat().st_mtime_ns
    assert default_corpus_path(tmp_path) == corpus and corpus.stat().st_mtime_ns == mtime


# --- the plugin hook -------------------------------------------------------------------------------

def test_hookimpl_registers_search_with_its_tag_warm_up_and_episode() -> None:
    from swirl_lightning.core import hookspecs

    manager = pluggy.PluginManager("swirl_lightning")
    manager.add_hookspecs(hookspecs)
    manager.register(plugin)
    registered: list[tuple] = []
    manager.hook.register_tools(register=lambda fn, **options: registered.append((fn, options)), options={})
    # The index loads (or is built) in warm_up, outside the executor's per-call timeout; the tool sees its episode.
    assert registered == [(plugin.search, {"tag": "search_query", "warm_up": plugin.warm_up, "takes_episode": True})]
    assert plugin.search.__name__ == "search"
    description = plugin.search.__doc__.strip()
    assert description and "\n" not in description


def test_listing_tools_imports_neither_torch_nor_sentence_transformers() -> None:
    code = (
        "import sys\n"
        "from swirl_search import plugin\n"
        "plugin.register_tools(lambda fn, **options: None)\n"
        "heavy = [m for m in ('torch', 'sentence_transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_entry_point_points_at_the_plugin_module() -> None:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="swirl_lightning") if ep.name == "search"]
    if not found:
        pytest.skip("swirl-search is not installed (no entry-point metadata)")
    assert found[0].value == "swirl_search.plugin"
    assert found[0].load() is plugin


# --- the acceptance point (slow: encodes ~6k paragraphs) --------------------------------------------

@pytest.mark.slow
def test_pooled_hotpotqa_top1_finds_a_gold_paragraph_for_half_the_questions(tmp_path: Path) -> None:
    try:
        inputs = packaged_hotpotqa_files()
    except FileNotFoundError:
        pytest.skip("this swirl-lightning ships no data/hotpotqa")
    corpus = tmp_path / "hotpotqa.jsonl"
    assert build_hotpotqa_corpus(inputs, corpus) > 5000
    index = SearchIndex(corpus, cache_dir=tmp_path / "cache").build()
    records = [json.loads(line) for path in inputs for line in path.read_text().splitlines() if line]
    hits = [
        index.search(record["question"], k=1)[0][0].title in record["supporting_facts"]["title"]
        for record in records
    ]
    assert len(hits) == 600
    assert sum(hits) / len(hits) >= 0.5
