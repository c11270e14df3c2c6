"""Judges: number and answer normalisation, the LM verdicts on the tiny model, the reference judge, the
registry, and the judgement cache."""

import copy
from fractions import Fraction

import pluggy
import pytest
import torch

import swirl_lightning.core.hookspecs
import swirl_lightning.judging.base
from swirl_lightning import hookimpl
from swirl_lightning.core.answers import exact_match, matches_reference, normalize_answer, parse_number, token_f1
from swirl_lightning.core.models import load_model, load_tokenizer
from swirl_lightning.core.tasks import get_task
from swirl_lightning.core.tasks.gsm8k import reference_values
from swirl_lightning.core.trajectory import Action, Example, Judgement, State, Step, Trajectory, parse_action
from swirl_lightning.judging.base import (
    OutcomeJudge,
    StepJudge,
    StepJudgeBase,
    available_judges,
    make_judge,
    make_outcome_judge,
    make_step_judge,
)
from swirl_lightning.judging.filter import score_outcomes
from swirl_lightning.judging.local_lm import LLMGrader, ProcessJudge, VerdictScorer
from swirl_lightning.judging.outcome import NumericJudge
from swirl_lightning.judging.reference import ReferenceJudge
from swirl_lightning.judging.steps import JudgementCache, action_rewards, judge_trajectories, judgement_key
from swirl_lightning.testing import make_tool


def at(state_messages, step, example=None) -> tuple[State, Step]:
    """A (state, step) pair as judges take them."""
    return State(example.id if example else "q", 0, state_messages, example=example), step


def sampled(text: str) -> Step:
    """A freshly sampled action: parsed, no observation (no tool ran)."""
    return Step(text, parse_action(text, {"math_exp": "calculator", "search_query": "search"}))

# ----------------------------------------------------------------------------------------------------
# Numbers and answer spans


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10", Fraction(10)),
        ("10.00", Fraction(10)),
        ("$10", Fraction(10)),
        ("1,000", Fraction(1000)),
        ("$1,234.50", Fraction("1234.5")),
        ("-3", Fraction(-3)),
        ("-$3", Fraction(-3)),
        ("3.50", Fraction(7, 2)),
        (".5", Fraction(1, 2)),
        ("10 dollars", Fraction(10)),
        ("1/2", Fraction(1, 2)),
        ("The answer is 18 eggs.", Fraction(18)),
        ("5 - 3 = 2", Fraction(2)),
        ("5-3", Fraction(3)),
        ("1,2,3", Fraction(3)),
        ("1 $2", Fraction(2)),
        ("1/0", None),
        ("eleven", None),
        (None, None),
    ],
)
def test_parse_number(text, expected) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    "prediction, gold, score",
    [
        ("10", "10", 1.0),
        ("10.00", "10", 1.0),
        ("$10", "10", 1.0),
        ("1,000", "1000", 1.0),
        ("-3", "-3", 1.0),
        ("3", "-3", 0.0),
        ("3.50", "3.5", 1.0),
        ("10 dollars", "10", 1.0),
        ("1/2", "0.5", 1.0),
        ("So she has 18 eggs left.", "18", 1.0),
        ("10.5", "10", 0.0),
        ("eleven", "11", 0.0),
        (None, "10", 0.0),
    ],
)
def test_numeric_judge(prediction, gold, score) -> None:
    assert NumericJudge().score(prediction, gold) == score


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  An apple,  a day ", "apple day"),
        ("Theatre of the Absurd", "theatre of absurd"),
        ("U.S.A.", "usa"),
        ("", ""),
    ],
)
def test_normalize_answer(text, normalised) -> None:
    assert normalize_answer(text) == normalised


@pytest.mark.parametrize(
    "prediction, gold, em, f1",
    [
        ("The Eiffel Tower", "eiffel tower.", 1.0, 1.0),
        ("the cat sat", "cat sat on mat", 0.0, 2 / 3),
        ("Barack Obama", "Obama", 0.0, 2 / 3),
        ("w x y z", "y z e f g h", 0.0, 0.4),  # precision 2/4, recall 2/6
        ("a b c d", "c d e f g h", 0.0, 4 / 9),  # the article "a" is dropped: precision 2/3, recall 2/6
        ("yes", "no", 0.0, 0.0),
        ("Yes.", "yes", 1.0, 1.0),
        ("no it is not", "no", 0.0, 0.0),
        ("Paris", "London", 0.0, 0.0),
        ("the", "", 1.0, 1.0),
        ("", "London", 0.0, 0.0),
        (None, "London", 0.0, 0.0),
    ],
)
def test_exact_match_and_token_f1(prediction, gold, em, f1) -> None:
    assert exact_match(prediction, gold) == em
    assert token_f1(prediction, gold) == pytest.approx(f1, abs=1e-12)


