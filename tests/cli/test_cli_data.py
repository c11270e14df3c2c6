"""`swirl data reference`, `swirl data worlds`, `swirl data show` and `swirl data stats`."""

import json

import pytest

from swirl_lightning.cli import main
from swirl_lightning.core.trajectory import read_trajectories

pytest.importorskip("swirl_calculator", reason="the calculator plugin (plugins/swirl-calculator) is not installed")


def test_reference_writes_trajectories_with_the_rollout_prompt(tmp_path, capsys):
    out = tmp_path / "ref.jsonl"
    assert main(["data", "reference", "--task.limit", "5", "--output", str(out), "--task.few_shot", "false"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 5 reference trajectories" in printed and "(100.00%)" in printed
    trajectories = read_trajectories(out)
    assert len(trajectories) == 5
    first = trajectories[0]
    assert first.prompt[0]["role"] == "system" and "<math_exp>" in first.prompt[0]["content"]
    assert len(first.prompt) == 2  # system + question, no few-shot turns
    assert [s.action.kind for s in first.steps] == ["tool", "tool", "answer"]
    assert first.metadata["prompt_version"]


def test_show_prints_steps_and_reports_bad_lines(tmp_path, capsys):
    out = tmp_path / "ref.jsonl"
    main(["data", "reference", "--task.limit", "2", "--output", str(out)])
    capsys.readouterr()
    assert main(["data", "show", str(out), "--count", "1"]) == 0
    printed = capsys.readouterr().out
    # The view the dashboard draws, as text: question, gold answer, each step's thinking, call, result.
    assert "question:\n   Natalia sold clips" in printed and "gold answer: 72" in printed
    assert "1. calculator <math_exp>48/2</math_exp>  [not judged]" in printed and "result: 24" in printed
    assert "thinking: Natalia sold 48/2 =" in printed and "3. answer '72'" in printed
    out.write_text(out.read_text().replace('"sample_index":0', '"sample_index":"zero"', 1))
    assert main(["data", "show", str(out)]) == 2
    assert f"{out}:1: sample_index: expected an integer" in capsys.readouterr().err


def test_stats_summarises_a_trajectory_file_and_reports_bad_lines(tmp_path, capsys):
    import json

    out = tmp_path / "ref.jsonl"
    main(["data", "reference", "--task.limit", "4", "--output", str(out)])
    capsys.readouterr()
    assert main(["data", "stats", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out)
    steps = sum(len(t.steps) for t in read_trajectories(out))
    assert stats["trajectories"] == 4 and stats["steps_mean"] == steps / 4
    assert stats["valid_action_rate"] == 1.0 and stats["answered_rate"] == 1.0 and stats["tool_calls"] == steps - 4
    out.write_text(out.read_text() + "{not json\n{}\n")
    assert main(["data", "stats", str(out)]) == 2
    assert f"{out}:5:" in capsys.readouterr().err


def test_worlds_writes_a_world_folder_the_task_reads(tmp_path, capsys):
    out = tmp_path / "validation"
    assert main(["data", "worlds", "--split", "validation", "--worlds", "2", "--world.questions", "3",
                 "--world.hops", "[1, 2]", "--output", str(out)]) == 0
    assert "wrote 2 validation worlds (seeds 1000000..1000001): 6 questions" in capsys.readouterr().out
    record = json.loads((out / "world.json").read_text())
    assert record["settings"]["hops"] == [1, 2] and record["seeds"] == [1_000_000, 1_000_002]
    from swirl_lightning.core.tasks import load_task

    assert len(load_task("worlds", "validation", path=out)) == 6
    # reference trajectories of the folder, as the warm start is trained on
    assert main(["data", "reference", "--task.name", "worlds", "--task.split", "validation", "--task.data_path",
                 str(out), "--output", str(tmp_path / "gold.jsonl")]) == 0
    assert "wrote 6 reference trajectories" in capsys.readouterr().out
    # an existing folder is not overwritten without --overwrite; bad knobs are one line, exit 2
    assert main(["data", "worlds", "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:  # the parser's error, as in every command: usage, then the error
        main(["data", "worlds", "--output", str(tmp_path / "x"), "--world.similar_names", "2"])
    assert caught.value.code == 2 and "similar_names" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "new"), [
    (["data", "reference", "--out", "x.jsonl"], "--output"),
    (["data", "reference", "--data-path=d"], "--task.data_path"),
    (["data", "reference", "--no-few-shot"], "--task.few_shot false"),
    (["data", "show", "f", "--limit", "1"], "--count"),
    (["data", "stats", "f", "--step-judge", "reference"], "--step_judge"),
    (["data", "worlds", "--output", "d", "--similar-names", "0.5"], "--world.similar_names"),
])
def test_an_old_flag_is_a_one_line_error_naming_the_shared_spelling(capsys, argv, new):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is renamed {new}" in err[0], err


def test_reference_takes_a_runs_config_and_its_task_slice(tmp_path, capsys):
    """A run's config names the questions (``task``) and the tools; its other groups are left aside."""
    run = tmp_path / "run.yaml"
    run.write_text("policy: {name: tiny-random}\nsampling: {temperature: 0.5}\n"
                   "task: {name: gsm8k, split: train, offset: 2, limit: 2, few_shot: false}\n")
    out = tmp_path / "ref.jsonl"
    assert main(["data", "reference", "--config", str(run), "--output", str(out)]) == 0
    first = read_trajectories(out)
    assert len(first) == 2 and len(first[0].prompt) == 2
    assert main(["data", "reference", "--task.limit", "3", "--output", str(out), "--overwrite", "true"]) == 0
    assert first[0].example_id == read_trajectories(out)[2].example_id  # offset 2 skipped the first two
