"""Tests for swirl_lightning.core.tasks: loaders, the GSM8K split, the task registry, reference trajectories."""

from __future__ import annotations

import ast
import json
import operator
import random
from fractions import Fraction

import pytest

from swirl_lightning.core.tasks import Task, available_tasks, data_dir, get_task, load_task
from swirl_lightning.core.tasks.gsm8k import gsm8k_reference_trajectory as _gsm8k_reference_trajectory
from swirl_lightning.core.tasks.gsm8k import (
    gsm8k_split,
    load_gsm8k,
    reference_values,
    verify_reference_steps,
)
from swirl_lightning.core.tasks.hotpotqa import load_hotpotqa
from swirl_lightning.core.tasks.jsonl import load_examples_jsonl
from swirl_lightning.core.trajectory import Example, FormatError, decompose, parse_action

TOOL_TAGS = {"math_exp": "calculator"}


def gsm8k_reference_trajectory(example, prompt_messages=None):
    return _gsm8k_reference_trajectory(example, prompt_messages, tool_tag="math_exp")


@pytest.fixture(scope="module")
def gsm8k() -> list[Example]:
    return load_gsm8k()


def write_jsonl(path, lines: list) -> str:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def gsm8k_example(solution: str, answer: str = "7", example_id: str = "t-0") -> Example:
    return Example(example_id, "question?", answer, "gsm8k", {"solution": solution})


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def stand_in_calculator(expr: str) -> str:
    """Exact + - * / on decimal literals: enough to check verify_reference_steps without the plugin."""

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(str(node.value))
        raise ValueError(f"unsupported: {ast.dump(node)}")

    result = value(ast.parse(expr, mode="eval").body)
    return str(result.numerator) if result.denominator == 1 else repr(float(result))


# ----------------------------------------------------------------------------------------------------
# Loaders


def test_load_gsm8k_packaged(gsm8k):
    assert len(gsm8k) == 7473
    first = gsm8k[0]
    assert first.id == "gsm8k-train-0" and first.source == "gsm8k"
    assert first.question.startswith("Natalia sold clips")
    assert first.answer == "72"
    assert first.metadata["solution"].endswith("#### 72")
    assert len({e.id for e in gsm8k}) == len(gsm8k)
    assert gsm8k[100].id == "gsm8k-train-100"
    with_commas = [e for e in gsm8k if "," in e.metadata["solution"].rpartition("####")[2]]
    assert with_commas, "the packaged data has golds written with thousands separators"
    assert all("," not in e.answer for e in gsm8k)
    assert any(e.answer.startswith("-") for e in gsm8k)


def test_load_gsm8k_limit(gsm8k):
    assert [e.id for e in load_gsm8k(limit=5)] == [e.id for e in gsm8k[:5]]
    assert load_gsm8k(limit=0) == []


def test_gsm8k_gold_parsing(tmp_path):
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"question": "a", "answer": "It is 1000.\n#### 1,000"},
            {"question": "b", "answer": "Lost <<5-12=-7>>-7\n#### -7"},
            {"question": "c", "answer": "#### 2.5 "},
            {"question": "d", "answer": "#### 12,345,678"},
        ],
    )
    examples = load_gsm8k(path)
    assert [e.answer for e in examples] == ["1000", "-7", "2.5", "12345678"]
    assert [e.id for e in examples] == ["gsm8k-mine-0", "gsm8k-mine-1", "gsm8k-mine-2", "gsm8k-mine-3"]


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ({"answer": "#### 3"}, r"field 'question': expected a non-empty string, missing"),
        ({"question": "q", "answer": "three"}, r"expected a final line '#### <number>'"),
        ({"question": "q", "answer": "#### three"}, r"expected a number after '####', got 'three'"),
        ({"question": "q"}, r"field 'answer'"),
        ('{"question": "q", "answer": ', r"not valid JSON"),
        ("[1, 2]", r"expected a JSON object"),
    ],
)
def test_gsm8k_bad_line_names_file_and_line(tmp_path, bad_line, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "ok", "answer": "#### 1"}, "", bad_line])
    with pytest.raises(FormatError, match=rf"bad\.jsonl:3: .*{expected}"):
        load_gsm8k(path)


