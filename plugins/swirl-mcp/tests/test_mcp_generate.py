"""`swirl generate` with MCP tools: the run lists them from the server, puts them in the prompt, and its tool calls go
through the tool worker to the real MCP server process."""

from __future__ import annotations

from pathlib import Path

import pytest

import swirl_mcp
from mcp_servers import server_processes, stdio_config, write_server
from swirl_lightning.core.config import PolicyConfig, SamplingConfig, TaskConfig
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
                tools=("add", "echo"), max_steps=4)


def _config(tmp_path: Path, **changes) -> GenerateConfig:
    return GenerateConfig(output=str(tmp_path / "trajectories.jsonl"), policy=PolicyConfig("tiny-random"),
                          task=TaskConfig("mcp-sums", limit=2, max_steps=4, few_shot=False),
                          sampling=SamplingConfig(max_new_tokens=8, batch_size=2), samples=1, progress=False,
                          **changes)


def test_generate_calls_go_through_the_mcp_server(monkeypatch, tmp_path) -> None:
    script = write_server(tmp_path)
    monkeypatch.setenv(swirl_mcp.CONFIG_ENV, stdio_config(script, name="gen", tools=["add", "echo"]))

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
    with plugged_in_alone(swirl_mcp), registered(tasks=[SUMS]):
        summary = run_generate(_config(tmp_path))
    trajectories = sorted(read_trajectories(tmp_path / "trajectories.jsonl"), key=lambda t: t.example_id)
    assert summary["trajectories"] == 2 and [t.outcome for t in trajectories] == [1.0, 1.0]
    first = trajectories[0]
    assert "<add>...</add>: add. Add two integers." in first.prompt[0]["content"]
    assert first.steps[0].observation == '{"a": 40, "b": 0} -> 40'
    assert first.steps[1].observation.startswith("forty plus two -> Error: McpToolError: add: expected a JSON object")
    assert first.steps[1].tool_error and first.final_answer == "40"
    assert not server_processes(script)  # the run's tool worker took its server along when it closed


def test_generate_with_the_tiny_model_and_mcp_tools_runs_to_its_end(monkeypatch, tmp_path) -> None:
    script = write_server(tmp_path)
    monkeypatch.setenv(swirl_mcp.CONFIG_ENV, stdio_config(script, name="tiny", tools=["add", "echo"]))
    with plugged_in_alone(swirl_mcp), registered(tasks=[SUMS]):
        summary = run_generate(_config(tmp_path))
    trajectories = read_trajectories(tmp_path / "trajectories.jsonl")
    assert summary["trajectories"] == 2 and summary["generated_tokens"] > 0
    assert all("<echo>...</echo>: echo. Repeat the text." in t.prompt[0]["content"] for t in trajectories)
    assert not server_processes(script)
