"""The vLLM server of the ``vllm`` engine: one a user started (``engine.base_url``), or a managed one.

A managed server runs from its own virtualenv (``engine.python``, made by ``make vllm``: vLLM pins its own torch and
transformers), behind a guard process (:mod:`swirl_lightning.core.process_guard`) that kills it and all its children
when the run ends, crashes or is killed. It serves the policy's weights under the name ``base``: the model folder, or
for a policy with a warm-start adapter a merged copy of it (built once into the cache), with LoRA enabled so that
training can hot-load its adapter (:mod:`swirl_lightning.training.weight_sync`). Its output goes to a log file, which
every error about the server names.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from swirl_lightning.core.config import EngineConfig, PolicyConfig
from swirl_lightning.core.transport import free_port

BASE_MODEL = "base"
"""The name a managed server serves the policy's own weights under."""


class ServerDied(RuntimeError):
    """The vLLM server stopped answering (its process ended, or it no longer answers ``/health``)."""


class VllmServer:
    """A vLLM server to send requests to: its address, the base model's name, and (managed) its process and log."""

    def __init__(self, base_url: str, model: str, *, process: subprocess.Popen | None = None,
                 log_path: Path | None = None):
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.process = process
        self.log_path = log_path

    # -- life ------------------------------------------------------------------------------------------

    @classmethod
    def connect(cls, engine: EngineConfig, policy: PolicyConfig, log_path: str | Path, *,
                max_context_tokens: int | None = None) -> VllmServer:
        """The server of ``engine``: the one at ``engine.base_url``, or a managed one started now (logging to
        ``log_path``). Either answers ``/health`` when this returns."""
        if engine.base_url:
            server = cls(engine.base_url, "")
            server.wait_healthy(engine.startup_timeout_s)
            server.model = server.served_models()[0]
            return server
        return cls.start(engine, policy, Path(log_path), max_context_tokens=max_context_tokens)

    @classmethod
    def start(cls, engine: EngineConfig, policy: PolicyConfig, log_path: Path, *,
              max_context_tokens: int | None = None) -> VllmServer:
        """Start a managed server (see the module docstring) and wait until it answers ``/health``."""
        from swirl_lightning.core.models import resolve_tokenizer_path

        python = Path(engine.python).expanduser()
        if not python.is_file():
            raise FileNotFoundError(f"engine.python: {python} does not exist; run `make vllm` to create the vLLM "
                                    "virtualenv, or point engine.python at a Python with vllm installed")
        port = free_port()
        dtype = policy.dtype if engine.dtype == "auto" else engine.dtype
        command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
                   "--model", served_model_folder(policy), "--tokenizer", resolve_tokenizer_path(policy.name),
                   "--served-model-name", BASE_MODEL, "--dtype", dtype, "--seed", "0",
                   "--enable-lora", "--max-lora-rank", str(engine.max_lora_rank),
                   "--max-num-batched-tokens", str(engine.max_num_batched_tokens), "--disable-uvicorn-access-log"]
        if max_context_tokens:
            command += ["--max-model-len", str(max(max_context_tokens, 256))]
        command += engine.server_args
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "SWIRL_GUARD_PARENT": str(os.getpid()),
               "VLLM_CPU_KVCACHE_SPACE": str(max(1, math.ceil(engine.kv_cache_gib)))}
        if "VLLM_CPU_OMP_THREADS_BIND" not in env and hasattr(os, "sched_getaffinity"):
            cores = sorted(os.sched_getaffinity(0))  # vLLM's default `auto` leaves one core of a small CPU idle
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores))
        env.pop("OMP_NUM_THREADS", None)  # the server sets its threads from the binding above
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"\n# swirl-lightning: {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen([sys.executable, "-m", "swirl_lightning.core.process_guard", *command],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        server = cls(f"http://127.0.0.1:{port}", BASE_MODEL, process=process, log_path=log_path)
        try:
            server.wait_healthy(engine.startup_timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    def wait_healthy(self, timeout_s: float) -> None:
        """Wait until ``/health`` answers 200; ``ServerDied`` when the process ends first, ``TimeoutError`` after
        ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive(probe=False)
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the vLLM server at {self.base_url} did not answer /health within {timeout_s:g} s"
                                   f"{self._log_hint()}")
            time.sleep(1.0)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=5) as reply:
                return reply.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def check_alive(self, probe: bool = True) -> None:
        """Raise :class:`ServerDied` (naming the log) when the managed process has ended, or, with ``probe``, when the
        server no longer answers ``/health``."""
        code = self.process.poll() if self.process is not None else None
        if code is not None:
            raise ServerDied(f"the vLLM server exited (code {code}){self._log_hint()}")
        if probe and not self.healthy():
            raise ServerDied(f"the vLLM server at {self.base_url} no longer answers /health{self._log_hint()}")

    def stop(self) -> None:
        """Stop a managed server and every process it started (nothing for a server the user started)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # the guard kills the server's whole process group
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> VllmServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log_hint(self) -> str:
        if self.log_path is None:
            return ""
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            tail = []
        return f"; its log: {self.log_path}" + "".join(f"\n    {line}" for line in tail)

    # -- requests --------------------------------------------------------------------------------------

    def served_models(self) -> list[str]:
        """The names the server serves, the base model first."""
        with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=30) as reply:
            models = json.load(reply)["data"]
        return [m["id"] for m in sorted(models, key=lambda m: m.get("parent") is not None)]

    def post(self, path: str, body: dict, timeout_s: float = 120.0) -> str:
        """POST a JSON body; the reply's text. A refused request raises ``RuntimeError`` with the server's answer."""
        request = urllib.request.Request(f"{self.base_url}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:
                return reply.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"the vLLM server refused {path}: HTTP {error.code}: "
                               f"{error.read()[:500].decode(errors='replace')}") from None
        except OSError as error:
            self.check_alive()
            raise RuntimeError(f"the vLLM server did not answer {path}: {error}") from None

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the LoRA adapter in folder ``path`` under ``name`` (requests then ask for ``model: name``)."""
        self.post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(Path(path).resolve())})

    def unload_adapter(self, name: str) -> None:
        self.post("/v1/unload_lora_adapter", {"lora_name": name})


def served_model_folder(policy: PolicyConfig) -> str:
    """The folder of the weights the policy starts from: the model's own, or, with a warm-start adapter, a merged copy
    in the cache (built once per model and adapter content)."""
    from swirl_lightning.core.digests import adapter_digest
    from swirl_lightning.core.models import _build_once, cache_dir, load_model, merge_adapter, resolve_model_path

    folder = resolve_model_path(policy.name)
    adapter = policy.adapter
    if not adapter:
        return folder

    def build(out: Path) -> None:
        from swirl_lightning.core.models import load_tokenizer

        merge_adapter(load_model(policy.name, dtype="float32"), adapter).save_pretrained(out)
        load_tokenizer(policy.name).save_pretrained(out)

    name = f"{Path(folder).name}+{adapter_digest(policy.adapter)}"
    return str(_build_once(cache_dir() / "served" / name, build))
