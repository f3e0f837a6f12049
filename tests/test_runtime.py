"""Process-wide settings (grubench/runtime.py): applied by `runtime.configure()`, which the
entry points call; importing grubench applies nothing (tests/test_package.py)."""

import ctypes
import platform
import subprocess
import sys

import pytest

from grubench import runtime

_real_wide_vectors = runtime.wide_vectors_measured  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def _restores_the_marker(monkeypatch):
    """configure_xla pops and sets its marker of the device flag it added: restored after each
    test, with XLA_FLAGS, so later tests' child processes inherit a matching pair."""
    monkeypatch.setenv(runtime._DEVICES_ADDED, runtime.os.environ.get(runtime._DEVICES_ADDED, ""))


@pytest.fixture(autouse=True)
def _narrow_vectors(monkeypatch):
    """The flag lists below are those of a CPU without measured 512-bit vectors, wherever the
    tests run; the vector-width flag has its own tests."""
    monkeypatch.setattr(runtime, "wide_vectors_measured", lambda: False)


def test_wide_vectors_where_measured_unless_xla_flags_chose(monkeypatch):
    monkeypatch.delenv(runtime._DEVICES_ADDED, raising=False)
    monkeypatch.delenv("GRUBENCH_CPU_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    monkeypatch.setattr(runtime, "wide_vectors_measured", lambda: True)
    monkeypatch.setenv("XLA_FLAGS", "")
    runtime.configure_xla()
    first = runtime.os.environ["XLA_FLAGS"]
    runtime.configure_xla()  # again, or in a child process that inherits both variables
    assert runtime.os.environ["XLA_FLAGS"] == first
    assert first.split() == [
        "--xla_cpu_multi_thread_eigen=false",
        "--xla_cpu_prefer_vector_width=512",
        "--xla_force_host_platform_device_count=2",
    ]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256")  # the user's
    runtime.configure_xla()
    assert runtime.os.environ["XLA_FLAGS"].count("vector_width") == 1
    assert "--xla_cpu_prefer_vector_width=256" in runtime.os.environ["XLA_FLAGS"]


@pytest.mark.parametrize(
    "vendor,flags,wide",
    [
        ("AuthenticAMD", "fpu sse avx2 avx512f avx512bw", True),
        ("AuthenticAMD", "fpu sse avx2", False),
        ("AuthenticAMD", "fpu avx512_fake", False),
        ("GenuineIntel", "fpu sse avx2 avx512f avx512bw", False),  # not measured
    ],
)
def test_wide_vectors_measured_reads_the_first_processor(tmp_path, vendor, flags, wide):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n\n"
        "processor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: avx512f\n"
    )
    assert _real_wide_vectors(str(cpuinfo)) is wide
    assert _real_wide_vectors(str(tmp_path / "absent")) is False


