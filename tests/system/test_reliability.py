"""Bad data, hostile tools and careless paths never ruin a run or lose data: each case a red-team pass found."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swirl_lightning.cli import main as swirl
from swirl_lightning.core.config import PolicyConfig, SamplingConfig, TaskConfig, ToolsConfig
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.trajectory import (
    Action,
    Example,
    Judgement,
    Step,
    Trajectory,
    read_trajectories,
    to_dict,
    write_jsonl,
)
from swirl_lightning.testing import make_tool

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."


def judged_trajectory(sample: int = 0) -> Trajectory:
    """A GSM8K train question's trajectory with reference verdicts, as `swirl filter` writes them."""
    steps = [Step("<math_exp>48/2</math_exp>", Action("tool", tool="calculator", tag="math_exp", query="48/2"),
                  observation="48/2 -> 24", judgements=[Judgement("reference", "GOOD", 1.0)]),
             Step("<answer>72</answer>", Action("answer", tag="answer", answer="72"),
                  judgements=[Judgement("reference", "GOOD", 1.0)])]
    return Trajectory("gsm8k-train-0", sample, [{"role": "user", "content": QUESTION}], steps, final_answer="72",
                      outcome=1.0)


def one_line_error(capsys, *argv: str) -> str:
    """Run ``swirl argv`` in process; it must fail with exit code 2 and one line on stderr. Returns that line."""
    import logging

    # Lightning's log handlers keep the stderr of the test that first used them; give them this test's.
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for handler in {h for lg in loggers for h in lg.handlers}:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr  # not setStream: it would flush the closed one
    assert swirl(list(argv)) == 2
    # Lightning's status lines (seed, accelerators) may come first: they are information, not the error.
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("INFO:")
             and not line.startswith(("Seed set", "GPU available", "TPU available"))]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


# ----------------------------------------------------------------------------------------------------
# Training data can no longer silently ruin a model


@pytest.mark.parametrize("poison", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_a_trajectory_file_are_errors_naming_file_and_line(tmp_path, capsys, poison):
    path = tmp_path / "poisoned.jsonl"
    good = json.dumps(to_dict(judged_trajectory()))
    path.write_text(good + "\n" + good.replace('"outcome": 1.0', f'"outcome": {poison}') + "\n")
    line = one_line_error(capsys, "data", "stats", str(path))
    assert f"{path}:2:" in line and "finite" in line
    line = one_line_error(capsys, "filter", "--input", str(path), "--output", str(tmp_path / "kept.jsonl"),
                          "--mode", "none", "--progress", "false")
    assert f"{path}:2:" in line


def test_stats_writes_valid_json(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [judged_trajectory(0), judged_trajectory(1)])
    assert swirl(["data", "stats", str(path)]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} in the stats"))


def test_a_bad_last_line_in_a_users_file_is_an_error_not_a_silent_drop(tmp_path, capsys):
    path = tmp_path / "hand_written.jsonl"
    good = json.dumps(to_dict(judged_trajectory()))
    path.write_text(good + "\n" + good[:-1].replace('"sample_index": 0', '"sample_index": 1') + ",}")  # a typo
    line = one_line_error(capsys, "filter", "--input", str(path), "--output", str(tmp_path / "kept.jsonl"),
                          "--mode", "none")
    assert f"{path}:2: not valid JSON" in line


# ----------------------------------------------------------------------------------------------------
# Outputs are never destroyed by accident


def test_filter_refuses_its_input_as_output_and_an_existing_output(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [judged_trajectory(0), judged_trajectory(1)])
    line = one_line_error(capsys, "filter", "--input", str(path), "--output", str(path), "--mode", "none")
    assert "is the input" in line and len(read_trajectories(path)) == 2
    kept = tmp_path / "kept.jsonl"
    kept.write_text("precious\n")
    line = one_line_error(capsys, "filter", "--input", str(path), "--output", str(kept), "--mode", "none")
    assert "exists: pass --overwrite true" in line and kept.read_text() == "precious\n"
    assert swirl(["filter", "--input", str(path), "--output", str(kept), "--mode", "none", "--overwrite", "true",
                  "--progress", "false"]) == 0
    assert len(read_trajectories(kept)) == 2


def test_filter_refuses_stats_written_over_its_kept_trajectories(tmp_path, capsys):
    """``--stats`` naming the output (in any spelling) would replace the kept trajectories with the stats."""
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [judged_trajectory(0), judged_trajectory(1)])
    kept = tmp_path / "kept.jsonl"
    for stats in (str(kept), str(tmp_path / "." / "kept.jsonl")):
        line = one_line_error(capsys, "filter", "--input", str(path), "--output", str(kept), "--stats", stats,
                              "--mode", "none", "--overwrite", "true")
        assert "are one file" in line and not kept.exists()


