"""Freed tensors' memory goes back to the operating system (Linux, glibc).

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves large blocks with their own ``mmap`` (given
back on ``free``) only above a threshold that it raises, up to 32 MiB, each time such a block is freed; after a few
training steps most activations and gradients come from the heap, whose freed holes are rarely handed back. The
process then keeps the high-water mark of every step's layout, and its RSS grows far past what is live.
:func:`return_freed_memory_to_os` fixes the threshold instead, so a freed tensor of a megabyte or more is unmapped
at once. ``swirl`` calls it for every command; call it yourself when you drive the library from Python.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter for the size from which ``malloc`` maps a block of its own."""

DEFAULT_MMAP_THRESHOLD_BYTES = 1 << 20


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
