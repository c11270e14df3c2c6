"""The ``vllm`` engine without vLLM: the managed server's life (a stand-in server from ``swirl_lightning.testing``),
the reply parsing, the adapter versions and the config checks. The real server's tests are in ``rollout/test_vllm.py``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swirl_lightning.cli import main as swirl_main
from swirl_lightning.core.config import EngineConfig, PolicyConfig, SamplingConfig
from swirl_lightning.rollout.vllm_backend import TurnFailed, VllmBackend
from swirl_lightning.rollout.vllm_server import ServerDied, VllmServer
from swirl_lightning.testing import fake_vllm_python
from swirl_lightning.training.weight_sync import AdapterSync

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by its parent) is gone for every purpose here.
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.integration
@pytest.mark.parametrize("stage", ["generate", "fit"])
def test_killing_the_run_leaves_no_server_process(stage, tmp_path):
    """SIGKILL a `swirl generate` (a model turn in flight) or `swirl fit` (at its first sampling) that manages a
    server: the server and the child it started are gone within seconds (the guard gets PR_SET_PDEATHSIG)."""
    pids_file = tmp_path / "pids"
    python = fake_vllm_python(tmp_path)
    if stage == "generate":
        args = ["generate", "--task.name", "gsm8k", "--task.limit", "2", "--samples", "1", "--progress", "false",
                "--policy.name", "tiny-random", "--output", str(tmp_path / "out.jsonl")]
    else:
        args = ["fit", "--config", str(ROOT / "conf" / "rl_sanity.yaml"), "--policy.name", "tiny-random",
                "--policy.adapter", "null", "--data.train.path", "null", "--data.train.reference", "true",
                "--task.limit", "2", "--trainer.default_root_dir", str(tmp_path / "fit"),
                "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "SWIRL_FAKE_VLLM_PIDS": str(pids_file), "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "swirl_lightning", *args, "--engine.name", "vllm",
                            "--engine.python", python], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2 or run.poll() is not None,
                 240, "the stand-in server to start")
        assert run.poll() is None, run.stderr.read().decode()[-3000:]
        server, child = map(int, pids_file.read_text().split())
        assert alive(server) and alive(child)
        time.sleep(1.0)  # the run sends its first requests
        run.send_signal(signal.SIGKILL)
        run.wait()
        wait_for(lambda: not alive(server) and not alive(child), 30, "the server and its child to end")
    finally:
        if run.poll() is None:
            run.kill()


@pytest.mark.integration
def test_a_managed_server_that_exits_is_an_error_naming_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("SWIRL_FAKE_VLLM_PIDS", str(tmp_path / "pids"))
    engine = EngineConfig(name="vllm", python=fake_vllm_python(tmp_path), startup_timeout_s=120)
    server = VllmServer.start(engine, PolicyConfig(name="tiny-random"), tmp_path / "server.log")
    try:
        assert server.served_models() == ["base"]
        pid, child = map(int, (tmp_path / "pids").read_text().split())
        os.kill(pid, signal.SIGKILL)  # the server dies; its guard ends the child and exits
        wait_for(lambda: server.process.poll() is not None, 30, "the guard to exit")
        assert not alive(child)
        with pytest.raises(ServerDied, match=r"exited .*its log: .*server\.log"):
            server.check_alive()
        from swirl_lightning.core.models import load_tokenizer

        backend = VllmBackend(server, load_tokenizer("tiny-random"), SamplingConfig(), engine)
        with pytest.raises(ServerDied, match="server.log"):
            backend.complete(backend.request_body([1, 2, 3], 4, seed=0))
    finally:
        server.stop()


@pytest.mark.integration
def test_a_server_that_never_answers_health_times_out_and_is_stopped(tmp_path):
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import time; time.sleep(600)'\n")
    python.chmod(0o755)
    engine = EngineConfig(name="vllm", python=str(python), startup_timeout_s=2)
    with pytest.raises(TimeoutError, match=r"did not answer /health within 2 s; its log: "):
        VllmServer.start(engine, PolicyConfig(name="tiny-random"), tmp_path / "server.log")


def test_a_missing_vllm_virtualenv_is_a_clear_error(tmp_path):
    engine = EngineConfig(name="vllm", python=str(tmp_path / "nowhere" / "python"))
    with pytest.raises(FileNotFoundError, match="make vllm"):
        VllmServer.start(engine, PolicyConfig(name="tiny-random"), tmp_path / "server.log")


def reply(**choice) -> bytes:
    return json.dumps({"choices": [{"finish_reason": "stop", "stop_reason": None, **choice}]}).encode()


def test_replies_become_turns_as_the_in_process_engine_names_them():
    from swirl_lightning.core.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-random")
    backend = VllmBackend(VllmServer("http://127.0.0.1:9", "base"), tokenizer, SamplingConfig(), EngineConfig())
    eos = tokenizer.eos_token_id
    lp = {"token_logprobs": [-0.5, -0.25]}
    assert backend.parse_reply(reply(token_ids=[5, eos], logprobs=lp)).finish_reason == "eos"
    assert backend.parse_reply(reply(token_ids=[5, 6], logprobs=lp, stop_reason="</answer>")).finish_reason == "stop"
    turn = backend.parse_reply(reply(token_ids=[5, 6], logprobs=lp, finish_reason="length"))
    assert (turn.token_ids, turn.logprobs, turn.finish_reason) == ([5, 6], [-0.5, -0.25], "length")
    with pytest.raises(TurnFailed, match="2 token ids and 1 log-probs"):
        backend.parse_reply(reply(token_ids=[5, 6], logprobs={"token_logprobs": [-1.0]}))
    with pytest.raises(TurnFailed, match="no token ids and log-probs"):
        backend.parse_reply(reply(text="hello"))
    body = backend.request_body([1, 2], 7, seed=11)
    assert body["prompt"] == [1, 2] and body["max_tokens"] == 7 and body["return_token_ids"] and body["logprobs"] == 0
    assert body["seed"] == 11 and body["stop_token_ids"] == [eos]


class RecordingServer:
    """Records adapter loads and unloads as a vLLM server would see them."""

    def __init__(self):
        self.calls = []

    def load_adapter(self, name, path):
        assert (Path(path) / "adapter_config.json").exists()
        self.calls.append(("load", name))

    def unload_adapter(self, name):
        self.calls.append(("unload", name))


def test_adapter_versions_get_new_names_and_folders_and_a_reused_one_fails(tmp_path):
    from peft import LoraConfig, get_peft_model

    from swirl_lightning.testing import tiny_model_and_tokenizer

    model, _ = tiny_model_and_tokenizer()
    lm = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    server = RecordingServer()
    sync = AdapterSync(server, tmp_path, every=2, session="s1")
    assert sync.serve(lm, 0) == ("policy-s1-v0", 0)
    assert sync.serve(lm, 1) == ("policy-s1-v0", 0)  # 1 step stale: at most sync_every - 1
    assert sync.serve(lm, 2) == ("policy-s1-v2", 2)
    assert server.calls == [("load", "policy-s1-v0"), ("load", "policy-s1-v2"), ("unload", "policy-s1-v0")]
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == ["v2"]  # the unloaded version's folder is gone
    with pytest.raises(ValueError, match="published before"):
        sync.publish(lm, 2)  # its folder exists
    with pytest.raises(ValueError, match="published before"):
        sync.publish(lm, 0)  # its folder was removed, its name is still used
    assert AdapterSync(server, tmp_path).session != AdapterSync(server, tmp_path, session="s1").session


@pytest.mark.integration
def test_vllm_training_needs_lora_and_a_rank_the_server_takes(tmp_path, capsys):
    common = ["fit", "--config", str(ROOT / "conf" / "rl_sanity.yaml"), "--policy.name", "tiny-random",
              "--policy.adapter", "null", "--data.train.path", "null", "--data.train.reference", "true",
              "--task.limit", "2", "--trainer.default_root_dir", str(tmp_path), "--engine.name", "vllm",
              "--engine.python", str(tmp_path / "no-python")]
    assert swirl_main([*common, "--model.lora.r", "0"]) != 0
    assert "engine.name vllm trains LoRA adapters only (lora.r > 0)" in capsys.readouterr().err
    assert swirl_main([*common, "--model.lora.r", "32"]) != 0
    assert "lora.r 32 is above engine.max_lora_rank 16" in capsys.readouterr().err


def test_generate_on_vllm_takes_one_process():
    with pytest.raises(SystemExit):
        swirl_main(["generate", "--engine.name", "vllm", "--processes", "2"])