def test_data_reference_refuses_an_existing_output(tmp_path, capsys):
    out = tmp_path / "ref.jsonl"
    out.write_text("precious\n")
    line = one_line_error(capsys, "data", "reference", "--task.limit", "1", "--output", str(out))
    assert "exists: pass --overwrite true" in line
    assert out.read_text() == "precious\n"


def tiny_generate(output: Path, *extra: str) -> list[str]:
    return ["generate", "--policy.name", "tiny-random", "--task.limit", "2", "--task.max_actions", "2",
            "--sampling.max_new_tokens", "4", "--samples", "2", "--progress", "false", "--output", str(output), *extra]


@pytest.mark.integration
def test_generate_refuses_to_mix_two_runs_in_one_output_and_never_writes_through_a_symlink(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    target = tmp_path / "elsewhere.json"
    target.write_text("keep me")
    (tmp_path / "t.jsonl.summary.json").symlink_to(target)
    assert swirl(tiny_generate(out)) == 0
    capsys.readouterr()
    assert target.read_text() == "keep me" and not (tmp_path / "t.jsonl.summary.json").is_symlink()
    assert swirl(tiny_generate(out)) == 0  # the same run again: a resume with nothing left to do
    capsys.readouterr()
    for change in (["--samples", "3"], ["--task.max_actions", "3"], ["--sampling.temperature", "0.5"]):
        line = one_line_error(capsys, *tiny_generate(out, *change))
        assert "was generated with other settings" in line and change[0].lstrip("-").split(".")[-1] in line
    assert len(read_trajectories(out)) == 4
    out.with_name("t.jsonl.run.json").unlink()  # an output this version did not write
    assert "does not say how it was made" in one_line_error(capsys, *tiny_generate(out))
    assert swirl(tiny_generate(out, "--samples", "3", "--overwrite", "true")) == 0
    assert len(read_trajectories(out)) == 6


@pytest.mark.integration
def test_fit_refuses_to_overwrite_an_export(tmp_path, capsys):
    export = tmp_path / "export"
    export.mkdir()
    (export / "adapter_config.json").write_text("{}")
    line = one_line_error(capsys, "fit", "--config", str(ROOT / "conf" / "gsm8k_warmup.yaml"), "--policy.name",
                          "tiny-random", "--trainer.default_root_dir", str(tmp_path), "--model.export.dir", str(export))
    assert "holds files no export wrote (adapter_config.json)" in line
    assert (export / "adapter_config.json").read_text() == "{}"


# ----------------------------------------------------------------------------------------------------
# Errors users can act on: one line, exit code 2, before any model loads


@pytest.mark.parametrize("flags, message", [
    (["--model.lora.r", "-4"], "lora.r: expected 0"),
    (["--trainer.max_steps", "0"], "trainer.max_steps: expected a positive"),
    (["--data.validation.questions", "-1"], "data.validation.questions: expected a positive"),
    (["--tools.timeout_s", "0"], "tools.timeout_s: expected a number > 0"),
    (["--model.optimizer.lr", "-1"], "optimizer.lr: expected a number > 0"),
    (["--judge.name", "refrence"], "judge: expected one of"),
    (["--judge.name", "served"], "judge.options: judge 'served' needs base_url (a string) and model (a string)"),
    (["--judge.name", "served", "--judge.options", '{"base_url": "http://127.0.0.1:9/v1", "model": "m", '
      '"timeout_s": "2 s"}'], "judge.options.timeout_s: expected a number, got '2 s'"),
    (["--task.name", "gsm9k"], "task: expected one of"),
    (["--policy.adapter", "nowhere/adapter"], "no PEFT adapter at 'nowhere/adapter'"),
    (["--policy.name", "./no/such/model"], "model './no/such/model': no such folder"),
    (["--trainer.accelerator", "cuda"], "CUDAAccelerator"),
])
@pytest.mark.integration
def test_bad_fit_settings_are_one_line_errors_before_any_model_loads(tmp_path, capsys, monkeypatch, flags, message):
    import swirl_lightning.training.policy as policy

    monkeypatch.setattr(policy, "load_trainable_policy", lambda *a, **k: pytest.fail("a model was loaded"))
    base = ["fit", "--config", str(ROOT / "conf" / "quickstart.yaml"), "--policy.name", "tiny-random",
            "--policy.adapter", "null", "--trainer.default_root_dir", str(tmp_path)]
    assert message in one_line_error(capsys, *base, *flags)


@pytest.mark.integration
def test_generate_on_a_missing_device_is_a_one_line_error(tmp_path, capsys):
    assert "no CUDA device" in one_line_error(capsys, *tiny_generate(tmp_path / "t.jsonl", "--device", "cuda"))


@pytest.mark.integration
def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "missing.jsonl"
    result = subprocess.run([sys.executable, "-m", "swirl_lightning", "--debug", "data", "stats", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr and "FileNotFoundError" in result.stderr


# ----------------------------------------------------------------------------------------------------
# Tools run where they can be killed


def hostile_tools(tmp_path: Path) -> dict:
    def hang(text: str) -> str:
        time.sleep(3600)
        return "never"

    def busy(text: str) -> str:
        while True:
            pass

    def exit_now(text: str) -> str:
        os._exit(3)

    def exit_politely(text: str) -> str:
        sys.exit("bye")

    def flood(text: str) -> str:
        return "x" * 10_000_000

    def surrogate(text: str) -> str:
        return "bad \ud800 text"

    def wander(text: str) -> str:
        os.chdir(tmp_path)
        return "moved"

    def never_ready() -> None:
        time.sleep(3600)

    tools = [make_tool(f, name=f.__name__) for f in (hang, busy, exit_now, exit_politely, flood, surrogate, wander)]
    tools.append(make_tool(lambda text: "ready", name="stuck", warm_up=never_ready))
    return {tool.name: tool for tool in tools}


def _threads_and_children() -> tuple[int, int]:
    import threading

    children = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == os.getpid()]
    # tqdm's monitor is one idle daemon per process, started by the first progress bar: not a leftover of the run.
    monitor = any(t.name == "tqdm_monitor" for t in threading.enumerate())
    return len(list(Path("/proc/self/task").iterdir())) - monitor, len(children)


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads and children through /proc")
@pytest.mark.integration
def test_generate_with_hostile_tools_finishes_every_trajectory_and_leaves_nothing_behind(tmp_path, monkeypatch):
    """A throwaway plugin registers tools that hang, busy-loop, exit, flood, return a lone surrogate, change folder and
    never warm up; `swirl generate` (its engine replaced by a script that calls each of them, so a tiny model need not
    learn to) finishes all N x K trajectories, each call an error observation, and nothing keeps running."""
    import swirl_lightning.rollout.engine as engine
    from swirl_lightning.rollout.generate import GenerateConfig, run_generate
    from swirl_lightning.testing import ScriptedPolicy, registered

    tools = hostile_tools(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    script = [f"<{name}>go</{name}>" for name in tools] + ["<answer>1</answer>"]
    monkeypatch.setattr(engine, "GenerationEngine", lambda *args, **kwargs: ScriptedPolicy(script))
    threads_before, children_before = _threads_and_children()
    cwd = os.getcwd()
    out = tmp_path / "t.jsonl"
    with registered(tools=list(tools.values())):
        run_generate(GenerateConfig(output=str(out), policy=PolicyConfig("tiny-random"),
                                    task=TaskConfig("gsm8k", limit=2, max_actions=len(script)), samples=2,
                                    tools=ToolsConfig(names=list(tools), timeout_s=0.5, warm_up_timeout_s=0.5), progress=False))
    trajectories = read_trajectories(out)
    assert len(trajectories) == 4 and all(t.metadata["finish_reason"] == "answer" for t in trajectories)
    observations = {step.action.tool: step.observation for step in trajectories[0].steps if step.action.kind == "tool"}
    assert "timed out after 0.5 s" in observations["hang"] and "timed out" in observations["busy"]
    assert "exited during the call (exit code 3)" in observations["exit_now"]
    assert "SystemExit: bye" in observations["exit_politely"]
    assert "[output truncated: 10000000 chars" in observations["flood"] and len(observations["flood"]) < 1200
    assert "not valid Unicode" in observations["surrogate"]
    assert observations["wander"].endswith("moved") and os.getcwd() == cwd
    assert "failed to start" in observations["stuck"] and "warm-up was stopped" in observations["stuck"]
    assert all(str(tmp_path) not in (s.observation or "") for t in trajectories for s in t.steps)
    # Nothing left behind: no thread, no worker process, no CPU burnt after the run.
    time.sleep(0.5)
    assert _threads_and_children() == (threads_before, children_before)
    spent = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - spent < 0.2


def test_the_calculator_through_the_worker_is_fast():
    pytest.importorskip("swirl_calculator")
    from swirl_lightning.core.tools import collect_tools, select_tools

    with ToolExecutor(select_tools(collect_tools(), ["calculator"])) as executor:
        executor.run("calculator", "1+1")
        times = []
        for i in range(200):
            started = time.perf_counter()
            assert executor.run("calculator", f"{i} * 3 + 7 / 2").error is None
            times.append(time.perf_counter() - started)
    assert sorted(times)[len(times) // 2] < 0.005  # p50 under 5 ms


def test_a_misconfigured_tool_makes_generate_warn_loudly_or_fail(tmp_path, capsys, monkeypatch):
    from swirl_lightning.rollout.generate import ToolErrorRateExceeded, ToolErrorWatch

    def failing(sample: int) -> Trajectory:
        step = Step("<search_query>x</search_query>", Action("tool", tool="search", tag="search_query", query="x"),
                    observation="x -> Error: FileNotFoundError: corpus.jsonl", tool_error=True)
        return Trajectory("q", sample, [{"role": "user", "content": "q"}], [step])

    watch = ToolErrorWatch(ToolsConfig(on_error_rate="fail"))
    with pytest.raises(ToolErrorRateExceeded, match=r"20 of 20 tool calls failed \(100%.*corpus.jsonl"):
        for sample in range(25):
            watch.add(failing(sample))
            watch.check()
    from swirl_lightning.rollout.generate import _warn_about

    _warn_about([failing(0), failing(1)], ToolsConfig())
    assert "warning: 2 of 2 tool calls failed" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# Bounded input, failed rollouts, no leftovers


@pytest.mark.integration
def test_a_prompt_over_the_context_budget_ends_before_any_tensor_is_made(tmp_path):
    from swirl_lightning.core.models import load_model, load_tokenizer
    from swirl_lightning.rollout.conversation import ChatRenderer, RolloutSettings
    from swirl_lightning.rollout.engine import GenerationEngine
    from swirl_lightning.rollout.evaluation import evaluate

    model, tokenizer = load_model("tiny-random"), load_tokenizer("tiny-random")
    settings = RolloutSettings.for_task(TaskConfig(max_actions=2), ToolsConfig(), renderer=ChatRenderer(tokenizer))
    engine = GenerationEngine(model, tokenizer, SamplingConfig(max_new_tokens=4, max_context_tokens=512))
    huge = Example("huge", "seven " * 200_000, "7", "gsm8k")  # ~200 KB: a mask for it would take gigabytes
    _, trajectories = evaluate(engine, [huge, Example("small", "1+1?", "2", "gsm8k")], settings)
    assert [t.metadata["finish_reason"] for t in trajectories][0] == "context_full" and not trajectories[0].steps
    assert trajectories[1].steps and engine.stats.prefill_tokens < 1000


def test_a_rollout_that_raises_is_recorded_as_failed_and_the_others_go_on():
    from swirl_lightning.core.models import load_model, load_tokenizer
    from swirl_lightning.rollout.conversation import ChatRenderer, RolloutConversation, RolloutSettings
    from swirl_lightning.rollout.engine import GenerationEngine

    model, tokenizer = load_model("tiny-random"), load_tokenizer("tiny-random")
    settings = RolloutSettings.for_task(TaskConfig(max_actions=2), ToolsConfig(), renderer=ChatRenderer(tokenizer))

    class Broken(RolloutConversation):
        def on_turn_end(self, token_ids, text, finish_reason, logprobs=None, policy_version=None):
            raise RuntimeError("the tokenizer choked at /home/me/x.py")

    conversations = [Broken(Example("bad", "1+1?", "2", "gsm8k"), 0, settings, seed=1),
                     RolloutConversation(Example("good", "2+2?", "4", "gsm8k"), 0, settings, seed=2)]
    finished = []
    GenerationEngine(model, tokenizer, SamplingConfig(max_new_tokens=4)).run(conversations, finished.append)
    by_id = {c.trajectory.example_id: c.trajectory for c in finished}
    assert by_id["bad"].metadata["finish_reason"] == "failed"
    assert by_id["bad"].metadata["failure"] == "RuntimeError: the tokenizer choked at x.py"
    assert by_id["good"].metadata["finish_reason"] in ("max_actions", "answer")


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the workers through /proc")
@pytest.mark.integration
def test_killing_generate_kills_its_workers(tmp_path):
    out = tmp_path / "t.jsonl"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    # Later flags win: 200 questions of 64-token turns keep the workers busy until the parent is killed.
    argv = tiny_generate(out, "--processes", "2", "--task.limit", "200", "--sampling.max_new_tokens", "64")
    parent = subprocess.Popen([sys.executable, "-m", "swirl_lightning", *argv], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers: list[Path] = []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.5)
        workers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == parent.pid
                   and b"spawn_main" in (p / "cmdline").read_bytes()]  # not the resource tracker
    assert len(workers) == 2, "the workers did not start"
    parent.send_signal(signal.SIGKILL)
    parent.wait(30)
    time.sleep(3)
    assert not [p for p in workers if p.exists() and "Z" not in (p / "stat").read_text().rsplit(")", 1)[1].split()[0]]


def test_a_resumed_run_keeps_its_count_of_checkpoints(tmp_path):
    from swirl_lightning.training.callbacks import PeriodicCheckpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "last.ckpt", "mine.ckpt"):
        (folder / name).write_text(name)  # step 1: an orphan a kill left between save and remove
    callback = PeriodicCheckpoint(dirpath=folder, save_last=True, every_n_train_steps=1)
    callback.last_model_path = str(folder / "last.ckpt")
    callback._prune(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt", "mine.ckpt"]


# ----------------------------------------------------------------------------------------------------
# Second pass (issue 27): bounded input, the judgement cache, outputs that are inputs


def _alias_bomb() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):  # 9**9 values once expanded
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


CONFIG_BOMBS = {
    "alias bomb": (_alias_bomb(), "alias bomb"),
    "deep nesting": ("judge:\n  options:\n    x: " + "[" * 500 + "]" * 500 + "\n", "nested deeper than 100 levels"),
    "oversized": ("# padding\n" * 500_000, "bytes, over the"),
    "repeated key": ("judge:\n  name: served\njudge:\n  name: reference\n", "key 'judge' appears twice"),
    "empty": ("# nothing set\n", "the file is empty"),
}


@pytest.mark.parametrize("command", ["filter", "generate", "fit"])
@pytest.mark.parametrize("kind", list(CONFIG_BOMBS))
def test_a_config_bomb_is_a_one_line_error_within_a_second(tmp_path, capsys, command, kind):
    """An alias bomb ("billion laughs") ran 180 s to 5.5 GB before it was killed; deep nesting, an oversized file, a
    repeated key (the later would silently win) and an empty file are refused the same way, naming the file."""
    from swirl_lightning.core.config import parse_config
    from swirl_lightning.core.safe_load import LoadError
    from swirl_lightning.judging.filter import FilterConfig

    text, message = CONFIG_BOMBS[kind]
    config = tmp_path / "bomb.yaml"
    config.write_text(text)
    started = time.perf_counter()
    line = one_line_error(capsys, command, "--config", str(config))
    assert time.perf_counter() - started < 1.0
    assert str(config) in line and message in line
    with pytest.raises(LoadError, match=message):  # the parser checks too, for callers that skip `swirl`
        parse_config(FilterConfig, ["--config", str(config)], "swirl filter")


def test_a_deeply_nested_inline_value_is_a_one_line_error(capsys):
    line = one_line_error(capsys, "filter", "--input", "t.jsonl", "--output", "k.jsonl", "--judge.options",
                          "{" + '"a": {' * 5000 + "}" * 5001)
    assert "--judge.options: nested deeper than 100 levels" in line


def _interpolation_bomb(prefix: str, levels: int = 22) -> dict[str, str]:
    """Each value twice the one before: the last, 12 * 2**21 characters (25 MB) once resolved; 30 levels hold 6 GB."""
    values = {"a0": "lol" * 4}
    for level in range(1, levels):
        values[f"a{level}"] = f"${{{prefix}a{level - 1}}}${{{prefix}a{level - 1}}}"
    return values


INTERPOLATION_BOMBS = {  # judge.options of a config file
    "doubling": (_interpolation_bomb("judge.options."), "judge.options.a19 expands to more than"),
    "long chain": ({f"a{i}": f"${{judge.options.a{i + 1}}}" for i in range(200)} | {"a200": "x"},
                   "interpolations chained more than 32 deep"),
    "self-reference": ({"a": "${judge.options.a}"}, "judge.options.a refers to itself"),
    "a cycle, relative": ({"a": "${.b}", "b": "${.c}", "c": "x${..options.a}"},
                          "judge.options.a refers to itself through its interpolations (judge.options.a -> "
                          "judge.options.b -> judge.options.c -> judge.options.a)"),
}


@pytest.mark.parametrize("command", ["filter", "generate", "fit"])
@pytest.mark.parametrize("kind", list(INTERPOLATION_BOMBS))
def test_an_interpolation_bomb_is_a_one_line_error_within_a_second(tmp_path, capsys, command, kind):
    """OmegaConf resolves ${...} in configs: values that each repeat the one before twice double at every step (30
    of them in --judge.options held 12 GB before `swirl filter` was killed), a long chain ended in a RecursionError,
    and a self-reference named no file."""
    options, message = INTERPOLATION_BOMBS[kind]
    config = tmp_path / "bomb.yaml"
    config.write_text(json.dumps({"judge": {"name": "served", "options": options}}))
    started = time.perf_counter()
    line = one_line_error(capsys, command, "--config", str(config))
    assert time.perf_counter() - started < 1.0
    assert f"{config}: " in line and message in line


def test_an_interpolation_bomb_in_an_inline_judge_option_is_a_one_line_error(tmp_path, capsys):
    """An inline value is a document of its own: its ${a0} names its own key."""
    from swirl_lightning.core.config import parse_config
    from swirl_lightning.core.safe_load import LoadError
    from swirl_lightning.judging.filter import FilterConfig

    argv = ["--input", "t.jsonl", "--output", "k.jsonl", "--judge.name", "served", "--judge.options",
            json.dumps(_interpolation_bomb(""))]
    started = time.perf_counter()
    line = one_line_error(capsys, "filter", *argv)
    assert time.perf_counter() - started < 1.0
    assert "--judge.options: a19 expands to more than 4194304 characters" in line
    with pytest.raises(LoadError, match="a19 expands to more than"):  # the parser checks too
        parse_config(FilterConfig, argv, "swirl filter")


def test_ordinary_interpolations_still_resolve(tmp_path):
    """The shipped configs interpolate paths (${trainer.default_root_dir}/export); short chains, relative paths,
    resolvers and a value used many times stay allowed."""
    from swirl_lightning.core.config import parse_config
    from swirl_lightning.core.safe_load import check_config_arguments
    from swirl_lightning.judging.filter import FilterConfig

    options = {"name": "m", "twice": "${.name}-${.name}", "chosen": "${oc.select:judge.options.missing,fallback}",
               "chain": "${.b}", "b": "${.c}", "c": "${judge.options.name}", "long": "x" * 1000 + "${.name}" * 2000}
    config = tmp_path / "ok.yaml"
    config.write_text(json.dumps({"judge": {"name": "served", "options": options}}))
    argv = ["--config", str(config), "--input", "t.jsonl", "--output", "k.jsonl"]
    parsed = parse_config(FilterConfig, argv, "swirl filter").judge.options
    assert (parsed["twice"], parsed["chosen"], parsed["chain"], len(parsed["long"])) == ("m-m", "fallback", "m", 3000)
    for name in ("gsm8k_warmup.yaml", "gsm8k_calculator.yaml", "hotpotqa_search.yaml", "rl_sanity.yaml"):
        check_config_arguments(["--config", str(ROOT / "conf" / name)])


def _questions(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_deep_json_and_repeated_keys_in_data_files_are_errors_naming_file_and_line(tmp_path, capsys):
    """Deep nesting was a RecursionError; a repeated key was read, its last value silently winning."""
    good = json.dumps(to_dict(judged_trajectory()))
    deep = tmp_path / "deep.jsonl"
    nested = '"metadata": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    deep.write_text(good + "\n" + good.replace('"metadata": {}', nested) + "\n")
    repeated = tmp_path / "repeated.jsonl"
    repeated.write_text(good + "\n" + good[:-1] + ', "outcome": 0.0}\n')
    for path, message in ((deep, "nested deeper than 100 levels"), (repeated, "key 'outcome' appears twice")):
        for line in _trajectory_file_errors(capsys, tmp_path, path):
            assert f"{path}:2: {message}" in line
    questions = _questions(tmp_path / "q.jsonl", '{"question": "1+1?", "answer": "2"}',
                           '{"question": "2+2?", "answer": "4", "answer": "5"}')
    assert f"{questions}:2: key 'answer' appears twice" in _questions_file_error(capsys, tmp_path, questions)


def test_an_empty_input_file_is_a_clear_error(tmp_path, capsys):
    """An empty trajectory or questions file was read as no data: 'kept 0/0', or a run over nothing."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for line in [*_trajectory_file_errors(capsys, tmp_path, empty), _questions_file_error(capsys, tmp_path, empty)]:
        assert f"{empty}: no records: the file is empty" in line


def _trajectory_file_errors(capsys, tmp_path, path) -> list[str]:
    """The one-line errors of the two commands that read a trajectory file: ``data stats`` and ``filter``."""
    return [one_line_error(capsys, "data", "stats", str(path)),
            one_line_error(capsys, "filter", "--input", str(path), "--output", str(tmp_path / "kept.jsonl"),
                           "--mode", "none")]


def _questions_file_error(capsys, tmp_path, questions) -> str:
    """The one-line error of ``filter --mode outcome`` given ``questions`` as the task's data."""
    trajectories = tmp_path / "t.jsonl"
    write_jsonl(trajectories, [judged_trajectory()])
    return one_line_error(capsys, "filter", "--input", str(trajectories), "--output", str(tmp_path / "kept.jsonl"),
                          "--mode", "outcome", "--task.name", "jsonl", "--task.data_path", str(questions))


@pytest.mark.parametrize("field, value, message", [
    ("reward", "9" * 400, "steps[0].reward: expected a finite number, got an integer of 400 digits"),
    ("outcome", "-" + "9" * 400, "outcome: expected a finite number, got an integer of 400 digits"),
    ("outcome", "9" * 5000, "a number too large to read"),
    ("sample_index", str(2**64), "sample_index: expected an integer that fits in 64 bits"),
])
def test_a_huge_integer_in_a_trajectory_file_is_an_error_naming_file_and_line(tmp_path, capsys, field, value, message):
    """A reward of 400 digits was an OverflowError in core/trajectory.py."""
    record = to_dict(judged_trajectory())
    if field == "reward":
        record["steps"][0]["reward"] = 0.5
    else:
        record[field] = 1
    text = json.dumps(record).replace(f'"{field}": {0.5 if field == "reward" else 1}', f'"{field}": {value}', 1)
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps(to_dict(judged_trajectory())) + "\n" + text + "\n")
    assert f"{path}:2: {message}" in one_line_error(capsys, "data", "stats", str(path))


def _filter_with_a_cached_judge(tmp_path: Path, cache: Path, *extra: str) -> list[str]:
    trajectories = tmp_path / "t.jsonl"
    write_jsonl(trajectories, [judged_trajectory(0), judged_trajectory(1)])
    return ["filter", "--input", str(trajectories), "--output", str(tmp_path / "kept.jsonl"), "--mode", "process",
            "--judge.name", "constant", "--cache_path", str(cache), "--progress", "false", *extra]


@pytest.mark.parametrize("damage", ["not a database", "another schema", "a row that is not a judgement"])
def test_a_corrupt_or_foreign_judgement_cache_is_a_one_line_error_saying_how_to_start_over(tmp_path, capsys, damage):
    """It was a sqlite3.DatabaseError, or a RuntimeError with a traceback."""
    import sqlite3

    from swirl_lightning.testing import ConstantJudge, registered

    cache = tmp_path / "judgements.sqlite"
    if damage == "not a database":
        cache.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    else:
        with sqlite3.connect(cache) as conn:
            if damage == "another schema":
                conn.execute("CREATE TABLE judgements (id INTEGER, verdict TEXT)")
            else:
                conn.execute("CREATE TABLE judgements (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.executemany("INSERT INTO judgements VALUES (?, ?)", [(_constant_key(i), '{"verdict": ')
                                                                          for i in range(2)])
        conn.close()
    with registered(judges={"constant": ConstantJudge}):
        line = one_line_error(capsys, *_filter_with_a_cached_judge(tmp_path, cache))
        assert f"judgement cache {cache}: " in line and "delete the file to start a new cache" in line
        assert "--cache false" in line
        assert swirl(_filter_with_a_cached_judge(tmp_path, cache, "--cache", "false", "--overwrite", "true")) == 0


def _constant_key(step: int) -> str:
    from swirl_lightning.core.trajectory import decompose
    from swirl_lightning.judging.steps import judgement_key, verdict_settings
    from swirl_lightning.testing import ConstantJudge

    judge = ConstantJudge()
    state, action = decompose(judged_trajectory())[step]
    return judgement_key(judge.judge_id, judge.prompt_version, state.messages, action.text, verdict_settings(judge))


def test_a_cached_failure_is_judged_again_never_compared_as_a_score(tmp_path, capsys):
    """A cache row of a failed judgement was compared as a score: TypeError: '>' not supported between 'NoneType'
    and 'int' in the filter. A failure is no verdict: the step is asked again, and the verdict replaces the row."""
    import sqlite3

    from swirl_lightning.judging.steps import JudgementCache
    from swirl_lightning.testing import ConstantJudge, registered

    cache = tmp_path / "judgements.sqlite"
    JudgementCache(cache).put_many({_constant_key(1): Judgement("constant:1", "GOOD", 1.0, "v1")})
    failure = json.dumps(to_dict(Judgement("constant:1", "FAILED", None, "v1", error="HTTP 500")))
    with sqlite3.connect(cache) as conn:  # as an older version, or another program, may have stored it
        conn.execute("INSERT INTO judgements VALUES (?, ?)", (_constant_key(0), failure))
    conn.close()
    with registered(judges={"constant": ConstantJudge}):
        assert swirl(_filter_with_a_cached_judge(tmp_path, cache)) == 0
    stats = json.loads((tmp_path / "kept.stats.json").read_text())
    assert stats["judging"] == {"steps": 4, "from_cache": 2, "judged": 2, "failed": 0} and stats["kept"] == 2
    assert JudgementCache(cache).get_many([_constant_key(0)])[_constant_key(0)].verdict == "GOOD"


@pytest.mark.integration
def test_changing_max_message_chars_never_reuses_cached_verdicts(tmp_path):
    """The cache key left out max_message_chars, for the local and the served judge: after a change, 6 of 60
    trajectories were kept from the cache where fresh judging keeps 0."""
    import copy

    from swirl_lightning.judging.local_lm import ProcessJudge
    from swirl_lightning.judging.served import ServedJudge
    from swirl_lightning.judging.steps import JudgementCache, judge_trajectories
    from swirl_lightning.testing import StubChatServer, tiny_model_and_tokenizer

    def judged(judge, cache: JudgementCache) -> dict[str, int]:
        return judge_trajectories(copy.deepcopy([judged_trajectory(0)]), judge, cache=cache, progress=False)

    model, tokenizer = tiny_model_and_tokenizer()
    with StubChatServer(lambda body, seen: "Verdict: GOOD") as server:
        for make in (lambda chars: ProcessJudge(model, tokenizer, model_name="tiny", max_message_chars=chars),
                     lambda chars: ServedJudge(server.base_url, "stub-model", max_message_chars=chars)):
            cache = JudgementCache(tmp_path / f"{len(list(tmp_path.iterdir()))}.sqlite")
            assert judged(make(2000), cache)["judged"] == 2
            assert judged(make(2000), cache)["from_cache"] == 2  # the same settings: nothing asked again
            assert judged(make(40), cache) == {"steps": 2, "from_cache": 0, "judged": 2, "failed": 0}
            cache.close()


def test_generate_refuses_its_questions_file_as_output_in_any_spelling(tmp_path, capsys, monkeypatch):
    """`swirl generate --output Q --task.data_path Q --overwrite true` deleted the questions before reading them."""
    questions = _questions(tmp_path / "q.jsonl", '{"question": "1+1?", "answer": "2"}')
    (tmp_path / "link.jsonl").symlink_to(questions)
    (tmp_path / "world").mkdir()
    monkeypatch.chdir(tmp_path)
    for output, data_path in (("q.jsonl", str(questions)), (str(tmp_path / "." / "q.jsonl"), "q.jsonl"),
                              ("link.jsonl", "q.jsonl"), ("world/questions.jsonl", "world")):
        line = one_line_error(capsys, *tiny_generate(Path(output), "--task.name", "jsonl", "--task.data_path",
                                                     data_path, "--overwrite", "true"))
        assert "the task.data_path" in line and "would destroy the input" in line
        assert questions.read_text() == '{"question": "1+1?", "answer": "2"}\n'


@pytest.mark.integration
def test_generate_overwrite_replaces_a_symlinked_output_never_the_file_it_points_to(tmp_path, capsys):
    """`generate --overwrite true` replaced the file a symlinked output points to. The link is replaced instead (as every
    writer here replaces a link): the user asked for a new output at that path, and the file elsewhere is not the
    run's to touch."""
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("keep me\n")
    out = tmp_path / "t.jsonl"
    out.symlink_to(target)
    assert swirl(tiny_generate(out, "--overwrite", "true")) == 0
    capsys.readouterr()
    assert target.read_text() == "keep me\n" and not out.is_symlink() and len(read_trajectories(out)) == 4


def test_tools_call_takes_a_warm_up_timeout(tmp_path, capsys):
    """`swirl tools call` with a warm-up that never returns hung (60 s and counting)."""
    from swirl_lightning.testing import registered

    with registered(tools=[hostile_tools(tmp_path)["stuck"]]):
        started = time.perf_counter()
        assert swirl(["tools", "call", "stuck", "go", "--tools.warm_up_timeout_s", "0.5"]) == 1
    assert time.perf_counter() - started < 30
    assert "warm-up was stopped" in capsys.readouterr().err