def test_load_hotpotqa_packaged():
    train, dev = load_hotpotqa("train"), load_hotpotqa("dev")
    assert len(train) == 300 and len(dev) == 300
    assert not {e.id for e in train} & {e.id for e in dev}
    first = dev[0]
    with (data_dir() / "hotpotqa" / "dev.jsonl").open(encoding="utf-8") as fh:
        raw = json.loads(fh.readline())
    assert first.id == raw["id"] and first.answer == raw["answer"] and first.question == raw["question"]
    assert first.source == "hotpotqa"
    assert first.metadata["supporting_titles"] == list(dict.fromkeys(raw["supporting_facts"]["title"]))
    assert first.metadata["type"] == raw["type"] and first.metadata["level"] == raw["level"]
    assert "context" not in first.metadata
    assert all(e.metadata["type"] in ("bridge", "comparison") for e in train + dev)
    assert len(load_hotpotqa("dev", limit=7)) == 7


def test_hotpotqa_errors(tmp_path):
    with pytest.raises(ValueError, match="split: expected one of train, dev"):
        load_hotpotqa("test")
    good = {"id": "x", "question": "q", "answer": "a", "supporting_facts": {"title": ["T"], "sent_id": [0]}}
    path = write_jsonl(tmp_path / "h.jsonl", [good, {**good, "answer": ""}])
    with pytest.raises(FormatError, match=r"h\.jsonl:2: field 'answer'"):
        load_hotpotqa(path=path)
    path = write_jsonl(tmp_path / "h2.jsonl", [{**good, "supporting_facts": {"title": ["T"], "sent_id": []}}])
    with pytest.raises(FormatError, match=r"h2\.jsonl:1: field 'supporting_facts'"):
        load_hotpotqa(path=path)


def test_load_examples_jsonl(tmp_path):
    path = write_jsonl(
        tmp_path / "user.jsonl",
        [{"question": "2+2?", "answer": 4}, {"id": "b", "question": "Capital?", "answer": "Paris", "topic": "geo"}],
    )
    first, second = load_examples_jsonl(path)
    assert (first.id, first.answer, first.source, first.metadata) == ("user-0", "4", "jsonl", {})
    assert (second.id, second.answer, second.metadata) == ("b", "Paris", {"topic": "geo"})


def test_load_examples_jsonl_errors(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "question": "q", "answer": "x"}] * 2)
    with pytest.raises(FormatError, match=r"dup\.jsonl:2: duplicate id 'a' \(first at line 1\)"):
        load_examples_jsonl(path)
    path = write_jsonl(tmp_path / "noans.jsonl", [{"question": "q"}])
    with pytest.raises(FormatError, match=r"noans\.jsonl:1: field 'answer': expected a non-empty string, missing"):
        load_examples_jsonl(path)


# ----------------------------------------------------------------------------------------------------
# Split and registry


def test_gsm8k_split_is_deterministic_and_disjoint(gsm8k):
    train, val = gsm8k_split(gsm8k)
    assert len(val) == 500 and len(train) == len(gsm8k) - 500
    assert {e.id for e in gsm8k_split(gsm8k, 200)[1]} <= {e.id for e in val}, "growing the split keeps the old one"
    assert not {e.id for e in train} & {e.id for e in val}
    assert {e.id for e in train} | {e.id for e in val} == {e.id for e in gsm8k}
    again_train, again_val = gsm8k_split(list(gsm8k))
    assert [e.id for e in again_val] == [e.id for e in val] and [e.id for e in again_train] == [e.id for e in train]
    shuffled = list(gsm8k)
    random.Random(123).shuffle(shuffled)
    assert {e.id for e in gsm8k_split(shuffled)[1]} == {e.id for e in val}, "split depends on ids only, not order"
    assert {e.id for e in gsm8k_split(gsm8k, seed=1)[1]} != {e.id for e in val}
    order = {e.id: i for i, e in enumerate(gsm8k)}
    assert [order[e.id] for e in val] == sorted(order[e.id] for e in val), "validation keeps the input order"


