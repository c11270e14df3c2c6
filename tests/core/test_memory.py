"""The heap set-up every ``swirl`` command makes: freed tensors' memory goes back to the OS."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swirl_lightning.core.memory import return_freed_memory_to_os

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

# Tensors of about 4 MB, with small ones between them that stay alive (so the heap's top is never free to trim), are
# allocated and freed three times; the script prints how many MB the process kept above its start.
FRAGMENTING_STEPS = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch

    from swirl_lightning.core.memory import return_freed_memory_to_os

    def rss_mb():
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    if sys.argv[1] == "set":
        assert return_freed_memory_to_os()
    start, kept, small = rss_mb(), [], []
    for _ in range(3):
        big = []
        for i in range(40):
            big.append(torch.ones(2**20 + i * 4096))
            small.append(torch.ones(4096))
        del big
        kept.append(rss_mb() - start)
    print(max(kept))
""")


def kept_mb(mode: str) -> float:
    completed = subprocess.run([sys.executable, "-c", FRAGMENTING_STEPS, mode], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, check=True, timeout=120)
    return float(completed.stdout.split()[-1])


def test_freed_tensors_are_returned_to_the_os_where_glibc_alone_keeps_them():
    assert kept_mb("set") < 40  # 40 x 4 MB were freed three times: nothing of them stays
    assert kept_mb("default") > 100  # the control: glibc's rising threshold keeps them in the heap


def test_a_threshold_chosen_in_the_environment_is_respected(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert return_freed_memory_to_os() is False


HUGE_PAGES_PROBE = textwrap.dedent("""
    import sys

    from swirl_lightning.core.memory import use_huge_pages

    if sys.argv[1] == "set":
        assert use_huge_pages()
    import torch

    tensor = torch.ones(16 * 2**20)  # 64 MB
    print(sum(int(line.split()[1]) for line in open("/proc/self/smaps") if line.startswith("AnonHugePages:")))
""")


def huge_pages_kb(mode: str) -> int:
    completed = subprocess.run([sys.executable, "-c", HUGE_PAGES_PROBE, mode], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, check=True, timeout=120)
    return int(completed.stdout.split()[-1])


def test_large_tensors_are_backed_by_huge_pages_where_the_kernel_gives_them_on_request():
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not setting.exists() or "[madvise]" not in setting.read_text():
        pytest.skip("transparent huge pages are not given on request (madvise) on this kernel")
    assert huge_pages_kb("set") >= 32 * 1024  # most of the 64 MB tensor
    assert huge_pages_kb("default") == 0  # the control: PyTorch does not ask for them by itself


def test_a_huge_pages_choice_in_the_environment_is_respected(monkeypatch):
    from swirl_lightning.core.memory import HUGE_PAGES_VARIABLE, use_huge_pages

    monkeypatch.setenv(HUGE_PAGES_VARIABLE, "0")
    assert use_huge_pages() is False
