"""The served judge against a real OpenAI-compatible server: `transformers serve` (the transformers[serving] extra),
started as a process on 127.0.0.1 serving the shipped SmolLM2-135M-Instruct from its local folder on the CPU.

A 135M model rarely ends with a verdict line, so most of its judgements are judge failures (counted, never BAD);
these tests check the path, not the judge: real requests, real token counts, the cache, and the `swirl` reward."""

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="transformers serve needs the transformers[serving] extra")
pytest.importorskip("uvicorn", reason="transformers serve needs the transformers[serving] extra")

from swirl_lightning.cli import main as swirl_main  # noqa: E402
from swirl_lightning.core.models import resolve_model_path  # noqa: E402
from swirl_lightning.core.trajectory import Step, Trajectory, parse_action, read_trajectories, write_jsonl  # noqa: E402
from swirl_lightning.testing import transformers_serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base_url, model name) of a transformers serve process, for this module's tests."""
    model = str(resolve_model_path("smollm2-135m-instruct"))
    log = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    with transformers_serve(model, log_path=str(log)) as base_url:
        yield base_url, model


def options(server, **extra) -> str:
    base_url, model = server
    return json.dumps({"base_url": base_url, "model": model, "model_name": "smollm2-135m-instruct", "max_tokens": 16,
                       "concurrency": 2, "timeout_s": 120, **extra})


def test_swirl_filter_with_a_real_transformers_serve(server, tmp_path) -> None:
    prompt = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have?"}]
    steps = [("<math_exp>3+4</math_exp>", "3+4 -> 7"), ("<answer>7</answer>", None)]
    trajectories = [Trajectory("apples", i, prompt, [Step(text, parse_action(text, {"math_exp": "calculator"}),
                                                          observation=obs) for text, obs in steps[i:]])
                    for i in range(2)]
    write_jsonl(tmp_path / "in.jsonl", trajectories)  # 3 distinct (state, step) pairs
    argv = ["filter", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "kept.jsonl"),
            "--mode", "process", "--judge.name", "served", "--judge.options", options(server),
            "--judge.max_failure_rate", "1", "--cache_path", str(tmp_path / "cache.sqlite"), "--progress", "false"]
    assert swirl_main(argv) == 0
    stats = json.loads((tmp_path / "kept.stats.json").read_text())
    usage = stats["judge_usage"]["step_judge"]
    assert usage["requests"] == 3 and usage["failed_requests"] == 0  # the server answered every request
    assert usage["prompt_tokens"] > 300 and usage["completion_tokens"] > 0  # the server's own token counts
    assert stats["step_judge"] == "served:smollm2-135m-instruct"
    failed = stats["steps_failed"]
    assert stats["judging"] == {"steps": 3, "from_cache": 0, "judged": 3, "failed": failed}
    assert stats["steps_judged"] == 3 - failed  # the rest have a verdict
    if failed:  # a reply without a verdict, never a failed request
        assert stats["judge_failures"]["steps"]["last_error"].startswith("no verdict in the reply")
    for trajectory in read_trajectories(tmp_path / "kept.jsonl", allow_empty=True):
        assert all(s.judgements[0].verdict == "GOOD" for s in trajectory.steps)

    assert swirl_main([*argv, "--overwrite", "true"]) == 0  # again: verdicts come from the cache, failures asked again
    again = json.loads((tmp_path / "kept.stats.json").read_text())
    assert again["judging"]["from_cache"] == 3 - failed
    assert again["judge_usage"]["step_judge"]["requests"] == failed


@pytest.mark.slow
def test_swirl_fit_with_the_served_reward_on_a_real_transformers_serve(server, tmp_path) -> None:
    """A few `swirl` steps whose reward comes from the served judge. The policy is the warm start (SmolLM2 with the
    shipped adapter): a tiny random policy writes no valid action, and an invalid action is BAD without a request."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tmp_path / "fit"
    assert swirl_main(["fit", "--config", str(ROOT / "conf" / "rl_sanity.yaml"),
                       "--policy.adapter", str(ROOT / "adapters" / "gsm8k_warmup"), "--data.train.path", "null",
                       "--data.train.reference", "true", "--task.limit", "2", "--trainer.max_steps", "2",
                       "--trainer.default_root_dir", str(root), "--judge.name", "served",
                       "--judge.options", options(server), "--judge.max_failure_rate", "1",
                       "--sampling.max_new_tokens", "48", "--model.swirl.group_size", "2",
                       "--data.train.batch_size", "1", "--trainer.callbacks.init_args.states", "1",
                       "--trainer.callbacks.init_args.samples", "2", "--trainer.enable_progress_bar", "false"]) == 0
    events = EventAccumulator(str(root / "tb" / "version_0"))
    events.Reload()
    requests = [e.value for e in events.Scalars("judge/requests")]
    # A batch whose samples all got no verdict makes no update, so it may take more than 2 batches to make 2 steps.
    assert len(requests) >= 2 and requests[-1] > 0 and events.Scalars("judge/prompt_tokens")[-1].value > 0
    assert len(events.Scalars("judge/failures")) == len(requests)