def test_no_held_out_question_was_in_the_shipped_warm_starts_training_data(gsm8k):
    """The learning comparison validates on the held-out split; the warm start it starts from must not have seen any
    of those questions (its export lists them), and the benchmark's arms train from --task.offset 1000 on."""
    from pathlib import Path

    listed = Path(__file__).resolve().parents[2] / "adapters" / "gsm8k_warmup" / "training_questions.txt"
    trained_on = set(listed.read_text().split())
    train, val = gsm8k_split(gsm8k)
    assert len(trained_on) == 1000 and trained_on == {e.id for e in train[:1000]}
    assert not trained_on & {e.id for e in val}


def test_gsm8k_split_rejects_bad_input(gsm8k):
    with pytest.raises(ValueError, match="val_size"):
        gsm8k_split(gsm8k[:10], val_size=11)
    with pytest.raises(ValueError, match="unique"):
        gsm8k_split([gsm8k[0], gsm8k[0]], val_size=1)


def test_task_registry(gsm8k, tmp_path):
    expected_train, expected_val = gsm8k_split(gsm8k)
    gsm8k_task, hotpotqa = get_task("gsm8k"), get_task("hotpotqa")
    assert (gsm8k_task.max_actions, gsm8k_task.tools, gsm8k_task.outcome_judge) == (10, ("calculator",), "numeric")
    assert (hotpotqa.max_actions, hotpotqa.tools, hotpotqa.outcome_judge) == (5, ("search",), "qa_em")
    assert sorted(available_tasks()) == ["gsm8k", "hotpotqa", "jsonl", "worlds"]
    assert [e.id for e in load_task("gsm8k", "train", 2, offset=3)] == [e.id for e in expected_train[3:5]]
    assert [e.id for e in load_task("gsm8k", "validation")] == [e.id for e in expected_val]
    assert [e.id for e in load_task("gsm8k", "train", limit=3)] == [e.id for e in expected_train[:3]]
    assert len(load_task("gsm8k", "full")) == len(gsm8k)
    assert [e.id for e in load_task("hotpotqa", "validation")] == [e.id for e in load_hotpotqa("dev")]
    path = write_jsonl(tmp_path / "u.jsonl", [{"question": "q", "answer": "a"}])
    assert [e.id for e in load_task("jsonl", path=path)] == ["u-0"]
    with pytest.raises(ValueError, match="expected task.data_path="):
        load_task("jsonl")
    with pytest.raises(ValueError, match="task: expected one of gsm8k, hotpotqa, jsonl, worlds, got 'math'"):
        load_task("math")
    with pytest.raises(ValueError, match="split for task 'gsm8k'"):
        load_task("gsm8k", "dev")


# ----------------------------------------------------------------------------------------------------
# Reference trajectories


def test_reference_trajectory_natalia(gsm8k):
    trajectory = gsm8k_reference_trajectory(gsm8k[0])
    assert trajectory.example_id == "gsm8k-train-0"
    assert trajectory.prompt == [{"role": "user", "content": gsm8k[0].question}]
    assert [s.action.kind for s in trajectory.steps] == ["tool", "tool", "answer"]
    assert [s.action.query for s in trajectory.steps[:2]] == ["48/2", "48+24"]
    assert all(s.action.tool == "calculator" and s.action.tag == "math_exp" for s in trajectory.steps[:2])
    assert [s.observation for s in trajectory.steps] == ["48/2 -> 24", "48+24 -> 72", None]
    assert trajectory.steps[0].text == "Natalia sold 48/2 = <math_exp>48/2</math_exp>"
    assert trajectory.steps[1].text == "24 clips in May.\nNatalia sold 48+24 = <math_exp>48+24</math_exp>"
    assert trajectory.steps[2].text == "72 clips altogether in April and May. <answer>72</answer>"
    assert trajectory.steps[2].action.answer == "72" and trajectory.final_answer == "72"
    assert trajectory.outcome == 1.0
    assert trajectory.metadata == {"source": "gsm8k-reference", "annotations": 2, "skipped_annotations": []}


def test_reference_trajectory_uses_given_prompt(gsm8k):
    prompt = [{"role": "system", "content": "Use tools."}, {"role": "user", "content": gsm8k[0].question}]
    trajectory = gsm8k_reference_trajectory(gsm8k[0], prompt_messages=prompt)
    assert trajectory.prompt == prompt and trajectory.prompt is not prompt


