"""Runs with a served judge on a stub server, counting the requests it saw: `swirl filter` leaving failed steps out
and going on, stopping above the failure rate, resuming after SIGKILL without asking again, the served grader; the
filter modes on failed steps; the `swirl` reward leaving failed samples out of its batch, with the judge's usage in
TensorBoard; and an API key that appears in no file and no log."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from swirl_lightning.cli import main as swirl_main
from swirl_lightning.core.config import JudgeConfig, PolicyConfig, SamplingConfig, TaskConfig
from swirl_lightning.core.models import load_tokenizer
from swirl_lightning.core.trajectory import (
    FAILED,
    Action,
    Judgement,
    Step,
    Trajectory,
    decompose,
    parse_action,
    read_trajectories,
    write_jsonl,
)
from swirl_lightning.judging.filter import FilterConfig, cli_main, filter_trajectories, run_filter
from swirl_lightning.judging.served import ServedJudge
from swirl_lightning.judging.steps import JudgeFailureError, judgement_key, verdict_settings
from swirl_lightning.testing import StubChatServer, StubResponse
from swirl_lightning.training.config import (
    EvaluationConfig,
    ExportConfig,
    LoraConfig,
    OptimizerConfig,
    TrainDataConfig,
    ValidationDataConfig,
)
from swirl_lightning.training.data import SwirlDataModule
from swirl_lightning.training.loss import group_advantages
from swirl_lightning.training.module import SwirlModule
from swirl_lightning.training.objectives.swirl import SwirlConfig
from swirl_lightning.training.trained_policy import TrainedPolicy

pytestmark = pytest.mark.integration  # starts processes or runs whole stages: not in make test-fast

ROOT = Path(__file__).resolve().parents[2]
TAGS = {"calc": "calculator"}
FAST = {"model": "stub-model", "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5.0}


def step(text: str, observation: str | None = "-> ok") -> Step:
    return Step(text, parse_action(text, TAGS), observation=observation)


def calc(expr: str) -> Step:
    return step(f"<calc>{expr}</calc>", f"{expr} -> ok")


def judged_step(text: str) -> str:
    """The step a request judges, as the stub sees it."""
    return text.rpartition("(judge this one only):\n\n")[2]


def write_trajectories(path: Path, count: int = 4, steps: int = 3) -> list[Trajectory]:
    """``count`` trajectories of ``steps`` distinct calculator steps each ("t<i>s<k>"), then an answer."""
    prompt = [{"role": "user", "content": "What is the total?"}]
    trajectories = [Trajectory(f"e{i}", 0, prompt, [calc(f"t{i}s{k}") for k in range(steps)]
                               + [step(f"<answer>7</answer> (t{i})", None)], final_answer="7") for i in range(count)]
    write_jsonl(path, trajectories)
    return trajectories


def served(server: StubChatServer, **options) -> dict:
    return {"base_url": server.base_url, **FAST, **options}


def filter_config(tmp_path: Path, server: StubChatServer, mode: str = "process", options: dict | None = None,
                  **judge) -> FilterConfig:
    return FilterConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "kept.jsonl"), mode=mode,
                        judge=JudgeConfig("served", served(server, **(options or {})), **judge), progress=False,
                        cache_path=str(tmp_path / "cache.sqlite"), overwrite=True)  # each test filters again


# ----------------------------------------------------------------------------------------------------
# swirl filter


def test_500_every_time_is_a_failure_left_out_and_the_run_goes_on(tmp_path) -> None:
    write_trajectories(tmp_path / "in.jsonl", count=3)

    def respond(body, seen):
        text = judged_step(body["messages"][-1]["content"])
        if "t1s1" in text:
            return StubResponse(status=500, raw_body='{"error": {"message": "overloaded"}}')
        return "Verdict: BAD" if "t2s0" in text else "Verdict: GOOD"

    with StubChatServer(respond) as server:
        config = filter_config(tmp_path, server, options={"max_retries": 2}, max_failure_rate=0.5)
        stats = run_filter(config)
        asked = lambda body: "t1s1" in judged_step(body["messages"][-1]["content"])  # noqa: E731
        assert server.count(asked) == 3 and len(server.requests) == 12 + 2  # 12 steps, 2 retries of the failing one
        assert [t.key for t in read_trajectories(config.output)] == [("e0", 0)]  # e2 has a BAD step, e1 is undecided
        assert stats["steps_failed"] == 1 and stats["trajectories_undecided"] == 1
        assert stats["steps_judged"] == 11 and stats["step_good_rate"] == 10 / 11  # the failure is no verdict
        assert stats["judging"] == {"steps": 12, "from_cache": 0, "judged": 12, "failed": 1}
        assert stats["judge_failures"]["steps"]["failed"] == 1 and "HTTP 500" in stats["judge_failures"]["steps"]["last_error"]
        usage = stats["judge_usage"]["step_judge"]
        assert usage["requests"] == 14 and usage["retries"] == 2 and usage["failures"] == 1 and usage["total_tokens"] > 0
        # Running again asks only for the failed step: verdicts are cached, failures are not.
        before = len(server.requests)
        again = run_filter(config)
        assert len(server.requests) - before == 3 and server.count(asked) == 6
        assert again["judging"] == {"steps": 12, "from_cache": 11, "judged": 1, "failed": 1}
        assert again["judge_usage"]["step_judge"]["requests"] == 3


def test_a_failure_rate_over_the_limit_stops_the_run_with_a_clear_error(tmp_path, capsys) -> None:
    write_trajectories(tmp_path / "in.jsonl", count=4)
    with StubChatServer(lambda body, seen: StubResponse(status=502, raw_body="bad gateway")) as server:
        options = json.dumps(served(server, max_retries=1, concurrency=1))
        code = cli_main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "kept.jsonl"),
                         "--judge.name", "served", "--judge.options", options, "--judge.max_failure_rate", "0.25",
                         "--judge.failure_rate_after", "2", "--cache_path", str(tmp_path / "c.sqlite"),
                         "--progress", "false"])
        assert code == 1
        error = capsys.readouterr().err
        assert "swirl filter: error: the judge failed on 2 of 2 steps (100.0%), above judge.max_failure_rate 25.0%" in error
        assert "HTTP 502" in error
        assert len(server.requests) <= 6 < 16 * 2  # it stopped after 2 steps (one more may have been in flight)
        assert not (tmp_path / "kept.jsonl").exists()


def test_a_filter_run_ends_with_the_rate_checked_whatever_the_count(tmp_path) -> None:
    write_trajectories(tmp_path / "in.jsonl", count=1, steps=1)
    with StubChatServer(lambda body, seen: "no idea") as server:
        with pytest.raises(JudgeFailureError, match="failed on 2 of 2 steps"):
            run_filter(filter_config(tmp_path, server, max_failure_rate=0.4))  # under failure_rate_after, but at the end


def test_a_killed_filter_resumes_without_asking_again_for_judged_steps(tmp_path) -> None:
    write_trajectories(tmp_path / "in.jsonl", count=4, steps=3)  # 16 steps
    with StubChatServer(lambda body, seen: StubResponse(text="Verdict: GOOD", delay_s=0.3)) as server:
        options = served(server, concurrency=2)
        argv = ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "kept.jsonl"),
                "--judge.name", "served", "--judge.options", json.dumps(options), "--judge.batch_size", "64",
                "--cache_path", str(tmp_path / "cache.sqlite"), "--progress", "false"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        process = subprocess.Popen([sys.executable, "-m", "swirl_lightning", "filter", *argv], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(server.requests) < 8 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL and not (tmp_path / "kept.jsonl").exists()
        sent_before = len(server.requests)

        judge = ServedJudge(**options)
        key_of = {judgement_key(judge.judge_id, judge.prompt_version, state.messages, s.text, verdict_settings(judge)): s.text
                  for t in read_trajectories(tmp_path / "in.jsonl") for state, s in decompose(t)}
        with sqlite3.connect(tmp_path / "cache.sqlite") as conn:
            stored = {key_of[key] for (key,) in conn.execute("SELECT key FROM judgements")}
        assert len(stored) >= 4  # the killed run had stored what it was answered

        assert cli_main(argv) == 0
        resumed = [judged_step(r["body"]["messages"][-1]["content"]) for r in server.requests[sent_before:]]
        assert not set(resumed) & stored  # nothing already judged is asked again
        assert sorted(resumed) == sorted(set(key_of.values()) - stored)  # and the rest once each
        stats = json.loads((tmp_path / "kept.stats.json").read_text())
        assert stats["judging"]["from_cache"] == len(stored) and stats["kept"] == 4


def test_the_served_grader_in_a_filter_with_failures_cached_apart(tmp_path) -> None:
    examples = tmp_path / "examples.jsonl"
    examples.write_text("".join(json.dumps({"id": f"e{i}", "question": f"q{i}", "answer": "7"}) + "\n" for i in range(3)))
    trajectories = write_trajectories(tmp_path / "in.jsonl", count=3, steps=0)
    trajectories[1].final_answer, trajectories[2].final_answer = "$7.00", "eight"
    write_jsonl(tmp_path / "in.jsonl", trajectories)

    def respond(body, seen):
        prediction = body["messages"][-1]["content"].rpartition("Predicted answer: ")[2]
        return {"7": "Verdict: YES", "$7.00": "Same.\nVerdict: YES"}.get(prediction, "I cannot tell")

    with StubChatServer(respond) as server:
        config = FilterConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "kept.jsonl"), mode="outcome",
                              task=TaskConfig("jsonl", data_path=str(examples)), progress=False,
                              judge=JudgeConfig(outcome="served_grader", outcome_options=served(server),
                                                max_failure_rate=0.5),
                              cache_path=str(tmp_path / "cache.sqlite"), overwrite=True)
        stats = run_filter(config)
        assert [t.key for t in read_trajectories(config.output)] == [("e0", 0), ("e1", 0)]
        assert stats["outcomes_failed"] == 1 and stats["trajectories_undecided"] == 1
        assert stats["outcome_judge"] == "served_grader:stub-model" and stats["outcome_accuracy"] == 1.0
        assert stats["judge_usage"]["outcome_judge"]["requests"] == 3
        run_filter(config)
        assert len(server.requests) == 4  # the second run asked again only for the failed grade


def test_a_server_that_drips_stalls_or_floods_costs_a_filter_its_deadline_and_no_more(tmp_path) -> None:
    write_trajectories(tmp_path / "in.jsonl", count=4, steps=1)  # e<i>: a calculation "t<i>s0", then an answer
    flood = b'{"choices": [{"message": {"content": "Verdict: GOOD ' + b"x" * 50_000_000 + b'"}}]}'
    hostile = {"t0s0": StubResponse(text="Verdict: GOOD", drip_bytes=3, drip_s=0.2),
               "t1s0": StubResponse(text="Verdict: GOOD", body_delay_s=60),
               "t2s0": StubResponse(raw_body=flood, send_length=False)}

    def respond(body, seen):
        text = judged_step(body["messages"][-1]["content"])
        return next((reply for step, reply in hostile.items() if step in text), "Verdict: GOOD")

    with StubChatServer(respond) as server:
        # A deadline of 3 s, not 1 s: an honest reply must arrive within it on a loaded machine (with 1 s, e3's
        # own requests once timed out in CI beside a torch test), while no hostile reply can (60 s; 16 s; 50 MB).
        config = filter_config(tmp_path, server, options={"timeout_s": 3.0, "max_retries": 0, "concurrency": 8},
                               max_failure_rate=1.0)
        started = time.monotonic()
        stats = run_filter(config)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0 + 3.0  # the requests run together; each ends at its deadline at the latest
    assert [t.key for t in read_trajectories(config.output)] == [("e3", 0)]  # the run went on to the end
    assert stats["steps_failed"] == 3 and stats["trajectories_undecided"] == 3 and stats["steps_judged"] == 5
    last = stats["judge_failures"]["steps"]["last_error"]
    assert "timed out after 3 s" in last or "over max_reply_bytes" in last


def test_bad_judge_options_are_one_line_errors_before_any_request(tmp_path, capsys) -> None:
    write_trajectories(tmp_path / "in.jsonl", count=1)
    examples = tmp_path / "examples.jsonl"
    examples.write_text(json.dumps({"id": "e0", "question": "q", "answer": "7"}) + "\n")
    base = ["filter", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "kept.jsonl"),
            "--cache_path", str(tmp_path / "cache.sqlite"), "--progress", "false"]
    with StubChatServer(lambda body, seen: "Verdict: GOOD") as server:
        cases = [
            (["--judge.name", "served"], "judge.options: judge 'served' needs base_url (a string) and model"),
            (["--judge.name", "served", "--judge.options", json.dumps({"model": "m"})],
             "judge.options: judge 'served' needs base_url (a string), missing here"),
            (["--judge.name", "served", "--judge.options", json.dumps(served(server, timeout_s="2 s"))],
             "judge.options.timeout_s: expected a number, got '2 s'"),
            # The outcome judge's options are checked before the step judge asks the server anything.
            (["--mode", "process+outcome", "--task.name", "jsonl", "--task.data_path", str(examples),
              "--judge.name", "served", "--judge.options", json.dumps(served(server)),
              "--judge.outcome", "served_grader", "--judge.outcome_options", json.dumps({"model": "m"})],
             "judge.outcome_options: judge 'served_grader' needs base_url"),
        ]
        for flags, message in cases:
            assert swirl_main(base + flags) == 2
            lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
            assert len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0], lines
        assert server.requests == []
    assert not (tmp_path / "kept.jsonl").exists()


# ----------------------------------------------------------------------------------------------------
# What each filter mode does with a failed step


def hand_judged(*verdicts: str) -> Trajectory:
    steps = []
    for k, verdict in enumerate(verdicts):
        score = None if verdict == FAILED else float(verdict == "GOOD")
        steps.append(Step(f"<calc>{k}</calc>", Action("tool", tool="calculator", tag="calc", query=str(k)),
                          judgements=[Judgement("served:m", verdict, score, "v")]))
    return Trajectory("e", len(verdicts), [{"role": "user", "content": "q"}], steps, outcome=1.0)


def test_what_each_mode_does_with_a_failed_step() -> None:
    trajectories = [hand_judged("GOOD", "GOOD"), hand_judged("GOOD", FAILED, "GOOD"), hand_judged(FAILED, "BAD"),
                    hand_judged(FAILED), hand_judged("GOOD", "BAD", FAILED)]
    kept, stats = filter_trajectories(trajectories, "process", "served:m")
    assert [len(t.steps) for t in kept] == [2]  # a BAD step rejects; a failure alone leaves it undecided
    assert stats["trajectories_undecided"] == 2 and stats["steps_failed"] == 4
    assert stats["trajectories_with_failed_steps"] == 4 and stats["steps_judged"] == 7
    kept, stats = filter_trajectories(trajectories, "step", "served:m")
    # Cut at the first step that is not GOOD: a BAD one stays as the last step, a failed one does not.
    assert [(len(t.steps), t.metadata["good_steps"]) for t in kept] == [(2, 2), (1, 1), (2, 1)]
    assert stats["trajectories_undecided"] == 2  # the two whose first step failed
    kept, _ = filter_trajectories(trajectories, "none", "served:m")
    assert len(kept) == 5


# ----------------------------------------------------------------------------------------------------
# The swirl reward


def stub_verdict(body, seen) -> str:
    """GOOD, BAD or no verdict, by the sampled action's text (so the same action gets the same answer)."""
    return ("Verdict: GOOD", "Verdict: BAD", "no idea")[sum(map(ord, judged_step(body["messages"][-1]["content"]))) % 3]


