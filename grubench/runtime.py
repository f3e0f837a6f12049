"""Process-wide settings grubench makes when it is imported, before JAX starts.

XLA flags: single-threaded Eigen on the CPU (see `configure_xla`).
glibc malloc: keep freed memory for reuse (see `configure_malloc`).
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")


def configure_xla() -> None:
    """XLA's CPU backend can deadlock in its multi-threaded Eigen pool while materialising the
    result of a vmapped program (a hang in block_until_ready with the CPU idle; seen here on a
    2-core machine, and reported upstream with this flag as the fix). Single-threaded Eigen
    avoids it; XLA_FLAGS=--xla_cpu_multi_thread_eigen=true opts back in."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()


def configure_malloc() -> bool:
    """Make glibc keep freed memory instead of handing it back to the kernel: no mmap for large
    blocks (M_MMAP_MAX 0), no trimming of the heap, growth in 512 MiB steps, and one arena
    (M_ARENA_MAX 1: a thread's own arena maps any block over 64 MiB whatever M_MMAP_MAX says).

    Each call of a jitted XLA program on the CPU allocates its temporaries afresh, in one block
    of tens to hundreds of MB for a training step, from one of XLA's worker threads; by default
    glibc maps such blocks from the kernel and unmaps them on free, so the next step page-faults
    all of it in again. Measured on this project's 2-core machine (`grubench-bench`, README):
    LSTM train step 72 -> 48 ms at (B, T, D, H) = (16, 512, 32, 128) and 312 -> 271 ms at
    (64, 256, 64, 256), where 745 000 page faults in 4 s fell to none. The cost is that the
    process keeps its peak heap. Skipped when any of MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_,
    MALLOC_TOP_PAD_, MALLOC_ARENA_MAX is set (glibc reads those itself) or
    GRUBENCH_MALLOC=default, and off glibc Linux. Returns whether it changed anything."""
    if os.environ.get("GRUBENCH_MALLOC", "") == "default" or any(
            v in os.environ for v in _MALLOC_ENV):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: leave it alone
        return False
    return all([mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, 2**31 - 1),
                mallopt(_M_TOP_PAD, 512 << 20), mallopt(_M_ARENA_MAX, 1)])
