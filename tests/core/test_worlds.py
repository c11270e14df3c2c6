"""Tests for the generated worlds (swirl_lightning.core.tasks.worlds): determinism, answerability, unique answers,
disjoint split seeds, world folders, gold trajectories and the reference judge's progress rule."""

from __future__ import annotations

import json

import pytest

from swirl_lightning.core.prompts import observation
from swirl_lightning.core.tasks import get_task, load_task
from swirl_lightning.core.tasks.worlds import (
    held_out_seeds_in,
    load_worlds,
    questions_file,
    world_seed_of,
    write_worlds,
)
from swirl_lightning.core.tasks.worlds.generator import (
    RELATIONS,
    SEED_RANGES,
    WorldSettings,
    generate_world,
    split_of_seed,
    world_seeds,
)
from swirl_lightning.core.trajectory import Action, Step, decompose

SEEDS = [0, 1, 7, 1_000_000, 1_000_123, 2_000_005]


@pytest.fixture(scope="module", params=SEEDS)
def world(request):
    return generate_world(request.param)


def test_the_same_seed_gives_the_same_world():
    first, again = generate_world(42), generate_world(42)
    assert first.documents() == again.documents()
    assert [q.record() for q in first.questions] == [q.record() for q in again.questions]
    assert generate_world(43).documents() != first.documents()


def test_settings_change_the_world_and_bad_settings_are_refused():
    small = generate_world(5, WorldSettings(people=6, organisations=2, places=2, questions=4, hops=(2,)))
    assert len(small.entities) == 10 and all(q.hops == 2 for q in small.questions)
    for bad in ({"hops": (0,)}, {"people": 3}, {"similar_names": 1.5}, {"distractors": -1}, {"questions": 0}):
        with pytest.raises(ValueError):
            WorldSettings(**bad)


def test_names_are_unique_within_a_world(world):
    names = [entity.name.lower() for entity in world.entities.values()]
    assert len(names) == len(set(names))


def test_every_question_is_answerable_from_its_corpus_by_its_gold_path(world):
    """Reading the gold path's articles in order, each one states the fact that leads to the next entity, and the
    last one states the answer."""
    articles = {doc["title"]: doc["text"] for doc in world.documents()}
    assert world.questions
    for question in world.questions:
        assert len(question.path) == len(question.relations) == question.hops
        for i, (title, relation) in enumerate(zip(question.path, question.relations)):
            target = question.path[i + 1] if i + 1 < question.hops else question.answer
            assert target in articles[title], (question.question, title, target)
            entity = world.entities[question.path_ids[i]]
            assert entity.name == title and relation in entity.facts
        assert question.answer.lower() not in question.question.lower()  # only the tool can tell


def test_every_answer_is_unique(world):
    """Each relation is functional (one value per entity) and the path's entities are distinct, so following the
    question's relations from its start entity reaches exactly one answer: the gold one."""
    by_name = {entity.name: entity for entity in world.entities.values()}
    for question in world.questions:
        values = {question.path[0]}
        for relation in question.relations:
            values = {by_name[v].facts.get(relation) for v in values}
            values = {world.entities[v].name if v in world.entities else v for v in values if v is not None}
        assert values == {question.answer}
        assert len(set(question.path_ids)) == question.hops


def test_questions_cover_the_hops_asked_for():
    world = generate_world(3, WorldSettings(hops=(1, 2, 3), questions=30))
    counts = {h: sum(q.hops == h for q in world.questions) for h in (1, 2, 3)}
    assert counts == {1: 10, 2: 10, 3: 10}
    assert {r for q in world.questions for r in q.relations} <= set(RELATIONS)


def test_split_seed_ranges_are_disjoint():
    ranges = sorted(SEED_RANGES.values())
    assert all(a_stop <= b_start for (_, a_stop), (b_start, _) in zip(ranges, ranges[1:]))
    for split in SEED_RANGES:
        seeds = world_seeds(split, 5, first=3)
        assert all(split_of_seed(seed) == split for seed in seeds)
    assert set(world_seeds("train", 100)).isdisjoint(world_seeds("validation", 100))
    with pytest.raises(ValueError):
        world_seeds("train", 10, first=SEED_RANGES["train"][1])
    with pytest.raises(ValueError):
        world_seeds("dev", 1)


def test_a_world_folder_is_read_by_the_task(tmp_path):
    record = write_worlds(tmp_path / "val", "validation", 2, WorldSettings(questions=5))
    assert record["worlds"] == 2 and record["questions"] == 10
    examples = load_task("worlds", "validation", path=tmp_path / "val")
    assert len(examples) == 10 and {e.source for e in examples} == {"worlds"}
    assert all(split_of_seed(world_seed_of(e.id)) == "validation" for e in examples)
    assert all(e.metadata["corpus"] == str((tmp_path / "val" / "corpus.jsonl").resolve()) for e in examples)
    # a questions file, and a folder of split folders, name the same data
    assert [e.id for e in load_worlds(tmp_path / "val" / "questions.jsonl")] == [e.id for e in examples]
    (tmp_path / "val").rename(tmp_path / "validation")
    assert questions_file("validation", tmp_path) == tmp_path / "validation" / "questions.jsonl"
    assert [e.id for e in load_task("worlds", "validation", path=tmp_path)] == [e.id for e in examples]


