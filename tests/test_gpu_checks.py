"""scripts/gpu-checks, the one run of the GPU measurements: its steps, its time budget, its
exit status and its bad input, with a stand-in Python that records each command instead of
running it (the measurements themselves need a GPU; `GRUBENCH_CHECKS_QUICK=1` runs them for
real at a tiny size on a CPU)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "gpu-checks"
STEPS = ["persistent-tests", "variants", "bench", "scaling", "population"]


@pytest.fixture()
def fake_python(tmp_path):
    """A Python that appends its arguments to calls.txt and its working directory to cwd.txt,
    and succeeds; it fails (exit 3) for every command with FAIL=all, for the steps (not the
    import check) with FAIL=steps."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        'here=$(dirname "$0")\n'
        'echo "$*" >> "$here/calls.txt"\n'
        'pwd >> "$here/cwd.txt"\n'
        '[ "${FAIL:-}" = all ] && exit 3\n'
        '[ "${FAIL:-}" = steps ] && [ "$1" = -m ] && exit 3\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    return fake


def run(args, python, cwd=None, **env):
    env = {**os.environ, "GRUBENCH_PYTHON": str(python), **env}
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def summary(out):
    return (out / "summary.txt").read_text().splitlines()


def calls(fake_python):
    return (fake_python.parent / "calls.txt").read_text().splitlines()


@pytest.mark.parametrize("quick", ["0", "1"])
def test_every_step_runs_in_order_from_the_checkout(tmp_path, fake_python, quick):
    out = tmp_path / "out"
    p = run(["out"], fake_python, cwd=tmp_path, GRUBENCH_CHECKS_QUICK=quick)  # a relative dir
    assert p.returncode == 0, p.stderr
    lines = summary(out)
    assert lines[0].startswith("environment: ")
    assert [line.split()[0] for line in lines[1:]] == STEPS
    assert all(line.split()[1] == "rc=0" for line in lines[1:])
    made = calls(fake_python)
    assert made[1] == "-m pytest -q -p no:cacheprovider tests/test_persistent.py"
    # Every command runs in the checkout, where tests/ is, wherever the script was started.
    cwds = (fake_python.parent / "cwd.txt").read_text().splitlines()
    assert set(cwds) == {str(ROOT)}
    bench = [c.split() for c in made if c.startswith("-m grubench.bench")]
    assert [c[2] for c in bench] == [
        "--variants",
        "--shapes" if quick == "1" else "--json",
        "--scaling",
        "--population",
    ]
    for command, name in zip(bench, STEPS[1:], strict=True):
        assert command[-2:] == ["--json", f"{out}/{name}.json"]
        assert ("--iters" in command) == (quick == "1")


def test_a_failing_step_is_reported_the_next_runs_and_the_exit_says_so(tmp_path, fake_python):
    out = tmp_path / "out"
    p = run([out], fake_python, FAIL="steps")
    assert p.returncode == 1
    assert [line.split()[1] for line in summary(out)[1:]] == ["rc=3"] * 5


def test_steps_that_would_overrun_the_budget_are_skipped_and_leave_nothing_stale(
    tmp_path, fake_python
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "variants.json").write_text("{}")  # an earlier run's
    p = run([out], fake_python, GRUBENCH_CHECKS_BUDGET_S="130")
    assert p.returncode == 1  # not every step ran
    lines = summary(out)
    assert lines[1].startswith("persistent-tests skipped: ")
    assert lines[2].startswith("variants skipped: ")
    assert not (out / "variants.json").exists()
    # The 120 s steps fit in what is left of 130 s.
    assert [line.split()[1] for line in lines[3:]] == ["rc=0"] * 3


@pytest.mark.parametrize(
    "args,env,message",
    [
        ([], {}, "usage: scripts/gpu-checks OUT_DIR"),
        (["a", "b"], {}, "usage: scripts/gpu-checks OUT_DIR"),
        (["--help"], {}, "usage: scripts/gpu-checks OUT_DIR"),
        (
            ["out"],
            {"GRUBENCH_CHECKS_BUDGET_S": "8m"},
            "gpu-checks: GRUBENCH_CHECKS_BUDGET_S=8m is not a number of seconds",
        ),
        (
            ["out"],
            {"GRUBENCH_CHECKS_QUICK": "yes"},
            "gpu-checks: GRUBENCH_CHECKS_QUICK=yes is not 0 or 1",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, fake_python, args, env, message):
    p = run(args, fake_python, cwd=tmp_path, **env)
    assert (p.returncode, p.stderr) == (2, message + "\n")
    assert not (tmp_path / "out").exists() and not (tmp_path / "--help").exists()


def test_it_stops_when_grubench_does_not_import(tmp_path, fake_python):
    out = tmp_path / "out"
    p = run([out], fake_python, FAIL="all")
    assert p.returncode == 1
    assert p.stderr == (
        f"gpu-checks: grubench or JAX does not import with {fake_python}; "
        f"see {out}/environment.log\n"
    )
    assert len(calls(fake_python)) == 1