@pytest.fixture
def scripted_actions(monkeypatch):
    """Sampled actions that are valid tool calls (a tiny random policy writes none, and an invalid action is BAD
    without a request): the policy's own tokens of calculator calls."""
    tokenizer = load_tokenizer("tiny-random")

    def sample(self, states, group_size, seed):
        texts = [[f"<math_exp>{g}+{seed % 97 + n}</math_exp>" for g in range(group_size)] for n in range(len(states))]
        return [[(tokenizer(t, add_special_tokens=False)["input_ids"], t) for t in group] for group in texts], 0

    monkeypatch.setattr(TrainedPolicy, "sample", sample)


def swirl_module(server: StubChatServer, judge: JudgeConfig | None = None, group_size: int = 3) -> SwirlModule:
    torch.manual_seed(0)
    module = SwirlModule(policy=PolicyConfig(name="tiny-random"), objective="swirl",
                         task=TaskConfig(name="gsm8k", max_actions=3, few_shot=False, limit=4),
                         swirl=SwirlConfig(group_size=group_size),
                         judge=judge or JudgeConfig("served", served(server), max_failure_rate=1.0),
                         sampling=SamplingConfig(max_new_tokens=4), lora=LoraConfig(r=4, alpha=8),
                         evaluation=EvaluationConfig(), optimizer=OptimizerConfig(lr=1e-2),
                         export=ExportConfig(enabled=False))
    module.configure_model()
    return module