def test_all_gsm8k_solutions_convert(gsm8k):
    trajectories = [gsm8k_reference_trajectory(e) for e in gsm8k]
    assert len(trajectories) == 7473
    for example, trajectory in zip(gsm8k, trajectories):
        assert trajectory.steps, example.id
        assert trajectory.steps[-1].action.kind == "answer" and trajectory.final_answer == example.answer
        assert all(s.action.kind == "tool" for s in trajectory.steps[:-1])
        assert trajectory.metadata["annotations"] == example.metadata["solution"].count("<<")
        for step in trajectory.steps:
            assert "<<" not in step.text and ">>" not in step.text
            # The text is what a policy would write: parsing it gives back the step's action.
            assert parse_action(step.text, TOOL_TAGS) == step.action, (example.id, step.text)


def test_solution_without_annotations_is_one_answer_step():
    trajectory = gsm8k_reference_trajectory(gsm8k_example("He has 3 + 4 = 7 apples.\n#### 7"))
    assert len(trajectory.steps) == 1
    assert trajectory.steps[0].text == "He has 3 + 4 = 7 apples. <answer>7</answer>"
    assert trajectory.metadata["annotations"] == 0


def test_malformed_annotations_never_crash():
    solution = (
        "Half: <<5*.5=2.5>>2.5.\nNo result: <<48/2>>24.\nTwo results: <<1=2=3>>.\n"
        "Nested: <<1+<<2*3=6>>=7>>7.\nEmpty: <<=4>>4.\nUnclosed: <<3+4=7 so 7\n#### 7"
    )
    trajectory = gsm8k_reference_trajectory(gsm8k_example(solution))
    tools = [s for s in trajectory.steps if s.action.kind == "tool"]
    assert [s.observation for s in tools] == ["5*.5 -> 2.5", "2*3 -> 6"]
    assert trajectory.metadata["annotations"] == 2
    assert trajectory.metadata["skipped_annotations"] == ["<<48/2>>", "<<1=2=3>>", "<<", ">>", "<<=4>>", "<<"]
    for step in trajectory.steps:
        assert "<<" not in step.text and ">>" not in step.text
        assert parse_action(step.text, TOOL_TAGS) == step.action
    assert trajectory.steps[-1].text.endswith("Unclosed: 3+4=7 so 7 <answer>7</answer>")


def test_reference_trajectory_needs_a_solution():
    with pytest.raises(ValueError, match=r"example q-1: expected metadata\['solution'\]"):
        gsm8k_reference_trajectory(Example("q-1", "q", "1", "jsonl"))


def test_decompose_reference_trajectory(gsm8k):
    trajectory = gsm8k_reference_trajectory(gsm8k[1])
    observations = {s.observation for s in trajectory.steps if s.observation}
    pairs = decompose(trajectory)
    assert len(pairs) == len(trajectory.steps) == 3
    for k, (state, step) in enumerate(pairs):
        assert state.step_index == k and step is trajectory.steps[k]
        assert step.text not in observations
        assert len(state.messages) == len(trajectory.prompt) + 2 * k
        assert state.messages[-1]["role"] == "user"
        assert [m["content"] for m in state.messages[len(trajectory.prompt) :: 2]] == [s.text for s in trajectory.steps[:k]]
        assert [m["content"] for m in state.messages[len(trajectory.prompt) + 1 :: 2]] == [
            s.observation for s in trajectory.steps[:k]
        ]


# ----------------------------------------------------------------------------------------------------
# Re-running calculator steps


def test_verify_reference_steps_groups_failures():
    solution = (
        "<<48/2=24>> <<10/3=3.33>> <<100/3=33>> <<2/3=0.66>> <<2+2=5>> <<2+2=four>> <<2**3=8>> <<1,000+1=1,001>>\n#### 1"
    )
    trajectory = gsm8k_reference_trajectory(gsm8k_example(solution, example_id="v-0"))
    report = verify_reference_steps([trajectory], stand_in_calculator)
    assert report["steps"] == 8 and report["trajectories"] == 1
    assert report["reproduced_exact"] == 1 and report["reproduced_rounded"] == 2
    assert report["failure_counts"] == {
        "annotation_not_numeric": 1,
        "annotation_rounded": 1,
        "annotation_wrong": 1,
        "calculator_error": 2,  # ** and the comma are not in the stand-in
    }
    assert report["rate"] == pytest.approx(3 / 8)
    (wrong,) = report["failures"]["annotation_wrong"]
    assert wrong == {"example_id": "v-0", "step_index": 4, "expr": "2+2", "annotated": "5", "calculated": "4"}
    assert report["failures"]["calculator_error"][0]["calculated"].startswith("ValueError: unsupported")


