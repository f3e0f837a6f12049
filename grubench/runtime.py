"""Process-wide settings for training and benchmarking, applied by `configure()`.

Importing grubench changes nothing in the host process. The entry points (`grubench-train`,
`grubench-bench`) call `configure()` before JAX starts; a Python program that trains with
grubench may call it too, before it imports JAX:

  XLA flags: single-threaded Eigen on the CPU, one CPU device per core, so that the members
    of a population run on every core (see `configure_xla`; GRUBENCH_CPU_DEVICES), and 512-bit
    vectors in XLA's CPU code on an AMD CPU with AVX-512.
  glibc malloc: keep freed memory for reuse (see `configure_malloc`; GRUBENCH_MALLOC).

Why and what each changed, measured, is in docs/performance.md.
"""

from __future__ import annotations

import os
import sys
import warnings

# The device-count flag `configure_xla` put into XLA_FLAGS, for a child process to tell it from
# one its user set.
_DEVICES_ADDED = "GRUBENCH_XLA_DEVICES_ADDED"
# mallopt(3) parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
_MALLOC_ENV = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
)


def configure_xla() -> None:
    """XLA's CPU backend can deadlock in its multi-threaded Eigen pool while materialising the
    result of a vmapped program (a hang in block_until_ready with the CPU idle; seen here on a
    2-core machine, and reported upstream with this flag as the fix). Single-threaded Eigen
    avoids it; XLA_FLAGS=--xla_cpu_multi_thread_eigen=true opts back in.

    With one thread per program, a population would use one core: the host platform gets one
    device per core (`cpu_devices`), and the population's members are sharded over them
    (grubench/sharding.py), each device running its share on its own core. An explicit
    --xla_force_host_platform_device_count in XLA_FLAGS wins. One this function added in a
    parent process (a launcher whose environment a SLURM job inherits) is worked out afresh:
    the job's cores are its own.

    On an AMD CPU with AVX-512 (`wide_vectors_measured`), XLA's CPU code generator is asked
    for 512-bit vectors (--xla_cpu_prefer_vector_width=512; its default is 256), which made the
    small elementwise kernels of each recurrent step faster there and gave bit-identical
    results in the runs compared (docs/performance.md). Only AMD was measured, and some Intel
    CPUs lower their clock for 512-bit instructions, so other CPUs keep XLA's default. An
    --xla_cpu_prefer_vector_width already in XLA_FLAGS wins, whether the user or a launcher's
    own configure_xla put it there (a SLURM job on another node inherits it).
    results.json records the XLA_FLAGS a run compiled under (`speed.xla_flags`)."""
    flags = xla_flags()
    inherited = os.environ.pop(_DEVICES_ADDED, "")
    if inherited and inherited in flags.split():
        flags = " ".join(f for f in flags.split() if f != inherited)
    if "xla_cpu_multi_thread_eigen" not in flags:
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if "xla_cpu_prefer_vector_width" not in flags and wide_vectors_measured():
        flags = f"{flags} --xla_cpu_prefer_vector_width=512"
    if "xla_force_host_platform_device_count" not in flags and (n := cpu_devices()) > 1:
        ours = f"--xla_force_host_platform_device_count={n}"
        flags = f"{flags} {ours}"
        os.environ[_DEVICES_ADDED] = ours
    os.environ["XLA_FLAGS"] = flags


def xla_flags() -> str:
    """The XLA_FLAGS this process's XLA runs under (grubench's settings, or the user's), as a
    result file records them."""
    return os.environ.get("XLA_FLAGS", "")


def wide_vectors_measured(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPU is one 512-bit vectors were measured on: an AMD CPU
    (vendor_id AuthenticAMD) with AVX-512 (the avx512f flag), read from the first processor
    of `cpuinfo`; False where there is no such file (off Linux)."""
    vendor = None
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    vendor = value.strip()
                elif key.strip() == "flags":
                    return vendor == "AuthenticAMD" and "avx512f" in value.split()
    except OSError:
        pass
    return False


def cpu_devices() -> int:
    """CPU devices to create: GRUBENCH_CPU_DEVICES if set (1: one device, as JAX's default),
    else the cores this process may run on, and no more than a SLURM task's cpus-per-task
    (SLURM_CPUS_PER_TASK: a cluster that does not bind tasks to cores leaves each task of a
    job step every core)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if per_task.isdigit() and int(per_task) >= 1:
        cores = min(cores, int(per_task))
    given = os.environ.get("GRUBENCH_CPU_DEVICES", "").strip()
    if not given:
        return cores
    if given.isdigit() and int(given) >= 1:
        return int(given)
    print(
        f"grubench: warning: GRUBENCH_CPU_DEVICES={given} is not an integer >= 1: using {cores}"
        " (the cores)",
        file=sys.stderr,
    )
    return cores


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
    from the kernel and unmaps them on free, so every step page-faults its memory in again. A
    block allocated by a worker thread is mapped from that thread's own arena whatever
    M_MMAP_MAX says; one arena stops that too but costs compile time: a trade that favours
    training runs, and `keep` is there for compile-bound work such as a test suite. The cost of
    either: the process keeps its peak heap.
    """
    mode = os.environ.get("GRUBENCH_MALLOC", "one-arena")
    if (
        mode == "default"
        or any(v in os.environ for v in _MALLOC_ENV)
        or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
    ):
        return False
    if mode not in ("keep", "one-arena"):
        warnings.warn(
            f"GRUBENCH_MALLOC={mode} is not one of one-arena, keep, default: using one-arena",
            stacklevel=2,
        )
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


def configure() -> None:
    """Apply grubench's process settings: `configure_xla()` and `configure_malloc()`, before
    JAX initialises its backend (the entry points and each launcher job do). Calling it again
    changes nothing more."""
    configure_xla()
    configure_malloc()