def swirl_data() -> SwirlDataModule:
    data = SwirlDataModule(task=TaskConfig(name="gsm8k", max_actions=3, few_shot=False, limit=4),
                           train=TrainDataConfig(reference=True, batch_size=2),
                           validation=ValidationDataConfig(questions=1), objective="swirl", tokenizer="tiny-random")
    data.setup("fit")
    return data


@pytest.mark.usefixtures("one_torch_thread", "scripted_actions")
def test_failed_samples_are_left_out_of_the_reward_batch() -> None:
    with StubChatServer(stub_verdict) as server:
        module = swirl_module(server, group_size=4)
        states = swirl_data().train_items[:3]
        batch = module.objective.prepare(module.objective_parts(), states).data
        assert len(server.requests) == 12
        valid = ~batch.rewards.isnan()
        assert torch.equal(valid, batch.valid) and 0 < int(valid.sum()) < 12  # some failed, never scored 0
        assert set(batch.rewards[valid].tolist()) <= {0.0, 1.0}
        expected = group_advantages(batch.rewards, "mean", valid=valid)
        rows = [n for n in range(3) if valid[n].any()]
        segments = batch.inputs["segment_ids"]
        for row, n in enumerate(rows):
            count = int(valid[n].sum())
            assert int(segments[row].max()) == count  # only the judged samples are packed
            torch.testing.assert_close(batch.advantages[row, :count], expected[n][valid[n]])
            assert not batch.advantages[row, count:].any()
            judged = batch.rewards[n][valid[n]]
            torch.testing.assert_close(batch.advantages[row, :count], judged - judged.mean())  # the valid ones' baseline
        assert module.judge_failures.failed == int((~valid).sum()) and module.judge_failures.judged == 12