def test_a_folder_the_project_never_wrote_needs_no_code(tmp_path):
    """Any questions file with a corpus beside it: no world field, no generator record."""
    document = {"id": "d1", "title": "Ada Quill", "text": "Ada Quill was born in Loam."}
    question = {"question": "Where was Ada Quill born?", "answer": "Loam", "path": ["Ada Quill"],
                "facts": ["Ada Quill was born in Loam."]}
    (tmp_path / "corpus.jsonl").write_text(json.dumps(document) + "\n")
    (tmp_path / "questions.jsonl").write_text(json.dumps(question) + "\n")
    [example] = load_task("worlds", "test", path=tmp_path)
    trajectory = get_task("worlds").reference_trajectory(example, [{"role": "user", "content": example.question}],
                                                         {"search": "lookup"})
    assert [s.action.kind for s in trajectory.steps] == ["tool", "answer"]
    assert trajectory.steps[0].observation == "Ada Quill -> Ada Quill: Ada Quill was born in Loam."


def test_a_missing_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "questions.jsonl").write_text(json.dumps({"question": "q?", "answer": "a"}) + "\n")
    with pytest.raises(FileNotFoundError, match="corpus"):
        load_task("worlds", "validation", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="expected a world folder"):
        load_task("worlds", "validation", path=tmp_path / "nothing")  # neither a folder of questions nor a file


def test_gold_trajectories_read_the_path_and_state_each_fact(tmp_path):
    write_worlds(tmp_path, "train", 1, WorldSettings(hops=(3,), questions=3))
    for example in load_task("worlds", "train", path=tmp_path):
        trajectory = get_task("worlds").reference_trajectory(example, [{"role": "user", "content": example.question}],
                                                             {"search": "lookup"})
        steps = trajectory.steps
        assert [s.action.query for s in steps[:-1]] == example.metadata["path"]
        assert steps[-1].action.answer == example.answer and steps[-1].text.startswith(example.metadata["facts"][-1])
        assert steps[1].text.startswith(example.metadata["facts"][0])


def test_reference_progress_is_a_gold_article_the_state_did_not_have(tmp_path):
    """The reference judge on worlds: a search is GOOD when it brings a gold-path article not yet read, BAD when it
    repeats one or brings another article; a right answer is GOOD."""
    from swirl_lightning.judging.reference import ReferenceJudge

    write_worlds(tmp_path, "train", 1, WorldSettings(hops=(2,), questions=2))
    example = load_task("worlds", "train", path=tmp_path)[0]
    trajectory = get_task("worlds").reference_trajectory(example, [{"role": "user", "content": example.question}],
                                                         {"search": "lookup"})
    judge = ReferenceJudge(tools={})
    pairs = decompose(trajectory, example)
    assert [judge.score_step(state, step) for state, step in pairs] == [1.0, 1.0, 1.0]
    (state0, first), (state1, second), (state2, _) = pairs
    assert judge.score_step(state1, first) == 0.0  # the first article again: nothing new
    other = Step(text="x", action=Action("tool", tool="search", tag="lookup", query="x"),
                 observation=observation("x", "Somewhere Else: an article off the path."))
    assert judge.score_step(state0, other) == 0.0
    wrong = Step(text="<answer>no</answer>", action=Action("answer", tag="answer", answer="no"))
    assert judge.score_step(state2, wrong) == 0.0


def test_held_out_seeds_are_found_in_training_ids():
    assert world_seed_of("w1000003-q7") == 1_000_003 and world_seed_of("gsm8k-train-1") is None
    assert held_out_seeds_in(["w5-q0", "w1000003-q1", "w2000000-q2", "other"]) == ["w1000003-q1", "w2000000-q2"]


@pytest.mark.parametrize(("adapter", "questions"), [("worlds_warmup", 640), ("worlds_swirl", 93)])
def test_no_held_out_world_is_in_a_shipped_adapters_training_data(adapter: str, questions: int):
    """Every question a shipped worlds adapter was trained on (the warm start's gold trajectories; the swirl policy's
    process-filtered states) comes from a training world (seed in the train range), so no validation or test world,
    the held-out data of every learning result, was ever trained on."""
    from pathlib import Path

    listed = (Path(__file__).resolve().parents[2] / "adapters" / adapter / "training_questions.txt").read_text().split()
    assert len(listed) == questions and all(world_seed_of(i) is not None for i in listed)
    assert held_out_seeds_in(listed) == []
    assert {split_of_seed(world_seed_of(i)) for i in listed} == {"train"}
