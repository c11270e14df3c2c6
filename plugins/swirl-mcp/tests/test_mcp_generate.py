"""`swirl generate` with MCP tools, the servers named in the run's tools config (``tools.plugins.mcp``): the run lists
them from the server, puts them in the prompt, and its tool calls go through the tool worker to the real MCP server
process: once with scripted turns (no model), once with the real engine and the tiny random model, its token choice
steered to scripted actions, and once from the command line with spawned worker processes (``--processes 2``), which
build their tools from the same config."""

from __future__ import annotations

from pathlib import Path

import pytest

import swirl_mcp
from mcp_servers import server_processes, stdio_config, write_server
from swirl_lightning.core.config import PolicyConfig, SamplingConfig, TaskConfig, ToolsConfig
from swirl_lightning.core.trajectory import Example, read_trajectories
from swirl_lightning.rollout import generate
from swirl_lightning.rollout.generate import GenerateConfig, run_generate
from swirl_lightning.testing import ListTask, ScriptedPolicy, plugged_in_alone, registered

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch: pytest.MonkeyPatch):
    """One torch thread and no model hub: a tiny model on shared cores."""
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

SUMS = ListTask("mcp-sums", [Example(f"sum-{i}", f"What is 40 + {i}?", str(40 + i), "mcp-sums") for i in range(2)],
                tools=("add", "echo"), max_actions=4)


def _config(tmp_path: Path, **changes) -> GenerateConfig:
    values = dict(output=str(tmp_path / "trajectories.jsonl"), policy=PolicyConfig("tiny-random"),
                  task=TaskConfig("mcp-sums", limit=2, max_actions=4, few_shot=False),
                  sampling=SamplingConfig(max_new_tokens=8, batch_size=2), samples=1, progress=False)
    return GenerateConfig(**{**values, **changes})


def test_generate_calls_go_through_the_mcp_server(monkeypatch, tmp_path) -> None:
    script = write_server(tmp_path)
    tools = ToolsConfig(plugins={"mcp": stdio_config(script, name="gen", tools=["add", "echo"])})

    def script_turns(messages: list[dict[str, str]]) -> str:
        # The model's turns: a tool call with the question's number, a malformed one, then the answer it was told.
        number = messages[-1]["content"].split("+ ")[-1].rstrip("?") if len(messages) <= 2 else None
        asked = sum(message["role"] == "assistant" for message in messages)
        if asked == 0:
            return f'First the sum. <add>{{"a": 40, "b": {number}}}</add>'
        if asked == 1:
            return "<add>forty plus two</add>"
        result = next(m["content"] for m in messages if m["role"] == "user" and " -> " in m["content"])
        return f"<answer>{result.rsplit(' -> ', 1)[1]}</answer>"

    from swirl_lightning.core.models import load_tokenizer

    # A random model writes no valid tool call, so the turns are scripted; the rest is the real run: the tools come
    # from the plugin hook, the prompt lists them, and each call goes through the tool worker to the server process.
    monkeypatch.setattr(generate, "_backend",
                        lambda cfg, settings, stack: (ScriptedPolicy(script_turns), load_tokenizer("tiny-random")))
    with plugged_in_alone(swirl_mcp, name="mcp"), registered(tasks=[SUMS]):
        summary = run_generate(_config(tmp_path, tools=tools))
    trajectories = sorted(read_trajectories(tmp_path / "trajectories.jsonl"), key=lambda t: t.example_id)
    assert summary["trajectories"] == 2 and [t.outcome for t in trajectories] == [1.0, 1.0]
    first = trajectories[0]
    assert "<add>...</add>: add. Add two integers." in first.prompt[0]["content"]
    assert first.steps[0].observation == '{"a": 40, "b": 0} -> 40'
    assert first.steps[1].observation.startswith("forty plus two -> Error: McpToolError: add: expected a JSON object")
    assert first.steps[1].tool_error and first.final_answer == "40"
    assert not server_processes(script)  # the run's tool worker took its server along when it closed