@pytest.mark.usefixtures("one_torch_thread", "scripted_actions")
def test_swirl_fit_logs_the_judges_usage_and_failures_apart_from_the_policy(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with StubChatServer(stub_verdict) as server:
        module = swirl_module(server, JudgeConfig("served", served(server, price_input_per_mtok=1.0,
                                                                   price_output_per_mtok=2.0), max_failure_rate=1.0))
        trainer = L.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=0, enable_checkpointing=False,
                            logger=TensorBoardLogger(tmp_path, name="tb"), log_every_n_steps=1,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, swirl_data())
        events = EventAccumulator(str(tmp_path / "tb" / "version_0"))
        events.Reload()
        tags = set(events.Tags()["scalars"])
        assert {"judge/failures", "judge/failure_rate", "judge/requests", "judge/prompt_tokens",
                "judge/completion_tokens", "judge/cost_usd", "train/reward_mean"} <= tags
        requests = [e.value for e in events.Scalars("judge/requests")]
        assert requests[-1] == len(server.requests) > 0 and len(server.requests) % 3 == 0  # 3 actions per state
        assert all(e.value == e.value for e in events.Scalars("train/reward_mean"))  # no NaN from a failure


@pytest.mark.usefixtures("one_torch_thread", "scripted_actions")
def test_a_batch_without_a_judged_sample_makes_no_update() -> None:
    with StubChatServer(lambda body, seen: "no idea") as server:
        module = swirl_module(server)
        trainer = L.Trainer(accelerator="cpu", max_steps=2, limit_train_batches=2, max_epochs=1, limit_val_batches=0,
                            enable_checkpointing=False, logger=False, enable_progress_bar=False,
                            enable_model_summary=False)
        trainer.fit(module, swirl_data())
        assert len(server.requests) > 0 and trainer.global_step == 0  # two batches judged, no update made
        assert not any(p.abs().sum() for n, p in module.scorer.named_parameters() if "lora_B" in n)
        assert module.judge_failures.failed == module.judge_failures.judged == len(server.requests)


