"""Filtering: each mode on hand-judged trajectories, the stats, and `swirl filter` end to end."""

import copy
import json

import pytest

from swirl_lightning.core.config import JudgeConfig, TaskConfig
from swirl_lightning.core.trajectory import Action, Judgement, Step, Trajectory, read_trajectories, write_jsonl
from swirl_lightning.judging.filter import (
    FilterConfig,
    cli_main,
    filter_trajectories,
    run_filter,
)

JUDGE = "process:m"


def judged_step(*verdicts_by_judge: tuple[str, str]) -> Step:
    judgements = [Judgement(judge, verdict, 1.0 if verdict == "GOOD" else 0.0, "v1") for judge, verdict in verdicts_by_judge]
    return Step("<math_exp>1+1</math_exp>", Action("tool", tool="calculator", tag="math_exp", query="1+1"),
                observation="1+1 -> 2", judgements=judgements)


def good() -> Step:
    return judged_step((JUDGE, "GOOD"))


def bad() -> Step:
    return judged_step(("reference", "GOOD"), (JUDGE, "BAD"))  # another judge's verdict must not count


@pytest.fixture
def trajectories() -> list[Trajectory]:
    prompt = [{"role": "user", "content": "q"}]
    return [
        Trajectory("a", 0, prompt, [good(), good(), good()], outcome=1.0),
        Trajectory("a", 1, prompt, [good(), bad()], outcome=1.0),
        Trajectory("b", 0, prompt, [good(), good()], outcome=0.0),
        Trajectory("b", 1, prompt, [], outcome=0.0),  # no steps: never kept by a process mode
    ]


@pytest.mark.parametrize(
    "mode, kept_keys",
    [
        ("none", [("a", 0), ("a", 1), ("b", 0), ("b", 1)]),
        ("process", [("a", 0), ("b", 0)]),
        ("outcome", [("a", 0), ("a", 1)]),
        ("process+outcome", [("a", 0)]),
    ],
)
def test_each_mode_keeps_what_it_should(trajectories, mode, kept_keys) -> None:
    kept, stats = filter_trajectories(trajectories, mode, JUDGE)
    assert [t.key for t in kept] == kept_keys
    assert stats["kept"] == len(kept_keys) and stats["kept_share"] == len(kept_keys) / 4


def test_stats_values(trajectories) -> None:
    _, stats = filter_trajectories(trajectories, "process", JUDGE)
    assert stats == {
        "mode": "process",
        "step_judge": JUDGE,
        "outcome_threshold": 1.0,
        "trajectories": 4,
        "kept": 2,
        "kept_share": 0.5,
        "steps": 7,
        "kept_steps": 5,
        "steps_judged": 7,
        "steps_failed": 0,
        "trajectories_with_failed_steps": 0,
        "trajectories_undecided": 0,
        "step_good_rate": 6 / 7,
        "steps_judged_by_index": [3, 3, 1],
        "step_good_rate_by_index": [1.0, 2 / 3, 1.0],
        "trajectories_all_steps_good": 2,
        "trajectories_with_outcome": 4,
        "outcomes_failed": 0,
        "outcome_accuracy": 0.5,
        "outcome_mean": 0.5,
        "kept_outcome_accuracy": 0.5,
    }


def test_stats_without_a_step_judge_or_outcomes() -> None:
    lone = Trajectory("a", 0, [{"role": "user", "content": "q"}], [good()])
    _, stats = filter_trajectories([lone], "none")
    assert stats["step_good_rate"] is None and stats["steps_judged"] == 0
    assert stats["trajectories_all_steps_good"] is None
    assert stats["outcome_accuracy"] is None and stats["trajectories_with_outcome"] == 0
    _, empty = filter_trajectories([], "none")
    assert empty["kept_share"] is None and empty["step_good_rate_by_index"] == []


def test_outcome_threshold_accepts_partial_credit(trajectories) -> None:
    for t, f1 in zip(trajectories, [0.9, 0.6, 0.8, 0.0]):
        t.outcome = f1
    kept, stats = filter_trajectories(trajectories, "outcome", outcome_threshold=0.8)
    assert [t.key for t in kept] == [("a", 0), ("b", 0)]
    assert stats["outcome_accuracy"] == 0.5 and stats["outcome_mean"] == pytest.approx(2.3 / 4)


def test_missing_data_is_an_error_naming_the_trajectory(trajectories) -> None:
    with pytest.raises(ValueError, match=r"\('a', 0\) step 0: no judgement by 'reference'"):
        filter_trajectories(trajectories, "process", "reference")
    with pytest.raises(ValueError, match="needs step_judge_id"):
        filter_trajectories(trajectories, "process")
    trajectories[2].outcome = None
    with pytest.raises(ValueError, match=r"\('b', 0\): outcome not scored"):
        filter_trajectories(trajectories, "outcome")
    with pytest.raises(ValueError, match="mode: expected one of"):
        filter_trajectories(trajectories, "best")


# ----------------------------------------------------------------------------------------------------
# run_filter and the command line

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether?")
SOLUTION = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72"


