"""The search tool sees its episode: a question's metadata names its corpus and world, and the search reads only
those articles (BM25 by default, dense on request); any other call searches the process-wide corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.tools import collect_tools
from swirl_lightning.testing import episode
from swirl_search import plugin
from swirl_search.corpus import Document, read_corpus, write_corpus
from swirl_search.lexical import LexicalIndex

WORLDS = [
    Document("a/1", "Ilvo Marek", "Ilvo Marek is a baker. He was born in Draskov. He works for Vornel Works.", "a"),
    Document("a/2", "Vornel Works", "Vornel Works is a tea company. It was founded by Tessa Brun.", "a"),
    Document("a/3", "Draskov", "Draskov is a city. Its mayor is Ilvo Marek. Ilvo Marek visited it last year.", "a"),
    # the same names in another world mean other things: an episode must never see them
    Document("b/1", "Ilvo Marek", "Ilvo Marek is a pilot. He was born in Quellin.", "b"),
    Document("b/2", "Quellin", "Quellin is a city.", "b"),
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    write_corpus(WORLDS, path)
    return path


def test_worlds_survive_the_corpus_file(corpus: Path):
    assert read_corpus(corpus) == WORLDS
    assert json.loads(corpus.read_text().splitlines()[0])["world"] == "a"


def test_a_search_reads_only_its_episodes_world(corpus: Path):
    in_a = episode({"corpus": str(corpus), "world": "a"})
    in_b = episode({"corpus": str(corpus), "world": "b"})
    assert plugin.search("Ilvo Marek", in_a).startswith("Ilvo Marek: Ilvo Marek is a baker.")
    assert plugin.search("Ilvo Marek", in_b).startswith("Ilvo Marek: Ilvo Marek is a pilot.")
    assert plugin.search("Vornel Works", in_b) == plugin.NO_MATCH  # world a's company is not in world b
    assert plugin.search("zzzz", in_a) == plugin.NO_MATCH
    # no world: the whole file
    assert plugin.search("Quellin city", episode({"corpus": str(corpus)})).startswith("Quellin:")


def test_the_title_outweighs_mentions_in_other_articles(corpus: Path):
    """Draskov's article names Ilvo Marek twice; his own article names him once in its text: his title wins."""
    documents = [d for d in WORLDS if d.world == "a"]
    assert LexicalIndex(documents).search("Ilvo Marek")[0][0].title == "Ilvo Marek"
    assert LexicalIndex(documents, title_weight=1).search("Ilvo Marek")[0][0].title == "Draskov"
    with pytest.raises(ValueError):
        LexicalIndex([])


def test_bad_episode_metadata_is_an_error_the_model_sees(corpus: Path, tmp_path: Path):
    tool = collect_tools()["search"]
    assert tool.takes_episode
    with ToolExecutor({"search": tool}) as executor:
        missing = executor.run("search", "Ilvo", episode({"corpus": str(tmp_path / "none.jsonl")}))
        assert missing.error and "none.jsonl" in missing.output and str(tmp_path) not in missing.output
        wrong_world = executor.run("search", "Ilvo", episode({"corpus": str(corpus), "world": "zz"}))
        assert wrong_world.error and "world 'zz'" in wrong_world.output
        found = executor.run("search", "Vornel Works", episode({"corpus": str(corpus), "world": "a"}))
        assert found.error is None and found.output.startswith("Vornel Works:")


def test_an_edited_corpus_is_read_again(corpus: Path):
    in_a = episode({"corpus": str(corpus), "world": "a"})
    assert "baker" in plugin.search("Ilvo Marek", in_a)
    write_corpus([Document("a/1", "Ilvo Marek", "Ilvo Marek is a sculptor now.", "a")], corpus)
    import os

    os.utime(corpus, ns=(corpus.stat().st_atime_ns, corpus.stat().st_mtime_ns + 1_000_000))
    assert "sculptor" in plugin.search("Ilvo Marek", in_a)


def test_dense_retrieval_of_an_episode_on_request(corpus: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SWIRL_SEARCH_EPISODE_RETRIEVER", "dense")
    monkeypatch.setenv("SWIRL_CACHE_DIR", str(tmp_path / "cache"))
    assert plugin.search("pilot born in Quellin", episode({"corpus": str(corpus), "world": "b"})).startswith("Ilvo Marek:")
    monkeypatch.setenv("SWIRL_SEARCH_EPISODE_RETRIEVER", "sparse")
    with pytest.raises(ValueError, match="bm25, dense"):
        plugin.search("x", episode({"corpus": str(corpus)}))


def test_the_warm_up_builds_the_first_calls_index(corpus: Path):
    plugin._episode_indexes.clear()
    plugin.warm_up(episode({"corpus": str(corpus), "world": "b"}))
    assert [key[2] for key in plugin._episode_indexes] == ["b"]


def test_gold_trajectories_of_generated_worlds_show_what_the_tool_returns(tmp_path: Path):
    """Each search of a worlds question's gold trajectory gets, from the real tool in its episode, exactly the
    observation the trajectory records: the warm start learns from tool results it will see."""
    from swirl_lightning.core.prompts import observation_result
    from swirl_lightning.core.tasks import get_task, load_task
    from swirl_lightning.core.tasks.worlds import write_worlds
    from swirl_lightning.core.tools import Episode

    write_worlds(tmp_path, "train", 3)
    task = get_task("worlds")
    for example in load_task("worlds", "train", path=tmp_path):
        trajectory = task.reference_trajectory(example, [], {"search": plugin.TOOL_TAG})
        for step in trajectory.steps[:-1]:
            assert plugin.search(step.action.query, Episode.of(example)) == observation_result(step.observation)