def test_each_task_names_its_outcome_judge() -> None:
    assert make_outcome_judge(get_task("gsm8k").outcome_judge).judge_id == "numeric"
    assert make_outcome_judge(get_task("hotpotqa").outcome_judge).judge_id == "qa_em"
    with pytest.raises(ValueError, match="expected one of"):
        get_task("chess")


# ----------------------------------------------------------------------------------------------------
# Registry


def local_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("swirl_lightning")
    pm.add_hookspecs(swirl_lightning.core.hookspecs)
    pm.register(swirl_lightning.judging.base)
    return pm


class ConstantJudge(StepJudgeBase):
    """A step judge that scores every step the same: a throwaway plugin judge."""

    def __init__(self, value: float = 1.0) -> None:
        self.judge_id, self.value = f"constant:{value}", value

    def judge_steps(self, items):
        return [self.judgement(self.value) for _ in items]


def test_registry_lists_builtins_and_plugins() -> None:
    pm = local_plugin_manager()

    class Plugin:
        @hookimpl
        def register_judges(self, register) -> None:
            register(ConstantJudge, name="constant")

    pm.register(Plugin(), name="my-judges")
    factories = available_judges(pm)
    assert set(factories) == {"process", "reference", "numeric", "qa_em", "qa_f1", "grader", "served", "served_grader",
                              "random", "format", "constant"}
    assert make_judge("constant", pm, value=0.25).judge_id == "constant:0.25"
    assert make_judge("numeric", pm).judge_id == "numeric"
    with pytest.raises(ValueError, match="expected one of .*constant"):
        make_judge("nope", pm)


def test_builtins_are_listed_even_when_the_module_is_not_registered() -> None:
    pm = pluggy.PluginManager("swirl_lightning")
    pm.add_hookspecs(swirl_lightning.core.hookspecs)
    assert "reference" in available_judges(pm)


def test_a_name_registered_twice_names_both_plugins() -> None:
    pm = local_plugin_manager()

    class Clash:
        @hookimpl
        def register_judges(self, register) -> None:
            register(ConstantJudge, name="numeric")

    pm.register(Clash(), name="clashing-plugin")
    with pytest.raises(ValueError, match="'numeric' is registered by both .*clashing-plugin"):
        available_judges(pm)


def test_the_protocols_declare_what_the_code_reads() -> None:
    judge = make_step_judge("reference")
    assert isinstance(judge, StepJudge) and isinstance(NumericJudge(), OutcomeJudge)
    assert (judge.threshold, judge.cacheable, judge.needs_example) == (0.5, False, True)
    pm = local_plugin_manager()

    class Plugin:
        @hookimpl
        def register_judges(self, register) -> None:
            register(ConstantJudge, name="constant")
            register(NumericJudge, name="numeric_again")

    pm.register(Plugin(), name="my-judges")
    assert isinstance(make_step_judge("constant", {"value": 0.5}, pm), StepJudge)
    with pytest.raises(TypeError, match="'numeric_again' is not a step judge: it lacks prompt_version"):
        make_step_judge("numeric_again", pm=pm)
    with pytest.raises(TypeError, match="'constant' is not an outcome judge: it lacks score_batch"):
        make_outcome_judge("constant", pm)


def test_a_raising_judge_hook_warns_with_its_plugin_and_the_others_still_load() -> None:
    from swirl_lightning.core.plugins import PluginLoadWarning

    pm = local_plugin_manager()

    class Broken:
        @hookimpl
        def register_judges(self, register) -> None:
            raise RuntimeError("no weights")

    pm.register(Broken(), name="broken-judges")
    with pytest.warns(PluginLoadWarning, match=r"broken-judges.*register_judges raised RuntimeError: no weights"):
        assert "reference" in available_judges(pm)


# ----------------------------------------------------------------------------------------------------
# LM verdicts on the tiny random model


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random"), load_tokenizer("tiny-random")


@pytest.fixture(scope="module")
def process_judge(tiny) -> ProcessJudge:
    model, tokenizer = tiny
    return ProcessJudge(model, tokenizer, model_name="tiny-random", batch_size=4)


QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether?")
STATE = [
    {"role": "system", "content": "Use <math_exp> for arithmetic. SYSTEM-SECRET"},
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": "Half of 48 in May. <math_exp>48/2</math_exp>"},
    {"role": "user", "content": "48/2 -> 24"},
]


def manual_p_good(model, tokenizer, messages) -> float:
    """P(GOOD) by a separate single forward: softmax over the logits of 'ĠGOOD' and 'ĠB' (' BAD' = ĠB AD)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + "Verdict:"
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    pair = logits[tokenizer.convert_tokens_to_ids(["ĠGOOD", "ĠB"])]
    return torch.softmax(pair, -1)[0].item()


def test_process_prompt_holds_state_and_step_but_no_gold(process_judge) -> None:
    messages = process_judge.prompt(STATE, "Add them. <math_exp>48+24</math_exp>")
    text = "\n".join(m["content"] for m in messages)
    assert QUESTION in text and "48/2 -> 24" in text and "<math_exp>48+24</math_exp>" in text
    assert "SYSTEM-SECRET" not in text  # the policy's system prompt is left out
    assert "72" not in text  # the gold answer
    rendered = process_judge.scorer.tokenizer.decode(process_judge.scorer.prompt_ids(messages))
    assert rendered.endswith("<|im_start|>assistant\nVerdict:")


def test_process_score_is_the_softmax_of_the_two_verdict_tokens(tiny, process_judge) -> None:
    model, tokenizer = tiny
    assert process_judge.scorer.positive_id == tokenizer.convert_tokens_to_ids("ĠGOOD")
    assert process_judge.scorer.negative_id == tokenizer.convert_tokens_to_ids("ĠB")
    action = "<math_exp>48+24</math_exp>"
    (score,) = action_rewards(process_judge, [at(STATE, sampled(action))])
    assert 0.0 < score < 1.0
    assert score == pytest.approx(manual_p_good(model, tokenizer, process_judge.prompt(STATE, action)), abs=1e-6)


def test_process_batching_matches_one_by_one_and_is_deterministic(tiny, process_judge) -> None:
    model, tokenizer = tiny
    states = [STATE[:2], STATE, STATE[:2], STATE]
    actions = ["<math_exp>48/2</math_exp>", "<answer>72</answer>", "I think " * 30 + "<answer>7</answer>",
               "<math_exp>48+24</math_exp>"]
    items = [at(state, sampled(action)) for state, action in zip(states, actions)]
    batched = action_rewards(process_judge, items)
    single = action_rewards(ProcessJudge(model, tokenizer, model_name="tiny-random", batch_size=1), items)
    assert batched == pytest.approx(single, abs=1e-5)
    assert action_rewards(process_judge, items) == batched
    assert len(set(batched)) == len(batched)  # the scores do depend on the input


def test_process_judge_steps_threshold_and_invalid_steps(tiny) -> None:
    model, tokenizer = tiny
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        good = Step("<answer>72</answer>", Action("answer", tag="answer", answer="72"))
        invalid = Step("no action here", Action("invalid", reason="no action"))
        items = [at(STATE, good), at(STATE, invalid)]
        everything_good = ProcessJudge(model, tokenizer, model_name="t", threshold=0.0).judge_steps(items)
        assert len(calls) == 1  # one batch; the invalid step never reaches the model
        nothing_good = ProcessJudge(model, tokenizer, model_name="t", threshold=1.01).judge_steps(items)
    finally:
        hook.remove()
    assert [j.verdict for j in everything_good] == ["GOOD", "BAD"]
    assert everything_good[1].score == 0.0
    assert [j.verdict for j in nothing_good] == ["BAD", "BAD"]
    assert everything_good[0] == Judgement("process:t", "GOOD", nothing_good[0].score, "process-v1")


def test_process_judge_restores_training_mode(tiny, process_judge) -> None:
    model, _ = tiny
    model.train()
    try:
        action_rewards(process_judge, [at(STATE, sampled("<answer>72</answer>"))])
        assert model.training
    finally:
        model.eval()


def test_grader_prompt_and_probability(tiny) -> None:
    model, tokenizer = tiny
    grader = LLMGrader(model, tokenizer, model_name="tiny-random", threshold=0.0)
    assert grader.judge_id == "grader:tiny-random"
    messages = grader.prompt("seventy-two", "72", QUESTION)
    text = "\n".join(m["content"] for m in messages)
    assert "Correct answer: 72" in text and "Predicted answer: seventy-two" in text and QUESTION in text
    (p_yes,) = grader.probabilities(["seventy-two"], ["72"], [QUESTION])
    ids = torch.tensor([grader.verdicts.scorer.prompt_ids(messages)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    pair = logits[tokenizer.convert_tokens_to_ids(["ĠYes", "ĠNo"])]
    assert p_yes == pytest.approx(torch.softmax(pair, -1)[0].item(), abs=1e-6)
    assert grader.score_batch(["seventy-two", None], ["72", "72"]) == [1.0, 0.0]  # threshold 0; None never passes


def test_a_judge_given_by_name_loads_its_model_on_first_use() -> None:
    judge = ProcessJudge("tiny-random")
    assert judge.judge_id == "process:tiny-random" and judge.verdicts._scorer is None
    assert 0 < action_rewards(judge, [at(STATE, sampled("<answer>72</answer>"))])[0] < 1
    assert judge.verdicts._scorer is not None


def test_scorer_rejects_verdict_words_sharing_a_first_token(tiny) -> None:
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="same token"):
        VerdictScorer(model, tokenizer, "BAD", "BADLY")


# ----------------------------------------------------------------------------------------------------
# The reference judge

SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
    "#### 72"
)
EXAMPLE = Example("gsm8k-train-0", QUESTION, "72", "gsm8k", {"solution": SOLUTION})


def calc_step(expr: str, result: str, *, error: bool = False) -> Step:
    action = Action("tool", tool="calculator", tag="math_exp", query=expr)
    return Step(f"<math_exp>{expr}</math_exp>", action, observation=f"{expr} -> {result}", tool_error=error)


def answer_step(answer: str) -> Step:
    return Step(f"<answer>{answer}</answer>", Action("answer", tag="answer", answer=answer))


def test_reference_values_are_the_annotation_results_and_the_final_answer() -> None:
    assert reference_values(SOLUTION) == ("24", "72", "72")
    assert reference_values("He pays 2*.5=<<2*.5=.5>>.5 dollars and <<bad>> x.\n#### 1") == (".5", "1")


@pytest.mark.parametrize(
    "value, reference, expected",
    [
        (Fraction(24), "24", True),
        (Fraction("24.0000001"), "24", True),  # within 1e-6 relative
        (Fraction("0.333333"), ".33", True),  # rounds to the reference's written precision
        (Fraction("0.335"), ".34", True),  # half away from zero
        (Fraction("-0.335"), "-.34", True),
        (Fraction("33.333333"), "33", False),  # an integer reference is matched exactly only
        (Fraction("0.32"), ".33", False),
        (Fraction(25), "24", False),
    ],
)
def test_matches_reference(value, reference, expected) -> None:
    assert matches_reference(value, reference) is expected


def test_reference_judge_on_a_converted_gsm8k_trajectory() -> None:
    steps = [
        calc_step("48/2", "24"),  # an intermediate value of the solution
        calc_step("48*2", "96"),  # a value the solution never reaches
        calc_step("48+24", "72", error=True),  # the tool failed
        Step("hmm", Action("invalid", reason="no action"), observation="Write exactly one action."),
        calc_step("48+24", "72"),
        answer_step("72"),
        answer_step("70"),
        answer_step("$72.00"),
    ]
    judge = ReferenceJudge()
    judgements = judge.judge_steps([at([], s, EXAMPLE) for s in steps])
    assert [j.verdict for j in judgements] == ["GOOD", "BAD", "BAD", "BAD", "GOOD", "GOOD", "BAD", "GOOD"]
    assert all(j.judge == "reference" and j.prompt_version == "reference-v2" for j in judgements)
    assert [j.score for j in judgements] == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]


def test_reference_judge_calls_a_value_the_state_already_had_no_progress() -> None:
    """Repeating a right calculation (or reaching its value again another way) earns nothing: RL on the reward
    learned to repeat one otherwise."""
    first = calc_step("48/2", "24")
    # A few-shot example turn whose tool result is 72 comes before the question: the prompt, not this state's work.
    prompt = [{"role": "user", "content": "Example"}, {"role": "assistant", "content": "<math_exp>70+2</math_exp>"},
              {"role": "user", "content": "70+2 -> 72"}, {"role": "user", "content": "How many clips? 24 or 72?"}]
    before = State(EXAMPLE.id, 0, prompt, example=EXAMPLE)
    after = State(EXAMPLE.id, 1, [*prompt, {"role": "assistant", "content": first.text},
                                  {"role": "user", "content": first.observation}], example=EXAMPLE)
    items = [(before, first), (after, calc_step("48/2", "24")), (after, calc_step("96/4", "24")),
             (after, calc_step("48+24", "72")), (after, answer_step("72"))]
    assert [j.verdict for j in ReferenceJudge().judge_steps(items)] == ["GOOD", "BAD", "BAD", "GOOD", "GOOD"]
    sampled_repeat = (after, sampled("<math_exp>48/2</math_exp>"))  # a swirl sample: the judge runs the call
    judge = ReferenceJudge(tools={"calculator": make_tool(lambda expr: "24", name="calculator", tag="math_exp")})
    assert action_rewards(judge, [sampled_repeat]) == [0.0]


def test_reference_judge_needs_the_solution() -> None:
    bare = Example("x-1", "q", "72", "jsonl")
    with pytest.raises(ValueError, match="x-1.*no reference values"):
        ReferenceJudge().judge_steps([at([], calc_step("1+1", "2"), bare)])


def test_reference_score_actions_evaluates_calculator_calls() -> None:
    results = {"48/2": "24", "48*2": "96"}

    def calculate(expr: str) -> str:
        if expr not in results:
            raise ValueError("not a valid arithmetic expression")
        return results[expr]

    judge = ReferenceJudge(tools={"calculator": make_tool(calculate, name="calculator", tag="math_exp")})
    texts = [
        "Half of 48. <math_exp>48/2</math_exp>",
        "<math_exp>48*2</math_exp>",
        "<math_exp>48 apples</math_exp>",  # the calculator raises
        "<search_query>Natalia clips</search_query>",  # no result to compare
        "<answer>72</answer>",
        "<math_exp>1</math_exp><answer>72</answer>",  # two actions: invalid
    ]
    items = [at([], sampled(text), EXAMPLE) for text in texts]
    assert action_rewards(judge, items) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="needs each state's question"):
        action_rewards(judge, [at([], sampled(texts[0]))])


def test_reference_judge_runs_sampled_calls_with_the_registered_calculator() -> None:
    pytest.importorskip("swirl_calculator")
    texts = ["<math_exp>48/2</math_exp>", "<math_exp>48+25</math_exp>"]
    assert action_rewards(ReferenceJudge(), [at([], sampled(text), EXAMPLE) for text in texts]) == [1.0, 0.0]


def test_reference_steps_of_packaged_gsm8k_are_good() -> None:
    from swirl_lightning.core.tasks.gsm8k import gsm8k_reference_trajectory, load_gsm8k

    examples = load_gsm8k(limit=20)
    trajectories = [gsm8k_reference_trajectory(e, tool_tag="math_exp") for e in examples]
    judge_trajectories(trajectories, ReferenceJudge(), {e.id: e for e in examples}, progress=False)
    verdicts = [s.judgements[-1].verdict for t in trajectories for s in t.steps]
    assert len(verdicts) > 40 and set(verdicts) == {"GOOD"}


# ----------------------------------------------------------------------------------------------------
# Judging trajectories, with the cache


def trajectory(sample_index: int, steps: list[Step]) -> Trajectory:
    return Trajectory(EXAMPLE.id, sample_index, [{"role": "user", "content": QUESTION}], steps)


def test_cache_serves_a_second_run_without_model_calls(tiny, tmp_path) -> None:
    model, tokenizer = tiny
    judge = ProcessJudge(model, tokenizer, model_name="tiny-random", batch_size=2)
    trajectories = [
        trajectory(0, [calc_step("48/2", "24"), calc_step("48+24", "72"), answer_step("72")]),
        trajectory(1, [calc_step("48*2", "96"), answer_step("96")]),
    ]
    again = copy.deepcopy(trajectories)
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        first = judge_trajectories(trajectories, judge, cache=JudgementCache(tmp_path / "j.sqlite"), batch_size=2, progress=False)
        assert first == {"steps": 5, "from_cache": 0, "judged": 5, "failed": 0} and len(calls) == 3  # batches of 2, 2, 1
        calls.clear()
        second = judge_trajectories(again, judge, cache=JudgementCache(tmp_path / "j.sqlite"), progress=False)
        assert second == {"steps": 5, "from_cache": 5, "judged": 0, "failed": 0} and calls == []
    finally:
        hook.remove()
    assert [s.judgements for t in again for s in t.steps] == [s.judgements for t in trajectories for s in t.steps]
    # judging again replaces the judge's earlier judgement instead of adding another
    judge.threshold = 1.01  # cached scores get the current threshold's verdict
    judge_trajectories(again, judge, cache=JudgementCache(tmp_path / "j.sqlite"), progress=False)
    assert all(len(s.judgements) == 1 and s.judgements[0].verdict == "BAD" for t in again for s in t.steps)


def test_cache_is_shared_between_instances_and_keyed_by_content(tmp_path) -> None:
    writer, reader = JudgementCache(tmp_path / "c.sqlite"), JudgementCache(tmp_path / "c.sqlite")
    key = judgement_key("process:m", "process-v1", STATE, "<answer>72</answer>")
    assert key != judgement_key("process:m", "process-v2", STATE, "<answer>72</answer>")
    assert key != judgement_key("process:m", "process-v1", STATE[:2], "<answer>72</answer>")
    assert reader.get_many([key]) == {}
    writer.put_many({key: Judgement("process:m", "GOOD", 0.75, "process-v1")})
    assert reader.get_many([key, "missing"]) == {key: Judgement("process:m", "GOOD", 0.75, "process-v1")}


def _write_judgements(path: str, prefix: str) -> None:
    cache = JudgementCache(path)
    for i in range(50):  # one transaction each, interleaved with the other process's writes
        cache.put_many({f"{prefix}{i}": Judgement("process:m", "GOOD", i / 50, "process-v1")})


@pytest.mark.integration
def test_cache_takes_writes_from_concurrent_processes(tmp_path) -> None:
    import multiprocessing

    path = str(tmp_path / "shared.sqlite")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_judgements, args=(path, prefix)) for prefix in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    found = JudgementCache(path).get_many([f"{p}{i}" for p in "ab" for i in range(50)])
    assert len(found) == 100 and found["b7"].score == 7 / 50


def test_judge_trajectories_needs_examples_for_the_reference_judge() -> None:
    with pytest.raises(ValueError, match="needs the examples"):
        judge_trajectories([trajectory(0, [answer_step("72")])], ReferenceJudge(), {}, progress=False)


def test_score_outcomes_sets_outcome_and_judge() -> None:
    trajectories = [trajectory(0, [answer_step("72")]), trajectory(1, [answer_step("70")]), trajectory(2, [])]
    trajectories[1].final_answer = "72 clips"  # the final_answer field wins over the last step
    score_outcomes(trajectories, {EXAMPLE.id: EXAMPLE}, NumericJudge())
    assert [t.outcome for t in trajectories] == [1.0, 1.0, 0.0]
    assert all(t.metadata["outcome_judge"] == "numeric" for t in trajectories)
    with pytest.raises(ValueError, match="gsm8k-train-0"):
        score_outcomes(trajectories, {}, NumericJudge())


def test_the_control_judges_know_nothing_of_the_task():
    """``random``: GOOD with probability p, the same verdict for the same action at the same state; ``format``: GOOD
    for any well-formed action. Neither reads gold data."""
    from swirl_lightning.judging.base import make_step_judge

    tags = {"math_exp": "calculator"}
    states = [State(f"q{i}", 0, [{"role": "user", "content": f"question {i}"}]) for i in range(400)]
    steps = [Step(text=text, action=parse_action(text, tags))
             for text in ("<math_exp>1+1</math_exp>", "<answer>3</answer>", "no action")]
    random_judge = make_step_judge("random", {"p": 0.25, "seed": 1})
    scores = [j.score for j in random_judge.judge_steps([(s, steps[0]) for s in states])]
    assert 0.18 < sum(scores) / len(scores) < 0.32
    assert scores == [j.score for j in random_judge.judge_steps([(s, steps[0]) for s in states])]
    other_seed = make_step_judge("random", {"p": 0.25, "seed": 2})
    assert scores != [j.score for j in other_seed.judge_steps([(s, steps[0]) for s in states])]
    with pytest.raises(ValueError, match="probability"):
        make_step_judge("random", {"p": 1.0})
    verdicts = [j.verdict for j in make_step_judge("format").judge_steps([(states[0], step) for step in steps])]
    assert verdicts == ["GOOD", "GOOD", "BAD"]
