"""The trajectory format: round trips, field-level errors with file:line, torn writes, decompose, parsing."""

import json

import pytest

from swirl_lightning.core.trajectory import (
    SCHEMA_VERSION,
    Action,
    FormatError,
    JsonlWriter,
    Judgement,
    Step,
    Trajectory,
    decompose,
    parse_action,
    read_trajectories,
    to_dict,
    write_jsonl,
)

TAGS = {"math_exp": "calculator", "search_query": "search"}


def sample() -> Trajectory:
    return Trajectory(
        example_id="gsm8k-train-0",
        sample_index=1,
        prompt=[{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        steps=[
            Step("t1 <math_exp>2+3</math_exp>", Action("tool", tool="calculator", tag="math_exp", query="2+3"),
                 token_ids=[1, 2], observation="2+3 -> 5", observation_token_ids=[3],
                 judgements=[Judgement("reference", "GOOD", 1.0)]),
            Step("<answer>5</answer>", Action("answer", tag="answer", answer="5"), token_ids=[4], reward=0.5),
        ],
        final_answer="5",
        outcome=1.0,
        gold_answer="5",
        prompt_token_ids=[0],
        metadata={"policy": "p", "prompt_version": "v"},
    )


def test_round_trip(tmp_path):
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [sample(), sample()])
    assert read_trajectories(path) == [sample(), sample()]
    assert json.loads(path.read_text().splitlines()[0])["schema_version"] == SCHEMA_VERSION


# A record exactly as version 1 of the format wrote it (before the gold answer was kept).
VERSION_1_RECORD = (
    '{"example_id":"gsm8k-train-0","sample_index":0,"prompt":[{"role":"user","content":"Q"}],"steps":[{"text":'
    '"<answer>5</answer>","action":{"kind":"answer","tool":null,"tag":"answer","query":null,"answer":"5",'
    '"reason":null},"token_ids":null,"observation":null,"observation_token_ids":null,"tool_error":false,'
    '"judgements":[],"reward":null}],"final_answer":"5","outcome":1.0,"prompt_token_ids":null,"metadata":{},'
    '"schema_version":1}'
)


def test_version_1_files_still_read_and_are_written_back_as_the_current_version(tmp_path):
    old = tmp_path / "v1.jsonl"
    old.write_text(VERSION_1_RECORD + "\n")
    (trajectory,) = read_trajectories(old)
    assert trajectory.gold_answer is None and trajectory.final_answer == "5" and trajectory.outcome == 1.0
    assert trajectory.schema_version == SCHEMA_VERSION == 3
    assert trajectory.steps[0].logprobs is None and trajectory.steps[0].policy_version is None
    new = tmp_path / "v3.jsonl"
    write_jsonl(new, [trajectory])
    record = json.loads(new.read_text())
    assert record["schema_version"] == 3 and record["gold_answer"] is None
    assert record["steps"][0]["logprobs"] is None and record["steps"][0]["policy_version"] is None


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["steps"][1]["action"].update(kind="maybe"), "steps[1].action.kind: expected one of 'tool', 'answer', 'invalid'"),
    (lambda d: d["steps"][0].update(token_ids=[1, "x"]), "steps[0].token_ids[1]: expected an integer"),
    (lambda d: d.pop("example_id"), "example_id: missing required field"),
    (lambda d: d.update(outcome="yes"), "outcome: expected a number"),
    (lambda d: d.update(colour="red"), "unknown field(s) colour"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer than this library"),
])
def test_bad_record_names_file_line_and_field(tmp_path, mutate, message):
    good, bad = to_dict(sample()), to_dict(sample())
    mutate(bad)
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(FormatError) as error:
        read_trajectories(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)


def test_invalid_json_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(to_dict(sample())) + "\n{not json\n" + json.dumps(to_dict(sample())) + "\n")
    with pytest.raises(FormatError, match=rf"{path}:2: not valid JSON"):
        read_trajectories(path)