@pytest.mark.parametrize(
    "name,value",
    [
        ("GRUBENCH_MALLOC", "default"),
        ("MALLOC_TOP_PAD_", "0"),
        ("MALLOC_MMAP_MAX_", "65536"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("MALLOC_ARENA_MAX", "8"),
        ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2"),
    ],
)
def test_malloc_left_alone_when_the_user_chose(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert runtime.configure_malloc() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("mode", [None, "keep", "one-arena", "typo"])
def test_malloc_tuned_on_glibc(monkeypatch, mode):
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    for name in ("GRUBENCH_MALLOC", "GLIBC_TUNABLES", *runtime._MALLOC_ENV):
        monkeypatch.delenv(name, raising=False)
    settings = []
    monkeypatch.setattr(
        ctypes,
        "CDLL",
        lambda _: type(
            "libc", (), {"mallopt": staticmethod(lambda p, v: settings.append((p, v)) or 1)}
        ),
    )
    if mode is not None:
        monkeypatch.setenv("GRUBENCH_MALLOC", mode)
    if mode == "typo":
        with pytest.warns(
            UserWarning,
            match="GRUBENCH_MALLOC=typo is not one of one-arena, keep, default: using one-arena",
        ):
            assert runtime.configure_malloc() is True
    else:
        assert runtime.configure_malloc() is True
    assert (runtime._M_MMAP_MAX, 0) in settings
    assert ((runtime._M_ARENA_MAX, 1) in settings) == (mode != "keep")


def test_one_cpu_device_per_core_unless_told(monkeypatch, capsys):
    monkeypatch.delenv("GRUBENCH_CPU_DEVICES", raising=False)
    monkeypatch.delenv(runtime._DEVICES_ADDED, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda _: {0, 1, 2}, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    runtime.configure_xla()
    runtime.configure_xla()
    assert runtime.os.environ["XLA_FLAGS"].split() == [
        "--xla_cpu_multi_thread_eigen=false",
        "--xla_force_host_platform_device_count=3",
    ]
    monkeypatch.setenv("GRUBENCH_CPU_DEVICES", "5")
    monkeypatch.setenv("XLA_FLAGS", "")
    runtime.configure_xla()
    assert "--xla_force_host_platform_device_count=5" in runtime.os.environ["XLA_FLAGS"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # the user's
    runtime.configure_xla()
    assert runtime.os.environ["XLA_FLAGS"].count("device_count") == 1
    monkeypatch.setenv("GRUBENCH_CPU_DEVICES", "two")
    assert runtime.cpu_devices() == 3
    (line,) = capsys.readouterr().err.strip().splitlines()  # one line, then the default
    assert "GRUBENCH_CPU_DEVICES=two is not an integer >= 1: using 3" in line


def test_a_slurm_job_counts_its_own_cores_not_its_launchers(monkeypatch):
    """A launcher's XLA_FLAGS reach its SLURM jobs (sbatch exports the environment): the device
    count grubench added there is worked out again from the job's cores, SLURM's cpus-per-task
    included; one the user set stays."""
    monkeypatch.delenv("GRUBENCH_CPU_DEVICES", raising=False)
    monkeypatch.delenv(runtime._DEVICES_ADDED, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda _: {0, 1, 2, 3}, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
    runtime.configure_xla()  # the launcher
    assert "--xla_force_host_platform_device_count=4" in runtime.os.environ["XLA_FLAGS"]
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    runtime.configure_xla()  # a job of one task with 2 CPUs, in the launcher's environment
    assert runtime.os.environ["XLA_FLAGS"].split() == [
        "--xla_dump_to=/nowhere",
        "--xla_cpu_multi_thread_eigen=false",
        "--xla_force_host_platform_device_count=2",
    ]
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    runtime.configure_xla()  # one core: JAX's one device, no flag
    assert "device_count" not in runtime.os.environ["XLA_FLAGS"]
    monkeypatch.delenv(runtime._DEVICES_ADDED, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")  # the user's
    runtime.configure_xla()
    assert "--xla_force_host_platform_device_count=3" in runtime.os.environ["XLA_FLAGS"]


def test_configure_applies_the_xla_flag_and_the_malloc_settings(monkeypatch):
    monkeypatch.setenv("GRUBENCH_CPU_DEVICES", "1")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    calls = []
    monkeypatch.setattr(runtime, "configure_malloc", lambda: calls.append("malloc") or True)
    runtime.configure()
    assert runtime.os.environ["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false"
    assert calls == ["malloc"]


def test_the_entry_points_configure_the_process(monkeypatch, capsys):
    from grubench import bench, train

    calls = []
    monkeypatch.setattr(runtime, "configure", lambda: calls.append("configure"))
    monkeypatch.setattr(sys, "argv", ["grubench-train", "--help"])
    train.main()
    assert capsys.readouterr().out.startswith("usage: grubench-train")
    assert calls == ["configure"]
    assert bench.main(["--iters", "0"]) == 2  # a bad argument, after the process settings
    assert calls == ["configure", "configure"]


def test_the_console_scripts_configure_before_jax_is_imported():
    """grubench-train (grubench.entry:train) applies the settings before importing its command,
    so before JAX: glibc's arenas and XLA's flags are set before either is in use."""
    script = """
import sys
import grubench.entry
from grubench import runtime
seen = []
runtime.configure = lambda: seen.append("jax" in sys.modules)
sys.argv = ["grubench-train", "--help"]
grubench.entry.train()
print(seen)
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "[False, True]"  # entry first; main again
