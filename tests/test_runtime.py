"""Process-wide settings made at import (grubench/runtime.py)."""

import sys

import pytest

from grubench import runtime


def test_xla_flag_added_once_and_user_choice_kept(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
    runtime.configure_xla()
    runtime.configure_xla()
    assert runtime.os.environ["XLA_FLAGS"].split() == [
        "--xla_dump_to=/nowhere", "--xla_cpu_multi_thread_eigen=false"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    runtime.configure_xla()
    assert runtime.os.environ["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=true"


@pytest.mark.parametrize("name,value", [("GRUBENCH_MALLOC", "default"),
                                        ("MALLOC_TOP_PAD_", "0"),
                                        ("MALLOC_MMAP_MAX_", "65536"),
                                        ("MALLOC_TRIM_THRESHOLD_", "131072"),
                                        ("MALLOC_ARENA_MAX", "8")])
def test_malloc_left_alone_when_the_user_chose(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert runtime.configure_malloc() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_tuned_on_glibc(monkeypatch):
    for name in ("GRUBENCH_MALLOC", *runtime._MALLOC_ENV):
        monkeypatch.delenv(name, raising=False)
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert runtime.configure_malloc() is True
