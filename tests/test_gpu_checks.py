"""scripts/gpu-checks, the one run of every GPU measurement: its steps, its time budget and its
bad input, with a stand-in Python that records each command instead of running it (the
measurements themselves need a GPU; `GRUBENCH_CHECKS_QUICK=1` runs them for real at a tiny
size on a CPU)."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "gpu-checks"


@pytest.fixture()
def fake_python(tmp_path):
    """A Python that appends its arguments to calls.txt and succeeds, or fails with FAIL=1."""
    fake = tmp_path / "python"
    fake.write_text(
        '#!/bin/sh\necho "$*" >> "$(dirname "$0")/calls.txt"\n[ "${FAIL:-0}" = 1 ] && exit 3\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    return fake


def run(out, python, **env):
    env = {**os.environ, "GRUBENCH_PYTHON": str(python), **env}
    return subprocess.run(
        ["bash", str(SCRIPT), *([str(out)] if out else [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def calls(fake_python):
    return (fake_python.parent / "calls.txt").read_text().splitlines()


@pytest.mark.parametrize("quick", ["0", "1"])
def test_every_step_runs_in_order_with_its_json(tmp_path, fake_python, quick):
    out = tmp_path / "out"
    p = run(out, fake_python, GRUBENCH_CHECKS_QUICK=quick)
    assert p.returncode == 0, p.stderr
    steps = [line.split()[0] for line in (out / "summary.txt").read_text().splitlines()]
    assert steps == [
        "environment",
        "persistent-tests",
        "variants",
        "bench",
        "scaling",
        "population",
    ]
    assert all(" rc=0 " in line for line in (out / "summary.txt").read_text().splitlines())
    made = calls(fake_python)
    assert made[1] == "-m pytest -q -p no:cacheprovider tests/test_persistent.py"
    bench = [c for c in made if c.startswith("-m grubench.bench")]
    assert [c.split()[2] for c in bench] == [
        "--variants",
        "--shapes" if quick == "1" else "--json",
        "--scaling",
        "--population",
    ]
    for name in ("variants", "bench", "scaling", "population"):
        assert f"--json {out}/{name}.json" in next(c for c in bench if f"/{name}.json" in c)
    assert all(("--iters 2" in c) == (quick == "1") for c in bench)


def test_a_step_that_fails_is_reported_and_the_next_runs(tmp_path, fake_python):
    out = tmp_path / "out"
    # The environment step must pass: fail only the commands after it.
    fake_python.write_text(
        fake_python.read_text().replace('[ "${FAIL:-0}" = 1 ]', '[ "$1" = "-m" ]')
    )
    p = run(out, fake_python)
    assert p.returncode == 0
    summary = (out / "summary.txt").read_text().splitlines()
    assert summary[0].startswith("environment rc=0 ")
    assert [line.split()[1] for line in summary[1:]] == ["rc=3"] * 5


def test_steps_that_would_overrun_the_budget_are_skipped(tmp_path, fake_python):
    out = tmp_path / "out"
    p = run(out, fake_python, GRUBENCH_CHECKS_BUDGET_S="130")
    assert p.returncode == 0
    summary = (out / "summary.txt").read_text().splitlines()
    assert summary[0].startswith("environment rc=0 ")
    assert summary[1].startswith("persistent-tests skipped: ")
    assert summary[2].startswith("variants skipped: ")
    # 120 s steps fit in what is left of 130 s.
    assert [line.split()[1] for line in summary[3:]] == ["rc=0"] * 3


def test_bad_input_is_one_line_and_exit_2(tmp_path, fake_python):
    p = run(None, fake_python)
    assert (p.returncode, p.stderr) == (2, "usage: scripts/gpu-checks OUT_DIR\n")
    p = run(tmp_path / "out", fake_python, GRUBENCH_CHECKS_BUDGET_S="8m")
    assert p.returncode == 2
    assert p.stderr == "gpu-checks: GRUBENCH_CHECKS_BUDGET_S=8m is not a number of seconds\n"


def test_it_stops_when_grubench_does_not_import(tmp_path, fake_python):
    out = tmp_path / "out"
    p = run(out, fake_python, FAIL="1")
    assert p.returncode == 1
    assert p.stderr == f"gpu-checks: grubench or JAX does not import; see {out}/environment.log\n"
    assert len(calls(fake_python)) == 1
