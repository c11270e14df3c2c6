"""`swirl generate` end to end with a tiny random model: trajectories, resume after SIGKILL, 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swirl_lightning.core.config import PolicyConfig, SamplingConfig, TaskConfig
from swirl_lightning.core.trajectory import read_trajectories
from swirl_lightning.rollout.generate import GenerateConfig, merge_shards, run_generate, shard_dir

TINY = ["--policy.name", "tiny-random", "--sampling.max_new_tokens", "12", "--task.max_actions", "3", "--progress", "false"]


def swirl(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "swirl_lightning", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_generate_end_to_end_with_tiny_model(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    cfg = GenerateConfig(output=str(out), policy=PolicyConfig("tiny-random"), task=TaskConfig(limit=2, max_actions=3),
                         sampling=SamplingConfig(max_new_tokens=12, batch_size=3), samples=2, progress=False)
    summary = run_generate(cfg)
    trajectories = read_trajectories(out)
    assert sorted(t.key for t in trajectories) == [("gsm8k-train-0", 0), ("gsm8k-train-0", 1),
                                                    ("gsm8k-train-1", 0), ("gsm8k-train-1", 1)]
    assert summary["trajectories"] == 4 and summary["generated_tokens"] > 0
    for t in trajectories:
        assert 1 <= len(t.steps) <= 3
        assert t.metadata["prompt_version"] and t.metadata["policy"] == "tiny-random"
        assert t.prompt_token_ids and all(s.token_ids for s in t.steps)
        # Token-in/token-out: every step but the last carries the ids fed back to the model.
        assert all(s.observation_token_ids for s in t.steps[:-1])
    assert json.loads(out.with_name("t.jsonl.summary.json").read_text())["trajectories"] == 4
    assert not shard_dir(out).exists()
    # No progress bar: a line every tenth of the work instead (here each of the first 3 of 4), never at the end.
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("generate: ")]
    assert [line.split(" trajectories")[0] for line in lines] == ["generate: 1/4", "generate: 2/4", "generate: 3/4"]
    assert all("tool calls failed) in" in line and line.endswith("tokens/s") for line in lines)


@pytest.mark.integration
def test_generate_resumes_after_sigkill(tmp_path):
    out = tmp_path / "t.jsonl"
    args = ["generate", *TINY, "--task.limit", "4", "--samples", "3", "--sampling.batch_size", "2", "--output", str(out)]
    shard = shard_dir(out) / "rank0-of-1.jsonl"
    process = swirl(*args)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if shard.exists() and shard.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "generate finished before it could be killed: " + process.stdout.read()
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_with = len(read_trajectories(shard))
    assert 2 <= killed_with < 12
    process = swirl(*args)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    trajectories = read_trajectories(out)
    keys = [t.key for t in trajectories]
    assert len(keys) == 12 and len(set(keys)) == 12
    assert f"({12 - killed_with} new)" in output


@pytest.mark.integration
def test_generate_two_processes_shards_and_merge(tmp_path):
    out = tmp_path / "t.jsonl"
    process = swirl("generate", *TINY, "--task.limit", "3", "--samples", "2", "--processes", "2", "--output", str(out))
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    trajectories = read_trajectories(out)
    assert [t.key for t in trajectories] == [(f"gsm8k-train-{i}", k) for i in range(3) for k in range(2)]
    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    assert summary["new_trajectories"] == 6


def test_merge_keeps_one_trajectory_per_key_in_question_order(tmp_path):
    from swirl_lightning.core.trajectory import JsonlWriter, Trajectory

    out = tmp_path / "t.jsonl"
    shards = shard_dir(out)
    prompt = [{"role": "user", "content": "q"}]
    with JsonlWriter(shards / "rank0-of-2.jsonl") as w0, JsonlWriter(shards / "rank1-of-2.jsonl") as w1:
        w0.write(Trajectory("b", 0, prompt))
        w1.write(Trajectory("a", 1, prompt))
        w1.write(Trajectory("a", 0, prompt))
        w0.write(Trajectory("b", 0, prompt, final_answer="duplicate"))
    merged = merge_shards(out, ["a", "b"])
    assert [t.key for t in merged] == [("a", 0), ("a", 1), ("b", 0)]
    assert [t.key for t in read_trajectories(out)] == [("a", 0), ("a", 1), ("b", 0)]


def test_offset_skips_the_first_questions_and_is_checked():
    from swirl_lightning.rollout.generate import _examples

    first_five = _examples(GenerateConfig(task=TaskConfig(limit=5), progress=False))
    after_two = _examples(GenerateConfig(task=TaskConfig(limit=2, offset=3), progress=False))
    assert [e.id for e in after_two] == [e.id for e in first_five[3:5]]
    with pytest.raises(ValueError, match="task.offset: expected 0 or more"):
        TaskConfig(offset=-1)


def test_a_missing_adapter_folder_is_a_clear_error(tmp_path):
    from swirl_lightning.rollout.generate import load_policy

    with pytest.raises(FileNotFoundError, match="no PEFT adapter at 'nowhere/adapter' \\(relative to .*adapter_config.json"):
        load_policy(PolicyConfig("tiny-random", adapter="nowhere/adapter"), "cpu")