@pytest.mark.usefixtures("one_torch_thread", "scripted_actions")
def test_a_probe_without_a_verdict_writes_valid_json_and_no_nan(tmp_path) -> None:
    from swirl_lightning.training.callbacks import RewardProbe

    with StubChatServer(lambda body, seen: "no idea") as server:
        probe = RewardProbe(states=2, samples=2, every_n_steps=1)
        trainer = L.Trainer(accelerator="cpu", max_steps=1, limit_train_batches=1, max_epochs=1, limit_val_batches=0,
                            enable_checkpointing=False, logger=TensorBoardLogger(tmp_path, name="tb"),
                            log_every_n_steps=1, callbacks=[probe], enable_progress_bar=False,
                            enable_model_summary=False)
        trainer.fit(swirl_module(server), swirl_data())
    history = json.loads((tmp_path / "tb" / "version_0" / "probe.json").read_text())  # strict JSON: no NaN
    assert history and all(p["reward_mean"] is None and p["judge_failures"] == 4 for p in history)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    events.Reload()
    assert "probe/reward_mean" not in events.Tags()["scalars"]


def test_a_resumed_probe_keeps_its_schedule() -> None:
    from types import SimpleNamespace

    from swirl_lightning.training.callbacks import RewardProbe

    probed: list[int] = []
    probe = RewardProbe(every_n_steps=10)
    probe._probe = lambda trainer, module: probed.append(trainer.global_step)  # the probe's bookkeeping only
    probe.on_train_start(SimpleNamespace(global_step=0), None)
    assert probed == [0]  # a fresh run: the baseline before training
    resumed = RewardProbe(every_n_steps=10)
    resumed.load_state_dict({"history": [{"step": 0}, {"step": 10}]})
    resumed._probe = lambda trainer, module: probed.append(trainer.global_step)
    resumed.on_train_start(SimpleNamespace(global_step=12), None)  # resumed from a checkpoint at step 12
    assert probed == [0]
    resumed.on_train_batch_end(SimpleNamespace(global_step=20), None, None, None, 0)
    assert probed == [0, 20]