def test_verify_reference_steps_stand_in_on_gsm8k(gsm8k):
    report = verify_reference_steps((gsm8k_reference_trajectory(e) for e in gsm8k[:300]), stand_in_calculator)
    assert report["trajectories"] == 300 and report["steps"] > 300
    assert report["rate"] >= 0.99, report["failure_counts"]


@pytest.mark.integration
def test_gsm8k_steps_reproduce_with_the_calculator_plugin(gsm8k):
    plugin = pytest.importorskip("swirl_calculator", reason="swirl_calculator plugin not installed (plugins/swirl-calculator)")
    report = verify_reference_steps([gsm8k_reference_trajectory(e) for e in gsm8k], plugin.calculator)
    assert report["steps"] == sum(e.metadata["solution"].count("<<") for e in gsm8k)
    assert report["rate"] >= 0.99, report["failure_counts"]


def test_a_task_fills_its_example_turns_with_the_tools_tags():
    turns = get_task("gsm8k").example_turns({"calculator": "calc"})
    assert turns[1]["content"] == "First the cost of the pens. <calc>3*4</calc>"
    assert get_task("gsm8k").example_turns({"search": "s"}) == [], "an example naming a missing tool is left out"
    assert get_task("jsonl").example_turns({"calculator": "calc"}) == []


def test_gsm8k_reference_values_are_the_annotation_results_and_the_final_answer():
    solution = "He has 3 + 4 = <<3+4=7>>7 apples and <<bad>> <<=5>> more.\n#### 7"
    assert reference_values(solution) == ("7", "7")
    assert get_task("gsm8k").reference_values(gsm8k_example(solution)) == ("7", "7")
    assert get_task("hotpotqa").reference_values(Example("h", "q", "a", "hotpotqa")) is None


def test_a_task_is_a_plugin_registered_and_unregistered_through_the_hook(tmp_path):
    import swirl_lightning
    from swirl_lightning.core.plugins import get_plugin_manager

    class Capitals(Task):
        name = "capitals"
        outcome_judge = "qa_em"

        def load(self, split, limit=None, path=None):
            return [Example("c-0", "Capital of France?", "Paris", "capitals")][:limit]

    class Plugin:
        @swirl_lightning.hookimpl
        def register_tasks(self, register):
            register(Capitals())

    pm = get_plugin_manager()
    plugin = Plugin()
    pm.register(plugin, name="capitals-test")
    try:
        assert [e.answer for e in load_task("capitals", "train")] == ["Paris"]
    finally:
        pm.unregister(plugin)
    with pytest.raises(ValueError, match="got 'capitals'"):
        get_task("capitals")


def test_a_raising_task_hook_warns_with_its_plugin_and_the_others_still_load():
    import swirl_lightning
    from swirl_lightning.core.plugins import PluginLoadWarning, get_plugin_manager

    class Broken:
        @swirl_lightning.hookimpl
        def register_tasks(self, register):
            raise RuntimeError("no data here")

    pm = get_plugin_manager()
    plugin = Broken()
    pm.register(plugin, name="broken-tasks")
    try:
        with pytest.warns(PluginLoadWarning, match=r"broken-tasks.*register_tasks raised RuntimeError: no data here"):
            assert "gsm8k" in available_tasks()
    finally:
        pm.unregister(plugin)


def test_hotpotqa_reference_progress_is_a_supporting_paragraph():
    """The reference judge on HotPotQA: a search reaches the supporting paragraphs its result holds (by title)."""
    example = load_task("hotpotqa", "validation", 1)[0]
    first, *_ = example.metadata["supporting_titles"]
    task = get_task("hotpotqa")
    assert task.reference_progress(example, f"q -> {first}: some text\n\nOther: more") == frozenset({first})
    assert task.reference_progress(example, "q -> Unrelated: text") == frozenset()
