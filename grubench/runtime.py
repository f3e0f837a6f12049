"""Process-wide settings grubench makes when it is imported, before JAX starts.

XLA flags: single-threaded Eigen on the CPU (see `configure_xla`).
glibc malloc: keep freed memory for reuse (see `configure_malloc`; GRUBENCH_MALLOC).
"""

from __future__ import annotations

import os
import sys
import warnings

# mallopt(3) parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX",
               "MALLOC_MMAP_THRESHOLD_")


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
    blocks (M_MMAP_MAX 0), no trimming, growth in 512 MiB steps, every thread on one arena
    (M_ARENA_MAX 1). GRUBENCH_MALLOC=keep leaves out the one arena, GRUBENCH_MALLOC=default
    changes nothing; so does setting any of glibc's own MALLOC_MMAP_MAX_,
    MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_, MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_ or a
    glibc.malloc tunable in GLIBC_TUNABLES. Off glibc Linux it does nothing.
    Returns whether it changed anything.

    Why: each call of a jitted XLA program on the CPU allocates its temporaries afresh, in one
    block of tens to hundreds of MB for a training step, and by default glibc maps such blocks
    from the kernel and unmaps them on free, so every step page-faults its memory in again.
    Measured on this project's 2-core machine (README, Speed): LSTM train step 72 -> 48 ms at
    (B, T, D, H) = (16, 512, 32, 128). A block over 64 MiB allocated by a worker thread is
    mapped from that thread's own arena whatever M_MMAP_MAX says; one arena stops that too
    (LSTM at (64, 256, 64, 256): 745 000 page faults in 4 s -> none, 310 -> 266 ms) but costs
    compile time (one training run's compile 1.34 -> 1.58 s; a compile-bound test subset took
    1.5x as long): a trade that favours training runs, and `keep` is there for compile-bound
    work such as this project's test suite. The cost of either: the process keeps its peak heap.
    """
    mode = os.environ.get("GRUBENCH_MALLOC", "one-arena")
    if (mode == "default" or any(v in os.environ for v in _MALLOC_ENV)
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")):
        return False
    if mode not in ("keep", "one-arena"):
        warnings.warn(f"GRUBENCH_MALLOC={mode} is not one of one-arena, keep, default: "
                      "using one-arena", stacklevel=2)
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (ImportError, OSError, AttributeError):  # no ctypes, musl or another libc
        return False
    settings = [(_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 512 << 20)]
    if mode != "keep":
        settings.append((_M_ARENA_MAX, 1))
    return all([mallopt(param, value) for param, value in settings])