def test_a_torn_last_line_is_skipped_only_in_a_writers_own_file_and_cut_before_appending(tmp_path):
    path = tmp_path / "t.jsonl"
    with JsonlWriter(path) as writer:
        writer.write(sample())
    line = json.dumps(to_dict(sample()))
    with path.open("a") as fh:
        fh.write(line[: len(line) // 2])  # a crash mid-write
    with pytest.warns(UserWarning, match="torn last line"):
        assert len(read_trajectories(path, torn_tail="skip")) == 1
    with pytest.raises(FormatError, match=rf"{path}:2: not valid JSON"):
        read_trajectories(path)  # a file a user gave: a bad last line is an error naming it
    with pytest.warns(UserWarning, match="dropping a torn last line"):
        writer = JsonlWriter(path)
    writer.write(sample())
    writer.close()
    assert read_trajectories(path) == [sample(), sample()]


def test_decompose_gives_one_state_per_action_and_never_targets_a_tool_result():
    pairs = decompose(sample())
    assert [state.step_index for state, _ in pairs] == [0, 1]
    assert pairs[0][0].messages == sample().prompt
    assert pairs[1][0].messages[-2:] == [{"role": "assistant", "content": "t1 <math_exp>2+3</math_exp>"},
                                         {"role": "user", "content": "2+3 -> 5"}]
    assert [step.action.kind for _, step in pairs] == ["tool", "answer"]
    assert pairs[1][1].reward == 0.5 and pairs[0][1].judgements[0].verdict == "GOOD"


@pytest.mark.parametrize("text, kind, detail", [
    ("Think. <math_exp>48/2</math_exp>", "tool", ("calculator", "48/2")),
    ("<search_query> Paris population </search_query>", "tool", ("search", "Paris population")),
    ("<think>hmm <b>x</b></think> <answer>72</answer>", "answer", "72"),
    ("no tags at all", "invalid", "no action"),
    ("<math_exp>1</math_exp> <answer>1</answer>", "invalid", "2 actions in one turn (<math_exp>, <answer>); write exactly one"),
    ("<python>1</python>", "invalid", "unknown tag <python>"),
    ("<search_query>unfinished", "invalid", "unclosed tag <search_query>"),
    ("<math_exp>  </math_exp>", "invalid", "empty <math_exp>"),
])
def test_parse_action(text, kind, detail):
    action = parse_action(text, TAGS)
    assert action.kind == kind
    if kind == "tool":
        assert (action.tool, action.query) == detail
    elif kind == "answer":
        assert action.answer == detail
    else:
        assert action.reason == detail


@pytest.mark.parametrize("bad, message", [
    ('"outcome":NaN', "not a number JSON allows"),
    ('"outcome":Infinity', "not a number JSON allows"),
    ('"outcome":1e999', "outcome: expected a finite number, got inf"),
    ('"schema_version":0', "schema_version: expected a version this library knows"),
    ('"schema_version":"1"', "schema_version: expected a version this library knows"),
    ('"prompt":[]', "prompt: expected a non-empty list of chat messages"),
    ('"prompt":[{"role":"user"}]', "prompt\\[0\\].content: expected a string, missing"),
])
def test_records_that_could_poison_training_are_refused_with_file_line_and_field(tmp_path, bad, message):
    record = to_dict(sample())
    key = bad.split(":")[0].strip('"')
    record.pop(key, None)
    text = json.dumps(record)[:-1] + "," + bad + "}"
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(to_dict(sample())) + "\n" + text + "\n")
    with pytest.raises(FormatError, match=rf"{path}:2: .*{message}"):
        read_trajectories(path)


def test_writes_replace_a_symlink_instead_of_writing_through_it(tmp_path):
    from swirl_lightning.core.trajectory import write_text_atomic

    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    for name in ("out.jsonl", "out.json"):
        link = tmp_path / name
        link.symlink_to(target)
        if name.endswith("l"):
            write_jsonl(link, [sample()])
        else:
            write_text_atomic(link, "{}")
        assert not link.is_symlink() and target.read_text() == "keep me"
    (tmp_path / "append.jsonl").symlink_to(target)
    with pytest.raises(FileExistsError, match="symlink"):
        JsonlWriter(tmp_path / "append.jsonl")