@pytest.mark.usefixtures("one_torch_thread", "scripted_actions")
def test_swirl_fit_stops_above_the_failure_rate(tmp_path) -> None:
    with StubChatServer(lambda body, seen: StubResponse(status=500, raw_body="down")) as server:
        judge = JudgeConfig("served", served(server, max_retries=0), max_failure_rate=0.2, failure_rate_after=4)
        trainer = L.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=0, enable_checkpointing=False,
                            logger=False, enable_progress_bar=False, enable_model_summary=False)
        with pytest.raises(JudgeFailureError, match=r"failed on 6 of 6 steps .* above judge.max_failure_rate 20.0%"):
            trainer.fit(swirl_module(server, judge), swirl_data())
        assert len(server.requests) == 6  # the first batch (2 states x 3 actions), then it stopped


@pytest.mark.usefixtures("one_torch_thread", "scripted_actions")
def test_a_server_that_drips_or_stalls_costs_a_swirl_reward_batch_its_deadline_and_no_more() -> None:
    """`swirl fit` with a served reward hung past 420 s with timeout_s 2 against a server that sent its reply a few
    bytes at a time: the time-out bounded each read, not the request (issue 27). Every request now ends at its
    deadline, as a failure that is never scored."""
    replies = [StubResponse(text="Verdict: GOOD", drip_bytes=3, drip_s=0.2),
               StubResponse(text="Verdict: GOOD", body_delay_s=60)]
    with StubChatServer(lambda body, seen: replies[len(body["messages"][-1]["content"]) % 2]) as server:
        judge = JudgeConfig("served", served(server, timeout_s=1.0, max_retries=0, concurrency=8), max_failure_rate=1.0)
        module = swirl_module(server, judge, group_size=2)
        states = swirl_data().train_items[:2]
        started = time.monotonic()
        batch = module.objective.prepare(module.objective_parts(), states).data
        elapsed = time.monotonic() - started
    assert len(server.requests) == 4 and elapsed < 1.0 + 3.0  # the requests run together, each ends at its deadline
    assert bool(batch.rewards.isnan().all()) and not bool(batch.valid.any())  # failures, never a score


# ----------------------------------------------------------------------------------------------------
# The API key


