"""The heap of CPU tensors (Linux): freed tensors' memory goes back to the operating system, in huge pages.

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves large blocks with their own ``mmap`` (given
back on ``free``) only above a threshold that it raises, up to 32 MiB, each time such a block is freed; after a few
training steps most activations and gradients come from the heap, whose freed holes are rarely handed back. The
process then keeps the high-water mark of every step's layout, and its RSS grows far past what is live.
:func:`return_freed_memory_to_os` fixes the threshold instead, so a freed tensor of a megabyte or more is unmapped
at once.

The price is speed: such a block is mapped afresh at each use and faulted in a page at a time. :func:`use_huge_pages`
has PyTorch back CPU tensors of 2 MiB or more with transparent huge pages, faulted in 2 MiB at a time instead of 4 KB.

:func:`set_up_heap` does both. ``swirl`` calls it for every command; call it yourself, before the process's first
tensor, when you drive the library from Python.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter for the size from which ``malloc`` maps a block of its own."""

DEFAULT_MMAP_THRESHOLD_BYTES = 1 << 20

HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"
"""PyTorch's switch for huge pages under CPU tensors of 2 MiB or more, read once, at the process's first CPU tensor."""


def set_up_heap(threshold_bytes: int = DEFAULT_MMAP_THRESHOLD_BYTES) -> str:
    """:func:`return_freed_memory_to_os` (``threshold_bytes``) and :func:`use_huge_pages`; what was set, in words (for a
    run's record)."""
    done = []
    if return_freed_memory_to_os(threshold_bytes):
        done.append(f"freed blocks of {threshold_bytes / 2**20:g} MiB or more returned")
    if use_huge_pages():
        done.append("huge pages under tensors of 2 MiB or more")
    return ", ".join(done) or "as the environment set it"


def use_huge_pages() -> bool:
    """Have PyTorch back CPU tensors of 2 MiB or more with transparent huge pages (``THP_MEM_ALLOC_ENABLE``), where the
    kernel gives them on request (``/sys/kernel/mm/transparent_hugepage/enabled`` is ``madvise`` or ``always``). It
    takes effect only if no CPU tensor was made yet in this process. True when set; False off Linux, or when the
    environment already chose (which this respects)."""
    if not sys.platform.startswith("linux") or HUGE_PAGES_VARIABLE in os.environ:
        return False
    os.environ[HUGE_PAGES_VARIABLE] = "1"
    return True


def return_freed_memory_to_os(threshold_bytes: int = DEFAULT_MMAP_THRESHOLD_BYTES) -> bool:
    """Serve allocations of ``threshold_bytes`` or more with their own ``mmap`` (glibc's ``M_MMAP_THRESHOLD``), so
    that freeing them returns the memory. True when set; False off glibc, or when the environment already chose
    (``MALLOC_MMAP_THRESHOLD_``, which glibc reads at start-up and this respects)."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)) == 1
