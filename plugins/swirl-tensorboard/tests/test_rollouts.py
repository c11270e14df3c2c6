"""Finding, filtering and comparing rollout files, without TensorBoard: hand-made trajectories of every kind."""

from __future__ import annotations

import json

import pytest

from swirl_lightning.core.trajectory import Action, Judgement, Step, Trajectory, to_dict, write_jsonl
from swirl_tensorboard.rollouts import RolloutStore, comparison, find_sources, listing, pair_views


def trajectory(example_id: str, answer: str | None, gold: str = "12", *, tool_error: bool = False,
               invalid: bool = False, verdict: str = "GOOD") -> Trajectory:
    steps = [Step("<calc>3*4</calc>", Action("tool", tool="calculator", tag="calc", query="3*4"),
                  observation="3*4 -> " + ("error: boom" if tool_error else "12"), tool_error=tool_error,
                  judgements=[Judgement("ref", verdict, 1.0 if verdict == "GOOD" else 0.0)])]
    if invalid:
        steps.append(Step("hmm", Action("invalid", reason="no action"), observation="note"))
    if answer is not None:
        steps.append(Step(f"<answer>{answer}</answer>", Action("answer", tag="answer", answer=answer),
                          judgements=[Judgement("ref", "GOOD", 1.0)]))
    return Trajectory(example_id, 0, [{"role": "user", "content": f"question {example_id}"}], steps,
                      final_answer=answer, outcome=None if answer is None else float(answer == gold), gold_answer=gold)


BEFORE = [trajectory("a", "12"), trajectory("b", "11", verdict="BAD"), trajectory("c", None, invalid=True),
          trajectory("d", "12", tool_error=True)]
AFTER = [trajectory("a", "11"), trajectory("b", "12"), trajectory("c", None, invalid=True), trajectory("e", "12")]


def test_sources_are_found_by_how_swirl_names_them(tmp_path):
    run = tmp_path / "quickstart" / "fit" / "version_0"
    (tmp_path / "quickstart" / "validate" / "version_0" / "rollouts").mkdir(parents=True)
    write_jsonl(tmp_path / "quickstart" / "validate" / "version_0" / "rollouts" / "val-step000000.jsonl", BEFORE)
    (run / "rollouts").mkdir(parents=True)
    write_jsonl(run / "rollouts" / "val-step000004.jsonl", AFTER)
    write_jsonl(run / "rollouts" / "test-step000004.jsonl", AFTER)
    write_jsonl(run / "predictions.jsonl", AFTER)
    (tmp_path / "generate").mkdir()
    write_jsonl(tmp_path / "generate" / "trajectories.jsonl", BEFORE)
    (tmp_path / "generate" / "trajectories.jsonl.summary.json").write_text("{}")
    write_jsonl(tmp_path / "generate" / "kept.jsonl", BEFORE)  # no generate summary: not a source
    found = [(s.run, s.file, s.stage, s.step) for s in find_sources(tmp_path)]
    assert found == [
        ("generate", "trajectories.jsonl", "generate", None),
        ("quickstart/fit/version_0", "predictions.jsonl", "predict", None),
        ("quickstart/fit/version_0", "rollouts/test-step000004.jsonl", "test", 4),
        ("quickstart/fit/version_0", "rollouts/val-step000004.jsonl", "val", 4),
        ("quickstart/validate/version_0", "rollouts/val-step000000.jsonl", "val", 0),
    ]
    store = RolloutStore(tmp_path)
    assert store.find("fit/version_0/rollouts/val-step000004.jsonl").step == 4
    with pytest.raises(KeyError):
        store.source("quickstart/fit/version_0", "../../generate/kept.jsonl")
    overview = {r["run"]: r["sources"] for r in store.overview()}
    assert [s["accuracy"] for s in overview["quickstart/validate/version_0"]] == [pytest.approx(2 / 3)]


def test_a_version_1_file_is_listed_without_a_gold_answer(tmp_path):
    record = {k: v for k, v in to_dict(trajectory("a", "12")).items() if k != "gold_answer"}
    record["schema_version"] = 1  # as version 1 wrote it: no gold answer
    (tmp_path / "rollouts").mkdir()
    (tmp_path / "rollouts" / "val-step000000.jsonl").write_text(json.dumps(record) + "\n")
    store = RolloutStore(tmp_path)
    (source,) = store.sources()
    assert source.run == "." and listing(store.trajectories(source), {})["rows"][0]["gold_answer"] is None