@pytest.mark.usefixtures("one_torch_thread", "scripted_actions")
def test_the_api_key_is_in_no_file_and_no_log(tmp_path, monkeypatch, capfd) -> None:
    key = "sk-swirl-test-" + os.urandom(8).hex()
    monkeypatch.setenv("SWIRL_TEST_JUDGE_KEY", key)
    write_trajectories(tmp_path / "in.jsonl", count=2)
    with StubChatServer(stub_verdict, api_key=key) as server:  # it answers 401 to any other key
        options = json.dumps(served(server, api_key_env="SWIRL_TEST_JUDGE_KEY"))
        assert cli_main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "filter" / "kept.jsonl"),
                         "--judge.name", "served", "--judge.options", options, "--judge.max_failure_rate", "1",
                         "--cache_path", str(tmp_path / "cache.sqlite")]) == 0
        filtered = len(server.requests)
        assert swirl_main(["fit", "--config", str(ROOT / "conf" / "rl_sanity.yaml"), "--policy.name", "tiny-random",
                           "--policy.adapter", "null", "--data.train.path", "null", "--data.train.reference", "true",
                           "--task.limit", "4", "--trainer.max_steps", "2", "--trainer.default_root_dir",
                           str(tmp_path / "fit"), "--judge.name", "served", "--judge.options", options,
                           "--judge.max_failure_rate", "1", "--model.swirl.group_size", "2", "--model.lora.r", "4",
                           "--model.lora.alpha", "8", "--data.train.batch_size", "2",
                           "--trainer.callbacks.init_args.states", "2", "--trainer.callbacks.init_args.samples", "2",
                           "--trainer.enable_progress_bar", "false"]) == 0
        assert filtered > 0 and len(server.requests) > filtered
        assert {r["authorization"] for r in server.requests} == {f"Bearer {key}"}  # the key was used...
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in written) and any(p.name.startswith("events.out") for p in written)
    assert any(p.name == "cache.sqlite" for p in written) and any(p.name == "hparams.yaml" for p in written)
    leaked = [str(p) for p in written if key.encode() in p.read_bytes()]
    assert leaked == []  # ...and is in no file the runs wrote
    output = capfd.readouterr()
    assert key not in output.out and key not in output.err and "SWIRL_TEST_JUDGE_KEY" in next(
        (tmp_path / "fit" / "tb").glob("**/version_0/config.yaml")).read_text()


def test_a_server_that_echoes_the_key_gets_it_into_no_file_and_no_output(tmp_path, monkeypatch, capfd) -> None:
    key = "sk-swirl-echo-" + os.urandom(8).hex()
    monkeypatch.setenv("SWIRL_TEST_JUDGE_KEY", key)
    write_trajectories(tmp_path / "in.jsonl", count=4, steps=1)
    echo = {"X-Echo-Authorization": f"Bearer {key}", "X-Api-Key": key}

    def respond(body, seen):
        """Every error body and header repeats the key it was sent, as many servers do."""
        text = judged_step(body["messages"][-1]["content"])
        if "t0s0" in text:
            message = f"Incorrect API key provided: Bearer {key}"
            return StubResponse(status=500, headers=echo, raw_body=json.dumps({"error": {"message": message}}))
        if "t1s0" in text:
            return StubResponse(status=400, headers=echo, raw_body=f"Authorization: Bearer {key} rejected ({key})")
        if "t2s0" in text:
            return StubResponse(text=f"Your key {key} is fine, but I cannot tell.", headers=echo)
        return StubResponse(text="Verdict: GOOD", headers=echo)

    with StubChatServer(respond, api_key=key) as server:
        options = served(server, api_key_env="SWIRL_TEST_JUDGE_KEY", max_retries=1)
        argv = ["filter", "--input", str(tmp_path / "in.jsonl"), "--judge.name", "served",
                "--judge.options", json.dumps(options), "--cache_path", str(tmp_path / "cache.sqlite")]
        for mode in ("process", "step"):
            assert swirl_main(argv + ["--output", str(tmp_path / mode / "kept.jsonl"), "--mode", mode,
                                      "--judge.max_failure_rate", "1"]) == 0
        # Over the failure limit: the error, with the last failure's reason, goes to stderr.
        assert swirl_main(argv + ["--output", str(tmp_path / "stopped.jsonl"), "--judge.max_failure_rate", "0",
                                  "--cache", "false"]) == 1
        server.respond = lambda body, seen: StubResponse(
            status=401, headers=echo, raw_body=json.dumps({"error": {"message": f"Incorrect API key: {key}"}}))
        assert swirl_main(argv + ["--output", str(tmp_path / "refused.jsonl"), "--cache", "false"]) == 1
        assert {r["authorization"] for r in server.requests} == {f"Bearer {key}"}  # the key was sent...
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "kept.stats.json" for p in written) and any(p.name == "cache.sqlite" for p in written)
    assert [str(p) for p in written if key.encode() in p.read_bytes()] == []  # ...and is in no file
    output = capfd.readouterr()
    assert key not in output.out and key not in output.err
    assert "[redacted]" in output.err  # the errors were printed, with the key taken out
    stats = json.loads((tmp_path / "process" / "kept.stats.json").read_text())
    assert stats["steps_failed"] == 3 and "[redacted]" in json.dumps(stats)