def calc(expr: str, result: str) -> Step:
    return Step(f"<math_exp>{expr}</math_exp>", Action("tool", tool="calculator", tag="math_exp", query=expr),
                observation=f"{expr} -> {result}")


def answer(value: str) -> Step:
    return Step(f"<answer>{value}</answer>", Action("answer", tag="answer", answer=value))


@pytest.fixture
def files(tmp_path):
    examples = tmp_path / "examples.jsonl"
    examples.write_text(json.dumps({"id": "nat", "question": QUESTION, "answer": "72", "solution": SOLUTION}) + "\n")
    prompt = [{"role": "user", "content": QUESTION}]
    generated = [
        Trajectory("nat", 0, prompt, [calc("48/2", "24"), calc("48+24", "72"), answer("72")], final_answer="72"),
        Trajectory("nat", 1, prompt, [calc("48*2", "96"), answer("72")], final_answer="72"),  # a bad step
        Trajectory("nat", 2, prompt, [calc("48/2", "24"), answer("70")], final_answer="70"),  # a wrong answer
    ]
    write_jsonl(tmp_path / "generated.jsonl", generated)
    return tmp_path, examples, generated


def test_run_filter_with_the_reference_judge(files) -> None:
    tmp_path, examples, generated = files
    config = FilterConfig(input=str(tmp_path / "generated.jsonl"), output=str(tmp_path / "out" / "kept.jsonl"),
                          task=TaskConfig("jsonl", data_path=str(examples)), mode="process+outcome",
                          judge=JudgeConfig("reference", outcome="numeric"), progress=False,
                          cache_path=str(tmp_path / "cache.sqlite"))
    stats = run_filter(config)
    expected = copy.deepcopy(generated[0])
    for step in expected.steps:
        step.judgements = [Judgement("reference", "GOOD", 1.0, "reference-v2")]
    expected.outcome, expected.metadata = 1.0, {"outcome_judge": "numeric"}
    assert read_trajectories(tmp_path / "out" / "kept.jsonl") == [expected]
    assert json.loads((tmp_path / "out" / "kept.stats.json").read_text()) == stats
    assert (stats["trajectories"], stats["kept"], stats["steps"]) == (3, 1, 7)
    assert stats["step_good_rate_by_index"] == [2 / 3, 2 / 3, 1.0]  # 48*2 (step 0) and the answer 70 (step 1) are BAD
    assert stats["step_good_rate"] == 5 / 7 and stats["outcome_accuracy"] == 2 / 3
    assert stats["judging"] == {"steps": 7, "from_cache": 0, "judged": 7, "failed": 0}  # the reference judge is never cached
    assert stats["outcome_judge"] == "numeric" and stats["step_judge"] == "reference"


def test_run_filter_with_the_process_judge_uses_the_cache(files) -> None:
    tmp_path, _, generated = files
    outputs, judging = [], []
    for run in range(2):
        config = FilterConfig(input=str(tmp_path / "generated.jsonl"), output=str(tmp_path / f"kept{run}.jsonl"),
                              stats=str(tmp_path / f"stats{run}.json"), mode="process",
                              judge=JudgeConfig("process", {"model": "tiny-random", "threshold": 0.0}), progress=False,
                              cache_path=str(tmp_path / "cache.sqlite"))
        judging.append(run_filter(config)["judging"])
        outputs.append(read_trajectories(config.output))
    assert judging == [{"steps": 7, "from_cache": 0, "judged": 7, "failed": 0},
                       {"steps": 7, "from_cache": 7, "judged": 0, "failed": 0}]
    assert outputs[0] == outputs[1] and [t.key for t in outputs[0]] == [t.key for t in generated]
    assert all(s.judgements[0].judge == "process:tiny-random" for t in outputs[0] for s in t.steps)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="give the task"):
        FilterConfig(input="in.jsonl", output="out.jsonl", mode="outcome")
    with pytest.raises(ValueError, match="mode: expected one of"):
        FilterConfig(input="in.jsonl", output="out.jsonl", mode="all")
    assert str(FilterConfig(input="in.jsonl", output="dir/kept.jsonl").stats_path) == "dir/kept.stats.json"


def test_command_line(files, capsys) -> None:
    tmp_path, examples, _ = files
    argv = [
        "--input", str(tmp_path / "generated.jsonl"), "--output", str(tmp_path / "kept.jsonl"),
        "--task.name", "jsonl", "--task.data_path", str(examples), "--mode", "outcome", "--judge.name", "reference",
        "--judge.options", '{"timeout_s": 5}', "--outcome_threshold", "1",
        "--cache", "false", "--progress", "false",
    ]
    assert cli_main(argv) == 0
    assert [t.key for t in read_trajectories(tmp_path / "kept.jsonl")] == [("nat", 0), ("nat", 1)]
    assert "kept 2/3 trajectories" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["--input", "a", "--output", "b", "--mode", "nonsense"])


def test_command_line_help_comes_from_attribute_docstrings(capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert "Least outcome score counted as correct" in capsys.readouterr().out