def test_filters_show_what_they_say_and_count_each_choice_given_the_others():
    everything = listing(BEFORE, {})
    assert everything["counts"]["result"] == {"correct": 2, "wrong": 1, "not scored": 1}
    assert everything["counts"]["verdict"] == {"all GOOD": 2, "some BAD": 1, "not judged": 1}
    assert everything["counts"]["tool_error"] == {"no": 3, "yes": 1}
    assert everything["counts"]["invalid"] == {"no": 3, "yes": 1}
    assert everything["counts"]["steps"] == {"2": 4}
    correct = listing(BEFORE, {"result": "correct"})
    assert [r["example_id"] for r in correct["rows"]] == ["a", "d"] and correct["total"] == 4
    assert correct["counts"]["tool_error"] == {"no": 1, "yes": 1}  # among the correct ones
    assert correct["counts"]["result"] == everything["counts"]["result"]  # its own facet ignores its own filter
    both = listing(BEFORE, {"result": "correct", "tool_error": "yes"})
    assert [r["example_id"] for r in both["rows"]] == ["d"]
    assert [r["example_id"] for r in listing(BEFORE, {"invalid": "yes"})["rows"]] == ["c"]
    with pytest.raises(ValueError, match="unknown filter"):
        listing(BEFORE, {"colour": "red"})


def test_comparison_pairs_the_same_questions_and_names_each_change():
    compared = comparison(BEFORE, AFTER, {})
    assert compared["pairs"] == 3  # d and e are on one side only
    assert {r["example_id"]: r["change"] for r in compared["rows"]} == {"a": "lost", "b": "gained", "c": "same"}
    assert comparison(BEFORE, AFTER, {"result": "correct"})["rows"][0]["example_id"] == "a"


def test_pair_views_mark_what_changed_field_by_field_and_step_by_step():
    pair = pair_views(BEFORE[1], AFTER[1])
    assert pair["change"] == "gained"
    assert {"result", "final_answer", "verdict"} <= set(pair["differences"]["summary"])
    first, answer = pair["differences"]["steps"]
    assert first == {"index": 1, "status": "changed", "fields": ["verdict"]}
    assert answer == {"index": 2, "status": "changed", "fields": ["answer"]}
    grown = pair_views(trajectory("x", None), trajectory("x", "12", invalid=True))
    assert [s["status"] for s in grown["differences"]["steps"]] == ["same", "added", "added"]


def test_an_unreadable_file_is_listed_with_its_error_and_the_other_runs_still_show(tmp_path):
    """One bad rollouts file in the log folder: the overview lists it with why, and every other source as usual."""
    good, bad = tmp_path / "a" / "version_0" / "rollouts", tmp_path / "b" / "version_0" / "rollouts"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    write_jsonl(good / "val-step000002.jsonl", BEFORE)
    (bad / "val-step000002.jsonl").write_text('{"example_id": "x", "sample_index": 0}\nnot json\n')
    (bad / "val-step000004.jsonl").write_bytes(b"\xff\xfe\x00 not utf-8\n")
    overview = {(s["run"], s["file"]): s for run in RolloutStore(tmp_path).overview() for s in run["sources"]}
    assert overview[("a/version_0", "rollouts/val-step000002.jsonl")]["trajectories"] == len(BEFORE)
    for file in ("rollouts/val-step000002.jsonl", "rollouts/val-step000004.jsonl"):
        listed = overview[("b/version_0", file)]
        assert listed["trajectories"] is None and listed["error"].startswith("unreadable: ")


def test_the_dashboard_writes_every_text_as_text_never_as_markup():
    """A `<svg onload=...>` question renders as text (issue 27: a red-team pass found this holds; this keeps it so).
    The frontend builds its page with createElement and text nodes: no API that parses a string as HTML or code."""
    import re
    from importlib import resources

    static = resources.files("swirl_tensorboard") / "static"
    scripts = {entry.name: entry.read_text(encoding="utf-8") for entry in static.iterdir()
               if entry.name.endswith(".js")}
    assert "index.js" in scripts
    parsing = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|DOMParser|createContextualFragment"
                         r"|srcdoc|\beval\(|new Function|setTimeout\(\s*['\"`]")
    found = {name: sorted(set(parsing.findall(text))) for name, text in scripts.items() if parsing.search(text)}
    assert not found, found
    assert "document.createTextNode(String(child))" in scripts["index.js"]  # el(): every child not a node is text