def test_generate_with_the_tiny_model_whose_tool_calls_go_through_the_server(monkeypatch, tmp_path) -> None:
    """The real engine and the tiny random model (every forward pass, the KV cache, token ids in and out); only the
    token choice is steered to a scripted action, since a random model writes no tool call of its own."""
    from swirl_lightning.core.models import load_tokenizer
    from swirl_lightning.rollout import engine

    script = write_server(tmp_path)
    tools = ToolsConfig(plugins={"mcp": stdio_config(script, name="tiny", tools=["add", "echo"])})
    tokenizer = load_tokenizer("tiny-random")
    turns = ['<add>{"a": 40, "b": 2}</add>', "<add>forty plus two</add>", "<echo>done</echo>", "<answer>42</answer>"]
    queues: dict[int, list[int]] = {}
    turn_of: dict[int, int] = {}
    sampled = engine.sample_rows

    def steered(logits, temperature, top_p, generators):  # noqa: ANN001, ANN202 - engine.sample_rows's signature
        sampled(logits, temperature, top_p, generators)  # the model's own draw, as in a real run, then set aside
        chosen = []
        for generator in generators:  # one generator per conversation: the key of its script position
            key = id(generator)
            if not queues.get(key):  # a new turn: the next scripted action, ended by its closing tag (a stop string)
                turn_of[key] = turn_of.get(key, -1) + 1
                queues[key] = tokenizer.encode(turns[min(turn_of[key], len(turns) - 1)], add_special_tokens=False)
            chosen.append(queues[key].pop(0))
        return chosen

    monkeypatch.setattr(engine, "sample_rows", steered)
    fortytwo = ListTask("mcp-42", [Example(f"q-{i}", "What is 40 + 2?", "42", "mcp-42") for i in range(2)],
                        tools=("add", "echo"), max_actions=5)
    config = _config(tmp_path, task=TaskConfig("mcp-42", limit=2, max_actions=5, few_shot=False),
                     sampling=SamplingConfig(max_new_tokens=32, batch_size=2, temperature=0.0), tools=tools)
    with plugged_in_alone(swirl_mcp, name="mcp"), registered(tasks=[fortytwo]):
        summary = run_generate(config)
    trajectories = read_trajectories(tmp_path / "trajectories.jsonl")
    assert summary["trajectories"] == 2 and summary["generated_tokens"] > 0
    for trajectory in trajectories:
        assert [step.observation for step in trajectory.steps[:3]] == [
            '{"a": 40, "b": 2} -> 42',
            'forty plus two -> Error: McpToolError: add: expected a JSON object {"a": integer, "b": integer}; the '
            "input is not valid JSON",
            "done -> done"]
        assert trajectory.final_answer == "42" and trajectory.outcome == 1.0
        assert all(step.token_ids for step in trajectory.steps)  # token-in/token-out, as the engine produced them
        assert "<echo>...</echo>: echo. Repeat the text." in trajectory.prompt[0]["content"]
    assert not server_processes(script)


def test_spawned_workers_of_swirl_generate_get_the_servers_from_the_config(tmp_path) -> None:
    """`swirl generate --processes 2 --config <run> --config <tools overlay>`: each spawned worker (a fresh
    interpreter, the installed plugin found by its entry point) lists the MCP tools from the config's servers and puts
    them in its prompts; no server outlives the run."""
    import json
    import os
    import subprocess
    import sys

    script = write_server(tmp_path)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is 40 + {i}?", "answer": str(40 + i)})
                                 + "\n" for i in range(2)))
    overlay = tmp_path / "mcp.yaml"
    overlay.write_text(json.dumps({"tools": {"names": ["add", "echo"],
                                             "plugins": {"mcp": stdio_config(script, name="spawned",
                                                                             tools=["add", "echo"])}}}))
    output = tmp_path / "run" / "trajectories.jsonl"
    env = {**os.environ, "SWIRL_LOAD_PLUGINS": "swirl-mcp", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "swirl_lightning", "generate", "--config", str(overlay), "--policy.name", "tiny-random",
         "--task.name", "jsonl", "--task.data_path", str(questions), "--task.limit", "2", "--task.max_actions", "2",
         "--sampling.max_new_tokens", "4", "--sampling.batch_size", "1", "--samples", "1", "--processes", "2",
         "--progress", "false", "--output", str(output)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    trajectories = read_trajectories(output)
    assert sorted(t.example_id for t in trajectories) == ["q0", "q1"]  # one per worker: each built its own tools
    for trajectory in trajectories:
        prompt = trajectory.prompt[0]["content"]
        assert "<add>...</add>: add. Add two integers." in prompt and "<echo>...</echo>: echo." in prompt
    record = json.loads(output.with_name(output.name + ".run.json").read_text())
    assert record["tools.plugins"]["mcp"]["servers"][0]["name"] == "spawned"
    assert not server_processes(script)
