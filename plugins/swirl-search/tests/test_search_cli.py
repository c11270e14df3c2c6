"""Tests of the ``swirl-search`` command line (in-process, real MiniLM on a tiny corpus)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from swirl_search.cli import main
from swirl_search.corpus import Document, write_corpus

pytestmark = pytest.mark.integration  # starts processes or runs whole stages: not in make test-fast

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    write_corpus([
        Document("moon", "Moon", "The Moon is Earth's only natural satellite."),
        Document("nile", "Nile", "The Nile is a major river flowing north through Egypt."),
        Document("bach", "Johann Sebastian Bach", "Bach was a German composer of the Baroque era."),
    ], path)
    return path


def test_build_corpus_command_writes_the_pool(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "hotpot.jsonl"
    record = {"context": {"title": ["A", "B"], "sentences": [["a one.", " a two."], ["b."]]}}
    source.write_text(json.dumps(record) + "\n", encoding="utf-8")
    out = tmp_path / "corpus.jsonl"
    assert main(["build-corpus", str(source), "--out", str(out)]) == 0
    assert "wrote 2 documents" in capsys.readouterr().out
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == ["a one. a two.", "b."]


def test_build_corpus_command_reports_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "hotpot.jsonl"
    source.write_text("oops\n", encoding="utf-8")
    assert main(["build-corpus", str(source), "--out", str(tmp_path / "c.jsonl")]) == 2
    assert f"{source}:1: invalid JSON" in capsys.readouterr().err


def test_build_index_then_query(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cache = tmp_path / "cache"
    assert main(["build-index", "--corpus", str(corpus), "--cache-dir", str(cache)]) == 0
    first = capsys.readouterr().out
    assert "3 documents" in first and "encoded in" in first
    assert main(["build-index", "--corpus", str(corpus), "--cache-dir", str(cache)]) == 0
    assert "loaded from cache" in capsys.readouterr().out

    args = ["--corpus", str(corpus), "--cache-dir", str(cache)]
    assert main(["query", "Which river runs through Egypt?", *args]) == 0
    assert capsys.readouterr().out.strip() == "Nile: The Nile is a major river flowing north through Egypt."
    assert main(["query", "baroque music composer", "-k", "2", "--json", *args]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines][0] == "bach" and len(lines) == 2
    assert lines[0]["score"] >= lines[1]["score"]


def test_query_command_rejects_empty_query(corpus: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    code = main(["query", " ", "--corpus", str(corpus), "--cache-dir", str(tmp_path)])
    assert code == 2
    assert "empty" in capsys.readouterr().err
